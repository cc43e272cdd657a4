"""The float64 primitives behind the float32 CPU kernels, against NumPy's libm.

They promise below 1e-9 relative error (a float32 result rounded from them
is then off by 0.5 ULP plus 0.017 ULP at most). NumPy's float64 exp and
log1p are within 1 ULP (2.2e-16 relative), far below that, so they serve as
the reference.
"""

import numpy as np
import pytest
from numba import njit

from wce_numba._fastmath import exp_neg_wide, log1p_wide

# The documented bounds (polynomial errors 5.5e-11 and 8.4e-10, measured in
# mpmath) plus a margin for the float64 roundings of the evaluation, each
# 1.1e-16 relative.
EXP_BOUND = 6e-11
LOG1P_BOUND = 9e-10


def _over_array(primitive):
    """A compiled loop applying ``primitive`` to every element, as the kernels do."""

    @njit(error_model="numpy")
    def apply(values):
        out = np.empty_like(values)
        for i in range(values.size):
            out[i] = primitive(values[i])
        return out

    return apply


_exp_neg_all = _over_array(exp_neg_wide)
_log1p_all = _over_array(log1p_wide)


def relative_error(computed, expected):
    return np.abs(computed - expected) / expected


def test_exp_neg_wide_within_bound_up_to_700():
    # Dense, and through every step n of the range reduction, up to the
    # largest argument it evaluates.
    m = np.concatenate([np.linspace(0, 700, 2_000_001), [1e-300, 5e-324, 0.5]])

    errors = relative_error(_exp_neg_all(m), np.exp(-m))

    assert errors.max() <= EXP_BOUND


def test_exp_neg_wide_is_zero_beyond_700_and_keeps_nan():
    # Past 700, exp(-m) times any finite float32 coefficient rounds to a
    # float32 0; an infinite logit must give exactly 0.
    m = np.array([700.5, 746.0, 1e30, np.finfo(np.float64).max, np.inf, np.nan])

    result = _exp_neg_all(m)

    np.testing.assert_array_equal(result, [0, 0, 0, 0, 0, np.nan])


def test_log1p_wide_within_bound_on_the_unit_interval():
    # Linear and logarithmic spacing: tiny e must keep its digits.
    e = np.concatenate(
        [np.linspace(0, 1, 1_000_001)[1:], np.logspace(-300, 0, 100_001)]
    )

    errors = relative_error(_log1p_all(e), np.log1p(e))

    assert errors.max() <= LOG1P_BOUND


@pytest.mark.parametrize(("e", "expected"), [(0.0, 0.0), (np.nan, np.nan)])
def test_log1p_wide_at_zero_and_nan(e, expected):
    result = _log1p_all(np.array([e]))

    np.testing.assert_array_equal(result, [expected])
