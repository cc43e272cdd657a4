"""xarray: a DataArray in, a DataArray out with the logits' dims and coordinates."""

import numpy as np
import pytest

xr = pytest.importorskip("xarray")

from wce_numba import (  # noqa: E402
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_grad,
    weighted_cross_entropy_with_logits_value_and_grad,
)

CLASSES = ["cat", "dog", "owl"]


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (5, 3))
    labels = (rng.random((5, 3)) < 0.4).astype(np.float64)
    coords = {"sample": np.arange(10, 15), "label": CLASSES}
    return (
        xr.DataArray(labels, dims=("sample", "label"), coords=coords),
        xr.DataArray(logits, dims=("sample", "label"), coords=coords),
    )


@pytest.mark.parametrize(
    "function",
    [weighted_cross_entropy_with_logits, weighted_cross_entropy_with_logits_grad],
)
def test_dataarray_result_keeps_dims_and_coordinates(function):
    labels, logits = _arrays()
    pos_weight = xr.DataArray([1.0, 2.0, 8.0], dims="label", coords={"label": CLASSES})

    # Labels stored transposed: matched to the logits by dim name.
    result = function(labels.transpose(), logits, pos_weight)

    assert isinstance(result, xr.DataArray)
    assert result.dims == logits.dims
    assert result.coords.to_dataset().identical(logits.coords.to_dataset())
    expected = function(labels.values, logits.values, pos_weight.values)
    np.testing.assert_array_equal(result.values, expected)


def test_pos_weight_follows_the_dim_name_not_the_axis_position():
    labels, logits = _arrays()
    # A pos_weight per sample (5) would not broadcast on NumPy's rules
    # against (5, 3); by name it is unambiguous.
    per_sample = xr.DataArray(np.arange(1.0, 6.0), dims="sample")

    result = weighted_cross_entropy_with_logits(labels, logits, per_sample)

    expected = weighted_cross_entropy_with_logits(
        labels.values, logits.values, np.arange(1.0, 6.0)[:, None]
    )
    np.testing.assert_array_equal(result.values, expected)


def test_numpy_labels_and_scalar_pos_weight_with_dataarray_logits():
    labels, logits = _arrays()

    result = weighted_cross_entropy_with_logits(labels.values, logits, 2.0)

    assert result.dims == logits.dims
    np.testing.assert_array_equal(
        result.values,
        weighted_cross_entropy_with_logits(labels.values, logits.values, 2.0),
    )


def test_dask_backed_dataarray_stays_lazy():
    pytest.importorskip("dask")
    labels, logits = _arrays()

    result = weighted_cross_entropy_with_logits(
        labels.chunk({"sample": 2}), logits.chunk({"sample": 3}), 2.0
    )

    assert type(result.data).__module__.startswith("dask")
    np.testing.assert_array_equal(
        result.values,
        weighted_cross_entropy_with_logits(labels.values, logits.values, 2.0),
    )


def test_mismatched_coordinates_are_an_error_not_a_silent_join():
    labels, logits = _arrays()
    shifted = labels.assign_coords(sample=np.arange(11, 16))

    with pytest.raises(ValueError, match="exact"):
        weighted_cross_entropy_with_logits(shifted, logits, 2.0)


def test_labels_with_other_dims_are_refused():
    labels, logits = _arrays()

    with pytest.raises(ValueError, match="labels and logits must have the same dims"):
        weighted_cross_entropy_with_logits(labels.isel(label=0), logits, 2.0)


def test_weighted_mean_and_value_and_grad_with_dataarrays():
    labels, logits = _arrays()
    per_sample = xr.DataArray(np.linspace(0.5, 2.0, 5), dims="sample")

    mean = weighted_cross_entropy_with_logits(
        labels, logits, 2.0, weight=per_sample, reduction="mean"
    )
    value, grad = weighted_cross_entropy_with_logits_value_and_grad(
        labels, logits, 2.0, weight=per_sample, reduction="sum"
    )

    weight = per_sample.values[:, None]
    assert isinstance(mean, xr.DataArray) and mean.dims == ()
    assert float(mean) == weighted_cross_entropy_with_logits(
        labels.values, logits.values, 2.0, weight=weight, reduction="mean"
    )
    expected_value, expected_grad = weighted_cross_entropy_with_logits_value_and_grad(
        labels.values, logits.values, 2.0, weight=weight, reduction="sum"
    )
    assert float(value) == expected_value
    assert grad.dims == logits.dims and grad.coords["label"].values.tolist() == CLASSES
    np.testing.assert_array_equal(grad.values, expected_grad)


def test_a_dataset_is_refused_with_a_message_naming_the_argument():
    labels, logits = _arrays()

    with pytest.raises(TypeError, match="logits must be an xarray DataArray.*Dataset"):
        weighted_cross_entropy_with_logits(labels, logits.to_dataset(name="x"), 2.0)


def test_a_dataarray_weight_alone_has_nothing_to_broadcast_against():
    labels, logits = _arrays()
    pos_weight = xr.DataArray([1.0, 2.0, 8.0], dims="label")

    with pytest.raises(TypeError, match="needs labels or logits as DataArrays"):
        weighted_cross_entropy_with_logits(labels.values, logits.values, pos_weight)


def test_an_argument_with_a_dim_the_logits_lack_is_refused():
    logits = xr.DataArray([[2.0, -1.0], [0.5, 3.0]], dims=("sample", "label"))
    labels = xr.zeros_like(logits)
    extra = xr.DataArray([1.0, 4.0, 8.0], dims="other")

    with pytest.raises(ValueError, match=r"pos_weight must broadcast to the logits"):
        weighted_cross_entropy_with_logits(labels, logits, extra)
    with pytest.raises(ValueError, match=r"weight must broadcast to the logits"):
        weighted_cross_entropy_with_logits(labels, logits, 2.0, weight=extra)
