"""Accuracy of the loss and its gradient against exact (mpmath) values.

The contract: within 2 ULP in float64 and 3 ULP in float32 of the exact value
at the given inputs, for labels in [0, 1] and pos_weight >= 0, over the whole
range of logits; the gradient within the same bounds for hard labels. Where
the exact value can cancel to zero (soft-label gradients, labels outside
[0, 1], negative pos_weight) the error is bounded relative to the size of the
terms that cancel instead.
"""

import itertools

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import exact_grad, exact_loss, ulp_error

from wce_numba import (
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_grad,
)

DTYPES = [np.float32, np.float64]

# The ULP bounds of the contract. The kernels leave the errors of libm's exp
# and log1p (each under 1 ULP) and one final rounding; measured maxima over
# 10^5 random inputs were 1.7 ULP in both dtypes.
ULP_BOUND = {np.float32: 3.0, np.float64: 2.0}

# Bound for values that can cancel, in units of the dtype's epsilon times the
# sum of the magnitudes of the terms: a handful of roundings, each at most
# one epsilon of its term, plus libm's errors.
CANCELLATION_EPS = 8.0


def logit_grid(dtype):
    """Logits over the whole finite range and both infinities, both signs."""
    finfo = np.finfo(dtype)
    magnitudes = [
        0.0,
        float(finfo.smallest_subnormal),
        1e-30,
        1e-8,
        1e-3,
        0.1,
        0.5,
        1.0,
        2.5,
        5.0,
        9.0,
        17.0,
        30.0,
        36.8,
        40.0,
        87.5,
        100.0,
        103.0,
        120.0,
        300.0,
        709.0,
        720.0,
        745.0,
        1e4,
        1e30,
        float(finfo.max),
    ]
    values = [m for m in magnitudes if m <= finfo.max] + [np.inf]
    return np.array(sorted({v for m in values for v in (m, -m)}), dtype=dtype)


LABEL_GRID = [0.0, 1.0, 0.5, 0.1, 0.9, 0.3, 1e-8, 1 - 1e-8]
POS_WEIGHT_GRID = [0.0, 1e-3, 0.25, 1.0, 2.0, 8.0, 1e3, 1e6]


def grid(dtype, labels=LABEL_GRID, pos_weights=POS_WEIGHT_GRID):
    """Every combination of the grids, as three flat arrays of ``dtype``."""
    rows = list(itertools.product(labels, logit_grid(dtype), pos_weights))
    z, x, q = (np.array(column, dtype=dtype) for column in zip(*rows, strict=True))
    return z, x, q


def ulp_errors(computed, exact_function, z, x, q):
    dtype = computed.dtype.type
    return np.array(
        [
            ulp_error(c, exact_function(zi, xi, qi), dtype)
            for zi, xi, qi, c in zip(z, x, q, computed, strict=True)
        ]
    )


def worst(errors, z, x, q):
    index = int(np.argmax(errors))
    return (
        f"{errors[index]:.3f} ULP at labels={z[index]!r}, logits={x[index]!r}, "
        f"pos_weight={q[index]!r}"
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_within_ulp_bound_on_designed_grid(dtype):
    z, x, q = grid(dtype)
    computed = weighted_cross_entropy_with_logits(z, x, q)

    errors = ulp_errors(computed, exact_loss, z, x, q)

    assert errors.max() <= ULP_BOUND[dtype], worst(errors, z, x, q)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_within_ulp_bound_for_hard_labels_on_designed_grid(dtype):
    z, x, q = grid(dtype, labels=[0.0, 1.0])
    computed = weighted_cross_entropy_with_logits_grad(z, x, q)

    errors = ulp_errors(computed, exact_grad, z, x, q)

    assert errors.max() <= ULP_BOUND[dtype], worst(errors, z, x, q)


def cancellation_errors(computed, exact_function, term_sizes, z, x, q):
    """|computed - exact| over (eps * sum of term magnitudes), elementwise."""
    eps = float(np.finfo(computed.dtype).eps)
    ratios = []
    for zi, xi, qi, c, size in zip(z, x, q, computed, term_sizes, strict=True):
        exact = exact_function(zi, xi, qi)
        if not np.isfinite(size) or mpmath.isinf(exact):
            ratios.append(0.0 if float(exact) == float(c) else np.inf)
            continue
        tiny = float(np.finfo(computed.dtype).smallest_subnormal)
        scale = max(size * eps, tiny)
        ratios.append(float(abs(mpmath.mpf(float(c)) - exact)) / scale)
    return np.array(ratios)


def grad_term_sizes(z, x, q):
    """|1 - z| sigmoid(x) + |q z| sigmoid(-x), the magnitudes that cancel."""
    z, x, q = (np.asarray(v, dtype=np.float64) for v in (z, x, q))
    sigmoid = np.exp(-np.logaddexp(0, -x))
    sigmoid_neg = np.exp(-np.logaddexp(0, x))
    return np.abs(1 - z) * sigmoid + np.abs(q * z) * sigmoid_neg


def loss_term_sizes(z, x, q):
    """|1 - z| softplus(x) + |q z| softplus(-x), the magnitudes that cancel."""
    z, x, q = (np.asarray(v, dtype=np.float64) for v in (z, x, q))
    softplus = np.logaddexp(0, x)
    softplus_neg = np.logaddexp(0, -x)
    with np.errstate(invalid="ignore"):
        return np.abs(1 - z) * softplus + np.abs(q * z) * softplus_neg


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_with_soft_labels_within_bound_of_cancelling_terms(dtype):
    # Soft labels make the two sigmoid terms cancel near the optimum, so a
    # ULP bound on the (tiny) difference is not meaningful; the error stays
    # a few epsilons of the terms' size.
    z, x, q = grid(dtype, labels=[0.5, 0.1, 0.9, 0.3, 1e-8, 1 - 1e-8])
    z, x, q = (v[np.isfinite(x)] for v in (z, x, q))
    computed = weighted_cross_entropy_with_logits_grad(z, x, q)

    ratios = cancellation_errors(
        computed, exact_grad, grad_term_sizes(z, x, q), z, x, q
    )

    assert ratios.max() <= CANCELLATION_EPS, worst(ratios, z, x, q)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("function", ["loss", "grad"])
def test_labels_outside_unit_interval_and_negative_pos_weight_bounded(dtype, function):
    # With z outside [0, 1] or q < 0 the two terms have opposite signs and the
    # exact value can be 0: the error is bounded against the terms' size.
    z, x, q = grid(
        dtype, labels=[-1.0, -0.5, 1.5, 2.0, 10.0], pos_weights=[-2.0, -1.0, 0.5, 3.0]
    )
    z, x, q = (v[np.isfinite(x) & (np.abs(x) < 1e30)] for v in (z, x, q))
    if function == "loss":
        computed = weighted_cross_entropy_with_logits(z, x, q)
        ratios = cancellation_errors(
            computed, exact_loss, loss_term_sizes(z, x, q), z, x, q
        )
    else:
        computed = weighted_cross_entropy_with_logits_grad(z, x, q)
        ratios = cancellation_errors(
            computed, exact_grad, grad_term_sizes(z, x, q), z, x, q
        )

    assert ratios.max() <= CANCELLATION_EPS, worst(ratios, z, x, q)


finite_logits = {
    dtype: st.floats(
        min_value=-float(np.finfo(dtype).max),
        max_value=float(np.finfo(dtype).max),
        width=np.finfo(dtype).bits,
        allow_subnormal=True,
    )
    for dtype in DTYPES
}
unit_labels = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))
pos_weights = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1e6))
moderate_logits = st.floats(-60.0, 60.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_within_ulp_bound_on_random_inputs(dtype):
    @settings(max_examples=300, deadline=None)
    @given(
        labels=st.lists(unit_labels, min_size=1, max_size=8),
        logits=st.lists(st.one_of(finite_logits[dtype], moderate_logits), max_size=8),
        pos_weight=pos_weights,
    )
    def check(labels, logits, pos_weight):
        size = min(len(labels), len(logits))
        if size == 0:
            return
        z = np.array(labels[:size], dtype=dtype)
        x = np.array(logits[:size], dtype=dtype)
        q = np.full(size, pos_weight, dtype=dtype)

        computed = weighted_cross_entropy_with_logits(z, x, q)
        errors = ulp_errors(computed, exact_loss, z, x, q)

        assert errors.max() <= ULP_BOUND[dtype], worst(errors, z, x, q)

    check()


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_within_ulp_bound_for_hard_labels_on_random_inputs(dtype):
    @settings(max_examples=300, deadline=None)
    @given(
        label=st.sampled_from([0.0, 1.0]),
        logit=st.one_of(finite_logits[dtype], moderate_logits),
        pos_weight=pos_weights,
    )
    def check(label, logit, pos_weight):
        z, x, q = (np.array([v], dtype=dtype) for v in (label, logit, pos_weight))

        computed = weighted_cross_entropy_with_logits_grad(z, x, q)
        errors = ulp_errors(computed, exact_grad, z, x, q)

        assert errors.max() <= ULP_BOUND[dtype], worst(errors, z, x, q)

    check()


def float64_reference(function, z, x, q):
    """The loss or gradient at float32 inputs, in float64 (about 1e-15 relative).

    Both terms are non-negative for labels in [0, 1] and pos_weight >= 0, and
    each is a float64 softplus or sigmoid times an exact float64 coefficient,
    so the reference is far more accurate than a float32 ULP (6e-8).
    """
    z, x, q = (np.asarray(v, dtype=np.float64) for v in (z, x, q))
    if function == "loss":
        return (1 - z) * np.logaddexp(0, x) + q * z * np.logaddexp(0, -x)
    sigmoid = np.exp(-np.logaddexp(0, -x))
    sigmoid_neg = np.exp(-np.logaddexp(0, x))
    return (1 - z) * sigmoid - q * z * sigmoid_neg


@pytest.mark.parametrize("function", ["loss", "grad"])
def test_float32_rounds_once_on_many_random_inputs(function):
    # float32 is computed in float64 with polynomials within 1e-9 relative
    # error and rounded once: at most 0.5 ULP + 1e-9 * 2^24 ULP = 0.517 ULP.
    # Labels are hard for the gradient (soft ones cancel; see above).
    rng = np.random.default_rng(11)
    size = 200_000
    z = rng.uniform(0, 1, size).astype(np.float32)
    if function == "grad":
        z = np.round(z)
    magnitude = np.concatenate(
        [rng.exponential(8, size // 2), 10 ** rng.uniform(-30, 38, size - size // 2)]
    )
    x = (magnitude * rng.choice([-1, 1], size)).astype(np.float32)
    q = (10 ** rng.uniform(-3, 6, size)).astype(np.float32)
    api = {
        "loss": weighted_cross_entropy_with_logits,
        "grad": weighted_cross_entropy_with_logits_grad,
    }[function]

    computed = api(z, x, q).astype(np.float64)
    exact = float64_reference(function, z, x, q)

    with np.errstate(over="ignore"):  # values beyond float32 round to inf
        rounded = exact.astype(np.float32)
    np.testing.assert_array_equal(
        computed[np.isinf(rounded)], rounded[np.isinf(rounded)]
    )
    finite = np.isfinite(rounded)
    ulp = np.spacing(np.abs(rounded[finite])).astype(np.float64)
    errors = np.abs(computed[finite] - exact[finite]) / ulp
    assert errors.max() <= 0.517, worst(errors, z[finite], x[finite], q[finite])


def test_pos_weight_one_equals_plain_sigmoid_cross_entropy():
    # With q = 1 the loss is -z log(sigmoid(x)) - (1 - z) log(1 - sigmoid(x)),
    # evaluated here through mpmath's log of the sigmoid, independently of
    # the softplus form used by the reference module. 1 - sigmoid(x) is
    # 1 - exp(-700) at worst: 1500 bits hold it with digits to spare.
    z, x, _ = grid(np.float64, pos_weights=[1.0])
    finite = np.isfinite(x) & (np.abs(x) < 700)
    z, x = z[finite], x[finite]
    computed = weighted_cross_entropy_with_logits(z, x, 1.0)

    with mpmath.workprec(1500):
        for zi, xi, c in zip(z, x, computed, strict=True):
            zi, xi = mpmath.mpf(float(zi)), mpmath.mpf(float(xi))
            sigmoid = 1 / (1 + mpmath.exp(-xi))
            exact = -zi * mpmath.log(sigmoid) - (1 - zi) * mpmath.log(1 - sigmoid)
            assert ulp_error(c, exact, np.float64) <= ULP_BOUND[np.float64]


def test_grad_matches_central_differences_of_the_loss():
    # Central differences of the float64 loss with step h have truncation
    # error ~h^2 |f'''| and rounding error ~eps |f| / h; h = 1e-5 (|x| + 1)
    # keeps both under 1e-6 relative to the gradient's scale here.
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 4.0, 200)
    z = rng.uniform(0.0, 1.0, 200)
    z[:50] = rng.integers(0, 2, 50)
    q = rng.uniform(0.0, 10.0, 200)
    h = 1e-5 * (np.abs(x) + 1)

    numeric = (
        weighted_cross_entropy_with_logits(z, x + h, q)
        - weighted_cross_entropy_with_logits(z, x - h, q)
    ) / (2 * h)
    analytic = weighted_cross_entropy_with_logits_grad(z, x, q)

    scale = np.abs(1 - z) + np.abs(q * z)
    np.testing.assert_array_less(np.abs(numeric - analytic), 1e-6 * scale)


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_at_infinite_logits_is_the_limit(dtype):
    # (labels, logits, pos_weight) -> exact limit; TensorFlow gives NaN for
    # the zero results (0 * inf).
    cases = [
        (1.0, np.inf, 2.0, 0.0),
        (0.0, -np.inf, 2.0, 0.0),
        (0.5, np.inf, 2.0, np.inf),
        (1.0, -np.inf, 0.0, 0.0),
        (1.0, -np.inf, 3.0, np.inf),
        (0.0, np.inf, 3.0, np.inf),
    ]
    z, x, q, expected = (
        np.array(column, dtype=dtype) for column in zip(*cases, strict=True)
    )

    np.testing.assert_array_equal(weighted_cross_entropy_with_logits(z, x, q), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "function",
    [weighted_cross_entropy_with_logits, weighted_cross_entropy_with_logits_grad],
)
def test_nan_in_any_input_gives_nan(dtype, function):
    # Including where a zero coefficient would otherwise switch a term off
    # (z = 1 with q = 0 makes both coefficients 0).
    nan = np.nan
    z = np.array([nan, 1.0, 1.0, 0.5, 1.0], dtype=dtype)
    x = np.array([1.0, nan, nan, 1.0, 2.0], dtype=dtype)
    q = np.array([1.0, 0.0, 1.0, nan, nan], dtype=dtype)

    assert np.isnan(function(z, x, q)).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_is_finite_and_exact_at_infinite_logits(dtype):
    z = np.array([0.0, 1.0, 1.0, 0.0, 0.5], dtype=dtype)
    x = np.array([np.inf, -np.inf, np.inf, -np.inf, np.inf], dtype=dtype)

    grad = weighted_cross_entropy_with_logits_grad(z, x, 2.0)

    np.testing.assert_array_equal(grad, np.array([1.0, -2.0, 0.0, 0.0, 0.5], dtype))
    # An exact zero is +0, not -0.
    assert not np.signbit(grad[2:4]).any()


@pytest.mark.parametrize(
    ("function", "exact_function", "inputs"),
    [
        # libm's exp and log1p, each within 1 ULP, summed to 2.007 ULP here.
        (
            weighted_cross_entropy_with_logits,
            exact_loss,
            (0.3635264298230032, 0.3922751148973166, 633.77464833435),
        ),
        # And to 2.021 ULP in the hard-label gradient near the subnormal edge.
        (
            weighted_cross_entropy_with_logits_grad,
            exact_grad,
            (1.0, 712.2982714774238, 73.29886742121582),
        ),
    ],
    ids=["loss", "grad"],
)
def test_float64_inputs_that_broke_the_bound_with_libm(
    function, exact_function, inputs
):
    z, x, q = (np.array([v]) for v in inputs)

    error = ulp_error(function(z, x, q)[0], exact_function(*inputs), np.float64)

    assert error <= ULP_BOUND[np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_infinite_pos_weight_gives_the_limits(dtype):
    # q = inf: the loss is inf wherever the positive term is on, and the
    # gradient -inf; a zero label switches the term off entirely.
    z = np.array([1.0, 0.5, 0.0], dtype=dtype)
    x = np.ones(3, dtype=dtype)
    q = dtype(np.inf)

    loss = weighted_cross_entropy_with_logits(z, x, q)
    grad = weighted_cross_entropy_with_logits_grad(z, x, q)

    assert loss[0] == loss[1] == np.inf
    assert grad[0] == grad[1] == -np.inf
    assert loss[2] == weighted_cross_entropy_with_logits(dtype(0), dtype(1), q)
    assert grad[2] == weighted_cross_entropy_with_logits_grad(dtype(0), dtype(1), 1)
