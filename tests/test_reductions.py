"""Sample weights, reductions and value_and_grad on the CPU.

Reduced values are checked against exact sums (mpmath at 256 bits, or
``fractions.Fraction``), elementwise weighted results against the unweighted
call times the weight, and ``value_and_grad`` against the separate calls.
"""

import math
import tracemalloc
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import PRECISION_BITS, exact_grad, exact_loss, ulp_error

from wce_numba import (
    _dispatch,
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_grad,
    weighted_cross_entropy_with_logits_value_and_grad,
)

DTYPES = [np.float32, np.float64]

# A sum of non-negative terms, each within the elementwise bound (3 ULP in
# float32, 2 in float64) of its exact value, is within that many ULP of the
# exact sum; the exact summation then rounds once more (half an ULP).
SUM_ULP_BOUND = {np.float32: 3.5, np.float64: 2.5}

# The gradient of a weighted or averaged loss: the kernel's gradient (within
# its bound), times weight / N formed as a double-word pair and rounded
# once, half an ULP more.
GRAD_ULP_BOUND = {np.float32: 3.5, np.float64: 2.5}


def random_inputs(size, dtype, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.random(size).astype(dtype)
    logits = (3 * rng.standard_normal(size)).astype(dtype)
    return labels, logits


def exact_weighted_sum(labels, logits, pos_weight, weight):
    """The sum of weight * loss at the given floats, at 256 bits."""
    shape = np.shape(logits)
    args = (np.broadcast_to(a, shape).ravel() for a in (labels, logits, pos_weight))
    weights = np.broadcast_to(weight, shape).ravel()
    with mpmath.workprec(PRECISION_BITS):
        terms = [
            mpmath.mpf(float(w)) * exact_loss(z, x, q)
            for z, x, q, w in zip(*args, weights, strict=True)
        ]
        return mpmath.fsum(terms)


unit_labels = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))
logit_values = st.one_of(st.floats(-60.0, 60.0), st.floats(-1e30, 1e30))
weights = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1e3))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_reduced_loss_within_bound_of_exact_value_on_random_inputs(dtype, reduction):
    @settings(max_examples=60, deadline=None)
    @given(
        rows=st.lists(
            st.tuples(unit_labels, logit_values, weights), min_size=1, max_size=40
        ),
        pos_weight=st.floats(0.0, 1e3),
    )
    def check(rows, pos_weight):
        z, x, w = (np.array(column, dtype=dtype) for column in zip(*rows, strict=True))
        q = dtype(pos_weight)

        computed = weighted_cross_entropy_with_logits(
            z, x, q, weight=w, reduction=reduction
        )
        exact = exact_weighted_sum(z, x, q, w)
        if reduction == "mean":
            exact = exact / len(rows)

        assert type(computed) is dtype
        assert ulp_error(computed, exact, dtype) <= SUM_ULP_BOUND[dtype]

    check()


@pytest.mark.parametrize("dtype", DTYPES)
def test_reduced_loss_on_designed_extremes(dtype):
    # Tiny and huge losses side by side, subnormal labels, zero weights and
    # coefficients: a naive float32 sum loses the small terms entirely.
    tiny = np.finfo(dtype).tiny
    z = np.array([0.0, 1.0, 0.5, tiny, 1.0, 0.0, 0.25], dtype=dtype)
    x = np.array([-80.0, 80.0, 0.0, 1e4, -30.0, 1e-3, -7.5], dtype=dtype)
    q = np.array([1.0, 3.0, 0.0, 2.0, 1e3, 1.0, 0.5], dtype=dtype)
    w = np.array([1.0, 1e3, 2.0, 1.0, 1e-3, 0.0, 7.0], dtype=dtype)

    for reduction, divisor in (("sum", 1), ("mean", len(z))):
        computed = weighted_cross_entropy_with_logits(
            z, x, q, weight=w, reduction=reduction
        )
        exact = exact_weighted_sum(z, x, q, w) / divisor
        assert ulp_error(computed, exact, dtype) <= SUM_ULP_BOUND[dtype]


def test_float32_mean_of_ten_million_terms_within_one_part_per_million():
    # The reference adds the float64 kernel's terms exactly (math.fsum); each
    # of those is within 2 float64 ULP (4.4e-16 relative) of its exact value
    # (test_numerics), so the reference is exact far below the 1e-6 asked.
    # A float32 running sum would be off by about N * 6e-8 relative.
    size = 10_000_000
    labels, logits = random_inputs(size, np.float32, seed=7)

    computed = weighted_cross_entropy_with_logits(labels, logits, 3.0, reduction="mean")
    terms = weighted_cross_entropy_with_logits(
        labels.astype(np.float64), logits.astype(np.float64), 3.0
    )
    reference = math.fsum(terms.tolist()) / size

    assert abs(float(computed) - reference) <= 1e-6 * reference


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("pos_weight_shape", "weight_shape"),
    [((), ()), ((), (6, 1)), ((5,), (5,)), ((6, 5), (6, 5)), ((1, 5), (6, 1))],
)
def test_weights_broadcast_like_pos_weight(dtype, pos_weight_shape, weight_shape):
    rng = np.random.default_rng(1)
    labels, logits = (a.reshape(6, 5) for a in random_inputs(30, dtype))
    pos_weight = rng.uniform(0.5, 4.0, pos_weight_shape).astype(dtype)
    weight = rng.uniform(0.0, 2.0, weight_shape).astype(dtype)

    weighted = weighted_cross_entropy_with_logits(
        labels, logits, pos_weight, weight=weight
    )
    plain = weighted_cross_entropy_with_logits(labels, logits, pos_weight)
    total = weighted_cross_entropy_with_logits(
        labels, logits, pos_weight, weight=weight, reduction="sum"
    )

    # weight * loss rounded once: exactly the product of the plain loss and
    # the weight, correctly rounded.
    product = plain.astype(np.float64) * np.broadcast_to(weight, plain.shape)
    if dtype == np.float32:
        np.testing.assert_array_equal(weighted, product.astype(np.float32))
    # The sum of those terms, exact then rounded once.
    exact_terms = [
        Fraction(float(v)) * Fraction(float(w))
        for v, w in zip(
            plain.ravel(), np.broadcast_to(weight, plain.shape).ravel(), strict=True
        )
    ]
    assert total == dtype(float(sum(exact_terms)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_value_and_grad_equals_separate_calls(dtype, reduction):
    labels, logits = (a.reshape(40, 25) for a in random_inputs(1000, dtype, seed=3))
    weight = np.linspace(0.0, 2.0, 40, dtype=dtype)[:, None]
    pos_weight = np.linspace(0.5, 5.0, 25, dtype=dtype)

    value, grad = weighted_cross_entropy_with_logits_value_and_grad(
        labels, logits, pos_weight, weight=weight, reduction=reduction
    )

    separate_value = weighted_cross_entropy_with_logits(
        labels, logits, pos_weight, weight=weight, reduction=reduction
    )
    separate_grad = weighted_cross_entropy_with_logits_grad(
        labels, logits, pos_weight, weight=weight, reduction=reduction
    )
    np.testing.assert_array_equal(value, separate_value)
    np.testing.assert_array_equal(grad, separate_grad)
    assert grad.dtype == dtype and grad.shape == logits.shape


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_of_weighted_mean_within_bound_of_exact_value(dtype):
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 64).astype(dtype)  # hard labels: the grad bound
    logits = (4 * rng.standard_normal(64)).astype(dtype)
    weight = rng.uniform(0.0, 3.0, 64).astype(dtype)
    pos_weight = dtype(2.5)

    grad = weighted_cross_entropy_with_logits_grad(
        labels, logits, pos_weight, weight=weight, reduction="mean"
    )

    for z, x, w, g in zip(labels, logits, weight, grad, strict=True):
        with mpmath.workprec(PRECISION_BITS):
            exact = exact_grad(z, x, pos_weight) * mpmath.mpf(float(w)) / len(grad)
        assert ulp_error(g, exact, dtype) <= GRAD_ULP_BOUND[dtype]


def test_mean_divides_by_the_number_of_elements_not_the_weights():
    labels = np.array([1.0, 0.0, 1.0, 0.0])
    logits = np.array([0.5, 0.5, -2.0, 2.0])
    weight = np.array([2.0, 0.0, 1.0, 1.0])

    mean = weighted_cross_entropy_with_logits(
        labels, logits, 1.0, weight=weight, reduction="mean"
    )
    total = weighted_cross_entropy_with_logits(
        labels, logits, 1.0, weight=weight, reduction="sum"
    )

    assert mean == total / 4


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_reduced_result_has_the_result_dtype(dtype):
    labels, logits = random_inputs(10, dtype)

    total = weighted_cross_entropy_with_logits(labels, logits, 2, reduction="sum")
    value, grad = weighted_cross_entropy_with_logits_value_and_grad(labels, logits, 2)

    assert type(total) is dtype and type(value) is dtype and grad.dtype == dtype


def test_integer_logits_reduce_in_float64():
    total = weighted_cross_entropy_with_logits(
        [1, 0, 1], [2, -1, 0], 3, reduction="sum"
    )
    assert type(total) is np.float64


def test_reductions_of_no_elements():
    empty = np.zeros(0, np.float32)

    assert weighted_cross_entropy_with_logits(empty, empty, 2.0, reduction="sum") == 0
    assert np.isnan(
        weighted_cross_entropy_with_logits(empty, empty, 2.0, reduction="mean")
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_reduced_loss_at_infinite_logits_is_the_limit(dtype):
    labels = np.array([1.0, 0.0, 0.5], dtype=dtype)
    logits = np.array([np.inf, -np.inf, 0.0], dtype=dtype)

    total = weighted_cross_entropy_with_logits(labels, logits, 2.0, reduction="sum")
    value, grad = weighted_cross_entropy_with_logits_value_and_grad(
        labels, logits, 2.0, reduction="sum"
    )

    middle = weighted_cross_entropy_with_logits(labels[2:], logits[2:], 2.0)[0]
    assert total == middle and value == middle
    assert np.isfinite(grad).all()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_nan_anywhere_gives_nan(reduction):
    labels, logits = random_inputs(1000, np.float64)
    weight = np.ones(1000)
    weight[500] = np.nan

    value = weighted_cross_entropy_with_logits(
        labels, logits, 2.0, weight=weight, reduction=reduction
    )

    assert np.isnan(value)


def test_infinite_terms_give_an_infinite_sum():
    # weight * loss overflows float64 for the second element.
    value = weighted_cross_entropy_with_logits(
        [1.0, 1.0], [0.0, -1e300], 2.0, weight=[1.0, 1e300], reduction="sum"
    )
    assert value == np.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_threaded_blocks_agree_with_one_block(dtype, monkeypatch):
    size = 3 * _dispatch.LOOP_THRESHOLD[np.dtype(dtype)] + 17
    labels, logits = random_inputs(size, dtype, seed=5)
    weight = np.linspace(0, 1, size, dtype=dtype)

    threaded = weighted_cross_entropy_with_logits_value_and_grad(
        labels, logits, 1.5, weight=weight
    )
    monkeypatch.setattr(_dispatch, "thread_count", lambda: 1)
    single = weighted_cross_entropy_with_logits_value_and_grad(
        labels, logits, 1.5, weight=weight
    )

    # Blocks only regroup exact partial sums (their tiny error terms are
    # rounded separately): the results agree to the last bit or one ULP.
    assert abs(threaded[0] - single[0]) <= np.spacing(single[0])
    np.testing.assert_array_equal(threaded[1], single[1])


def test_strided_and_broadcast_layouts_equal_contiguous():
    labels, logits = (a.reshape(300, 8) for a in random_inputs(2400, np.float64))
    pos_weight = np.linspace(1, 3, 4)
    weight = np.linspace(0, 1, 300)[:, None]

    strided = weighted_cross_entropy_with_logits_value_and_grad(
        labels[:, ::2], logits[:, ::2], pos_weight, weight=weight, reduction="sum"
    )
    contiguous = weighted_cross_entropy_with_logits_value_and_grad(
        np.ascontiguousarray(labels[:, ::2]),
        np.ascontiguousarray(logits[:, ::2]),
        np.broadcast_to(pos_weight, (300, 4)).copy(),
        weight=np.broadcast_to(weight, (300, 4)).copy(),
        reduction="sum",
    )

    assert strided[0] == contiguous[0]
    np.testing.assert_array_equal(strided[1], contiguous[1])


@pytest.mark.parametrize(
    "pos_weight", [2.0, np.linspace(1, 2, 100)], ids=["scalar", "per-class"]
)
def test_reduction_allocates_no_array_of_the_input_size(pos_weight):
    # 8 MB of float64 logits. The reduced call may allocate small buffers: a
    # per-class pos_weight is copied to contiguous pieces of 16384 elements
    # (128 kB), one or two per thread at a time; nothing of an input's size.
    labels, logits = (a.reshape(10_000, 100) for a in random_inputs(10**6, np.float64))
    weighted_cross_entropy_with_logits(labels, logits, pos_weight, reduction="mean")

    tracemalloc.start()
    try:
        weighted_cross_entropy_with_logits(labels, logits, pos_weight, reduction="mean")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < logits.nbytes / 10


def test_masked_elements_are_left_out_of_a_mean():
    labels = np.ma.array([1.0, 0.0, 1.0, 0.0], mask=[False, True, False, False])
    logits = np.array([0.5, 40.0, -2.0, 2.0])

    mean = weighted_cross_entropy_with_logits(labels, logits, 2.0, reduction="mean")
    value, grad = weighted_cross_entropy_with_logits_value_and_grad(labels, logits, 2.0)

    kept = np.array([0, 2, 3])
    expected = weighted_cross_entropy_with_logits(
        labels.data[kept], logits[kept], 2.0, reduction="mean"
    )
    assert mean == expected and value == expected
    assert grad.mask.tolist() == [False, True, False, False]


def test_inputs_are_not_modified():
    labels, logits = random_inputs(100, np.float32)
    weight = np.linspace(0, 1, 100, dtype=np.float32)
    copies = [a.copy() for a in (labels, logits, weight)]

    weighted_cross_entropy_with_logits_value_and_grad(
        labels, logits, 2.0, weight=weight
    )
    weighted_cross_entropy_with_logits(labels, logits, 2.0, weight=weight)

    for original, copy in zip((labels, logits, weight), copies, strict=True):
        np.testing.assert_array_equal(original, copy)


def test_out_receives_a_reduced_loss_as_a_0d_array():
    labels, logits = random_inputs(50, np.float64)
    out = np.empty(())

    returned = weighted_cross_entropy_with_logits(
        labels, logits, 2.0, reduction="sum", out=out
    )

    assert returned is out
    assert out == weighted_cross_entropy_with_logits(
        labels, logits, 2.0, reduction="sum"
    )


def test_out_of_elementwise_shape_is_refused_for_a_reduced_loss():
    labels, logits = random_inputs(50, np.float64)
    with pytest.raises(ValueError, match=r"out must have the reduced shape \(\)"):
        weighted_cross_entropy_with_logits(
            labels, logits, 2.0, reduction="mean", out=np.empty(50)
        )


def test_weighted_grad_written_into_out_that_is_the_logits():
    labels, logits = random_inputs(64, np.float64)
    weight = np.linspace(0, 2, 64)
    expected = weighted_cross_entropy_with_logits_grad(
        labels, logits, 2.0, weight=weight
    )

    weighted_cross_entropy_with_logits_grad(
        labels, logits, 2.0, weight=weight, out=logits
    )

    np.testing.assert_array_equal(logits, expected)


@pytest.mark.parametrize("reduction", ["avg", "Mean", None, 1])
def test_unknown_reduction_is_refused(reduction):
    with pytest.raises(ValueError, match=r"reduction must be 'none', 'sum' or"):
        weighted_cross_entropy_with_logits([1.0], [0.0], 1.0, reduction=reduction)
    with pytest.raises(ValueError, match=r"reduction must be"):
        weighted_cross_entropy_with_logits_value_and_grad(
            [1.0], [0.0], 1.0, reduction=reduction
        )


def test_weight_of_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"weight must be a scalar or broadcast"):
        weighted_cross_entropy_with_logits(
            np.zeros((4, 3)), np.zeros((4, 3)), 1.0, weight=np.ones(4)
        )


def test_weight_of_non_real_dtype_is_refused():
    with pytest.raises(TypeError, match=r"weight must have a real dtype"):
        weighted_cross_entropy_with_logits([1.0], [0.0], 1.0, weight=[1j])


def test_weight_beyond_the_dtype_range_is_refused():
    with pytest.raises(ValueError, match=r"weight has values beyond the range"):
        weighted_cross_entropy_with_logits(
            np.float32([1.0]), np.float32([0.0]), 1.0, weight=[1e40]
        )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("shape", [(1,), (999,), (30, 7)])
@pytest.mark.parametrize("weighting", ["none", "scalar", "array"])
def test_quick_fused_path_equals_general_path(dtype, reduction, shape, weighting):
    # A Python pos_weight (and a weight that is None, a scalar or an array
    # like the logits) takes _dispatch.run_fused_quick; a 0-d array
    # pos_weight takes the general path.
    labels, logits = (a.reshape(shape) for a in random_inputs(np.prod(shape), dtype))
    weight = {
        "none": None,
        "scalar": 0.75,
        "array": np.linspace(0, 2, np.prod(shape), dtype=dtype).reshape(shape),
    }[weighting]
    assert (
        _dispatch.run_fused_quick(labels, logits, 2.5, weight, reduction, True, True)
        is not None
    )

    quick = weighted_cross_entropy_with_logits_value_and_grad(
        labels, logits, 2.5, weight=weight, reduction=reduction
    )
    general = weighted_cross_entropy_with_logits_value_and_grad(
        labels, logits, np.array(2.5, dtype), weight=weight, reduction=reduction
    )

    np.testing.assert_array_equal(quick[0], general[0])
    np.testing.assert_array_equal(quick[1], general[1])
    assert type(quick[0]) is type(general[0])
