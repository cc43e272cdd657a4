"""Dask arrays: lazy results, block alignment, equality with the NumPy path."""

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from wce_numba import (  # noqa: E402
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_grad,
    weighted_cross_entropy_with_logits_value_and_grad,
)

FUNCTIONS = [
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_grad,
]


def _inputs(dtype, shape=(90, 4), seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, shape).astype(dtype)
    labels = (rng.random(shape) < 0.3).astype(dtype)
    pos_weight = np.array([0.5, 1.0, 2.0, 8.0], dtype=dtype)
    return labels, logits, pos_weight


def _refuse_to_compute(*args, **kwargs):
    raise AssertionError("a graph was computed")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_dask_result_is_lazy_and_equals_the_numpy_result(function, dtype):
    labels, logits, pos_weight = _inputs(dtype)
    lazy_labels = da.from_array(labels, chunks=(20, 3))  # chunked unlike the logits
    lazy_logits = da.from_array(logits, chunks=(30, 2))

    with dask.config.set(scheduler=_refuse_to_compute):
        result = function(lazy_labels, lazy_logits, pos_weight)

    assert isinstance(result, da.Array)
    assert result.chunks == lazy_logits.chunks and result.dtype == dtype
    # Each block is computed by the same kernels as the whole: bit for bit.
    computed = result.compute(scheduler="threads")
    np.testing.assert_array_equal(computed, function(labels, logits, pos_weight))


@pytest.mark.parametrize(
    "pos_weight",
    [
        pytest.param(3.0, id="python-scalar"),
        pytest.param(np.array([0.5, 1.0, 2.0, 8.0]), id="numpy-per-class"),
        pytest.param(np.array([[0.5, 1.0, 2.0, 8.0]]), id="numpy-1-by-C"),
        pytest.param(
            da.from_array(np.array([0.5, 1.0, 2.0, 8.0]), chunks=3), id="dask"
        ),
        pytest.param(da.from_array(np.float64(2.0)), id="dask-0-d"),
    ],
)
def test_broadcast_pos_weight_is_chunked_to_meet_the_logits(pos_weight):
    labels, logits, _ = _inputs(np.float64)

    result = weighted_cross_entropy_with_logits(
        labels, da.from_array(logits, chunks=(40, 3)), pos_weight
    )

    expected = weighted_cross_entropy_with_logits(
        labels, logits, np.asarray(pos_weight)
    )
    np.testing.assert_array_equal(result.compute(scheduler="threads"), expected)


def test_numpy_logits_take_the_chunks_of_dask_labels():
    labels, logits, pos_weight = _inputs(np.float32)
    lazy_labels = da.from_array(labels, chunks=(45, 4))

    result = weighted_cross_entropy_with_logits(lazy_labels, logits, pos_weight)

    assert result.chunks == lazy_labels.chunks
    np.testing.assert_array_equal(
        result.compute(scheduler="sync"),
        weighted_cross_entropy_with_logits(labels, logits, pos_weight),
    )


def test_float16_and_integer_logits_keep_the_numpy_result_dtype():
    labels, logits, _ = _inputs(np.float64)

    half = weighted_cross_entropy_with_logits(
        labels, da.from_array(logits.astype(np.float16), chunks=30), 2.0
    )
    integer = weighted_cross_entropy_with_logits(
        labels, da.from_array(logits.astype(np.int64), chunks=30), 2.0
    )

    assert half.dtype == np.float16 and half.compute().dtype == np.float16
    assert integer.dtype == np.float64 and integer.compute().dtype == np.float64


def test_shapes_and_dtypes_are_checked_before_any_graph_runs():
    lazy = da.zeros((10, 4), chunks=5)

    with dask.config.set(scheduler=_refuse_to_compute):
        with pytest.raises(ValueError, match=r"labels shape \(10, 3\).*\(10, 4\)"):
            weighted_cross_entropy_with_logits(da.zeros((10, 3)), lazy, 1.0)
        with pytest.raises(ValueError, match=r"pos_weight must be a scalar or"):
            weighted_cross_entropy_with_logits(lazy, lazy, np.ones(3))
        with pytest.raises(TypeError, match="logits must have a real dtype.*complex"):
            weighted_cross_entropy_with_logits(lazy, lazy.astype(complex), 1.0)


def test_out_is_refused_with_dask_arrays():
    lazy = da.zeros(4, chunks=2)

    with pytest.raises(TypeError, match="out= is not supported with Dask"):
        weighted_cross_entropy_with_logits(lazy, lazy, 1.0, out=np.empty(4))


def test_inputs_are_not_modified():
    labels, logits, pos_weight = _inputs(np.float64)
    copies = [a.copy() for a in (labels, logits, pos_weight)]

    weighted_cross_entropy_with_logits(
        da.from_array(labels, chunks=30), da.from_array(logits, chunks=30), pos_weight
    ).compute()

    for array, copy in zip((labels, logits, pos_weight), copies, strict=True):
        np.testing.assert_array_equal(array, copy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_reduction_is_lazy_and_equals_the_numpy_reduction(dtype, reduction):
    labels, logits, pos_weight = _inputs(dtype, shape=(300, 4))
    weight = np.random.default_rng(1).uniform(0.0, 2.0, (300, 1)).astype(dtype)
    lazy = {
        "labels": da.from_array(labels, chunks=(70, 3)),
        "logits": da.from_array(logits, chunks=(50, 2)),
        "weight": da.from_array(weight, chunks=(40, 1)),
    }

    with dask.config.set(scheduler=_refuse_to_compute):
        result = weighted_cross_entropy_with_logits(
            lazy["labels"],
            lazy["logits"],
            pos_weight,
            weight=lazy["weight"],
            reduction=reduction,
        )

    assert isinstance(result, da.Array) and result.shape == () and result.dtype == dtype
    expected = weighted_cross_entropy_with_logits(
        labels, logits, pos_weight, weight=weight, reduction=reduction
    )
    computed = result.compute(scheduler="threads")
    # Both add the same terms exactly and round once, except that each
    # block's exact sum is rounded to float64 first (24 blocks here): float32
    # results come out equal; a float64 one is within one rounding of each
    # positive partial and of the mean's division (2**-52 relative).
    if dtype == np.float32:
        assert computed == expected
    else:
        np.testing.assert_allclose(computed, expected, rtol=2**-52)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_value_and_grad_on_dask_equals_numpy(reduction):
    labels, logits, pos_weight = _inputs(np.float64, shape=(200, 4))
    weight = np.linspace(0.5, 1.5, 4)

    value, grad = weighted_cross_entropy_with_logits_value_and_grad(
        da.from_array(labels, chunks=(60, 4)),
        da.from_array(logits, chunks=(60, 4)),
        pos_weight,
        weight=weight,
        reduction=reduction,
    )

    expected_value, expected_grad = weighted_cross_entropy_with_logits_value_and_grad(
        labels, logits, pos_weight, weight=weight, reduction=reduction
    )
    computed_value, computed_grad = dask.compute(value, grad, scheduler="threads")
    # The gradient of a mean divides by the whole array's size, in each block.
    np.testing.assert_array_equal(computed_grad, expected_grad)
    np.testing.assert_allclose(computed_value, expected_value, rtol=2**-52)


def test_unknown_chunk_sizes_are_refused_with_a_hint():
    logits = da.from_array(np.linspace(-4, 4, 10), chunks=5)
    selected = logits[logits > 0]

    with pytest.raises(ValueError, match=r"unknown chunk sizes.*compute_chunk_sizes"):
        weighted_cross_entropy_with_logits(selected > 1, selected, 2.0)
