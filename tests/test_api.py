"""Public API: inputs, layouts, shapes, dtypes, errors, ``out=`` and dispatch."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reference import exact_grad, exact_loss, max_ulp_error, ulp_error

from wce_numba import (
    _dispatch,
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_grad,
)
from wce_numba._ufuncs import cpu_ufunc

PUBLIC = {
    "loss": weighted_cross_entropy_with_logits,
    "grad": weighted_cross_entropy_with_logits_grad,
}
EXACT = {"loss": exact_loss, "grad": exact_grad}
QUANTITIES = list(PUBLIC)
FLOAT_DTYPES = [np.float32, np.float64]

# The accuracy contract: within 2 ULP (float64) or 3 ULP (float32) of the exact
# value at the given inputs.
MAX_ULP = {np.dtype(np.float32): 3, np.dtype(np.float64): 2}

# An element count that takes the parallel ufunc, as rows x 100 columns.
LARGE_ROWS = _dispatch.PARALLEL_THRESHOLD // 100 + 1


def sample(shape, dtype, seed=0):
    """Labels (hard and soft), logits across both tails, and positive weights."""
    rng = np.random.default_rng(seed)
    labels = rng.choice([0.0, 1.0, 0.25, 0.5, 0.9], size=shape)
    logits = rng.uniform(-40.0, 40.0, size=shape)
    pos_weight = rng.uniform(0.0, 4.0, size=shape)
    return tuple(a.astype(dtype) for a in (labels, logits, pos_weight))


def assert_identical(actual, expected):
    """Same shape, dtype and bits (NaN and signed zeros included)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    assert actual.tobytes() == expected.tobytes()


# -- inputs: Python objects, 0-d, empty ---------------------------------------


@pytest.mark.parametrize("quantity", QUANTITIES)
def test_python_scalars_give_a_0d_float64_result(quantity):
    result = PUBLIC[quantity](1, 0.5, 2)

    assert np.ndim(result) == 0
    assert result.dtype == np.float64
    exact = EXACT[quantity](1.0, 0.5, 2.0)
    assert ulp_error(result, exact, np.float64) <= MAX_ULP[np.dtype(np.float64)]


@pytest.mark.parametrize("quantity", QUANTITIES)
def test_nested_lists_are_accepted(quantity):
    labels = [[1, 0, 0.5], [0, 1, 1]]
    logits = [[-2.0, 3.0, 0.0], [15.0, -15.0, 0.25]]
    pos_weight = [0.5, 2, 3.0]

    result = PUBLIC[quantity](labels, logits, pos_weight)

    assert result.shape == (2, 3)
    assert result.dtype == np.float64
    # float64 contract: 2 ULP.
    assert (
        max_ulp_error(PUBLIC[quantity], EXACT[quantity], labels, logits, pos_weight)
        <= 2
    )


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_0d_arrays_give_a_0d_result_of_their_dtype(quantity, dtype):
    labels, logits, pos_weight = (np.array(v, dtype=dtype) for v in (1.0, -3.0, 2.0))

    result = PUBLIC[quantity](labels, logits, pos_weight)

    assert np.ndim(result) == 0
    assert result.dtype == dtype
    exact = EXACT[quantity](labels, logits, pos_weight)
    assert ulp_error(result, exact, dtype) <= MAX_ULP[np.dtype(dtype)]


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    ("shape", "pos_weight_shape"),
    [((0,), ()), ((0,), (0,)), ((0, 3), (3,)), ((2, 0), (2, 1)), ((3, 0, 2), ())],
)
def test_empty_arrays_give_an_empty_result(quantity, dtype, shape, pos_weight_shape):
    labels = np.zeros(shape, dtype=dtype)
    logits = np.zeros(shape, dtype=dtype)
    pos_weight = np.ones(pos_weight_shape, dtype=dtype)

    result = PUBLIC[quantity](labels, logits, pos_weight)

    assert result.shape == shape
    assert result.dtype == dtype


# -- layouts -------------------------------------------------------------------


def strided(array):
    """A view with steps 2 and 3 holding the same values."""
    rows, cols = array.shape
    base = np.zeros((2 * rows, 3 * cols), dtype=array.dtype)
    base[::2, ::3] = array
    return base[::2, ::3]


def reversed_view(array):
    """A view with negative strides along both axes holding the same values."""
    return array[::-1, ::-1].copy()[::-1, ::-1]


def unaligned(array):
    """A copy whose data starts one byte past an aligned address."""
    raw = np.zeros(array.nbytes + 1, dtype=np.uint8)
    view = raw[1:].view(array.dtype).reshape(array.shape)
    view[...] = array
    assert not view.flags.aligned
    return view


def read_only(array):
    copy = array.copy()
    copy.flags.writeable = False
    return copy


LAYOUTS = {
    "strided": strided,
    "fortran": np.asfortranarray,
    "negative-strides": reversed_view,
    "unaligned": unaligned,
    "read-only": read_only,
}


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rows", [3, LARGE_ROWS], ids=["serial", "parallel"])
def test_any_layout_gives_the_result_of_its_contiguous_copy(
    quantity, dtype, layout, rows
):
    arrays = sample((rows, 100), dtype)
    views = [LAYOUTS[layout](a) for a in arrays]
    assert all(np.array_equal(v, a) for v, a in zip(views, arrays, strict=True))

    result = PUBLIC[quantity](*views)

    assert_identical(result, PUBLIC[quantity](*arrays))


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_strided_per_class_pos_weight_matches_contiguous(quantity, dtype):
    labels, logits, _ = sample((4, 5), dtype)
    pos_weight = np.arange(10, dtype=dtype)[::-2]

    result = PUBLIC[quantity](labels, logits, pos_weight)

    assert_identical(result, PUBLIC[quantity](labels, logits, pos_weight.copy()))


@pytest.mark.parametrize("swapped", ["labels", "logits", "pos_weight"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_non_native_byte_order_gives_the_native_result(swapped, dtype):
    arrays = dict(
        zip(("labels", "logits", "pos_weight"), sample((7,), dtype), strict=True)
    )
    native = weighted_cross_entropy_with_logits(**arrays)
    other_order = arrays[swapped].dtype.newbyteorder()
    arrays[swapped] = arrays[swapped].astype(other_order)

    result = weighted_cross_entropy_with_logits(**arrays)

    assert_identical(result, native)


# -- shapes --------------------------------------------------------------------


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize(
    ("labels_shape", "logits_shape"),
    [((3,), (3, 1)), ((0,), (1,)), ((2, 3), (3, 2)), ((), (1,)), ((1, 4), (4,))],
)
def test_labels_and_logits_of_different_shapes_raise(
    quantity, labels_shape, logits_shape
):
    labels = np.zeros(labels_shape)
    logits = np.zeros(logits_shape)

    pattern = (
        rf"labels.*logits.*same shape.*{re.escape(str(labels_shape))}"
        rf".*{re.escape(str(logits_shape))}"
    )
    with pytest.raises(ValueError, match=pattern):
        PUBLIC[quantity](labels, logits, 1.0)


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("pos_weight_shape", [(2,), (1, 2, 3), (4,), (3, 2), (2, 3, 1)])
def test_pos_weight_not_broadcasting_to_logits_raises(quantity, pos_weight_shape):
    labels, logits, _ = sample((2, 3), np.float64)
    pos_weight = np.ones(pos_weight_shape)

    pattern = (
        rf"pos_weight.*broadcast.*{re.escape(str((2, 3)))}"
        rf".*{re.escape(str(pos_weight_shape))}"
    )
    with pytest.raises(ValueError, match=pattern):
        PUBLIC[quantity](labels, logits, pos_weight)


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("pos_weight_shape", [(), (3,), (1, 3), (2, 1), (1, 1)])
def test_pos_weight_broadcasts_to_logits(quantity, dtype, pos_weight_shape):
    labels, logits, _ = sample((2, 3), dtype)
    pos_weight = np.arange(1, 1 + np.prod(pos_weight_shape, dtype=int), dtype=dtype)
    pos_weight = pos_weight.reshape(pos_weight_shape)

    result = PUBLIC[quantity](labels, logits, pos_weight)

    full = np.broadcast_to(pos_weight, (2, 3)).copy()
    assert_identical(result, PUBLIC[quantity](labels, logits, full))
    # Contract: 3 ULP in float32, 2 ULP in float64.
    error = max_ulp_error(PUBLIC[quantity], EXACT[quantity], labels, logits, full)
    assert error <= MAX_ULP[np.dtype(dtype)]


# -- dtypes --------------------------------------------------------------------

OTHER_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8, bool]


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    ("labels_dtype", "pos_weight_dtype"),
    list(zip(OTHER_DTYPES, OTHER_DTYPES[::-1], strict=True)),
)
def test_float_logits_decide_the_dtype_and_other_inputs_are_cast(
    quantity, dtype, labels_dtype, pos_weight_dtype
):
    labels = np.array([[0, 1, 1], [1, 0, 1]], dtype=labels_dtype)
    logits = np.array([[-2.5, 0.0, 3.0], [17.0, -0.5, -30.0]], dtype=dtype)
    pos_weight = np.array([1, 0, 3], dtype=pos_weight_dtype)

    result = PUBLIC[quantity](labels, logits, pos_weight)

    assert result.dtype == dtype
    expected = PUBLIC[quantity](labels.astype(dtype), logits, pos_weight.astype(dtype))
    assert_identical(result, expected)


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize(
    "logits_dtype", [bool, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64]
)
def test_integer_and_bool_logits_give_float64(quantity, logits_dtype):
    labels = np.array([0.0, 1.0, 0.5, 1.0])
    logits = np.array([0, 1, 1, 0], dtype=logits_dtype)

    result = PUBLIC[quantity](labels, logits, 2)

    assert result.dtype == np.float64
    assert_identical(result, PUBLIC[quantity](labels, logits.astype(np.float64), 2.0))


@pytest.mark.parametrize("quantity", QUANTITIES)
def test_float16_logits_are_computed_in_float32_and_rounded_once(quantity):
    labels = np.array([0, 1, 0.25, 1, 0], dtype=np.float16)
    logits = np.array([-6, 12, 3, -9.5, 0.125], dtype=np.float16)
    pos_weight = np.float16(1.5)

    result = PUBLIC[quantity](labels, logits, pos_weight)

    in_float32 = PUBLIC[quantity](
        labels.astype(np.float32), logits.astype(np.float32), np.float32(pos_weight)
    )
    assert_identical(result, in_float32.astype(np.float16))


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_float16_0d_logits_give_a_0d_float16_result(quantity, dtype):
    result = PUBLIC[quantity](dtype(1.0), np.float16(-2.0), dtype(3.0))

    assert np.ndim(result) == 0
    assert result.dtype == np.float16


NON_REAL = {
    "complex128": np.array([1 + 2j]),
    "complex64": np.array([1 + 0j], dtype=np.complex64),
    "python-complex": 1j,
    "object": np.array([1.0], dtype=object),
    "str": np.array(["1.0"]),
    "python-str": "1.0",
    "bytes": np.array([b"1"]),
    "timedelta": np.array([1], dtype="m8[s]"),
}


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("argument", ["labels", "logits", "pos_weight"])
@pytest.mark.parametrize("kind", NON_REAL)
def test_non_real_input_raises_type_error_naming_argument(quantity, argument, kind):
    bad = NON_REAL[kind]
    kwargs = {
        name: np.ones(np.shape(bad)) for name in ("labels", "logits", "pos_weight")
    }
    kwargs[argument] = bad

    dtype = re.escape(str(np.asarray(bad).dtype))
    with pytest.raises(TypeError, match=rf"{argument}.*real.*got dtype {dtype}"):
        PUBLIC[quantity](**kwargs)


@pytest.mark.skipif(
    np.dtype(np.longdouble) == np.dtype(np.float64),
    reason="longdouble is float64 on this platform",
)
@pytest.mark.parametrize("quantity", QUANTITIES)
def test_longdouble_logits_raise_type_error(quantity):
    logits = np.array([0.5], dtype=np.longdouble)

    dtype = re.escape(str(logits.dtype))
    with pytest.raises(TypeError, match=rf"logits.*float64.*got dtype {dtype}"):
        PUBLIC[quantity]([1.0], logits, 1.0)


# -- out= ----------------------------------------------------------------------


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("rows", [3, LARGE_ROWS], ids=["serial", "parallel"])
def test_out_receives_the_result_and_is_returned(quantity, dtype, rows):
    arrays = sample((rows, 100), dtype)
    out = np.full((rows, 100), -7, dtype=dtype)

    result = PUBLIC[quantity](*arrays, out=out)

    assert result is out
    assert_identical(out, PUBLIC[quantity](*arrays))


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_out_may_be_0d(quantity, dtype):
    out = np.zeros((), dtype=dtype)

    result = PUBLIC[quantity](dtype(1.0), dtype(-1.0), dtype(2.0), out=out)

    assert result is out
    assert_identical(out, PUBLIC[quantity](dtype(1.0), dtype(-1.0), dtype(2.0)))


def out_view(base, layout, shape):
    """A view of the middle of ``base`` with ``shape``, in the given layout.

    ``shape`` is (rows, 100) or (100,); ``base`` has shape (3 * rows, 300).
    """
    rows = base.shape[0] // 3
    middle = base[rows : 2 * rows]
    if layout == "strided":
        view = middle[:, 50:250:2]
    elif layout == "negative-strides":
        view = middle[::-1, 249:149:-1]
    elif layout == "fortran":
        view = middle.reshape(-1)[50 : 50 + 100 * rows].reshape(100, rows).T
    else:  # rows of a wider array: C-ordered, not contiguous
        view = middle[:, 100:200]
    return view if len(shape) == 2 else view[0]


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("layout", ["strided", "negative-strides", "fortran", "rows"])
@pytest.mark.parametrize(
    "shape",
    [(100,), (1, 100), (3, 100), (LARGE_ROWS, 100)],
    ids=["1d", "one-row", "serial", "parallel"],
)
def test_out_view_receives_the_result_and_nothing_else_is_written(
    quantity, dtype, layout, shape
):
    arrays = sample(shape, dtype)
    # The view sits inside a larger buffer whose other elements keep -7.
    rows = shape[0] if len(shape) == 2 else 1
    base = np.full((3 * rows, 300), -7, dtype=dtype)
    out = out_view(base, layout, shape)
    inside = np.zeros(base.shape, dtype=bool)
    out_view(inside, layout, shape)[...] = True
    assert out.shape == shape
    assert np.shares_memory(out, base)

    result = PUBLIC[quantity](*arrays, out=out)

    assert result is out
    assert_identical(out, PUBLIC[quantity](*arrays))
    assert np.all(base[~inside] == -7)


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("argument", [0, 1])
def test_out_may_be_labels_or_logits(quantity, argument):
    arrays = list(sample((3, 4), np.float64))
    expected = PUBLIC[quantity](*arrays)

    result = PUBLIC[quantity](*arrays, out=arrays[argument])

    assert result is arrays[argument]
    assert_identical(result, expected)


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("out_shape", [(2,), (1, 3), (), (3, 1)])
def test_out_of_the_wrong_shape_raises(quantity, out_shape):
    out = np.zeros(out_shape)

    pattern = rf"out.*{re.escape(str((3,)))}.*{re.escape(str(out_shape))}"
    with pytest.raises(ValueError, match=pattern):
        PUBLIC[quantity](np.zeros(3), np.zeros(3), 1.0, out=out)


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize(
    ("logits_dtype", "out_dtype", "expected"),
    [
        (np.float64, np.float32, "float64"),
        (np.float32, np.float64, "float32"),
        (np.float16, np.float32, "float16"),
        (np.float32, np.float16, "float32"),
        (np.int64, np.int64, "float64"),
    ],
)
def test_out_of_the_wrong_dtype_raises(quantity, logits_dtype, out_dtype, expected):
    logits = np.zeros(3, dtype=logits_dtype)
    out = np.zeros(3, dtype=out_dtype)

    got = np.dtype(out_dtype).name
    with pytest.raises(TypeError, match=rf"out.*{expected}.*got.*{got}"):
        PUBLIC[quantity](np.zeros(3), logits, 1.0, out=out)


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("out", [[0.0, 0.0, 0.0], (0.0, 0.0, 0.0), memoryview(b"")])
def test_out_that_is_not_an_ndarray_raises(quantity, out):
    got = type(out).__name__
    with pytest.raises(TypeError, match=rf"out.*numpy\.ndarray.*{got}"):
        PUBLIC[quantity](np.zeros(3), np.zeros(3), 1.0, out=out)


@pytest.mark.parametrize("quantity", QUANTITIES)
def test_read_only_out_raises(quantity):
    out = np.zeros(3)
    out.flags.writeable = False

    with pytest.raises(ValueError, match=r"out.*writeable.*read-only"):
        PUBLIC[quantity](np.zeros(3), np.zeros(3), 1.0, out=out)


@pytest.mark.parametrize("quantity", QUANTITIES)
def test_out_is_untouched_when_an_argument_is_rejected(quantity):
    out = np.full(3, -7.0)

    with pytest.raises(ValueError, match="pos_weight"):
        PUBLIC[quantity](np.zeros(3), np.zeros(3), np.ones(2), out=out)

    assert np.all(out == -7.0)


@pytest.mark.parametrize("quantity", QUANTITIES)
def test_out_is_keyword_only(quantity):
    # labels, logits, pos_weight and name, then an array where out would go.
    with pytest.raises(TypeError, match="positional"):
        PUBLIC[quantity](np.zeros(3), np.zeros(3), 1.0, None, np.zeros(3))


# -- inputs are never written --------------------------------------------------

INPUT_DTYPES = {
    "no-cast": (np.float64, np.float64, np.float64),
    "float32-no-cast": (np.float32, np.float32, np.float32),
    "cast-to-float32": (np.float64, np.float32, np.float64),
    "cast-from-int": (np.int32, np.float64, np.uint8),
    "float16": (np.float16, np.float16, np.float16),
    "bool-and-int-logits": (bool, np.int16, np.float32),
}


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("dtypes", INPUT_DTYPES)
@pytest.mark.parametrize("rows", [3, LARGE_ROWS], ids=["serial", "parallel"])
@pytest.mark.parametrize("with_out", [False, True], ids=["new", "out"])
def test_inputs_are_never_written(quantity, dtypes, rows, with_out):
    labels, logits, pos_weight = sample((rows, 100), np.float64)
    arrays = [
        (labels > 0.5).astype(d) if d is bool else (a * 3).astype(d)
        for a, d in zip((labels, logits, pos_weight), INPUT_DTYPES[dtypes], strict=True)
    ]
    before = [a.copy() for a in arrays]
    extra = {}
    if with_out:
        expected = PUBLIC[quantity](*arrays)
        extra["out"] = np.empty_like(expected)

    result = PUBLIC[quantity](*arrays, **extra)

    for array, copy in zip(arrays, before, strict=True):
        assert_identical(array, copy)
        assert not np.shares_memory(result, array)


# -- arguments by keyword ------------------------------------------------------


@pytest.mark.parametrize("name", ["my_loss", None, ""])
def test_name_is_accepted_and_ignored(name):
    arrays = sample((5,), np.float32)
    expected = weighted_cross_entropy_with_logits(*arrays)

    assert_identical(weighted_cross_entropy_with_logits(*arrays, name), expected)
    assert_identical(weighted_cross_entropy_with_logits(*arrays, name=name), expected)


@pytest.mark.parametrize("quantity", QUANTITIES)
def test_keywords_give_the_positional_result(quantity):
    labels, logits, pos_weight = sample((5,), np.float32)

    result = PUBLIC[quantity](pos_weight=pos_weight, logits=logits, labels=labels)

    assert_identical(result, PUBLIC[quantity](labels, logits, pos_weight))


@pytest.mark.parametrize("quantity", QUANTITIES)
def test_targets_keyword_raises_type_error(quantity):
    with pytest.raises(TypeError, match="targets"):
        PUBLIC[quantity](targets=[1.0], logits=[0.5], pos_weight=2.0)


# -- dispatch ------------------------------------------------------------------


@pytest.mark.parametrize("quantity", QUANTITIES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("per_class", [False, True], ids=["full", "per-class"])
def test_parallel_path_is_bit_identical_to_serial(
    quantity, dtype, per_class, monkeypatch
):
    labels, logits, pos_weight = sample((LARGE_ROWS, 100), dtype)
    if per_class:
        pos_weight = pos_weight[0]
    pos_weight_rows = np.broadcast_to(pos_weight, labels.shape)
    # Force the multi-core paths at this size: contiguous loops in blocks for
    # the full weight, ufunc blocks for the per-class one.
    pools = []
    block_pool = _dispatch._block_pool

    def spy():
        pools.append(True)
        return block_pool()

    monkeypatch.setattr(_dispatch, "_block_pool", spy)
    monkeypatch.setattr(_dispatch, "thread_count", lambda: 2)
    monkeypatch.setattr(_dispatch, "parallel_ufunc_is_safe", lambda: False)
    monkeypatch.setattr(_dispatch, "LOOP_THRESHOLD", {np.dtype(dtype): 0})

    result = PUBLIC[quantity](labels, logits, pos_weight)

    assert pools
    serial = cpu_ufunc(quantity, "cpu")(labels, logits, pos_weight)
    assert_identical(result, serial)
    # Rows of the same data, each below the threshold, give the same bits.
    rows = [
        PUBLIC[quantity](labels[i], logits[i], pos_weight_rows[i]) for i in range(10)
    ]
    assert_identical(result[:10], np.stack(rows))


@pytest.mark.parametrize("quantity", QUANTITIES)
def test_sizes_at_the_threshold_give_the_serial_result(quantity):
    size = _dispatch.PARALLEL_THRESHOLD
    labels, logits, pos_weight = sample((size + 1,), np.float64)

    for n in (size - 1, size, size + 1):
        result = PUBLIC[quantity](labels[:n], logits[:n], pos_weight[:n])
        serial = cpu_ufunc(quantity, "cpu")(labels[:n], logits[:n], pos_weight[:n])
        assert_identical(result, serial)


# -- property ------------------------------------------------------------------

REAL_DTYPES = [
    np.dtype(d)
    for d in (bool, np.int8, np.int32, np.int64, np.uint8, np.uint16)
    + (np.float16, np.float32, np.float64)
]


def elements(dtype, low, high):
    """Values in [low, high] representable in ``dtype``."""
    if dtype.kind == "b":
        return st.booleans()
    if dtype.kind in "iu":
        return st.integers(max(low, 0) if dtype.kind == "u" else low, high)
    return st.floats(low, high, width=8 * dtype.itemsize)


def expected_dtype(logits_dtype):
    if logits_dtype.kind == "f":
        return logits_dtype
    return np.dtype(np.float64)


@st.composite
def calls(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
    pos_weight_shape = draw(
        st.one_of(
            st.just(()),
            hnp.broadcastable_shapes(
                shape, min_dims=0, max_dims=len(shape), min_side=0, max_side=3
            ),
        )
    )
    labels_dtype, logits_dtype, pos_weight_dtype = (
        draw(st.sampled_from(REAL_DTYPES)) for _ in range(3)
    )
    labels = draw(
        hnp.arrays(labels_dtype, shape, elements=elements(labels_dtype, 0, 1))
    )
    logits = draw(
        hnp.arrays(logits_dtype, shape, elements=elements(logits_dtype, -20, 20))
    )
    pos_weight = draw(
        hnp.arrays(
            pos_weight_dtype,
            pos_weight_shape,
            elements=elements(pos_weight_dtype, 0, 10),
        )
    )
    return labels, logits, pos_weight


@settings(max_examples=60, deadline=None)
@given(call=calls(), quantity=st.sampled_from(QUANTITIES))
def test_result_has_the_logits_shape_and_the_dtype_they_decide(call, quantity):
    labels, logits, pos_weight = call
    # A pos_weight that would grow the result (shape (0,) against (0, 1)) is
    # rejected; every other call returns the logits' shape.
    if np.broadcast_shapes(pos_weight.shape, logits.shape) != logits.shape:
        with pytest.raises(ValueError, match="pos_weight"):
            PUBLIC[quantity](labels, logits, pos_weight)
        return

    result = PUBLIC[quantity](labels, logits, pos_weight)

    assert np.shape(result) == logits.shape
    assert result.dtype == expected_dtype(logits.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (1000,), (40, 25)])
@pytest.mark.parametrize("quantity", ["loss", "grad"])
def test_quick_path_for_small_contiguous_calls_equals_general_path(
    dtype, shape, quantity
):
    # A Python float pos_weight with contiguous arrays takes the quick path
    # (wce_numba._dispatch.run_quick); a 0-d array pos_weight does not.
    function = {
        "loss": weighted_cross_entropy_with_logits,
        "grad": weighted_cross_entropy_with_logits_grad,
    }[quantity]
    rng = np.random.default_rng(11)
    labels = rng.random(shape).astype(dtype)
    logits = (5 * rng.standard_normal(shape)).astype(dtype)
    assert _dispatch.run_quick(quantity, labels, logits, 2.5) is not None

    quick = function(labels, logits, 2.5)
    general = function(labels, logits, np.array(2.5, dtype=dtype))

    assert quick.dtype == dtype and quick.shape == shape
    np.testing.assert_array_equal(quick, general)

    numpy_scalar = function(labels, logits, np.float32(2.5))
    np.testing.assert_array_equal(numpy_scalar, general)

    out = np.empty(shape, dtype)
    assert _dispatch.run_quick(quantity, labels, logits, 2.5, out) is out
    np.testing.assert_array_equal(out, general)
    # out= that is an input takes the general path, which handles it.
    assert _dispatch.run_quick(quantity, labels, logits, 2.5, logits) is None


def test_quick_path_still_refuses_a_pos_weight_beyond_float32():
    labels = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="pos_weight has values beyond the range"):
        weighted_cross_entropy_with_logits(labels, labels, 1e40)


def test_quick_path_still_refuses_stream_for_host_arrays():
    labels = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="stream= applies only to CUDA arrays"):
        weighted_cross_entropy_with_logits(labels, labels, 2.0, stream=0)
