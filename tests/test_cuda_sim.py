"""The CUDA path in numba-cuda's simulator (``NUMBA_ENABLE_CUDASIM=1``).

The simulator runs ``cuda.jit`` kernels as Python, with no GPU and no driver.
It must be switched on before ``numba.cuda`` is first imported, so it runs in
its own process, which writes its results to a file for the tests below.

What it runs for real: ``_cuda.strided_kernel`` with the real scalar kernels
(broadcast ``pos_weight``, strided, Fortran-ordered and negatively strided
arrays, a strided ``out``), and ``_cuda.launch``'s choice of path, its views
its errors, and its casts: ``_cuda.cast_kernel`` converting inputs of every
real dtype (and float16 results) on the device, compared with the CPU's
public function. What it cannot run: ``numba.vectorize(target='cuda')`` ufuncs
(numba-cuda's simulator fails while building one). The ufunc is replaced at
that seam by a double that checks it is given only one-dimensional arrays
(numba-cuda would flatten anything else, through the host if it must) and
computes with the CPU ufunc: the math is never copied.

A second process calls the public functions with simulated CUDA arrays:
placement, the result's kind, streams, errors, and the bytes each call moves
between host and device, counted by spying on numba-cuda's transfer functions.
"""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_numerics import CANCELLATION_EPS, ULP_BOUND, grad_term_sizes

import wce_numba
from wce_numba import (
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_grad,
)

CPU = {
    "loss": weighted_cross_entropy_with_logits,
    "grad": weighted_cross_entropy_with_logits_grad,
}

# The strided kernel in the simulator against the CPU: the CUDA kernels call
# math.exp and math.log1p (the simulator on Python floats, rounding float32
# results afterwards), the CPU its own exp and log1p polynomials. Each result
# is within ULP_BOUND of the exact value, so the two within twice that of each
# other. A float16 result is such a float32 value rounded once more: at most
# one float16 ULP apart. Where the simulated path hands the math to the CPU's
# ufunc (the contiguous path's double) and casts as NumPy does, the results
# must be bit-identical (``exact=True``).
SIM_ULP = {
    "float16": 1,
    "float32": 2 * ULP_BOUND[np.float32],
    "float64": 2 * ULP_BOUND[np.float64],
}

SIM_SCRIPT = textwrap.dedent(
    """
    import json, pathlib, sys, warnings

    import numpy as np

    path = sys.argv[1]
    from wce_numba import _cuda, _ufuncs

    try:
        _cuda.require_gpu()  # the simulator is always available
    except ImportError as error:
        pathlib.Path(path).write_text(json.dumps({"skip": str(error)}))
        sys.exit()

    from numba import cuda

    # Kernels run as Python here, so NumPy scalar arithmetic reports the
    # inf - inf the kernels discard at infinite logits; the results decide.
    warnings.simplefilter("ignore", RuntimeWarning)


    calls = []


    def ufunc_double(quantity):
        def call(labels, logits, pos_weight, out, stream):
            arrays = (labels, logits, pos_weight, out)
            # The real ufunc would convert other dtypes itself, on the host.
            assert len({a.dtype for a in arrays}) == 1, [a.dtype for a in arrays]
            calls.append(("ufunc", [a.ndim for a in arrays]))
            # The simulator's arrays wrap NumPy arrays (``_ary``): read and
            # write those, so that no transfer function runs.
            host = [a._ary for a in arrays[:3]]
            out._ary[...] = _ufuncs.cpu_ufunc(quantity, "cpu")(*host)
            return out
        return call


    real_strided_kernel = _cuda.strided_kernel


    def recorded_strided_kernel(quantity):
        calls.append(("strided", []))
        return real_strided_kernel(quantity)


    real_cast_kernel = _cuda.cast_kernel


    def recorded_cast_kernel():
        kernel = real_cast_kernel()

        class Recorded:
            def forall(self, size, stream=0):
                launch = kernel.forall(size, stream=stream)

                def run(source, out):
                    calls.append(
                        ("cast", [str(source.dtype), str(out.dtype), source.ndim])
                    )
                    return launch(source, out)

                return run

        return Recorded()


    _cuda.cuda_ufunc = ufunc_double
    _cuda.strided_kernel = recorded_strided_kernel
    _cuda.cast_kernel = recorded_cast_kernel

    rng = np.random.default_rng(7)
    LOGITS = [-np.inf, -1e4, -100.0, -20.0, -3.0, -0.5, 0.0, 0.5, 3.0, 20.0,
              100.0, 1e4, np.inf, np.nan]
    LABELS = [0.0, 1.0, 0.5, 0.1, 0.9, 1e-8]


    def inputs(shape, dtype):
        size = int(np.prod(shape))
        labels = rng.choice(LABELS, size).reshape(shape).astype(dtype)
        logits = rng.choice(LOGITS, size).reshape(shape).astype(dtype)
        return labels, logits


    def weights(shape, dtype):
        return rng.choice([0.0, 0.25, 1.0, 3.0, 1e3], shape).astype(dtype)


    def device(array, layout="C"):
        # A device array with the requested layout, made on the device side:
        # a view of a larger array for strided, reversed for negative strides.
        if layout == "F":
            return cuda.to_device(np.asfortranarray(array))
        if layout == "strided":
            base = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), array.dtype)
            base[..., ::2] = array
            return cuda.to_device(base)[..., ::2]
        if layout == "reversed":
            return cuda.to_device(np.ascontiguousarray(array[::-1]))[::-1]
        return cuda.to_device(array)


    # name: (shape, pos_weight shape or a Python float, layout, out layout)
    CASES = {
        "per_class_weight": ((5, 3), (3,), "C", None),
        "per_row_weight": ((5, 3), (5, 1), "C", None),
        "broadcast_3d": ((2, 3, 4), (1, 4), "C", None),
        "strided_views": ((4, 3), 2.0, "strided", None),
        "fortran_order": ((4, 3), (3,), "F", None),
        "negative_strides": ((7,), (7,), "reversed", None),
        "strided_out": ((4, 3), 2.0, "C", "strided"),
        "scalar_weight": ((4, 3), 2.0, "C", None),
        "same_shape_weight": ((4, 3), (4, 3), "C", None),
        "one_element_weight": ((4, 3), (1, 1), "C", None),
        "given_out": ((4, 3), 0.5, "C", "C"),
        "zero_d": ((), 3.0, "C", None),
        "empty": ((0, 3), (3,), "C", None),
    }

    results = {"cases": {}, "errors": {}}
    arrays = {}
    for dtype in ("float32", "float64"):
        for quantity in ("loss", "grad"):
            for name, (shape, weight_shape, layout, out_layout) in CASES.items():
                key = f"{name}-{quantity}-{dtype}"
                labels, logits = inputs(shape, dtype)
                if isinstance(weight_shape, float):
                    pos_weight = weight_shape
                    device_weight = pos_weight
                else:
                    pos_weight = weights(weight_shape, dtype)
                    device_weight = device(pos_weight, layout)
                out = out_base = None
                if out_layout == "C":
                    out = cuda.to_device(np.full(shape, 7.0, dtype))
                if out_layout == "strided":
                    # Every other column of a zeroed parent array.
                    wide = shape[:-1] + (2 * shape[-1],)
                    out_base = cuda.to_device(np.zeros(wide, dtype))
                    out = out_base[..., ::2]
                del calls[:]
                result = _cuda.launch(
                    quantity, device(labels, layout), device(logits, layout),
                    device_weight, out=out,
                )
                arrays[key + "-labels"] = labels
                arrays[key + "-logits"] = logits
                arrays[key + "-pos_weight"] = np.asarray(pos_weight, dtype)
                arrays[key + "-result"] = result.copy_to_host()
                results["cases"][key] = {
                    "calls": list(calls),
                    "returned_out": out is not None and result is out,
                    "result_shape": list(result.shape),
                    "result_dtype": str(result.dtype),
                    "c_contiguous": bool(result.is_c_contiguous()),
                }
                if out_base is not None:
                    arrays[key + "-out_base"] = out_base.copy_to_host()

    # Inputs of every real dtype, cast on the device as the CPU casts them.
    INT_LOGITS = [-100, -20, -3, -1, 0, 1, 3, 20, 100]


    def values(dtype, kind, shape):
        if np.dtype(dtype) == np.bool_:
            return rng.choice([False, True], shape)
        if np.dtype(dtype).kind == "f":
            pool = {"labels": LABELS, "logits": LOGITS}.get(kind, [0.0, 0.25, 3.0])
        elif kind == "logits":
            pool = [v for v in INT_LOGITS if np.dtype(dtype).kind == "i" or v >= 0]
        else:
            pool = [0, 1] if kind == "labels" else [0, 1, 3, 1000]
        return rng.choice(pool, shape).astype(dtype)


    # name: (labels dtype, logits dtype, pos_weight as a Python float or a
    # (shape, dtype) device array, layout, out as None or (dtype, layout))
    DTYPE_CASES = {
        "int_labels": ("int64", "float64", 2.0, "C", None),
        "int_labels_float32": ("int32", "float32", 2.0, "C", None),
        "bool_labels": ("bool", "float32", ((3,), "float32"), "C", None),
        "uint8_labels_strided": ("uint8", "float64", 2.0, "strided", None),
        "float64_labels_float32_logits": ("float64", "float32", 2.0, "C", None),
        "float32_labels_float64_logits": ("float32", "float64", 2.0, "C", None),
        "float16_logits": ("float16", "float16", 2.0, "C", None),
        "float16_logits_strided": (
            "float32", "float16", ((3,), "float16"), "strided", None
        ),
        "float16_logits_out": ("int8", "float16", 2.0, "C", ("float16", "C")),
        "float16_logits_strided_out": (
            "float16", "float16", 0.5, "C", ("float16", "strided")
        ),
        "int_logits": ("float32", "int32", 2.0, "C", None),
        "int_logits_int_weight": ("int64", "int64", ((4, 3), "int64"), "C", None),
        "uint64_logits_fortran": ("float64", "uint64", 2.0, "F", None),
        "bool_logits": ("bool", "bool", 2.0, "C", None),
        "int_logits_out": ("int16", "int16", 2.0, "C", ("float64", "C")),
        "int_device_weight": ("float32", "float32", ((3,), "int64"), "C", None),
        "bool_device_weight": ("float64", "float64", ((4, 3), "bool"), "C", None),
        "float16_device_weight": ("float64", "float64", ((1, 1), "float16"), "C",
                                  None),
    }
    for quantity in ("loss", "grad"):
        for name, (z_type, x_type, weight, layout, out_spec) in DTYPE_CASES.items():
            key = f"dtypes-{name}-{quantity}"
            shape = (4, 3)
            labels = values(z_type, "labels", shape)
            logits = values(x_type, "logits", shape)
            if isinstance(weight, float):
                pos_weight = device_weight = weight
            else:
                pos_weight = values(weight[1], "pos_weight", weight[0])
                device_weight = device(pos_weight, layout)
            out = None
            if out_spec is not None:
                out = device(np.zeros(shape, out_spec[0]), out_spec[1])
            del calls[:]
            result = _cuda.launch(
                quantity, device(labels, layout), device(logits, layout),
                device_weight, out=out,
            )
            arrays[key + "-labels"] = labels
            arrays[key + "-logits"] = logits
            arrays[key + "-pos_weight"] = np.asarray(pos_weight)
            arrays[key + "-result"] = result.copy_to_host()
            results["cases"][key] = {
                "calls": list(calls),
                "returned_out": out is not None and result is out,
            }

    # The cast kernel alone: each source dtype into each float, every layout,
    # against NumPy's astype (which the simulator itself runs: this checks the
    # plumbing; tests/test_cuda.py checks the rounding on a GPU).
    CAST_VALUES = [0, 1, -1, 3, 100, 2**24 + 1, 2**53 + 1, 0.1, -2.5, 1e-40,
                   65520.0, 1e40, -1e40, 1e300, np.inf, -np.inf, np.nan]


    def cast_source(dtype):
        dtype = np.dtype(dtype)
        if dtype.kind == "b":
            return np.array([False, True, True])
        if dtype.kind == "f":
            return np.array(CAST_VALUES, np.float64).astype(dtype)
        info = np.iinfo(dtype)
        fits = [v for v in CAST_VALUES
                if isinstance(v, int) and info.min <= v <= info.max]
        return np.array(fits + [info.min, info.max], dtype)


    for source_type in ("bool", "int8", "uint8", "int64", "uint64", "float16",
                        "float32", "float64"):
        source = cast_source(source_type)
        for target in ("float16", "float32", "float64"):
            for layout in ("C", "reversed", "zero_d"):
                given = source[-1:].reshape(()) if layout == "zero_d" else source
                on_device = device(given, "C" if layout == "zero_d" else layout)
                del calls[:]
                converted = _cuda.as_dtype(on_device, np.dtype(target))
                key = f"cast-{source_type}-{target}-{layout}"
                arrays[key + "-source"] = np.asarray(given)
                arrays[key + "-result"] = converted.copy_to_host()
                results["cases"][key] = {"calls": list(calls)}

    f32 = np.ones((2, 3), np.float32)
    f64 = np.ones((2, 3), np.float64)
    d = cuda.to_device
    c128 = f64.astype(complex)
    ERRORS = {
        "complex_labels": lambda: _cuda.launch("loss", d(c128), d(f64), 1.0),
        "complex_logits": lambda: _cuda.launch("loss", d(f64), d(c128), 1.0),
        "complex_weight": lambda: _cuda.launch("loss", d(f64), d(f64), d(c128[0])),
        "complex_before_shapes": lambda: _cuda.launch(
            "loss", d(c128), d(f64.T.copy()), 1.0
        ),
        "out_dtype_float16": lambda: _cuda.launch(
            "loss", d(f64.astype(np.float16)), d(f64.astype(np.float16)), 1.0,
            out=d(f32),
        ),
        "out_dtype_int_logits": lambda: _cuda.launch(
            "loss", d(f64), d(f64.astype(np.int64)), 1.0, out=d(f32)
        ),
        "shapes": lambda: _cuda.launch("loss", d(f64), d(f64.T.copy()), 1.0),
        "weight_shape": lambda: _cuda.launch(
            "loss", d(f64), d(f64), d(np.ones(2))
        ),
        "host_labels": lambda: _cuda.launch("loss", f64, d(f64), 1.0),
        "host_weight_shape": lambda: _cuda.launch(
            "loss", d(f64), d(f64), np.ones(2)
        ),
        "out_shape": lambda: _cuda.launch(
            "loss", d(f64), d(f64), 1.0, out=d(np.ones(6))
        ),
        "out_dtype": lambda: _cuda.launch("loss", d(f64), d(f64), 1.0, out=d(f32)),
        "weight_overflow": lambda: _cuda.launch("loss", d(f32), d(f32), 1e40),
    }
    for name, call in ERRORS.items():
        del calls[:]
        try:
            call()
        except Exception as error:
            results["errors"][name] = {
                "type": type(error).__name__, "message": str(error),
                "calls": list(calls),
            }
        else:
            results["errors"][name] = {"type": None, "calls": list(calls)}

    np.savez(path + ".npz", **arrays)
    pathlib.Path(path).write_text(json.dumps(results))
    """
)

UFUNC_CASES = [
    "scalar_weight",
    "same_shape_weight",
    "one_element_weight",
    "given_out",
    "zero_d",
]
STRIDED_CASES = [
    "per_class_weight",
    "per_row_weight",
    "broadcast_3d",
    "strided_views",
    "fortran_order",
    "negative_strides",
    "strided_out",
]


def importing_this_package() -> dict:
    """Environment in which a child Python imports the wce_numba under test.

    A script run from a temporary folder would otherwise import whichever
    copy is installed, perhaps another checkout's.
    """
    root = str(Path(wce_numba.__file__).resolve().parent.parent)
    paths = [root, os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}


def run_in_simulator(tmp_path_factory, name: str, source: str):
    """Run ``source`` in a simulator process; its JSON results and their path.

    The script gets the results path as its argument. A script that finds no
    numba-cuda writes {"skip": reason}, and the calling tests skip with it.
    """
    folder = tmp_path_factory.mktemp(name)
    script, path = folder / "script.py", folder / "results.json"
    script.write_text(source)
    process = subprocess.run(
        [sys.executable, str(script), str(path)],
        env={**importing_this_package(), "NUMBA_ENABLE_CUDASIM": "1"},
        capture_output=True,
        text=True,
    )
    assert process.returncode == 0, process.stderr
    results = json.loads(path.read_text())
    if "skip" in results:
        pytest.skip(results["skip"])
    return results, path


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """(metadata, arrays) written by one simulator process."""
    results, path = run_in_simulator(tmp_path_factory, "cudasim", SIM_SCRIPT)
    with np.load(f"{path}.npz") as arrays:
        return results, dict(arrays)


def ulp_distance(a, b):
    """Elementwise ULP distance of two same-dtype float arrays; NaN vs NaN is 0."""
    a, b = np.asarray(a), np.asarray(b)
    signed = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]

    def ordinal(x):
        # Maps floats to integers in the same order, so adjacent floats differ
        # by 1 and +0 and -0 coincide.
        bits = x.view(signed).astype(np.int64)
        return np.where(bits < 0, np.iinfo(signed).min - bits, bits)

    distance = np.abs(ordinal(a) - ordinal(b))
    both_nan = np.isnan(a) & np.isnan(b)
    return np.where(both_nan, 0, np.where(np.isnan(a) | np.isnan(b), -1, distance))


def same_bits(a, b):
    """Whether two same-dtype float arrays hold the same bits, NaN matching NaN."""
    a, b = np.asarray(a), np.asarray(b)
    unsigned = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    equal = (a.view(unsigned) == b.view(unsigned)) | (np.isnan(a) & np.isnan(b))
    return bool(equal.all())


def check_against_cpu(arrays, key, dtype, quantity, exact=False):
    """The simulated result against the CPU's public function on the same inputs.

    ``dtype`` None takes the CPU result's dtype as the one expected; ``exact``
    asks for the same bits, else SIM_ULP bounds the distance.
    """
    labels = arrays[f"{key}-labels"]
    logits = arrays[f"{key}-logits"]
    pos_weight = arrays[f"{key}-pos_weight"]
    result = arrays[f"{key}-result"]
    expected = np.asarray(CPU[quantity](labels, logits, pos_weight))
    dtype = expected.dtype.name if dtype is None else dtype

    assert result.dtype == np.dtype(dtype)
    assert result.shape == expected.shape
    distance = ulp_distance(result, expected)
    assert (distance >= 0).all(), "NaN where the CPU has none, or the reverse"
    assert distance.max(initial=0) <= (0 if exact else SIM_ULP[dtype]), (
        f"{distance.max()} ULP from the CPU result"
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("quantity", ["loss", "grad"])
@pytest.mark.parametrize("case", STRIDED_CASES)
def test_strided_kernel_matches_cpu(simulated, case, quantity, dtype):
    results, arrays = simulated
    key = f"{case}-{quantity}-{dtype}"

    assert results["cases"][key]["calls"] == [["strided", []]]
    check_against_cpu(arrays, key, dtype, quantity)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("quantity", ["loss", "grad"])
@pytest.mark.parametrize("case", UFUNC_CASES)
def test_contiguous_arrays_reach_the_ufunc_flat(simulated, case, quantity, dtype):
    results, arrays = simulated
    key = f"{case}-{quantity}-{dtype}"

    # Only one-dimensional arrays, so numba-cuda never flattens (or copies).
    assert results["cases"][key]["calls"] == [["ufunc", [1, 1, 1, 1]]]
    check_against_cpu(arrays, key, dtype, quantity, exact=True)


@pytest.mark.parametrize("case", STRIDED_CASES + UFUNC_CASES)
def test_result_has_logits_shape_and_dtype(simulated, case):
    results, arrays = simulated
    for dtype in ["float32", "float64"]:
        meta = results["cases"][f"{case}-loss-{dtype}"]
        logits = arrays[f"{case}-loss-{dtype}-logits"]

        assert meta["result_shape"] == list(logits.shape)
        assert meta["result_dtype"] == dtype


def test_given_out_is_written_in_place_and_returned(simulated):
    results, _ = simulated
    for quantity in ["loss", "grad"]:
        assert results["cases"][f"given_out-{quantity}-float64"]["returned_out"]
        assert results["cases"][f"strided_out-{quantity}-float64"]["returned_out"]


def test_strided_out_leaves_the_elements_between_untouched(simulated):
    _, arrays = simulated
    base = arrays["strided_out-loss-float64-out_base"]

    np.testing.assert_array_equal(base[:, 1::2], 0.0)
    np.testing.assert_array_equal(
        base[:, ::2], arrays["strided_out-loss-float64-result"]
    )


def test_new_results_are_c_contiguous(simulated):
    results, _ = simulated
    assert results["cases"]["fortran_order-loss-float64"]["c_contiguous"]
    assert results["cases"]["negative_strides-loss-float64"]["c_contiguous"]


def test_empty_input_launches_nothing(simulated):
    results, arrays = simulated

    assert results["cases"]["empty-loss-float64"]["calls"] == []
    assert arrays["empty-loss-float64-result"].shape == (0, 3)


DTYPE_CASES = [
    "int_labels",
    "int_labels_float32",
    "bool_labels",
    "uint8_labels_strided",
    "float64_labels_float32_logits",
    "float32_labels_float64_logits",
    "float16_logits",
    "float16_logits_strided",
    "float16_logits_out",
    "float16_logits_strided_out",
    "int_logits",
    "int_logits_int_weight",
    "uint64_logits_fortran",
    "bool_logits",
    "int_logits_out",
    "int_device_weight",
    "bool_device_weight",
    "float16_device_weight",
]


@pytest.mark.parametrize("quantity", ["loss", "grad"])
@pytest.mark.parametrize("case", DTYPE_CASES)
def test_inputs_of_every_real_dtype_give_the_cpus_result(simulated, case, quantity):
    # The CPU's rules: float32/float64 logits decide the dtype, float16 logits
    # are computed in float32 and returned as float16, bool and integer logits
    # give float64; labels and pos_weight are cast to the compute dtype.
    # Bit for bit where the math is the CPU's own (the ufunc double).
    results, arrays = simulated
    key = f"dtypes-{case}-{quantity}"
    strided = any(kind == "strided" for kind, _ in results["cases"][key]["calls"])

    check_against_cpu(arrays, key, None, quantity, exact=not strided)


def ufunc_call():
    return ["ufunc", [1, 1, 1, 1]]


def cast_call(source, target, ndim=1):
    return ["cast", [source, target, ndim]]


# What ``launch`` runs for some of the cases: casts on the device (flat views
# where contiguous), one evaluation in the compute dtype, and a cast back to
# float16 into the result or the given ``out``.
EXPECTED_CALLS = {
    "int_labels": [cast_call("int64", "float64"), ufunc_call()],
    "float64_labels_float32_logits": [cast_call("float64", "float32"), ufunc_call()],
    "uint8_labels_strided": [cast_call("uint8", "float64", 2), ["strided", []]],
    "float16_logits": [
        cast_call("float16", "float32"),
        cast_call("float16", "float32"),
        ufunc_call(),
        cast_call("float32", "float16"),
    ],
    "float16_logits_strided_out": [
        cast_call("float16", "float32"),
        cast_call("float16", "float32"),
        ufunc_call(),
        cast_call("float32", "float16", 2),
    ],
    "int_logits_out": [
        cast_call("int16", "float64"),
        cast_call("int16", "float64"),
        ufunc_call(),
    ],
    "int_device_weight": [cast_call("int64", "float32"), ["strided", []]],
}


@pytest.mark.parametrize("quantity", ["loss", "grad"])
@pytest.mark.parametrize("case", EXPECTED_CALLS)
def test_casts_run_on_the_device_around_one_evaluation(simulated, case, quantity):
    results, _ = simulated

    assert (
        results["cases"][f"dtypes-{case}-{quantity}"]["calls"] == (EXPECTED_CALLS[case])
    )


@pytest.mark.parametrize("case", DTYPE_CASES)
def test_only_arrays_of_another_dtype_are_cast(simulated, case):
    results, _ = simulated
    calls = results["cases"][f"dtypes-{case}-loss"]["calls"]

    assert all(
        arguments[0] != arguments[1] for kind, arguments in calls if kind == "cast"
    )
    assert sum(kind in ("ufunc", "strided") for kind, _ in calls) == 1


@pytest.mark.parametrize("case", ["float16_logits_out", "float16_logits_strided_out"])
def test_a_float16_out_is_written_and_returned(simulated, case):
    results, _ = simulated

    assert results["cases"][f"dtypes-{case}-loss"]["returned_out"]


CAST_SOURCES = ["bool", "int8", "uint8", "int64", "uint64", "float16", "float32"]


@pytest.mark.parametrize("target", ["float16", "float32", "float64"])
@pytest.mark.parametrize("source", [*CAST_SOURCES, "float64"])
def test_cast_kernel_gives_numpys_astype(simulated, source, target):
    results, arrays = simulated
    for layout in ("C", "reversed", "zero_d"):
        key = f"cast-{source}-{target}-{layout}"
        given, result = arrays[f"{key}-source"], arrays[f"{key}-result"]
        with np.errstate(all="ignore"):  # 1e40 to float32 is inf, as expected
            expected = given.astype(target)

        assert result.dtype == expected.dtype and result.shape == expected.shape
        assert same_bits(result, expected), layout
        # Nothing to do for an array of the right dtype: itself, no launch.
        calls = [] if source == target else [cast_call(source, target)]
        assert results["cases"][key]["calls"] == calls


ERRORS = {
    "complex_labels": (
        "TypeError",
        "labels must have a real dtype (bool, integer, float16, float32 or "
        "float64), got dtype complex128",
    ),
    "complex_logits": (
        "TypeError",
        "logits must have a real dtype (bool, integer, float16, float32 or "
        "float64), got dtype complex128",
    ),
    "complex_weight": (
        "TypeError",
        "pos_weight must have a real dtype (bool, integer, float16, float32 or "
        "float64), got dtype complex128",
    ),
    "complex_before_shapes": (
        "TypeError",
        "labels must have a real dtype (bool, integer, float16, float32 or "
        "float64), got dtype complex128",
    ),
    "out_dtype_float16": (
        "TypeError",
        "out must have dtype float16, got out dtype float32",
    ),
    "out_dtype_int_logits": (
        "TypeError",
        "out must have dtype float64, got out dtype float32",
    ),
    "shapes": (
        "ValueError",
        "labels and logits must have the same shape, got labels shape (2, 3) "
        "and logits shape (3, 2)",
    ),
    "weight_shape": (
        "ValueError",
        "pos_weight must be a scalar or broadcast to the logits' shape (2, 3), "
        "got pos_weight shape (2,)",
    ),
    "host_labels": (
        "TypeError",
        "labels must be a CUDA device array here, got ndarray",
    ),
    "host_weight_shape": (
        "ValueError",
        "pos_weight must be a scalar or broadcast to the logits' shape (2, 3), "
        "got pos_weight shape (2,)",
    ),
    "out_shape": (
        "ValueError",
        "out must have the logits' shape (2, 3), got out shape (6,)",
    ),
    "out_dtype": ("TypeError", "out must have dtype float64, got out dtype float32"),
    "weight_overflow": (
        "ValueError",
        "pos_weight has values beyond the range of float32, the dtype the logits "
        "are computed in (largest magnitude 1e+40)",
    ),
}


@pytest.mark.parametrize("name", ERRORS)
def test_errors_name_the_argument_and_come_before_any_launch(simulated, name):
    results, _ = simulated
    error = results["errors"][name]
    expected_type, expected_message = ERRORS[name]

    assert (error["type"], error["message"]) == (expected_type, expected_message)
    assert error["calls"] == []


# The public functions with CUDA arrays, in the simulator. Besides the ufunc
# double, the script stands in at three more seams the simulator lacks:
# ``cuda.as_cuda_array`` (absent there) maps the CuPy- and PyTorch-like test
# classes below to the simulator arrays they wrap, ``cuda.external_stream``
# (which raises there) gives a recorded stream, and small ``cupy`` and
# ``torch`` modules record how the result is wrapped. Numba's transfer
# functions (``to_device``, ``copy_to_host``, ``copy_to_device``) are spied
# on, counting the bytes each call moves between host and device.
API_SETUP = textwrap.dedent(
    """
    import json, pathlib, sys, types, warnings

    import numpy as np

    path = sys.argv[1]
    import wce_numba
    from wce_numba import _cuda, _ufuncs

    try:
        _cuda.require_gpu()
    except ImportError as error:
        pathlib.Path(path).write_text(json.dumps({"skip": str(error)}))
        sys.exit()

    from numba import cuda
    from numba.cuda.simulator.cudadrv import devicearray

    warnings.simplefilter("ignore", RuntimeWarning)
    FUNCTIONS = {
        "loss": wce_numba.weighted_cross_entropy_with_logits,
        "grad": wce_numba.weighted_cross_entropy_with_logits_grad,
    }

    calls, transfers, wrapped, imported = [], [], [], []


    def ufunc_double(quantity):
        def call(labels, logits, pos_weight, out, stream):
            arrays = (labels, logits, pos_weight, out)
            calls.append(("ufunc", [a.ndim for a in arrays], repr(stream)))
            host = [a._ary for a in arrays[:3]]
            out._ary[...] = _ufuncs.cpu_ufunc(quantity, "cpu")(*host)
            return out
        return call


    real_strided_kernel = _cuda.strided_kernel


    def recorded_strided_kernel(quantity):
        kernel = real_strided_kernel(quantity)

        class Recorded:
            def forall(self, size, stream=0):
                calls.append(("strided", [], repr(stream)))
                return kernel.forall(size, stream=stream)

        return Recorded()


    real_cast_kernel = _cuda.cast_kernel


    def recorded_cast_kernel():
        kernel = real_cast_kernel()

        class Recorded:
            def forall(self, size, stream=0):
                calls.append(("cast", [], repr(stream)))
                return kernel.forall(size, stream=stream)

        return Recorded()


    _cuda.cuda_ufunc = ufunc_double
    _cuda.strided_kernel = recorded_strided_kernel
    _cuda.cast_kernel = recorded_cast_kernel

    # Spies on every way numba-cuda moves data between host and device.
    real_to_device = cuda.to_device
    real_copy_to_host = devicearray.FakeCUDAArray.copy_to_host
    real_copy_to_device = devicearray.FakeCUDAArray.copy_to_device


    def to_device(ary, *args, **kwargs):
        transfers.append(("H2D", int(np.asarray(ary).nbytes)))
        return real_to_device(ary, *args, **kwargs)


    def copy_to_host(self, *args, **kwargs):
        transfers.append(("D2H", int(self.nbytes)))
        return real_copy_to_host(self, *args, **kwargs)


    def copy_to_device(self, ary, *args, **kwargs):
        if not getattr(ary, "__cuda_ndarray__", False):
            transfers.append(("H2D", int(np.asarray(ary).nbytes)))
        return real_copy_to_device(self, ary, *args, **kwargs)


    cuda.to_device = to_device
    devicearray.FakeCUDAArray.copy_to_host = copy_to_host
    devicearray.FakeCUDAArray.copy_to_device = copy_to_device


    class FakeStream:
        def __init__(self, pointer):
            self.pointer = pointer

        def __int__(self):
            return self.pointer

        def __repr__(self):
            return f"<External CUDA stream {self.pointer}>"


    cuda.external_stream = FakeStream


    class Library:
        # A CUDA array of another library: it wraps a simulator array and
        # exports a stream, as CuPy and PyTorch do.
        def __init__(self, array, device=0, stream=None):
            self.array, self.stream = array, stream
            self.device = self.Device(device)

        @property
        def __cuda_array_interface__(self):
            return {"shape": self.array.shape, "typestr": self.array.dtype.str,
                    "data": (0, False), "version": 3, "stream": self.stream}


    class CupyArray(Library):
        class Device:
            def __init__(self, number):
                self.id = number


    class TorchTensor(Library):
        class Device:
            def __init__(self, number):
                self.index = number


    CupyArray.__module__, CupyArray.__name__ = "cupy._core.core", "ndarray"
    TorchTensor.__module__, TorchTensor.__name__ = "torch", "Tensor"


    def as_cuda_array(value, sync=True):
        imported.append(sync)
        return value.array


    cuda.as_cuda_array = as_cuda_array


    def cupy_asarray(result):
        wrapped.append("cupy")
        return CupyArray(result)


    def torch_as_tensor(result, device=None):
        wrapped.append(("torch", device.index))
        return TorchTensor(result, device.index)


    sys.modules["cupy"] = types.SimpleNamespace(asarray=cupy_asarray)
    sys.modules["torch"] = types.SimpleNamespace(as_tensor=torch_as_tensor)


    def host(result):
        # The result's values, read after the call (and its transfer count).
        array = getattr(result, "array", result)
        return array._ary.copy() if hasattr(array, "_ary") else np.asarray(array)


    def describe(result):
        # A result of the public functions: its kind, place, shape and values.
        if result is None:
            return None
        array = getattr(result, "array", result)
        return {
            "kind": type(result).__name__,
            "on_device": bool(getattr(result, "__cuda_ndarray__", False)),
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "values": host(result).ravel().tolist(),
        }


    def record(function, *args, **kwargs):
        # What ``function`` did: its result (or error), the kernels it
        # launched, the bytes it moved, how its arguments and results were
        # wrapped. A (value, grad) pair is described part by part.
        del calls[:], transfers[:], wrapped[:], imported[:]
        try:
            result = function(*args, **kwargs)
        except Exception as error:
            return {"error": [type(error).__name__, str(error)],
                    "calls": list(calls), "transfers": list(transfers)}
        done = {
            "calls": list(calls),
            "transfers": list(transfers),
            "wrapped": list(wrapped),
            "imported": list(imported),
        }
        if isinstance(result, tuple):
            return done | {"value": describe(result[0]), "grad": describe(result[1])}
        return done | describe(result) | {
            "same_out": kwargs.get("out") is not None and result is kwargs["out"],
        }


    def call(quantity, *args, **kwargs):
        return record(FUNCTIONS[quantity], *args, **kwargs)


    """
)

API_SCRIPT = API_SETUP + textwrap.dedent(
    """
    d = cuda.to_device
    results = {}

    # The README's example, on the device.
    z = np.array([1, 0, 0.5, 1], np.float32)
    x = np.array([-2, 2, 0, 3], np.float32)
    results["residency"] = call("loss", d(z), d(x), 4.0)
    strided = (d(np.repeat(z, 2))[::2], d(np.repeat(x, 2))[::2])
    results["residency_strided"] = call("loss", *strided, 4.0)
    results["residency_cupy"] = call("loss", CupyArray(d(z)), CupyArray(d(x)), 4.0)
    results["residency_torch"] = call(
        "grad", TorchTensor(d(z), 1), TorchTensor(d(x), 1), 4.0
    )
    given = d(np.zeros(4, np.float32))
    results["given_out"] = call("loss", d(z), d(x), 4.0, out=given)
    results["given_out"]["values"] = host(given).tolist()

    # Bytes moved per call, for a small and a large N (12 and 10 002 elements:
    # the simulator runs the strided and cast kernels as Python, about 3 s per
    # 1e4). The dtype cases are cast on the device; each also records the CPU's
    # result on the same host inputs.
    rng = np.random.default_rng(3)
    for n in (4, 3334):
        z = rng.uniform(0, 1, (n, 3)).astype(np.float32)
        x = rng.normal(0, 5, (n, 3)).astype(np.float32)
        per_class = np.array([0.5, 2.0, 8.0], np.float32)
        wide_z, wide_x = np.repeat(z, 2, axis=1), np.repeat(x, 2, axis=1)
        hard_z = (z > 0.5).astype(np.int64)
        bool_z = z > 0.5
        half_x = x.astype(np.float16)
        int_class = np.array([1, 2, 8], np.int64)
        cases = {
            "contiguous": (z, x, 2.0),
            "strided": (d(wide_z)[:, ::2], d(wide_x)[:, ::2], 2.0),
            "per_class_host": (z, x, per_class),
            "per_class_device": (z, x, d(per_class)),
            "int_labels": (hard_z, x, 2.0),
            "bool_labels": (bool_z, x, 2.0),
            "float16_logits": (z, half_x, 2.0),
            "int_weight_device": (z, x, d(int_class)),
        }
        for name, args in cases.items():
            on_host = [a.copy_to_host() if hasattr(a, "copy_to_host") else a
                       for a in args]
            on_device = [d(a) if isinstance(a, np.ndarray) and a.ndim == 2 else a
                         for a in args]
            results[f"transfers-{name}-{n}"] = result = call("loss", *on_device)
            expected = np.asarray(FUNCTIONS["loss"](*on_host))
            result["expected"] = expected.ravel().tolist()
            result["expected_dtype"] = str(expected.dtype)

    # The CPU's dtype rules through the public functions, for each kind of
    # array: the result (of the logits' kind) has the CPU's dtype and values.
    z = np.array([[1, 0, 1], [0, 1, 1]], np.int8)
    x = np.array([[-2.0, 2.0, 0.0], [3.0, -30.0, 9.0]])
    DTYPE_CALLS = {
        "float16_cupy": ("grad", CupyArray(d(z)), CupyArray(d(x.astype(np.float16))),
                         2.0),
        "bool_logits_torch": ("loss", TorchTensor(d(z != 0)),
                              TorchTensor(d(x > 0)), 3.0),
        "int_logits": ("loss", d(z), d(x.astype(np.int32)), d(np.int64(2))),
        "float16_out": ("loss", d(z), d(x.astype(np.float16)), 2.0,
                        d(np.zeros((2, 3), np.float16))),
        "overflowing_device_labels": ("loss", d(np.array([1e40, 0.0, 1.0])),
                                      d(np.zeros(3, np.float32)), 2.0),
    }
    for name, (quantity, *args) in DTYPE_CALLS.items():
        out = args.pop() if len(args) == 4 else None
        results[f"dtypes-{name}"] = result = call(quantity, *args, out=out)
        on_host = [host(a) if not isinstance(a, float) else a for a in args]
        with np.errstate(all="ignore"):
            try:
                expected = np.asarray(FUNCTIONS[quantity](*on_host))
            except ValueError as error:
                result["cpu_error"] = str(error)
            else:
                result["expected"] = expected.ravel().tolist()
                result["expected_dtype"] = str(expected.dtype)
        if out is not None:
            result["values"] = host(out).ravel().tolist()

    # Casts run on the call's stream.
    results["stream_cast"] = call(
        "loss", d(np.ones(6, np.int64)), d(np.ones(6, np.float16)), 2.0,
        stream=0x1234,
    )

    # Scalars and zero-size arrays.
    zero_d = (d(np.array(1.0)), d(np.array(-2.0)))
    results["zero_d"] = call("loss", *zero_d, 4.0)
    results["zero_d_weight"] = call("loss", *zero_d, d(np.array(4.0)))
    results["empty"] = call("loss", d(np.zeros(0)), d(np.zeros(0)), 2.0)
    results["empty_per_class"] = call(
        "grad", d(np.zeros((0, 3))), d(np.zeros((0, 3))), np.ones(3)
    )

    # Streams: the given one, or the one the logits' producer exported.
    f64 = np.linspace(-3, 3, 6)
    results["stream_numba"] = call("loss", d(f64), d(f64), 2.0, stream=cuda.stream())
    results["stream_pointer"] = call("loss", d(f64), d(f64), 2.0, stream=0x1234)
    results["stream_cupy"] = call(
        "loss", d(f64), d(f64), 2.0,
        stream=types.SimpleNamespace(ptr=0x2345),
    )
    results["stream_torch"] = call(
        "loss", d(f64), d(f64)[::-1], 2.0,
        stream=types.SimpleNamespace(cuda_stream=0x3456),
    )
    results["stream_exported"] = call(
        "loss", CupyArray(d(f64), stream=0x99), CupyArray(d(f64), stream=0x4567),
        2.0,
    )
    results["stream_bad"] = call("loss", d(f64), d(f64), 2.0, stream="fast")

    # Placement, dtype and shape errors, raised before any transfer or launch.
    f32 = np.ones((2, 3), np.float32)
    ERRORS = {
        "host_labels": ("loss", np.ones(3), d(np.ones(3)), 2.0),
        "host_logits": ("grad", d(np.ones(3)), [1.0, 2.0, 3.0], 2.0),
        "device_weight_only": ("loss", np.ones(3), np.ones(3), d(np.ones(3))),
        "host_out": ("loss", d(np.ones(3)), d(np.ones(3)), 2.0, np.ones(3)),
        "two_devices": (
            "loss", CupyArray(d(np.ones(3)), 0), TorchTensor(d(np.ones(3)), 1), 2.0
        ),
        "large_host_weight": (
            "loss", d(np.ones((2, 5000))), d(np.ones((2, 5000))), np.ones(5000)
        ),
        "complex_labels": ("loss", d(np.ones(3, complex)), d(np.ones(3)), 2.0),
        "complex_logits": ("loss", d(np.ones(3)), d(np.ones(3, np.complex64)), 2.0),
        "complex_weight": (
            "loss", d(np.ones(3)), d(np.ones(3)), d(np.ones(3, complex))
        ),
        "float16_out_dtype": (
            "loss", d(np.ones(3)), d(np.ones(3, np.float16)), 2.0, d(np.ones(3))
        ),
        "int_logits_out_dtype": (
            "loss", d(np.ones(3)), d(np.ones(3, np.int64)), 2.0,
            d(np.ones(3, np.float32)),
        ),
        "shapes": ("loss", d(np.ones((2, 3))), d(np.ones((3, 2))), 2.0),
        "weight_shape": ("loss", d(np.ones((2, 3))), d(np.ones((2, 3))), np.ones(2)),
        "weight_overflow": ("loss", d(f32), d(f32), 1e40),
        "weight_dtype": ("loss", d(f32), d(f32), np.array(["a"])),
        "out_shape": ("loss", d(np.ones(3)), d(np.ones(3)), 2.0, d(np.ones(4))),
    }
    for name, (quantity, *args) in ERRORS.items():
        out = args.pop() if len(args) == 4 else None
        results[f"error-{name}"] = call(quantity, *args, out=out)

    pathlib.Path(path).write_text(json.dumps(results))
    """
)

README_VALUES = [8.507712, 2.126928, 1.732868, 0.19434941]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """What the public functions did with simulated CUDA arrays, by case."""
    results, _ = run_in_simulator(tmp_path_factory, "cudasim_api", API_SCRIPT)
    return results


@pytest.mark.parametrize(
    "case", ["residency", "residency_strided", "residency_cupy", "given_out"]
)
def test_readme_example_stays_on_the_device(api, case):
    result = api[case]

    # The host scalar pos_weight is the one thing that crosses: 4 bytes.
    assert result["transfers"] == [["H2D", 4]]
    assert result["shape"] == [4] and result["dtype"] == "float32"
    np.testing.assert_allclose(result["values"], README_VALUES, rtol=1e-6)


def test_result_is_the_callers_kind_sharing_memory(api):
    assert api["residency"]["kind"] == "FakeCUDAArray"
    assert api["residency"]["wrapped"] == []
    assert api["residency_cupy"]["kind"] == "ndarray"
    assert api["residency_cupy"]["wrapped"] == ["cupy"]
    assert api["residency_torch"]["kind"] == "Tensor"
    assert api["residency_torch"]["wrapped"] == [["torch", 1]]
    assert api["given_out"]["same_out"] and api["given_out"]["wrapped"] == []


TRANSFER_CASES = [
    "contiguous",
    "strided",
    "per_class_host",
    "per_class_device",
    "int_labels",
    "bool_labels",
    "float16_logits",
    "int_weight_device",
]


@pytest.mark.parametrize("case", TRANSFER_CASES)
def test_bytes_moved_per_call_do_not_grow_with_n(api, case):
    small, large = api[f"transfers-{case}-4"], api[f"transfers-{case}-3334"]

    assert small["shape"] == [4, 3] and large["shape"] == [3334, 3]
    assert large["transfers"] == small["transfers"]
    # At most the host pos_weight crosses, and nothing comes back: casting
    # moves nothing either.
    weight_bytes = {
        "per_class_host": 12,
        "per_class_device": 0,
        "int_weight_device": 0,
    }.get(case, 4)
    assert sum(size for _, size in large["transfers"]) == weight_bytes
    assert all(direction == "H2D" for direction, _ in large["transfers"])


@pytest.mark.parametrize("case", TRANSFER_CASES)
def test_transfer_cases_give_the_cpus_result(api, case):
    result = api[f"transfers-{case}-3334"]
    dtype = result["expected_dtype"]
    values = np.array(result["values"], dtype)

    assert result["dtype"] == dtype
    distance = ulp_distance(values, np.array(result["expected"], dtype))
    assert 0 <= distance.min() and distance.max() <= SIM_ULP[dtype]


def test_transfer_cases_take_both_paths_and_cast(api):
    # So the tests above cover the ufunc, the strided kernel and the casts.
    kinds = {
        case: [kind for kind, *_ in api[f"transfers-{case}-3334"]["calls"]]
        for case in TRANSFER_CASES
    }

    assert kinds["contiguous"] == ["ufunc"]
    assert kinds["strided"] == ["strided"]
    assert kinds["per_class_host"] == ["strided"]
    assert kinds["int_labels"] == kinds["bool_labels"] == ["cast", "ufunc"]
    assert kinds["float16_logits"] == ["cast", "ufunc", "cast"]
    assert kinds["int_weight_device"] == ["cast", "strided"]


DTYPE_CALLS = {
    # case: (the result's kind, its dtype)
    "float16_cupy": ("ndarray", "float16"),
    "bool_logits_torch": ("Tensor", "float64"),
    "int_logits": ("FakeCUDAArray", "float64"),
    "float16_out": ("FakeCUDAArray", "float16"),
}


@pytest.mark.parametrize("case", DTYPE_CALLS)
def test_public_functions_follow_the_cpus_dtype_rules(api, case):
    result = api[f"dtypes-{case}"]
    kind, dtype = DTYPE_CALLS[case]

    assert (result["kind"], result["dtype"]) == (kind, dtype)
    assert result["expected_dtype"] == dtype
    assert result["same_out"] == (case == "float16_out")
    assert not any(direction == "D2H" for direction, _ in result["transfers"])
    distance = ulp_distance(
        np.array(result["values"], dtype), np.array(result["expected"], dtype)
    )
    assert 0 <= distance.min() and distance.max() <= SIM_ULP[dtype]


def test_device_values_beyond_the_compute_dtype_become_inf_unchecked(api):
    # Documented difference: the CPU refuses a finite label or pos_weight that
    # its cast would make infinite; on the GPU, seeing one would take a read
    # back to the host, so a device array is cast as astype casts (to inf).
    result = api["dtypes-overflowing_device_labels"]

    assert result["cpu_error"].startswith("labels has values beyond the range")
    assert "error" not in result and result["dtype"] == "float32"
    assert not np.isfinite(result["values"][0])
    np.testing.assert_allclose(
        result["values"][1:], CPU["loss"]([0.0, 1.0], np.zeros(2, np.float32), 2.0)
    )


def test_casts_run_on_the_calls_stream(api):
    calls = api["stream_cast"]["calls"]

    assert [kind for kind, *_ in calls] == ["cast", "cast", "ufunc", "cast"]
    assert {stream for *_, stream in calls} == {"<External CUDA stream 4660>"}


@pytest.mark.parametrize("case", ["zero_d", "zero_d_weight"])
def test_scalars_give_a_zero_d_device_result(api, case):
    result = api[case]

    assert result["on_device"] and result["shape"] == []
    np.testing.assert_allclose(result["values"], [CPU["loss"](1.0, -2.0, 4.0)])


@pytest.mark.parametrize("case", ["empty", "empty_per_class"])
def test_zero_size_launches_nothing_and_moves_nothing(api, case):
    result = api[case]

    assert result["on_device"]
    assert result["shape"] == ([0] if case == "empty" else [0, 3])
    assert result["calls"] == [] and result["transfers"] == []


def test_streams_reach_the_launch(api):
    assert api["stream_numba"]["calls"][0][2].startswith("<numba.cuda.simulator")
    assert api["stream_pointer"]["calls"][0][2] == "<External CUDA stream 4660>"
    assert api["stream_cupy"]["calls"][0][2] == "<External CUDA stream 9029>"
    assert api["stream_torch"]["calls"] == [
        ["strided", [], "<External CUDA stream 13398>"]
    ]


def test_default_stream_is_the_one_the_logits_were_exported_on(api):
    result = api["stream_exported"]

    assert result["calls"][0][2] == "<External CUDA stream 17767>"
    # The labels were exported on another stream: wrapping them waits for it
    # (the interface's rule); the logits' stream is the launch's, so no wait.
    assert result["imported"] == [True, False]


def test_bad_stream_is_a_type_error(api):
    assert api["stream_bad"]["error"] == [
        "TypeError",
        "stream must be a Numba stream, a CuPy or PyTorch CUDA stream, or a "
        "stream pointer (int), got str",
    ]


SIM = "a numba.cuda.FakeCUDAArray on the current CUDA device"
NOT_ALL = (
    "labels, logits and out must all be CUDA arrays when any argument is one "
    "(no data is copied between host and device implicitly): "
)
PLACEMENT_ERRORS = {
    "host_labels": NOT_ALL
    + f"labels is a numpy.ndarray on the host, logits is {SIM}, pos_weight is "
    "a float on the host",
    "host_logits": NOT_ALL
    + f"labels is {SIM}, logits is a list on the host, pos_weight is a float on "
    "the host",
    "device_weight_only": NOT_ALL
    + "labels is a numpy.ndarray on the host, logits is a numpy.ndarray on the "
    f"host, pos_weight is {SIM}",
    "host_out": NOT_ALL
    + f"labels is {SIM}, logits is {SIM}, pos_weight is a float on the host, out "
    "is a numpy.ndarray on the host",
    "two_devices": "all CUDA arrays must be on one device: labels is a "
    "cupy.ndarray on CUDA device 0, logits is a torch.Tensor on CUDA device 1, "
    "pos_weight is a float on the host",
    "large_host_weight": "a host pos_weight may have at most 4096 elements when "
    "labels and logits are CUDA arrays, got 5000 (move it to the device once, "
    f"yourself): labels is {SIM}, logits is {SIM}, pos_weight is a "
    "numpy.ndarray on the host",
}


@pytest.mark.parametrize("name", PLACEMENT_ERRORS)
def test_placement_errors_say_where_each_argument_lives(api, name):
    result = api[f"error-{name}"]

    assert result["error"] == ["ValueError", PLACEMENT_ERRORS[name]]
    assert result["calls"] == [] and result["transfers"] == []


# The same arguments on the host, for the same message.
SAME_AS_CPU = {
    "shapes": (np.ones((2, 3)), np.ones((3, 2)), 2.0),
    "weight_shape": (np.ones((2, 3)), np.ones((2, 3)), np.ones(2)),
    "weight_overflow": (np.ones(3, np.float32), np.ones(3, np.float32), 1e40),
    "weight_dtype": (np.ones(3), np.ones(3), np.array(["a"])),
    "complex_labels": (np.ones(3, complex), np.ones(3), 2.0),
    "complex_logits": (np.ones(3), np.ones(3, np.complex64), 2.0),
    "complex_weight": (np.ones(3), np.ones(3), np.ones(3, complex)),
    "float16_out_dtype": (np.ones(3), np.ones(3, np.float16), 2.0, np.ones(3)),
    "int_logits_out_dtype": (
        np.ones(3),
        np.ones(3, np.int64),
        2.0,
        np.ones(3, np.float32),
    ),
}


@pytest.mark.parametrize("name", SAME_AS_CPU)
def test_shape_dtype_and_weight_errors_read_as_on_the_cpu(api, name):
    result = api[f"error-{name}"]
    labels, logits, pos_weight, *out = SAME_AS_CPU[name]
    with pytest.raises((TypeError, ValueError)) as on_cpu:
        CPU["loss"](labels, logits, pos_weight, out=out[0] if out else None)

    assert result["error"] == [type(on_cpu.value).__name__, str(on_cpu.value)]
    assert result["calls"] == [] and result["transfers"] == []


def test_out_shape_error_as_on_the_cpu(api):
    assert api["error-out_shape"]["error"] == [
        "ValueError",
        "out must have the logits' shape (3,), got out shape (4,)",
    ]


# The fused path (``_device.run_fused``): weighted loss, reduced, and its
# gradient from one kernel pass, with the public functions' fakes above. The
# reduction kernels run for real, with 8 threads a block and at most 3 blocks
# so that a few dozen elements already span several blocks and loop over the
# grid. Launches (with their grid and stream) and device allocations are
# recorded besides the transfers.
FUSED_SCRIPT = API_SETUP + textwrap.dedent(
    """
    from wce_numba import _device

    _cuda.REDUCTION_THREADS = 8
    _cuda.REDUCTION_BLOCKS = 3


    def recorded_launches(name, factory):
        def build(*args):
            kernel = factory(*args)

            class Recorded:
                def __getitem__(self, configuration):
                    blocks, threads, stream = configuration
                    calls.append((name, [blocks, threads], repr(stream)))
                    return kernel[configuration]

            return Recorded()

        return build


    _cuda.fused_kernel = recorded_launches("fused", _cuda.fused_kernel)
    _cuda.finish_kernel = recorded_launches("finish", _cuda.finish_kernel)

    allocations = []
    real_device_array = cuda.device_array


    def device_array(shape, dtype=np.float64, *args, **kwargs):
        shape = list(np.empty(shape, dtype=[]).shape)
        allocations.append([shape, str(np.dtype(dtype))])
        return real_device_array(shape, dtype, *args, **kwargs)


    cuda.device_array = device_array


    def fused(*args, stream=None, **kwargs):
        del allocations[:]
        result = record(_device.run_fused, *args, stream, **kwargs)
        result["allocations"] = list(allocations)
        return result


    d = cuda.to_device
    rng = np.random.default_rng(29)
    results, arrays = {}, {}


    def sample(dtype, kind, shape):
        dtype = np.dtype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, shape).astype(bool)
        if kind == "labels":
            pool = [0.0, 1.0, 0.5, 0.1, 0.9] if dtype.kind == "f" else [0, 1]
            return rng.choice(pool, shape).astype(dtype)
        if kind == "logits":
            return np.round(rng.normal(0, 6, shape), 2).astype(dtype)
        return rng.choice([0.0, 0.25, 1.0, 3.0], shape).astype(dtype)


    def placed(array, layout):
        # A device array holding ``array`` in ``layout``, made on the device
        # side: every other column of a wider array for strided.
        if layout == "F":
            return d(np.asfortranarray(array))
        if layout == "strided":
            return d(np.repeat(array, 2, axis=-1))[..., ::2]
        return d(array)


    # name: (shape, labels dtype, logits dtype, pos_weight, weight, layout);
    # a weight is a Python float (host scalar), None, or (where, shape, dtype).
    CASES = {
        "flat_float32": ((29,), "float32", "float32", 2.0, None, "C"),
        "per_class_float64": ((10, 3), "float64", "float64",
                              ("device", (3,), "float64"),
                              ("device", (10, 1), "float64"), "C"),
        "host_weights_float32": ((10, 3), "float32", "float32",
                                 ("host", (3,), "float32"),
                                 ("host", (3,), "float64"), "C"),
        "same_shape_weight": ((4, 7), "float32", "float32", 0.5,
                              ("device", (4, 7), "float32"), "C"),
        "float16_logits": ((7, 5), "float16", "float16", 2.0, 0.5, "C"),
        "int_logits_bool_labels": ((6, 5), "bool", "int32", 3.0,
                                   ("device", (5,), "int64"), "C"),
        "strided": ((6, 4), "float32", "float32", ("device", (4,), "float32"),
                    ("device", (6, 4), "float32"), "strided"),
        "fortran_float16_weight": ((5, 4), "float64", "float64", 2.0,
                                   ("device", (1, 4), "float16"), "F"),
        "zero_d": ((), "float64", "float64", 2.0, 3.0, "C"),
        "empty": ((0, 3), "float32", "float32", 2.0,
                  ("device", (3,), "float32"), "C"),
        "nan_logit": ((9,), "float64", "float64", 2.0, None, "C"),
        "infinite_logits": ((4,), "float32", "float32", 2.0, 0.5, "C"),
        "infinite_loss": ((3,), "float64", "float64", 2.0, None, "C"),
        # weight * loss as NumPy forms it: 0 * inf is NaN.
        "zero_weight_on_infinite_loss": ((3,), "float64", "float64", 2.0, 0.0,
                                         "C"),
    }
    SPECIAL = {
        # Coefficients of zero switch infinite terms off: a finite loss.
        "infinite_logits": ([1, 0, 1, 0], [np.inf, -np.inf, 3, -3]),
        "infinite_loss": ([1, 0, 1], [-np.inf, 2, 0]),
        "zero_weight_on_infinite_loss": ([1, 0, 1], [-np.inf, 2, 0]),
        "nan_logit": ([0, 1, 0.5, 0, 1, 0.5, 0, 1, 0.5],
                      [1, 2, np.nan, -1, -2, 0, 5, 6, 7]),
    }
    given_arguments = {}
    for name, (shape, z_type, x_type, pos_weight, weight, layout) in CASES.items():
        labels = sample(z_type, "labels", shape)
        logits = sample(x_type, "logits", shape)
        if name in SPECIAL:
            labels = np.array(SPECIAL[name][0], z_type)
            logits = np.array(SPECIAL[name][1], x_type)
        arguments = {"labels": placed(labels, layout), "logits": placed(logits, layout)}
        for argument, spec in (("pos_weight", pos_weight), ("weight", weight)):
            if isinstance(spec, tuple):
                where, weight_shape, weight_type = spec
                host_value = sample(weight_type, "weight", weight_shape)
                on_device = where == "device"
                given = placed(host_value, layout) if on_device else host_value
            else:
                host_value = given = spec
            arrays[f"{name}-{argument}"] = np.asarray(
                1.0 if host_value is None else host_value
            )
            arguments[argument] = given
        arrays[f"{name}-labels"], arrays[f"{name}-logits"] = labels, logits
        given_arguments[name] = list(arguments.values())

        for reduction in ("none", "sum", "mean"):
            results[f"{name}-{reduction}"] = fused(
                *arguments.values(), reduction, True, True
            )

    # The value alone and the gradient alone, against both from one call.
    for name in ("flat_float32", "per_class_float64"):
        for reduction in ("none", "sum", "mean"):
            for wanted, flags in (("value", (True, False)), ("grad", (False, True))):
                results[f"{name}-{reduction}-{wanted}_only"] = fused(
                    *given_arguments[name], reduction, *flags
                )

    # Where float32 accumulation would drop the small terms: one value of
    # 2^30 log 2 among 199 of log 2 (logits 0, labels 0).
    weights = np.ones(200, np.float32)
    weights[0] = 2.0**30
    arrays["large_and_small-weight"] = weights
    results["large_and_small"] = fused(
        d(np.zeros(200, np.float32)), d(np.zeros(200, np.float32)), 1.0,
        d(weights), "sum", True, False,
    )

    # The caller's kind, residency and stream.
    z = np.array([1, 0, 0.5, 1], np.float32)
    x = np.array([-2, 2, 0, 3], np.float32)
    results["kind_numba"] = fused(d(z), d(x), 4.0, None, "mean", True, True)
    results["kind_cupy"] = fused(
        CupyArray(d(z)), CupyArray(d(x)), 4.0, CupyArray(d(z)), "sum", True, True
    )
    results["kind_torch"] = fused(
        TorchTensor(d(z), 1), TorchTensor(d(x), 1), 4.0, None, "none", True, True
    )
    results["stream_given"] = fused(
        d(z), d(x), 4.0, None, "mean", True, True, stream=0x1234
    )
    results["stream_exported"] = fused(
        CupyArray(d(z), stream=0x99), CupyArray(d(x), stream=0x4567), 4.0, 2.0,
        "sum", True, False,
    )
    results["nothing_wanted"] = fused(d(z), d(x), 4.0, 2.0, "mean", False, False)

    # Bytes moved and memory allocated, for a small and a larger N, with
    # inputs the elementwise path would first cast into new arrays.
    for n in (4, 300):
        z, x = sample("int8", "labels", n), sample("float16", "logits", n)
        results[f"transfers-value-{n}"] = fused(
            d(z), d(x), 2.0, 0.5, "mean", True, False
        )
        results[f"transfers-both-{n}"] = fused(
            d(z), d(x), 2.0, d(np.full(n, 3, np.int64)), "sum", True, True
        )

    # Placement and argument errors, before any launch or transfer.
    f32, f64 = np.ones((2, 3), np.float32), np.ones((2, 3))
    ERRORS = {
        "unknown_reduction": (d(f64), d(f64), 2.0, None, "max"),
        "host_labels": (f64, f64, 2.0, d(f64), "sum"),
        "weight_on_another_device": (
            CupyArray(d(f64), 0), CupyArray(d(f64), 0), 2.0,
            TorchTensor(d(f64), 1), "sum",
        ),
        "large_host_weight": (
            d(np.ones((2, 5000))), d(np.ones((2, 5000))), 2.0, np.ones(5000),
            "mean",
        ),
    }
    # Bad weights, each also given as the elementwise call's pos_weight, for
    # its message there.
    BAD_WEIGHTS = {
        "shape": np.ones(2),
        "device_shape": d(np.ones(2)),
        "complex": d(np.ones(3, complex)),
        "string": np.array(["a"]),
        "overflow": 1e40,
        "ragged": [[1.0], [1.0, 2.0]],
    }
    for name, (*args, reduction) in ERRORS.items():
        results[f"error-{name}"] = fused(*args, reduction, True, True)
    for name, bad in BAD_WEIGHTS.items():
        results[f"bad_weight-{name}"] = fused(
            d(f32), d(f32), 2.0, bad, "mean", True, True
        )
        results[f"bad_pos_weight-{name}"] = call("loss", d(f32), d(f32), bad)

    np.savez(path + ".npz", **arrays)
    pathlib.Path(path).write_text(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    """(results by case, input arrays) of the fused path in the simulator."""
    results, path = run_in_simulator(tmp_path_factory, "cudasim_fused", FUSED_SCRIPT)
    with np.load(f"{path}.npz") as arrays:
        return results, dict(arrays)


FUSED_CASES = [
    "flat_float32",
    "per_class_float64",
    "host_weights_float32",
    "same_shape_weight",
    "float16_logits",
    "int_logits_bool_labels",
    "strided",
    "fortran_float16_weight",
    "zero_d",
    "empty",
    "nan_logit",
    "infinite_logits",
    "infinite_loss",
    "zero_weight_on_infinite_loss",
]
REDUCTIONS = ["none", "sum", "mean"]


def fused_inputs(arrays, case):
    """The case's labels, logits, pos_weight and weight (1 where none), on the host."""
    return [arrays[f"{case}-{name}"] for name in ("labels", "logits", "pos_weight")], (
        arrays[f"{case}-weight"]
    )


def cpu_weighted(quantity, arrays, case):
    """``weight * quantity`` on the CPU, in the compute dtype; and the result dtype."""
    (labels, logits, pos_weight), weight = fused_inputs(arrays, case)
    elementwise = np.asarray(CPU[quantity](labels, logits, pos_weight))
    result_dtype = elementwise.dtype
    compute_dtype = np.float32 if result_dtype == np.float16 else result_dtype
    with np.errstate(invalid="ignore"):
        weighted = elementwise.astype(compute_dtype) * weight.astype(compute_dtype)
    return weighted, result_dtype


def exact_weighted_sum(arrays, case):
    """(sum of weight * loss, sum of their magnitudes), exactly, with mpmath.

    The inputs are those the GPU computes with: converted to the compute
    dtype first (exactly, for these values).
    """
    import mpmath
    from reference import PRECISION_BITS, exact_loss

    (labels, logits, pos_weight), weight = fused_inputs(arrays, case)
    arrays = np.broadcast_arrays(labels, logits, pos_weight, weight)
    total = magnitude = mpmath.mpf(0)
    with mpmath.workprec(PRECISION_BITS):
        for z, x, q, w in zip(*(a.ravel() for a in arrays), strict=True):
            term = mpmath.mpf(float(w)) * exact_loss(z, x, q)
            total += term
            magnitude += abs(term)
    return total, magnitude


def check_fused_numbers(computed, expected, dtype, extra_ulp, cancelling=None):
    """``computed`` (a list) within SIM_ULP + ``extra_ulp`` of ``expected``.

    ``cancelling``, where given, is the size of the terms that cancel in each
    element: an element within 2 CANCELLATION_EPS eps of that (the bound of
    each of the two results against the exact value) passes as well.
    """
    computed = np.array(computed, dtype).reshape(expected.shape)
    expected = expected.astype(dtype)
    distance = ulp_distance(computed, expected)
    close = distance <= SIM_ULP[dtype.name] + extra_ulp
    if cancelling is not None:
        compute_eps = np.finfo(np.float32 if dtype == np.float16 else dtype).eps
        with np.errstate(invalid="ignore"):
            difference = np.abs(computed.astype(float) - expected.astype(float))
            close |= difference <= 2 * CANCELLATION_EPS * compute_eps * cancelling

    assert (distance >= 0).all(), "NaN where the CPU has none, or the reverse"
    assert close.all(), f"{distance[~close]} ULP from the CPU result"


@pytest.mark.parametrize("case", FUSED_CASES)
def test_fused_elementwise_value_is_weight_times_loss(fused, case):
    # Against the CPU's loss times the weight: the simulator's loss is within
    # SIM_ULP of the CPU's, and multiplying by the weight rounds once more
    # (one ULP more apart at most). A float16 result rounds once more
    # still, after the float32 product: SIM_ULP for float16 is that ULP.
    results, arrays = fused
    value = results[f"{case}-none"]["value"]
    expected, dtype = cpu_weighted("loss", arrays, case)

    assert value["shape"] == list(expected.shape)
    assert value["dtype"] == dtype.name
    check_fused_numbers(value["values"], expected, dtype, dtype != np.float16)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", FUSED_CASES)
def test_fused_grad_is_weight_times_grad_over_n_for_mean(fused, case, reduction):
    # As above, and a mean divides by N once more: one more rounding.
    # Soft labels may make the gradient's two terms cancel, which no ULP
    # bound covers: there the bound is relative to the terms' size.
    results, arrays = fused
    grad = results[f"{case}-{reduction}"]["grad"]
    expected, dtype = cpu_weighted("grad", arrays, case)
    (labels, logits, pos_weight), weight = fused_inputs(arrays, case)
    divisor = expected.size if reduction == "mean" else 1
    expected = expected / expected.dtype.type(divisor)
    extra_ulp = 0 if dtype == np.float16 else 1 + (reduction == "mean")
    with np.errstate(invalid="ignore", over="ignore"):
        sizes = grad_term_sizes(labels, logits, pos_weight) * np.abs(weight)

    assert grad["shape"] == list(expected.shape)
    assert grad["dtype"] == dtype.name
    check_fused_numbers(grad["values"], expected, dtype, extra_ulp, sizes / divisor)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("case", FUSED_CASES)
def test_fused_reduction_is_within_bound_of_the_exact_sum(fused, case, reduction):
    # Each term weight * loss is within (ULP_BOUND + 1) eps of its exact value
    # (the loss's bound, and the product's rounding, eps the compute dtype's
    # machine epsilon); the float64 sum adds under 1e-14 relative for these
    # few terms; the result rounds once (eps_result / 2). So the sum is within
    # (ULP_BOUND + 1) eps sum|w l| + eps_result |S| of the exact S, and the
    # mean within that over N.
    import mpmath

    results, arrays = fused
    value = results[f"{case}-{reduction}"]["value"]
    _, dtype = cpu_weighted("loss", arrays, case)
    compute = np.dtype(np.float32 if dtype == np.float16 else dtype)
    total, magnitude = exact_weighted_sum(arrays, case)
    size = arrays[f"{case}-logits"].size
    divisor = size if reduction == "mean" else 1

    assert value["shape"] == [] and value["dtype"] == dtype.name
    (computed,) = value["values"]
    if size == 0:
        # An empty sum is 0; the mean of nothing is NaN, as in PyTorch.
        assert computed == 0 if reduction == "sum" else np.isnan(computed)
        return
    if not mpmath.isfinite(total):
        assert np.isnan(computed) if mpmath.isnan(total) else computed == total
        return
    exact = float(total / divisor)
    tolerance = (ULP_BOUND[compute.type] + 1) * np.finfo(compute).eps * float(
        magnitude / divisor
    ) + np.finfo(dtype).eps * abs(exact)
    assert abs(computed - exact) <= tolerance, (computed, exact, tolerance)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize(
    "case", [case for case in FUSED_CASES if case != "float16_logits"]
)
def test_fused_sum_is_its_elementwise_values_summed_in_float64(fused, case, reduction):
    # The terms the kernel adds are the elementwise values of the same inputs
    # (bit for bit, where the result dtype is the compute dtype: not for
    # float16, rounded after). Their float64 sum is within m 2^-53 sum|v| of
    # the exact one, m the most additions a term passes through: N / 24 in
    # its thread's loop (3 blocks of 8 threads), 3 in its block, 1 among the
    # partials, 3 in the finishing block (see _cuda). float32 terms are thus
    # summed exactly enough for the result to be their sum correctly rounded;
    # float64 ones within that bound plus the final rounding.
    results, _ = fused
    elementwise = results[f"{case}-none"]["value"]
    value = results[f"{case}-{reduction}"]["value"]
    dtype = np.dtype(value["dtype"])
    terms = np.array(elementwise["values"], np.float64)
    divisor = terms.size if reduction == "mean" else 1
    (computed,) = value["values"]
    if terms.size == 0:
        assert np.isnan(computed) if reduction == "mean" else computed == 0
        return
    if not np.isfinite(terms).all():
        assert same_bits(np.array([computed]), np.array([terms.sum()]))
        return
    exact = math.fsum(terms) / divisor

    if dtype == np.float32:
        assert np.float32(computed) == np.float32(exact)
    else:
        additions = math.ceil(terms.size / 24) + 3 + 1 + 3
        bound = additions * 2.0**-53 * math.fsum(np.abs(terms)) / divisor
        assert abs(computed - exact) <= bound + np.spacing(abs(exact))


def test_fused_sum_keeps_small_terms_beside_a_large_one(fused):
    # 2^30 log 2 + 199 log 2: a float32 running sum would drop every log 2
    # (below half a float32 ULP of 7e8, which is 64) and be 137 too small,
    # about 2 ULP; the float64 one gives the correctly rounded sum.
    import mpmath

    results, _ = fused
    (computed,) = results["large_and_small"]["value"]["values"]
    with mpmath.workprec(256):
        exact = (2**30 + 199) * mpmath.log(2)

    assert np.float32(computed) == np.float32(float(exact))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", ["flat_float32", "per_class_float64"])
def test_fused_value_and_grad_together_equal_each_alone(fused, case, reduction):
    results, _ = fused
    both = results[f"{case}-{reduction}"]
    value_only = results[f"{case}-{reduction}-value_only"]
    grad_only = results[f"{case}-{reduction}-grad_only"]

    assert value_only["grad"] is None and grad_only["value"] is None
    assert value_only["value"]["values"] == both["value"]["values"]
    assert grad_only["grad"]["values"] == both["grad"]["values"]


@pytest.mark.parametrize(
    ("case", "blocks"),
    # 29 elements: 4 blocks of 8 would cover them, 3 is the cap (the threads
    # loop); 30 elements, 3; one element, one block.
    [("flat_float32", 3), ("per_class_float64", 3), ("zero_d", 1)],
)
def test_fused_launches_one_pass_and_one_finishing_block(fused, case, blocks):
    results, _ = fused
    stream = "0"

    assert results[f"{case}-none"]["calls"] == [["fused", [blocks, 8], stream]]
    for reduction in ("sum", "mean"):
        assert results[f"{case}-{reduction}"]["calls"] == [
            ["fused", [blocks, 8], stream],
            ["finish", [1, 8], stream],
        ]


def test_fused_empty_input_launches_only_the_finishing_block(fused):
    results, _ = fused

    assert results["empty-none"]["calls"] == []
    assert results["empty-sum"]["calls"] == [["finish", [1, 8], "0"]]
    assert results["empty-none"]["grad"]["shape"] == [0, 3]


def test_fused_asking_for_nothing_launches_nothing(fused):
    result = fused[0]["nothing_wanted"]

    assert result["value"] is None and result["grad"] is None
    assert result["calls"] == [] and result["allocations"] == []


@pytest.mark.parametrize(
    ("case", "kind", "wrapped"),
    [
        ("kind_numba", "FakeCUDAArray", []),
        ("kind_cupy", "ndarray", ["cupy", "cupy"]),
        ("kind_torch", "Tensor", [["torch", 1], ["torch", 1]]),
    ],
)
def test_fused_results_are_the_logits_kind_on_the_device(fused, case, kind, wrapped):
    result = fused[0][case]
    value_shape = [4] if case == "kind_torch" else []

    assert result["value"]["kind"] == result["grad"]["kind"] == kind
    assert result["value"]["shape"] == value_shape
    assert result["grad"]["shape"] == [4]
    assert result["wrapped"] == wrapped
    # Nothing read back: only the host scalar pos_weight crossed.
    assert result["transfers"] == [["H2D", 4]]


def test_fused_mean_of_numba_arrays_is_a_zero_d_device_array(fused):
    value = fused[0]["kind_numba"]["value"]

    assert value["on_device"] and value["shape"] == []
    np.testing.assert_allclose(value["values"], [np.mean(README_VALUES)], rtol=1e-6)


def test_fused_launches_run_on_the_given_or_exported_stream(fused):
    results, _ = fused
    given = "<External CUDA stream 4660>"
    exported = "<External CUDA stream 17767>"

    assert [call[2] for call in results["stream_given"]["calls"]] == [given] * 2
    assert [call[2] for call in results["stream_exported"]["calls"]] == [exported] * 2
    # The labels came on another stream: wrapping them waits for it.
    assert results["stream_exported"]["imported"] == [True, False]


@pytest.mark.parametrize("wanted", ["value", "both"])
def test_fused_moves_and_allocates_nothing_that_grows_with_n(fused, wanted):
    # int8 labels and float16 logits: the kernel converts each element as it
    # reads it, so no cast copy of an input is made. Allocated: the results
    # (a 0-d value, the gradient) and one float64 partial per block.
    results, _ = fused
    small, large = (results[f"transfers-{wanted}-{n}"] for n in (4, 300))
    expected = {
        "value": [[[], "float16"], [[3], "float64"]],
        "both": [[[300], "float16"], [[], "float16"], [[3], "float64"]],
    }[wanted]
    # The host scalars (2.0, and 0.5 for "value"), as float32.
    host_weights = [["H2D", 4]] * (2 if wanted == "value" else 1)

    assert small["transfers"] == large["transfers"] == host_weights
    assert large["allocations"] == expected
    assert large["value"]["dtype"] == "float16"


FUSED_PLACEMENT_ERRORS = {
    "unknown_reduction": "reduction must be 'none', 'sum' or 'mean', got 'max' (str)",
    "host_labels": NOT_ALL
    + "labels is a numpy.ndarray on the host, logits is a numpy.ndarray on the "
    f"host, pos_weight is a float on the host, weight is {SIM}",
    "weight_on_another_device": "all CUDA arrays must be on one device: labels is "
    "a cupy.ndarray on CUDA device 0, logits is a cupy.ndarray on CUDA device 0, "
    "pos_weight is a float on the host, weight is a torch.Tensor on CUDA device 1",
    "large_host_weight": "a host weight may have at most 4096 elements when "
    "labels and logits are CUDA arrays, got 5000 (move it to the device once, "
    f"yourself): labels is {SIM}, logits is {SIM}, pos_weight is a float on the "
    "host, weight is a numpy.ndarray on the host",
}


@pytest.mark.parametrize("name", FUSED_PLACEMENT_ERRORS)
def test_fused_placement_errors_name_the_weight_too(fused, name):
    result = fused[0][f"error-{name}"]

    assert result["error"] == ["ValueError", FUSED_PLACEMENT_ERRORS[name]]
    assert result["calls"] == [] and result["transfers"] == []


@pytest.mark.parametrize(
    "name", ["shape", "device_shape", "complex", "string", "overflow", "ragged"]
)
def test_a_bad_weight_gets_pos_weights_error_under_its_own_name(fused, name):
    # The same checks serve both: the message of the elementwise call given
    # the same value as pos_weight, naming weight instead.
    results, _ = fused
    as_weight = results[f"bad_weight-{name}"]
    as_pos_weight = results[f"bad_pos_weight-{name}"]
    kind, message = as_pos_weight["error"]

    assert "pos_weight" in message
    assert as_weight["error"] == [kind, message.replace("pos_weight", "weight")]
    assert as_weight["calls"] == [] and as_weight["transfers"] == []


def test_a_bad_weight_message_reads_as_pos_weights(fused):
    assert fused[0]["bad_weight-shape"]["error"] == [
        "ValueError",
        "weight must be a scalar or broadcast to the logits' shape (2, 3), got "
        "weight shape (2,)",
    ]


def test_fused_zero_weight_on_an_infinite_loss_is_nan(fused):
    results, _ = fused
    values = results["zero_weight_on_infinite_loss-none"]["value"]["values"]

    assert np.isnan(values[0]) and values[1:] == [0.0, 0.0]
    assert np.isnan(results["zero_weight_on_infinite_loss-sum"]["value"]["values"])
    assert results["infinite_loss-sum"]["value"]["values"] == [np.inf]


API_FUSED_SCRIPT = API_SETUP + textwrap.dedent(
    """
    d = cuda.to_device
    loss = wce_numba.weighted_cross_entropy_with_logits
    grad = wce_numba.weighted_cross_entropy_with_logits_grad
    value_and_grad = wce_numba.weighted_cross_entropy_with_logits_value_and_grad

    rng = np.random.default_rng(8)
    z = rng.uniform(0, 1, (5, 3)).astype(np.float32)
    x = rng.normal(0, 4, (5, 3)).astype(np.float32)
    w = rng.uniform(0, 2, (5, 1)).astype(np.float32)
    q = np.array([0.5, 2.0, 8.0], np.float32)

    def listed(result):
        array = np.asarray(result.copy_to_host() if hasattr(result, "copy_to_host")
                           else result)
        return {"values": array.ravel().tolist(), "shape": list(array.shape),
                "dtype": str(array.dtype)}

    results = {}
    for reduction in ("none", "sum", "mean"):
        device = value_and_grad(d(z), d(x), d(q), weight=d(w), reduction=reduction)
        host = value_and_grad(z, x, q, weight=w, reduction=reduction)
        results[reduction] = {
            "device": [listed(part) for part in device],
            "host": [listed(part) for part in host],
            "loss_alone": listed(loss(d(z), d(x), d(q), weight=d(w),
                                      reduction=reduction)),
            "grad_alone": listed(grad(d(z), d(x), d(q), weight=d(w),
                                      reduction=reduction)),
        }

    out = d(np.zeros((), np.float32))
    returned = loss(d(z), d(x), q, weight=w, reduction="mean", out=out)
    results["out_mean"] = {"same": returned is out, **listed(out)}
    grad_out = d(np.zeros((5, 3), np.float32))
    returned = grad(d(z), d(x), q, weight=d(w), out=grad_out)
    results["out_grad"] = {"same": returned is grad_out, **listed(grad_out)}
    try:
        loss(d(z), d(x), q, reduction="sum", out=d(np.zeros(3, np.float32)))
    except ValueError as error:
        results["out_shape_error"] = str(error)
    try:
        loss(d(z), d(x), q, reduction="max")
    except ValueError as error:
        results["reduction_error"] = str(error)

    pathlib.Path(path).write_text(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def api_fused(tmp_path_factory):
    """The public functions' fused path with simulated CUDA arrays."""
    results, _ = run_in_simulator(
        tmp_path_factory, "cudasim_api_fused", API_FUSED_SCRIPT
    )
    return results


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_public_fused_calls_on_the_device_agree_with_the_host(api_fused, reduction):
    # The GPU rounds each weighted term in float32 before summing it in
    # float64 (the CPU keeps the product exact), and divides the mean's
    # gradient by N in float32: within SIM_ULP plus two roundings.
    result = api_fused[reduction]
    for device, host in zip(result["device"], result["host"], strict=True):
        assert device["shape"] == host["shape"] and device["dtype"] == "float32"
        check_fused_numbers(
            device["values"],
            np.array(host["values"], np.float32),
            np.dtype(np.float32),
            extra_ulp=2,
        )
    assert result["loss_alone"]["values"] == result["device"][0]["values"]
    assert result["grad_alone"]["values"] == result["device"][1]["values"]


def test_public_fused_calls_write_a_given_device_out(api_fused):
    assert api_fused["out_mean"]["same"] and api_fused["out_mean"]["shape"] == []
    assert api_fused["out_mean"]["values"] == api_fused["mean"]["device"][0]["values"]
    assert api_fused["out_grad"]["same"]
    assert api_fused["out_grad"]["values"] == api_fused["none"]["device"][1]["values"]
    assert api_fused["out_shape_error"] == (
        "out must have the reduced shape (), got out shape (3,)"
    )
    assert api_fused["reduction_error"].startswith(
        "reduction must be 'none', 'sum' or 'mean', got 'max'"
    )
