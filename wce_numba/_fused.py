"""Fused CPU pass: weighted loss, its sum and the scaled gradient in one sweep.

One loop over flat, contiguous arrays reads each input once and computes
what the caller asked for: the weighted elementwise loss, its sum, the
weighted and scaled gradient, or any two of them together. Asking for the
loss and its gradient together shares ``exp(-|x|)`` between the two kernels
(LLVM merges the identical inlined computations). Which outputs exist is
decided when the loop is compiled: an argument passed as ``None`` removes
its branch (Numba prunes ``if argument is None`` for a None-typed argument),
so a sum-only pass never writes an array and a gradient-only pass never
evaluates the logarithm. Specialisations compile on first use and are cached
on disk; like ``_loops``, the cache is keyed on this file alone.

Summation. The loop stores each chunk's losses in a small buffer of the
compute dtype, so that each term is exactly the elementwise loss, then adds
the terms ``weight * loss`` to float64 lanes (see ``add_terms``). float64
terms are formed as exact pairs (``two_product``) and added to four
independent lanes with ``two_sum``, keeping every rounding error in a
companion lane: exact up to the terms' own roundings, whatever N. float32
terms are exact float64 products; each chunk's are summed in float64 with
reassociation (vectorized, within 5.7e-14 relative, a millionth of a
float32 ULP) and the chunk totals added exactly. The caller adds the lanes
with ``math.fsum``. A plain float32 accumulator would lose about N * 6e-8
relative (0.6 at N = 1e7); one float64 accumulator alone would lose
N * 1.1e-16, a few hundred float64 ULP at N = 1e7.

Scaling. The gradient is ``weight * scale * grad``, with ``scale`` 1, or
1/N for a mean, carried as a double-word ``(hi, lo)`` pair: the product is
formed exactly and rounded once, so scaling adds half an ULP to the
kernel's error, not one per multiplication.
"""

import math

import numpy as np
from numba import njit, types
from numba.extending import overload, register_jitable

from . import _kernels
from ._intrinsics import fma, select, two_product, two_sum

# Elements per chunk: the buffer of losses (2 or 4 KiB) stays in the L1 cache.
CHUNK = 512

# Independent accumulators: one AVX2 register of float64.
LANES = 4

_loss = njit(error_model="numpy", forceinline=True)(_kernels.loss)
_grad = njit(error_model="numpy", forceinline=True)(_kernels.loss_grad)


def element(values, index):
    """``values[index]`` for an array, ``values`` itself for a scalar."""
    return values if np.ndim(values) == 0 else values[index]


@overload(element)
def _element(values, index):
    if isinstance(values, types.Array):
        return lambda values, index: values[index]
    return lambda values, index: values


def part(values, start, stop):
    """``values[start:stop]`` for an array, ``values`` itself for a scalar."""
    return values if np.ndim(values) == 0 else values[start:stop]


@overload(part)
def _part(values, start, stop):
    if isinstance(values, types.Array):
        return lambda values, start, stop: values[start:stop]
    return lambda values, start, stop: values


@register_jitable(forceinline=True)
def scaled(value, scale_hi, scale_lo):
    """``value * (scale_hi + scale_lo)`` rounded once, in the type of ``value``.

    Where the exact product's error term is not finite (an infinite value or
    scale, or an overflow), the plain product is the answer.
    """
    product = value * scale_hi
    error = fma(value, scale_hi, -product) + value * scale_lo
    result = product + error
    return select(math.isnan(result), product, result)


@njit(nogil=True, cache=True, error_model="numpy")
def fused_pass(
    labels,
    logits,
    pos_weight,
    weight,
    scale_hi,
    scale_lo,
    loss_out,
    grad_out,
    lanes,
):
    """One sweep over contiguous 1-D arrays.

    ``pos_weight`` and ``weight`` are scalars or arrays of the logits' size.
    Writes ``loss_out[i] = weight * loss`` and ``grad_out[i] = weight *
    scale * grad`` where those are arrays, and where ``lanes`` is a float64
    array of ``2 * LANES`` zeros on entry, leaves in it partial sums (first
    half) and their rounding errors (second half) whose total is the sum of
    ``weight * loss``.
    """
    losses = np.empty(CHUNK, logits.dtype)

    for start in range(0, logits.size, CHUNK):
        stop = min(start + CHUNK, logits.size)

        # Each chunk runs on fresh views: with indices into the whole arrays,
        # LLVM's run-time overlap check failed (and ran the scalar loop) for
        # an output that directly follows an input in memory.
        _sweep(
            labels[start:stop],
            logits[start:stop],
            part(pos_weight, start, stop),
            part(weight, start, stop),
            scale_hi,
            scale_lo,
            None if loss_out is None else loss_out[start:stop],
            None if grad_out is None else grad_out[start:stop],
            None if lanes is None else losses,
        )

        if lanes is not None:
            add_terms(lanes, part(weight, start, stop), losses, stop - start)


@register_jitable(forceinline=True)
def _sweep(
    labels, logits, pos_weight, weight, scale_hi, scale_lo, loss_out, grad_out, losses
):
    """The elementwise part of ``fused_pass`` over one chunk."""
    for i in range(logits.size):
        label = labels[i]
        logit = logits[i]
        positive_weight = element(pos_weight, i)
        sample_weight = element(weight, i)
        if loss_out is not None or losses is not None:
            value = _loss(label, logit, positive_weight)
            if loss_out is not None:
                loss_out[i] = scaled(value, sample_weight, type(value)(0))
            if losses is not None:
                losses[i] = value
        if grad_out is not None:
            factor_hi, factor_lo = two_product(sample_weight, scale_hi)
            factor_lo = fma(sample_weight, scale_lo, factor_lo)
            gradient = _grad(label, logit, positive_weight)
            grad_out[i] = scaled(gradient, factor_hi, factor_lo)


def add_terms(lanes, weight, losses, count):
    """Add ``weight * loss`` of the chunk's ``count`` elements to the lanes.

    Exactly (``_add_exact_terms``) for float64; for float32, whose products
    are exact float64 values, a reassociated float64 sum of the chunk
    (``_float32_chunk_sum``) added exactly to the first lane.
    """
    _add_exact_terms(lanes, weight, losses, count)


@overload(add_terms)
def _add_terms_by_dtype(lanes, weight, losses, count):
    if losses.dtype == types.float32:

        def add_float32_terms(lanes, weight, losses, count):
            chunk_total = _float32_chunk_sum(weight, losses, count)
            total, rounding = two_sum(lanes[0], chunk_total)
            lanes[0] = total
            lanes[LANES] += rounding

        return add_float32_terms
    return _add_exact_terms


# Reassociation lets LLVM keep several partial sums and vectorize the loop,
# which an exact (compensated) sum cannot. Its error: each partial sum of
# at most 512 exact terms rounds at most 512 times, 512 * 2**-53 = 5.7e-14
# relative to the sum of the terms' magnitudes, a millionth of a float32
# ULP. Only this function's additions may be reordered; the chunk totals
# are added exactly by the caller.
@njit(fastmath={"reassoc", "nsz"}, error_model="numpy", nogil=True, cache=True)
def _float32_chunk_sum(weight, losses, count):
    """The float64 sum of ``weight * loss`` over one chunk of float32 terms."""
    total = 0.0
    for i in range(count):
        total += np.float64(element(weight, i)) * np.float64(losses[i])
    return total


@register_jitable(forceinline=True)
def _add_exact_terms(lanes, weight, losses, count):
    """Add ``weight * loss`` of one chunk to the lanes, exactly.

    The lanes live in local variables for the chunk: four independent chains
    of additions that stay in registers (LLVM may pack them into one vector),
    where array elements would go through memory at every step.
    """
    total_0, total_1, total_2, total_3 = lanes[0], lanes[1], lanes[2], lanes[3]
    error_0, error_1, error_2, error_3 = lanes[4], lanes[5], lanes[6], lanes[7]

    whole = count - count % LANES
    for base in range(0, whole, LANES):
        total_0, error_0 = _accumulate(total_0, error_0, weight, losses, base)
        total_1, error_1 = _accumulate(total_1, error_1, weight, losses, base + 1)
        total_2, error_2 = _accumulate(total_2, error_2, weight, losses, base + 2)
        total_3, error_3 = _accumulate(total_3, error_3, weight, losses, base + 3)
    for rest in range(whole, count):
        total_0, error_0 = _accumulate(total_0, error_0, weight, losses, rest)

    lanes[0], lanes[1], lanes[2], lanes[3] = total_0, total_1, total_2, total_3
    lanes[4], lanes[5], lanes[6], lanes[7] = error_0, error_1, error_2, error_3


@register_jitable(forceinline=True)
def _accumulate(total, error, weight, losses, index):
    """``(total, error)`` with ``weight * loss`` of one element added, exactly."""
    term, term_error = exact_product(element(weight, index), losses[index])
    total, rounding = two_sum(total, term)
    return total, error + (rounding + term_error)


def exact_product(weight, loss):
    """``weight * loss`` as an exact float64 pair ``(product, error)``."""
    return two_product(np.float64(weight), np.float64(loss))


@overload(exact_product)
def _exact_product(weight, loss):
    if weight == loss == types.float32:
        # Two float32 values multiply exactly in float64: no error term.
        return lambda weight, loss: (
            np.float64(weight) * np.float64(loss),
            np.float64(0),
        )
    return lambda weight, loss: two_product(np.float64(weight), np.float64(loss))
