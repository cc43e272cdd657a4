"""Inputs from public bug reports against peer libraries, one test per report.

Each expected value is the exact loss rounded to the dtype. The accuracy
contract allows 2 ULP in float64 and 3 ULP in float32; 0, infinities and NaN
must come out exactly.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from wce_numba import weighted_cross_entropy_with_logits as wce

# The accuracy contract, in ULPs of the result's dtype. float16 is computed in
# float32 (within 3 float32 ULP, a tiny fraction of a float16 ULP) and rounded
# once (at most half a float16 ULP), which stays within 1 float16 ULP.
MAX_ULP = {
    np.dtype(np.float16): 1,
    np.dtype(np.float32): 3,
    np.dtype(np.float64): 2,
}


def assert_loss(result, expected, dtype):
    """``result`` has ``dtype`` and matches ``expected`` rounded to it.

    Finite non-zero values may differ by the contract's ULPs; 0, infinities
    and NaN must match exactly.
    """
    dtype = np.dtype(dtype)
    result = np.asarray(result)
    expected = np.asarray(expected, dtype=np.float64).astype(dtype)
    assert result.dtype == dtype
    assert result.shape == expected.shape

    exact = ~np.isfinite(expected) | (expected == 0)
    np.testing.assert_array_equal(result[exact], expected[exact])
    ulps = np.abs(result[~exact].astype(np.float64) - expected[~exact]) / np.spacing(
        np.abs(expected[~exact])
    )
    assert np.all(ulps <= MAX_ULP[dtype]), (result, expected, ulps)


def cast(dtype, *values):
    return tuple(np.asarray(v, dtype=dtype) for v in values)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("labels", "logits", "pos_weight", "expected"),
    [
        # Infinite logits: a term whose coefficient is 0 contributes 0.
        ([1, 0.9], [np.inf, np.inf], 2, [0, np.inf]),
        (1, np.inf, 2, 0),
        (0, -np.inf, 2, 0),
        (0.5, np.inf, 2, np.inf),
        (1, -np.inf, 0, 0),
        # NaN in any argument stays NaN, even where its coefficient is 0.
        ([0, 0.5, 1], [np.nan] * 3, 2, [np.nan] * 3),
        (1, np.nan, 0, np.nan),
        (0, np.nan, 2, np.nan),
        ([np.nan] * 3, [-3, 0, np.inf], 2, [np.nan] * 3),
        (np.nan, np.inf, 0, np.nan),
        ([0, 1, 1], [1, 1, np.inf], np.nan, [np.nan] * 3),
    ],
)
def test_infinite_logits_give_the_limit_and_nan_propagates(
    dtype, labels, logits, pos_weight, expected
):
    result = wce(*cast(dtype, labels, logits, pos_weight))

    assert_loss(result, expected, dtype)


@pytest.mark.parametrize(
    ("labels", "logits", "pos_weight", "expected"),
    [
        ([0, 1], [0, -120], [1, 1], [0.6931472, 120.0]),
        (1, -1000, 1, 1000.0),
    ],
)
def test_large_negative_logits_do_not_overflow_with_pos_weight_array(
    labels, logits, pos_weight, expected
):
    result = wce(*cast(np.float32, labels, logits, pos_weight))

    assert_loss(result, expected, np.float32)


@pytest.mark.parametrize(
    ("labels", "logits", "pos_weight", "expected"),
    [
        # pos_weight scales the positive term.
        (1, -14.913008, 3, 44.739025),
        # pos_weight = 1 gives plain sigmoid cross entropy.
        ([0, 1, 0.3], [-3, 0, 2.5], 1, [0.048587352, 0.6931472, 1.8288897]),
    ],
)
def test_pos_weight_scales_the_positive_term(labels, logits, pos_weight, expected):
    result = wce(*cast(np.float32, labels, logits, pos_weight))

    assert_loss(result, expected, np.float32)


BROADCAST_LABELS = [[1, 1, 0], [1, 0, 1]]
BROADCAST_LOGITS = [[-1, 0, 2], [0.5, -0.5, 3]]


@pytest.mark.parametrize(
    ("pos_weight", "expected"),
    [
        (
            [1, 2, 3],
            [[1.3132616, 1.3862944, 2.126928], [0.474077, 0.474077, 0.14576206]],
        ),
        (
            [[1, 2, 3], [4, 5, 6]],
            [[1.3132616, 1.3862944, 2.126928], [1.896308, 0.474077, 0.29152411]],
        ),
    ],
)
def test_pos_weight_broadcasts_per_class(pos_weight, expected):
    result = wce(*cast(np.float32, BROADCAST_LABELS, BROADCAST_LOGITS, pos_weight))

    assert_loss(result, expected, np.float32)


@pytest.mark.parametrize("pos_weight_shape", [(2,), (1, 2, 3)])
def test_pos_weight_not_broadcasting_to_logits_is_rejected(pos_weight_shape):
    labels, logits = cast(np.float32, BROADCAST_LABELS, BROADCAST_LOGITS)
    pos_weight = np.ones(pos_weight_shape, dtype=np.float32)

    shape = re.escape(str(pos_weight_shape))
    with pytest.raises(ValueError, match=rf"pos_weight.*\(2, 3\).*{shape}"):
        wce(labels, logits, pos_weight)


@pytest.mark.parametrize(
    ("dtype", "logits", "expected"),
    [(np.float32, 20, 2.0611537e-09), (np.float64, 40, 4.248354255291589e-18)],
)
def test_small_losses_do_not_flush_to_zero(dtype, logits, expected):
    result = wce(*cast(dtype, 1, logits, 1))

    assert result != 0
    assert_loss(result, expected, dtype)


@pytest.mark.parametrize(
    ("labels", "logits", "pos_weight", "expected"),
    [
        (
            np.array([0, 1], dtype=np.int32),
            np.array([0.5, -0.5], dtype=np.float32),
            2.0,
            [0.974077, 1.948154],
        ),
        (
            np.array([1, 0, 0.25], dtype=np.float32),
            np.array([0.1, -0.1, 3.0], dtype=np.float32),
            np.float64(3.0),
            [1.93319, 0.64439666, 2.322881],
        ),
    ],
)
def test_float32_logits_keep_float32_whatever_the_other_dtypes(
    labels, logits, pos_weight, expected
):
    result = wce(labels, logits, pos_weight)

    assert_loss(result, expected, np.float32)


def test_float16_is_computed_in_float32_and_rounded_once():
    result = wce(*cast(np.float16, [0, 1], [-6, 12], 1))

    assert_loss(result, [0.002476, 6.14e-06], np.float16)
    # Step by step in float16 gives 0.00390625 and 0.0.
    assert result[0] != np.float16(0.00390625)
    assert result[1] != 0


@pytest.mark.parametrize(
    ("labels_shape", "logits_shape"), [((3,), (3, 1)), ((0,), (1,))]
)
def test_labels_do_not_broadcast_against_logits(labels_shape, logits_shape):
    labels = np.zeros(labels_shape, dtype=np.float32)
    logits = np.zeros(logits_shape, dtype=np.float32)

    pattern = (
        rf"labels.*logits.*{re.escape(str(labels_shape))}"
        rf".*{re.escape(str(logits_shape))}"
    )
    with pytest.raises(ValueError, match=pattern):
        wce(labels, logits, 1.0)


def test_keyword_arguments_give_the_positional_result():
    labels, logits, pos_weight = cast(np.float32, 1, 3, 2)

    by_keyword = wce(labels=labels, logits=logits, pos_weight=pos_weight)

    assert_loss(by_keyword, 0.097174704, np.float32)
    assert by_keyword == wce(labels, logits, pos_weight)


def test_targets_keyword_is_rejected():
    with pytest.raises(TypeError, match="targets"):
        wce(targets=np.float32(1), logits=np.float32(3), pos_weight=2.0)


@pytest.mark.parametrize(
    ("shape", "pos_weight"), [((0,), np.float32(2)), ((0, 3), np.ones(3, np.float32))]
)
def test_zero_size_arrays_give_zero_size_results(shape, pos_weight):
    labels = np.zeros(shape, dtype=np.float32)
    logits = np.zeros(shape, dtype=np.float32)

    result = wce(labels, logits, pos_weight)

    assert result.shape == shape
    assert result.dtype == np.float32


def test_all_scalar_call_gives_a_0d_result():
    result = wce(1.0, 0.0, 2.0)

    assert np.ndim(result) == 0
    assert_loss(result, 1.3862943611198906, np.float64)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_values_under_another_arguments_mask_are_never_used(reduction):
    # A masked label hid a NaN logit at the same place; the NaN reached the
    # weighted sum as 0 * NaN (found by a review of the reductions).
    labels = np.ma.array([1.0, 0.0], mask=[False, True])
    expected = wce([1.0], [2.0], 2.0, reduction=reduction)
    if reduction == "mean":
        expected = wce([1.0], [2.0], 2.0, reduction="sum")  # one unmasked element

    for logits in ([2.0, np.nan], [2.0, np.inf], [2.0, -np.inf]):
        assert wce(labels, logits, 2.0, reduction=reduction) == expected
    masked_weight = np.ma.array([1.0, 1.0], mask=[False, True])
    assert (
        wce([1.0, 0.0], [2.0, np.nan], 2.0, weight=masked_weight, reduction=reduction)
        == expected
    )


def test_a_masked_value_beyond_the_dtype_range_is_not_refused():
    labels = np.ma.array([1e40, 1.0], mask=[True, False])

    result = wce(labels, np.float32([1.0, 2.0]), 2.0)

    assert result.mask.tolist() == [True, False]
    assert result[1] == wce(np.float32([1.0]), np.float32([2.0]), 2.0)[0]


def test_overflowing_reduced_and_float16_results_are_inf_without_a_warning():
    # pytest turns warnings into errors here: the conversions must not warn.
    ones = np.ones(2, np.float32)
    total = wce(ones, 0 * ones, 1.0, weight=np.float32(3e38), reduction="sum")
    half = wce([1.0], np.float16([-2.0]), 1e5)

    assert total == np.inf and total.dtype == np.float32
    assert half[0] == np.inf and half.dtype == np.float16


def test_overflow_message_names_the_compute_dtype_for_float16_logits():
    with pytest.raises(
        ValueError,
        match=r"pos_weight has values beyond the range of float32, the dtype the "
        r"logits are computed in",
    ):
        wce([1.0], np.float16([-2.0]), 1e40)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_matrix_out_is_refused_naming_out():
    out = np.asmatrix(np.empty((2, 2)))
    with pytest.raises(TypeError, match=r"out must be a numpy.ndarray, got matrix"):
        wce(np.ones((2, 2)), np.ones((2, 2)), 2.0, out=out)
