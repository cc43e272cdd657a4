"""Exact reference values with mpmath, and error measured in ULPs.

The reference evaluates the loss at the given inputs (already rounded to the
dtype under test) at 256 bits of precision, far beyond float64's 53, so its
own error is negligible against one ULP of either dtype.
"""

from __future__ import annotations

import mpmath
import numpy as np

PRECISION_BITS = 256


def _softplus(x: mpmath.mpf) -> mpmath.mpf:
    if mpmath.isinf(x):
        return x if x > 0 else mpmath.mpf(0)
    return mpmath.log1p(mpmath.exp(x))


def _sigmoid(x: mpmath.mpf) -> mpmath.mpf:
    if mpmath.isinf(x):
        return mpmath.mpf(1) if x > 0 else mpmath.mpf(0)
    return 1 / (1 + mpmath.exp(-x))


def _term(coef: mpmath.mpf, softplus_value: mpmath.mpf) -> mpmath.mpf:
    # The limit of coef * softplus(x) as x -> +inf is 0 when coef is 0.
    if coef == 0:
        return mpmath.mpf(0)
    return coef * softplus_value


def exact_loss(labels, logits, pos_weight) -> mpmath.mpf:
    """(1 - z) softplus(x) + q z softplus(-x) at the given floats, exactly."""
    with mpmath.workprec(PRECISION_BITS):
        z, x, q = (mpmath.mpf(float(v)) for v in (labels, logits, pos_weight))
        if any(mpmath.isnan(v) for v in (z, x, q)):
            return mpmath.mpf("nan")
        return _term(1 - z, _softplus(x)) + _term(q * z, _softplus(-x))


def exact_grad(labels, logits, pos_weight) -> mpmath.mpf:
    """(1 - z) sigmoid(x) - q z sigmoid(-x) at the given floats, exactly."""
    with mpmath.workprec(PRECISION_BITS):
        z, x, q = (mpmath.mpf(float(v)) for v in (labels, logits, pos_weight))
        if any(mpmath.isnan(v) for v in (z, x, q)):
            return mpmath.mpf("nan")
        return (1 - z) * _sigmoid(x) - q * z * _sigmoid(-x)


def ulp_of(exact: mpmath.mpf, dtype) -> float:
    """Spacing of ``dtype`` floats at the exact value (its rounded magnitude).

    Uses the spacing above the rounded value, which is what "1 ULP" means for
    a result of that size; at 0 it is the smallest subnormal.
    """
    with np.errstate(over="ignore"):
        rounded = np.abs(np.asarray(float(exact)).astype(dtype))
    if rounded == np.finfo(dtype).max:
        # np.spacing steps past the largest float into infinity; the ULP there
        # is the gap below it.
        return float(rounded - np.nextafter(rounded, dtype(0)))
    return float(np.spacing(rounded))


def ulp_error(computed, exact: mpmath.mpf, dtype) -> float:
    """|computed - exact| in ULPs of ``dtype`` at the exact value.

    Matching infinities (and NaN against NaN) count as 0; an infinity or NaN
    against anything else counts as infinitely wrong.
    """
    computed = float(computed)
    if mpmath.isnan(exact) or np.isnan(computed):
        return 0.0 if (mpmath.isnan(exact) and np.isnan(computed)) else np.inf
    # An exact value beyond the largest float rounds to infinity.
    with np.errstate(over="ignore"):
        rounded = float(np.asarray(float(exact)).astype(dtype))
    if np.isinf(rounded) or np.isinf(computed):
        return 0.0 if rounded == computed else np.inf

    with mpmath.workprec(PRECISION_BITS):
        difference = abs(mpmath.mpf(computed) - exact)
        return float(difference / mpmath.mpf(ulp_of(exact, dtype)))


def max_ulp_error(function, exact_function, labels, logits, pos_weight) -> float:
    """Largest ULP error of ``function`` over arrays of inputs (any dtype)."""
    computed = function(labels, logits, pos_weight)
    dtype = computed.dtype
    arrays = np.broadcast_arrays(labels, logits, pos_weight, computed)
    return max(
        (
            ulp_error(c, exact_function(z, x, q), dtype)
            for z, x, q, c in zip(*(a.ravel() for a in arrays), strict=True)
        ),
        default=0.0,
    )


def exact_hess(labels, logits, pos_weight) -> mpmath.mpf:
    """(1 - z + q z) sigmoid(x) sigmoid(-x) at the given floats, exactly."""
    with mpmath.workprec(PRECISION_BITS):
        z, x, q = (mpmath.mpf(float(v)) for v in (labels, logits, pos_weight))
        if any(mpmath.isnan(v) for v in (z, x, q)):
            return mpmath.mpf("nan")
        return (1 - z + q * z) * _sigmoid(x) * _sigmoid(-x)
