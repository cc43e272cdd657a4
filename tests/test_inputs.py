"""Unusual inputs a NumPy user passes: masked arrays, odd types, odd values."""

import warnings

import numpy as np
import pytest

from wce_numba import (
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_grad,
)

FUNCTIONS = [
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_grad,
]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_masked_input_gives_a_masked_result_ignoring_hidden_values(function):
    labels = np.ma.array([1.0, 0.0, 1.0], mask=[0, 1, 0])
    logits = np.ma.array([1.0, 1e308, -2.0], mask=[0, 1, 0])
    pos_weight = np.ma.array([2.0, 2.0, 2.0], mask=[0, 0, 1])

    result = function(labels, logits, pos_weight)

    assert isinstance(result, np.ma.MaskedArray)
    np.testing.assert_array_equal(np.ma.getmaskarray(result), [False, True, True])
    assert result[0] == function(1.0, 1.0, 2.0)


def test_masked_input_with_out_raises():
    with pytest.raises(TypeError, match="out= is not supported with masked arrays"):
        weighted_cross_entropy_with_logits(
            np.ma.array([1.0]), [0.0], 1.0, out=np.empty(1)
        )


@pytest.mark.parametrize("function", FUNCTIONS)
def test_positional_out_is_caught_by_the_name_check(function):
    # NumPy's ufuncs take out positionally; here the fourth positional
    # argument is TensorFlow's name, so an array there must not be ignored.
    with pytest.raises(TypeError, match="name must be a str or None, got ndarray"):
        function([1.0], [0.0], 1.0, np.zeros(1))


def test_name_is_accepted_and_ignored():
    assert weighted_cross_entropy_with_logits(1.0, 0.0, 2.0, name="loss") == (
        weighted_cross_entropy_with_logits(1.0, 0.0, 2.0)
    )


@pytest.mark.parametrize("argument", ["labels", "pos_weight"])
def test_finite_values_overflowing_the_logits_dtype_raise(argument):
    # 1e40 is inf in float32, and inf * 0 = NaN where the loss is finite.
    values = {"labels": [0.0], "logits": np.float32([1.0]), "pos_weight": 1.0}
    values[argument] = np.array([1e40])

    with pytest.raises(ValueError, match=rf"{argument} has values beyond.*float32"):
        weighted_cross_entropy_with_logits(**values)


def test_infinite_pos_weight_is_not_an_overflow_error():
    # An infinite input is a value, not a failed cast: the formula decides.
    result = weighted_cross_entropy_with_logits(
        np.float32([1.0]), np.float32([-1.0]), np.array([np.inf])
    )
    assert result[0] == np.inf


@pytest.mark.parametrize("argument", ["labels", "logits", "pos_weight"])
def test_long_double_input_raises_type_error_naming_the_argument(argument):
    values = {"labels": np.ones(2), "logits": np.ones(2), "pos_weight": 1.0}
    values[argument] = np.ones(2, dtype=np.longdouble)
    if np.dtype(np.longdouble) == np.dtype(np.float64):
        pytest.skip("long double is float64 on this platform")

    with pytest.raises(TypeError, match=rf"{argument} must be float16, float32"):
        weighted_cross_entropy_with_logits(**values)


def test_ragged_nested_list_raises_value_error_naming_the_argument():
    ragged = [[1.0, 2.0], [3.0]]
    with pytest.raises(ValueError, match="logits is not a rectangular array"):
        weighted_cross_entropy_with_logits([1.0, 2.0], ragged, 1.0)


@pytest.mark.parametrize(
    ("value", "described"),
    [(None, "NoneType"), (2**70, "a Python int outside the int64 range")],
)
def test_object_input_error_says_what_came(value, described):
    with pytest.raises(TypeError, match=f"labels must have a real dtype.*{described}"):
        weighted_cross_entropy_with_logits(value, 1.0, 1.0)


def test_byte_swapped_out_receives_the_result():
    out = np.zeros(3, dtype=">f8")

    result = weighted_cross_entropy_with_logits(
        [1.0, 0.0, 1.0], [1.0, 2.0, 3.0], 2.0, out=out
    )

    assert result is out
    np.testing.assert_array_equal(
        out, weighted_cross_entropy_with_logits([1.0, 0.0, 1.0], [1.0, 2.0, 3.0], 2.0)
    )


@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_warning_for_finite_results_with_discarded_overflows(function):
    # z = 0 switches the q z |x| term off; forming q |x| = 1e39 overflows in
    # float32 but is discarded, and must not surface as a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = function(np.float32(0), np.float32(-1e35), np.float32(1e4))
    assert np.isfinite(result)


@pytest.mark.parametrize("shift", [1, -1])
@pytest.mark.parametrize("size", [5, 300_001])
def test_out_partly_overlapping_the_logits_gets_the_ufunc_result(shift, size):
    # NumPy's ufuncs copy operands that partly overlap out; a loop writing in
    # place would feed each result into the next element's logit (and, in
    # blocks on several threads, into another block's inputs).
    buffer = np.linspace(-3.0, 3.0, size + 1)
    logits = buffer[:-1] if shift == 1 else buffer[1:]
    out = buffer[1:] if shift == 1 else buffer[:-1]
    labels = np.zeros(size)
    expected = weighted_cross_entropy_with_logits(labels, logits.copy(), 1.0)

    result = weighted_cross_entropy_with_logits(labels, logits, 1.0, out=out)

    assert result is out
    np.testing.assert_array_equal(out, expected)
