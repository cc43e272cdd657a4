"""Scalar kernels: the loss and its gradient for one element, as pure math.

Each function here is plain Python over scalars, written once and compiled by
Numba for every target (the CPU ufuncs in ``_ufuncs`` and, lazily, the CUDA
ufuncs). ``register_jitable`` makes a helper callable from any Numba target.

Two implementations, one contract. ``native_loss`` and ``native_loss_grad``
compute in the arguments' own type with double-word arithmetic; every CUDA
kernel and the float64 CPU kernels use them. On the CPU, float32 is computed
in plain float64 and rounded once (``widened_loss``, ``widened_loss_grad``):
four float64 lanes of that are cheaper than eight float32 lanes of
double-word code, and more accurate (0.50 ULP against 1.16 ULP at most over
1e6 random inputs). ``loss`` and ``loss_grad`` choose per target, through
Numba overloads, so that every caller (ufuncs, loops, reductions) compiles
the same kernel for the same target and dtype.

Every constant is made from the argument's own type (``type(x)(1)``): a bare
``0.0`` or ``1.0`` is a float64 literal, and Numba would promote a float32
kernel to float64 arithmetic to combine with it.

Accuracy. With z = labels, x = logits, q = pos_weight, m = |x| and
L = log1p(exp(-m)), softplus(x) = max(x, 0) + L and softplus(-x) =
max(-x, 0) + L, so

    loss = (1 - z) softplus(x) + q z softplus(-x) = c m + l L,

where l = 1 - z + q z (TensorFlow's ``1 + (q - 1) z``) and c is the
coefficient of the term whose argument is positive: 1 - z for x >= 0, q z
for x < 0. The coefficients are carried as exact double-word values (hi + lo,
formed by error-free transformations with a fused multiply-add), and so are
``exp(-m)`` and ``log1p(exp(-m))`` (see ``_fastmath``), so the error left is
about one final rounding: 0.57 ULP (float64) at most over 4e4 random
inputs, against the contract's 2 ULP, for labels in [0, 1] and any
pos_weight >= 0 (in float32, 1.16 ULP near the subnormal guard, m = 87).

No branches. Every ``if`` is a ``select`` between two values that are both
computed (both signs of x, both sides of the subnormal guard, both orders of
the triple product). Numba lowers ``if``/``else`` to branches, and LLVM's
loop vectorizer rejects control flow it cannot if-convert; the work is all
arithmetic, so computing both arms is far cheaper than a scalar loop. The
helpers are force-inlined for the same reason: LLVM would not inline a body
this large into the loop on its own.
"""

import math

import numpy as np
from numba import types
from numba.extending import overload, register_jitable

from ._fastmath import exp_neg, exp_neg_wide, log1p_dw, log1p_wide
from ._intrinsics import (
    exp_normal_limit,
    fast_two_sum,
    fdiv,
    fma,
    select,
    two_product,
    two_sum,
)


@register_jitable(forceinline=True)
def switched_product(pos_weight, labels):
    """``q z`` as ``(hi, lo)``, exactly 0 where z or q is 0.

    A zero label or weight switches the positive term off, also against an
    infinite partner, where ``inf * 0`` would make it NaN; a NaN partner
    still gives NaN (``x == x`` is false only for NaN).
    """
    zero = type(labels)(0)
    product, error = two_product(pos_weight, labels)
    off = ((labels == zero) & (pos_weight == pos_weight)) | (
        (pos_weight == zero) & (labels == labels)
    )
    return select(off, zero, product), select(off, zero, error)


@register_jitable(forceinline=True)
def _halved(magnitude):
    """``(big, argument)``: where exp(-m) would be subnormal, use m / 2."""
    big = magnitude > exp_normal_limit(magnitude)
    return big, select(big, fdiv(magnitude, type(magnitude)(2)), magnitude)


@register_jitable(forceinline=True)
def _scale(scale_hi, scale_lo, value_hi, value_lo):
    """``(scale_hi + scale_lo) * (value_hi + value_lo)`` as ``(hi, lo)``."""
    product, error = two_product(scale_hi, value_hi)
    return product, error + (scale_lo * value_hi + scale_hi * value_lo)


@register_jitable(forceinline=True)
def _scaled_exp(scale_hi, scale_lo, big, e_hi, e_lo):
    """``scale * exp(-m)`` from e = exp(-m), or from e = exp(-m/2) where big.

    Where exp(-m) is subnormal it has lost digits before any product is
    formed (a pos_weight of 1e6 can lift the product back into the normal
    range): exp(-m) = exp(-m/2)^2, multiplied into the scale one half at a
    time. Both are formed; a select keeps one.
    """
    once_hi, once_lo = _scale(scale_hi, scale_lo, e_hi, e_lo)
    twice_hi, twice_lo = _scale(once_hi, once_lo, e_hi, e_lo)
    return select(big, twice_hi, once_hi), select(big, twice_lo, once_lo)


@register_jitable(forceinline=True)
def scaled_log1p_exp_neg(scale_hi, scale_lo, magnitude):
    """``(scale_hi + scale_lo) * log1p(exp(-magnitude))`` as ``(hi, lo)``.

    Where ``exp(-m)`` is subnormal, ``log1p(exp(-m)) = exp(-m)`` to all
    digits, and the scaled exponential is used instead.
    """
    big, argument = _halved(magnitude)
    e_hi, e_lo = exp_neg(argument)
    softplus_hi, softplus_lo = log1p_dw(e_hi, e_lo)
    tail_hi, tail_lo = _scale(scale_hi, scale_lo, softplus_hi, softplus_lo)
    exp_hi, exp_lo = _scaled_exp(scale_hi, scale_lo, big, e_hi, e_lo)
    return select(big, exp_hi, tail_hi), select(big, exp_lo, tail_lo)


@register_jitable(forceinline=True)
def triple_product(labels, pos_weight, magnitude):
    """``labels * pos_weight * magnitude`` as a double-word ``(hi, lo)``.

    ``q |x|`` is formed first (a subnormal ``q z`` would lose digits); where
    ``q |x|`` overflows, ``z |x|`` goes first. Both orders are formed.
    """
    scaled, scaled_error = two_product(pos_weight, magnitude)
    product, error = two_product(labels, scaled)
    error = error + labels * scaled_error

    other, other_error = two_product(labels, magnitude)
    other_product, fallback_error = two_product(other, pos_weight)
    fallback_error = fallback_error + other_error * pos_weight

    overflow = math.isinf(scaled)
    return select(overflow, other_product, product), select(
        overflow, fallback_error, error
    )


@register_jitable(forceinline=True)
def divide(numerator_hi, numerator_lo, divisor_hi, divisor_lo):
    """``(numerator_hi + numerator_lo) / (divisor_hi + divisor_lo)``, rounded once."""
    quotient = fdiv(numerator_hi, divisor_hi)
    residual = fma(-quotient, divisor_hi, numerator_hi)
    residual = residual + (numerator_lo - quotient * divisor_lo)
    return quotient + fdiv(residual, divisor_hi)


@register_jitable(forceinline=True)
def native_loss(labels, logits, pos_weight):
    """Weighted cross entropy with logits for one element: ``c |x| + l L``.

    See the module docstring for the decomposition. A coefficient of 0 makes
    its term vanish also at infinite logits; NaN in any input gives NaN.
    """
    one = type(logits)(1)
    zero = type(logits)(0)
    magnitude = abs(logits)

    negative_hi, negative_lo = two_sum(one, -labels)
    positive_hi, positive_lo = switched_product(pos_weight, labels)
    total_hi, total_error = two_sum(negative_hi, positive_hi)
    total_lo = total_error + (negative_lo + positive_lo)

    # c |x| for both signs of x; the sign picks one (NaN: the x < 0 arm).
    nonnegative = logits >= zero
    above, above_error = two_product(negative_hi, magnitude)
    above_error = above_error + negative_lo * magnitude
    below, below_error = triple_product(labels, pos_weight, magnitude)
    linear = select(nonnegative, above, below)
    linear_error = select(nonnegative, above_error, below_error)
    coefficient_is_zero = select(
        nonnegative, negative_hi == zero, (pos_weight == zero) | (labels == zero)
    )

    tail_hi, tail_lo = scaled_log1p_exp_neg(total_hi, total_lo, magnitude)

    result, result_error = two_sum(linear, tail_hi)
    general = result + (result_error + (linear_error + tail_lo))
    tail = tail_hi + tail_lo
    # The error-free transformations are unguarded: where a product or sum
    # overflows, its error term is inf or NaN and so is the sum of the
    # pair. NaN with no NaN input means an overflow: the value is then the
    # plain sum of the leading parts (inf). Two checks here replace a
    # select in every two-product and two-sum.
    general = select(math.isnan(general), linear + tail_hi, general)
    tail = select(math.isnan(tail), tail_hi, tail)
    return select(coefficient_is_zero, tail, general)


@register_jitable(forceinline=True)
def native_loss_grad(labels, logits, pos_weight):
    """Derivative of ``loss`` with respect to the logits, for one element.

    ``d loss / dx = (1 - z) sigmoid(x) - q z sigmoid(-x)``. This equals
    TensorFlow's ``(1 - z) - l sigmoid(-x)``, but that form cancels for hard
    labels (z = 0 and x << 0 gives 1 - (1 - tiny)); here a hard label leaves
    one term. With e = exp(-|x|) <= 1, sigmoid(|x|) = 1 / (1 + e) and
    sigmoid(-|x|) = e / (1 + e): no exponential overflows, and each term is a
    double-word numerator over the double-word 1 + e, divided with one
    rounding. Finite at infinite logits; NaN in any input gives NaN.
    """
    one = type(logits)(1)
    zero = type(logits)(0)
    magnitude = abs(logits)

    negative_hi, negative_lo = two_sum(one, -labels)
    positive_hi, positive_lo = switched_product(pos_weight, labels)

    # One exponential serves both: e = exp(-m), or exp(-m/2) where exp(-m) is
    # subnormal; 1 + exp(-m) there is 1 + e^2 (the tail changes no digit).
    big, argument = _halved(magnitude)
    e_hi, e_lo = exp_neg(argument)
    sum_hi, sum_lo = fast_two_sum(one, e_hi)
    denominator_hi = select(big, one, sum_hi)
    denominator_lo = select(big, e_hi * e_hi, sum_lo + e_lo)

    nonnegative = logits >= zero
    large_hi = select(nonnegative, negative_hi, positive_hi)
    large_lo = select(nonnegative, negative_lo, positive_lo)
    small_hi = select(nonnegative, positive_hi, negative_hi)
    small_lo = select(nonnegative, positive_lo, negative_lo)

    large = divide(large_hi, large_lo, denominator_hi, denominator_lo)
    small_numerator_hi, small_numerator_lo = _scaled_exp(
        small_hi, small_lo, big, e_hi, e_lo
    )
    small = divide(
        small_numerator_hi, small_numerator_lo, denominator_hi, denominator_lo
    )
    # Written as a difference, not a sign times one, so an exact 0 stays +0.
    result = select(nonnegative, large - small, small - large)

    # An infinite coefficient (pos_weight = inf) makes the unguarded error
    # terms NaN; the leading parts alone then give the limit, +-inf.
    large_plain = fdiv(large_hi, denominator_hi)
    small_plain = fdiv(small_numerator_hi, denominator_hi)
    plain = select(nonnegative, large_plain - small_plain, small_plain - large_plain)
    return select(math.isnan(result), plain, result)


# ---------------------------------------------------------------------------
# float32 on the CPU: computed in plain float64 and rounded once.


@register_jitable(forceinline=True)
def _widened_coefficients(labels, pos_weight):
    """``(1 - z, q z)`` in float64 from float32 z and q.

    Both are exact for z in [2^-29, 1] (and q z always: 24 + 24 bits fit in
    53); elsewhere one rounding, 2^-53 relative. A zero label switches
    ``q z`` off, also against an infinite weight; a NaN weight still gives
    NaN. (An infinite label is outside every bound: 0 * inf stays NaN.)
    """
    z = np.float64(labels)
    q = np.float64(pos_weight)
    zero = np.float64(0)
    return np.float64(1) - z, select((z == zero) & (q == q), zero, q * z)


@register_jitable(forceinline=True)
def widened_loss(labels, logits, pos_weight):
    """``loss`` for float32 inputs, in float64 arithmetic, rounded to float32.

    Every float32 input is exact in float64, and no product of them
    overflows or turns subnormal there, so no double-word pairs and no
    guards are needed: ``c m + l L`` in float64 with ``L`` within 9e-10
    relative error (``_fastmath.log1p_wide`` of ``exp_neg_wide``, 6e-11) has
    a relative error below 1e-9, which the final rounding to float32 turns
    into at most 0.5 ULP + 0.017 ULP. The float32 CUDA kernels stay in
    float32 (``native_loss``).
    """
    negative, positive = _widened_coefficients(labels, pos_weight)
    x = np.float64(logits)
    magnitude = abs(x)

    coefficient = select(x >= np.float64(0), negative, positive)
    tail = (negative + positive) * log1p_wide(exp_neg_wide(magnitude))

    # A zero coefficient leaves the tail alone, also at m = inf (0 * inf);
    # a NaN logit reaches the tail through exp_neg_wide.
    general = fma(coefficient, magnitude, tail)
    return np.float32(select(coefficient == np.float64(0), tail, general))


@register_jitable(forceinline=True)
def widened_loss_grad(labels, logits, pos_weight):
    """``loss_grad`` for float32 inputs, in float64 arithmetic, rounded to float32.

    With e = exp(-|x|): ((1 - z) - q z e) / (1 + e) for x >= 0 and
    ((1 - z) e - q z) / (1 + e) for x < 0; each numerator is one FMA, so the
    float64 result is within about 1e-10 of the terms' size (of the value
    itself for hard labels, where one term is 0). At e = 0 (infinite logits)
    the FMA of +0 and -0 gives +0, not -0.
    """
    negative, positive = _widened_coefficients(labels, pos_weight)
    x = np.float64(logits)
    e = exp_neg_wide(abs(x))

    numerator = select(
        x >= np.float64(0), fma(-positive, e, negative), fma(negative, e, -positive)
    )
    return np.float32(fdiv(numerator, np.float64(1) + e))


# ---------------------------------------------------------------------------
# The kernels, routed per target: the CPU computes float32 in float64, every
# other case (and every CUDA kernel) uses the native double-word kernels.


def _all_float32(*arguments):
    return all(argument == types.float32 for argument in arguments)


def _loss_on_target(labels, logits, pos_weight):
    return native_loss(labels, logits, pos_weight)


def _grad_on_target(labels, logits, pos_weight):
    return native_loss_grad(labels, logits, pos_weight)


@overload(_loss_on_target, target="generic")
def _loss_generic(labels, logits, pos_weight):
    return lambda labels, logits, pos_weight: native_loss(labels, logits, pos_weight)


@overload(_loss_on_target, target="cpu")
def _loss_cpu(labels, logits, pos_weight):
    if _all_float32(labels, logits, pos_weight):
        return lambda labels, logits, pos_weight: widened_loss(
            labels, logits, pos_weight
        )
    return lambda labels, logits, pos_weight: native_loss(labels, logits, pos_weight)


@overload(_grad_on_target, target="generic")
def _grad_generic(labels, logits, pos_weight):
    return lambda labels, logits, pos_weight: native_loss_grad(
        labels, logits, pos_weight
    )


@overload(_grad_on_target, target="cpu")
def _grad_cpu(labels, logits, pos_weight):
    if _all_float32(labels, logits, pos_weight):
        return lambda labels, logits, pos_weight: widened_loss_grad(
            labels, logits, pos_weight
        )
    return lambda labels, logits, pos_weight: native_loss_grad(
        labels, logits, pos_weight
    )


def loss(labels, logits, pos_weight):
    """Weighted cross entropy with logits for one element (see ``native_loss``).

    On the CPU, float32 is computed by ``widened_loss``; elsewhere, and for
    float64, by ``native_loss``. Both are within the accuracy contract and
    give the same limits, zeros and NaN.
    """
    return _loss_on_target(labels, logits, pos_weight)


def loss_grad(labels, logits, pos_weight):
    """Derivative of ``loss`` with respect to the logits (see ``native_loss_grad``).

    Routed as ``loss``: ``widened_loss_grad`` for float32 on the CPU,
    ``native_loss_grad`` otherwise.
    """
    return _grad_on_target(labels, logits, pos_weight)


def loss_hess(labels, logits, pos_weight):
    """Second derivative of ``loss`` with respect to the logits, for one element.

    ``d^2 loss / dx^2 = l sigmoid(x) sigmoid(-x)`` with l = 1 - z + q z. The
    product of the sigmoids is even in x: with e = exp(-|x|) <= 1 it is
    ``e / (1 + e)^2``, where nothing overflows and nothing cancels. ``l`` and
    ``1 + e`` are double-word values, the square is formed exactly enough
    with a two-product, and one division rounds the result. Where exp(-|x|)
    is subnormal, l exp(-|x|) is formed from exp(-|x|/2) twice (as in the
    gradient) and the denominator is 1. 0 at infinite logits for a finite l;
    NaN in any input gives NaN.
    """
    one = type(logits)(1)
    two = type(logits)(2)
    magnitude = abs(logits)

    negative_hi, negative_lo = two_sum(one, -labels)
    positive_hi, positive_lo = switched_product(pos_weight, labels)
    total_hi, total_error = two_sum(negative_hi, positive_hi)
    total_lo = total_error + (negative_lo + positive_lo)

    big, argument = _halved(magnitude)
    e_hi, e_lo = exp_neg(argument)
    sum_hi, sum_lo = fast_two_sum(one, e_hi)
    base_hi = select(big, one, sum_hi)
    base_lo = select(big, e_hi * e_hi, sum_lo + e_lo)
    # (1 + e)^2 = base_hi^2 + 2 base_hi base_lo, the base_lo^2 term being
    # below the double-word's precision.
    square_hi, square_error = two_product(base_hi, base_hi)
    square_lo = square_error + two * base_hi * base_lo

    numerator_hi, numerator_lo = _scaled_exp(total_hi, total_lo, big, e_hi, e_lo)
    result = divide(numerator_hi, numerator_lo, square_hi, square_lo)

    # An infinite l (pos_weight = inf) makes the unguarded error terms NaN;
    # the leading parts alone then give the limit, inf.
    plain = fdiv(numerator_hi, square_hi)
    return select(math.isnan(result), plain, result)
