"""Scalar kernels: the loss and its gradient for one element, as pure math.

Each function here is plain Python over scalars, written once and compiled by
Numba for every target (the CPU ufuncs in ``_ufuncs`` and, lazily, the CUDA
ufuncs). ``register_jitable`` makes a helper callable from any Numba target.

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
formed by error-free transformations with a fused multiply-add), so the only
errors left are those of ``exp`` and ``log1p`` and one final rounding. This
keeps the loss within 2 ULP (float64) and 3 ULP (float32) of the exact value
for labels in [0, 1] and any pos_weight >= 0.
"""

import math

from numba.extending import register_jitable

from ._intrinsics import exp_normal_limit, fma, two_product, two_sum


@register_jitable
def scaled_exp_neg(scale_hi, scale_lo, magnitude):
    """``(scale_hi + scale_lo) * exp(-magnitude)`` as a double-word ``(hi, lo)``.

    Where ``exp(-magnitude)`` is subnormal it has lost digits before any
    product is formed (a pos_weight of 1e6 can lift the product back into
    the normal range). There ``exp(-m) = exp(-m / 2) ** 2``: the scale is
    multiplied by one normal half, then by the other.
    """
    if magnitude <= exp_normal_limit(magnitude):
        tail = math.exp(-magnitude)
        product, error = two_product(scale_hi, tail)
        return product, error + scale_lo * tail

    half = math.exp(-magnitude / type(magnitude)(2))
    first, first_error = two_product(scale_hi, half)
    first_error = first_error + scale_lo * half
    product, error = two_product(first, half)
    return product, error + first_error * half


@register_jitable
def scaled_log1p_exp_neg(scale_hi, scale_lo, magnitude):
    """``(scale_hi + scale_lo) * log1p(exp(-magnitude))`` as ``(hi, lo)``.

    ``log1p`` keeps the tail ``exp(-m)`` that ``log(1 + tiny)`` would round
    away; the exponent -m is never positive, so nothing overflows. Where
    ``exp(-m)`` is subnormal, ``log1p(exp(-m)) = exp(-m)`` to all digits.
    """
    if magnitude > exp_normal_limit(magnitude):
        return scaled_exp_neg(scale_hi, scale_lo, magnitude)

    softplus_neg = math.log1p(math.exp(-magnitude))
    product, error = two_product(scale_hi, softplus_neg)
    return product, error + scale_lo * softplus_neg


@register_jitable
def triple_product(labels, pos_weight, magnitude):
    """``labels * pos_weight * magnitude`` as a double-word ``(hi, lo)``.

    ``q |x|`` is formed first: a subnormal ``q z`` (a label of 1e-313, say)
    would be rounded to a few digits before a large |x| scaled it back into
    the normal range. Where ``q |x|`` overflows, ``z |x|`` goes first.
    """
    scaled, scaled_error = two_product(pos_weight, magnitude)
    if math.isinf(scaled):
        scaled, scaled_error = two_product(labels, magnitude)
        product, error = two_product(scaled, pos_weight)
        return product, error + scaled_error * pos_weight

    product, error = two_product(labels, scaled)
    return product, error + labels * scaled_error


@register_jitable
def divide(numerator_hi, numerator_lo, divisor_hi, divisor_lo):
    """``(numerator_hi + numerator_lo) / (divisor_hi + divisor_lo)``, rounded once.

    One Newton correction of the float quotient, with the residual formed
    exactly by a fused multiply-add.
    """
    quotient = numerator_hi / divisor_hi
    residual = fma(-quotient, divisor_hi, numerator_hi)
    residual = residual + (numerator_lo - quotient * divisor_lo)
    return quotient + residual / divisor_hi


def loss(labels, logits, pos_weight):
    """Weighted cross entropy with logits for one element: ``c |x| + l L``.

    See the module docstring for the decomposition. A coefficient of 0 makes
    its term vanish also at infinite logits, where IEEE arithmetic would give
    ``0 * inf = NaN``; that is the limit of the loss. NaN in any input gives
    NaN.
    """
    one = type(logits)(1)
    zero = type(logits)(0)
    magnitude = abs(logits)

    negative_hi, negative_lo = two_sum(one, -labels)
    positive_hi, positive_lo = two_product(pos_weight, labels)
    total_hi, total_error = two_sum(negative_hi, positive_hi)
    total_lo = total_error + (negative_lo + positive_lo)

    if logits >= zero:
        coefficient_is_zero = negative_hi == zero
        linear, linear_error = two_product(negative_hi, magnitude)
        linear_error = linear_error + negative_lo * magnitude
    else:
        coefficient_is_zero = pos_weight == zero or labels == zero
        linear, linear_error = triple_product(labels, pos_weight, magnitude)

    tail_hi, tail_lo = scaled_log1p_exp_neg(total_hi, total_lo, magnitude)
    if coefficient_is_zero:
        return tail_hi + tail_lo
    if math.isinf(linear):
        return linear + tail_hi

    result, result_error = two_sum(linear, tail_hi)
    return result + (result_error + (linear_error + tail_lo))


def loss_grad(labels, logits, pos_weight):
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
    positive_hi, positive_lo = two_product(pos_weight, labels)

    # 1 + e exactly as hi + lo; e <= 1, so the two-sum error is exact.
    denominator_hi, denominator_lo = two_sum(one, math.exp(-magnitude))

    if logits >= zero:
        large_hi, large_lo = negative_hi, negative_lo
        small_hi, small_lo = positive_hi, positive_lo
    else:
        large_hi, large_lo = positive_hi, positive_lo
        small_hi, small_lo = negative_hi, negative_lo

    # The coefficient of sigmoid(|x|), and that of sigmoid(-|x|) times e.
    large = divide(large_hi, large_lo, denominator_hi, denominator_lo)
    small_numerator_hi, small_numerator_lo = scaled_exp_neg(
        small_hi, small_lo, magnitude
    )
    small = divide(
        small_numerator_hi, small_numerator_lo, denominator_hi, denominator_lo
    )
    # (1 - z) sigmoid(x) - q z sigmoid(-x), ordered by the sign of x; written
    # as a difference, not a sign times one, so that an exact 0 stays +0.
    if logits >= zero:
        return large - small
    return small - large
