"""The CUDA path in numba-cuda's simulator (``NUMBA_ENABLE_CUDASIM=1``).

The simulator runs ``cuda.jit`` kernels as Python, with no GPU and no driver.
It must be switched on before ``numba.cuda`` is first imported, so it runs in
its own process, which writes its results to a file for the tests below.

What it runs for real: ``_cuda.strided_kernel`` with the real scalar kernels
(broadcast ``pos_weight``, strided, Fortran-ordered and negatively strided
arrays, a strided ``out``), and ``_cuda.launch``'s choice of path, its views
and its errors. What it cannot run: ``numba.vectorize(target='cuda')`` ufuncs
(numba-cuda's simulator fails while building one). The ufunc is replaced at
that seam by a double that checks it is given only one-dimensional arrays
(numba-cuda would flatten anything else, through the host if it must) and
computes with the CPU ufunc: the math is never copied.

A second process calls the public functions with simulated CUDA arrays:
placement, the result's kind, streams, errors, and the bytes each call moves
between host and device, counted by spying on numba-cuda's transfer functions.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from wce_numba import (
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_grad,
)

CPU = {
    "loss": weighted_cross_entropy_with_logits,
    "grad": weighted_cross_entropy_with_logits_grad,
}

# The simulator evaluates math.exp and math.log1p on Python floats (float64)
# and rounds to float32 afterwards, where compiled kernels call expf and
# log1pf; float32 results may differ from the CPU's in the last bits. In
# float64 both call the same libm on the same operations.
SIM_ULP = {"float32": 2, "float64": 0}

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


    _cuda.cuda_ufunc = ufunc_double
    _cuda.strided_kernel = recorded_strided_kernel

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

    f32 = np.ones((2, 3), np.float32)
    f64 = np.ones((2, 3), np.float64)
    d = cuda.to_device
    ERRORS = {
        "labels_dtype": lambda: _cuda.launch("loss", d(f32), d(f64), 1.0),
        "float16_logits": lambda: _cuda.launch(
            "loss", d(f32.astype(np.float16)), d(f32.astype(np.float16)), 1.0
        ),
        "weight_dtype": lambda: _cuda.launch("loss", d(f64), d(f64), d(f32[0])),
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


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """(metadata, arrays) written by one simulator process."""
    folder = tmp_path_factory.mktemp("cudasim")
    script, path = folder / "simulate.py", folder / "results.json"
    script.write_text(SIM_SCRIPT)
    process = subprocess.run(
        [sys.executable, str(script), str(path)],
        env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"},
        capture_output=True,
        text=True,
    )
    assert process.returncode == 0, process.stderr
    results = json.loads(path.read_text())
    if "skip" in results:
        pytest.skip(results["skip"])
    with np.load(f"{path}.npz") as arrays:
        return results, dict(arrays)


def ulp_distance(a, b):
    """Elementwise ULP distance of two same-dtype float arrays; NaN vs NaN is 0."""
    a, b = np.asarray(a), np.asarray(b)
    signed = {4: np.int32, 8: np.int64}[a.dtype.itemsize]

    def ordinal(x):
        # Maps floats to integers in the same order, so adjacent floats differ
        # by 1 and +0 and -0 coincide.
        bits = x.view(signed).astype(np.int64)
        return np.where(bits < 0, np.iinfo(signed).min - bits, bits)

    distance = np.abs(ordinal(a) - ordinal(b))
    both_nan = np.isnan(a) & np.isnan(b)
    return np.where(both_nan, 0, np.where(np.isnan(a) | np.isnan(b), -1, distance))


def check_against_cpu(arrays, key, dtype, quantity):
    labels = arrays[f"{key}-labels"]
    logits = arrays[f"{key}-logits"]
    pos_weight = arrays[f"{key}-pos_weight"]
    result = arrays[f"{key}-result"]
    expected = CPU[quantity](labels, logits, pos_weight)

    assert result.dtype == np.dtype(dtype)
    distance = ulp_distance(result, np.asarray(expected))
    assert (distance >= 0).all(), "NaN where the CPU has none, or the reverse"
    assert distance.max(initial=0) <= SIM_ULP[dtype], (
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
    check_against_cpu(arrays, key, dtype, quantity)


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


ERRORS = {
    "labels_dtype": (
        "TypeError",
        "labels must have the logits' dtype float64 on the GPU (the GPU path "
        "does not cast), got labels dtype float32",
    ),
    "float16_logits": (
        "TypeError",
        "logits on the GPU must be float32 or float64 (the GPU path does not "
        "cast), got dtype float16",
    ),
    "weight_dtype": (
        "TypeError",
        "pos_weight must have the logits' dtype float64 on the GPU (the GPU "
        "path does not cast), got pos_weight dtype float32",
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
        "pos_weight has values beyond the range of float32, the logits' dtype "
        "(largest magnitude 1e+40)",
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
API_SCRIPT = textwrap.dedent(
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


    _cuda.cuda_ufunc = ufunc_double
    _cuda.strided_kernel = recorded_strided_kernel

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


    def call(quantity, *args, **kwargs):
        del calls[:], transfers[:], wrapped[:], imported[:]
        try:
            result = FUNCTIONS[quantity](*args, **kwargs)
        except Exception as error:
            return {"error": [type(error).__name__, str(error)],
                    "calls": list(calls), "transfers": list(transfers)}
        return {
            "kind": type(result).__name__,
            "on_device": bool(getattr(result, "__cuda_ndarray__", False)),
            "shape": list(result.array.shape if hasattr(result, "array")
                          else result.shape),
            "dtype": str(getattr(result, "array", result).dtype),
            "calls": list(calls),
            "transfers": list(transfers),
            "wrapped": list(wrapped),
            "imported": list(imported),
            "values": host(result).ravel().tolist(),
            "same_out": kwargs.get("out") is not None and result is kwargs["out"],
        }


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
    # the simulator runs the strided kernel as Python, about 3 s per 1e4).
    rng = np.random.default_rng(3)
    for n in (4, 3334):
        z = rng.uniform(0, 1, (n, 3)).astype(np.float32)
        x = rng.normal(0, 5, (n, 3)).astype(np.float32)
        per_class = np.array([0.5, 2.0, 8.0], np.float32)
        wide_z, wide_x = np.repeat(z, 2, axis=1), np.repeat(x, 2, axis=1)
        cases = {
            "contiguous": (d(z), d(x), 2.0),
            "strided": (d(wide_z)[:, ::2], d(wide_x)[:, ::2], 2.0),
            "per_class_host": (d(z), d(x), per_class),
            "per_class_device": (d(z), d(x), d(per_class)),
        }
        for name, args in cases.items():
            results[f"transfers-{name}-{n}"] = call("loss", *args)

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
        "int_labels": ("loss", d(np.ones(3, np.int64)), d(np.ones(3)), 2.0),
        "float16_logits": (
            "loss", d(np.ones(3, np.float16)), d(np.ones(3, np.float16)), 2.0
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
    folder = tmp_path_factory.mktemp("cudasim_api")
    script, path = folder / "api.py", folder / "results.json"
    script.write_text(API_SCRIPT)
    process = subprocess.run(
        [sys.executable, str(script), str(path)],
        env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"},
        capture_output=True,
        text=True,
    )
    assert process.returncode == 0, process.stderr
    results = json.loads(path.read_text())
    if "skip" in results:
        pytest.skip(results["skip"])
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


@pytest.mark.parametrize(
    "case", ["contiguous", "strided", "per_class_host", "per_class_device"]
)
def test_bytes_moved_per_call_do_not_grow_with_n(api, case):
    small, large = api[f"transfers-{case}-4"], api[f"transfers-{case}-3334"]

    assert small["shape"] == [4, 3] and large["shape"] == [3334, 3]
    assert large["transfers"] == small["transfers"]
    # At most the host pos_weight crosses, and nothing comes back.
    weight_bytes = {"per_class_host": 12, "per_class_device": 0}.get(case, 4)
    assert sum(size for _, size in large["transfers"]) == weight_bytes
    assert all(direction == "H2D" for direction, _ in large["transfers"])


def test_transfer_cases_take_both_paths(api):
    # So the test above covers the ufunc and the strided kernel alike.
    assert api["transfers-contiguous-3334"]["calls"][0][0] == "ufunc"
    assert api["transfers-strided-3334"]["calls"][0][0] == "strided"
    assert api["transfers-per_class_host-3334"]["calls"][0][0] == "strided"


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


DTYPE_ERRORS = {
    "int_labels": "labels must have the logits' dtype float64 on the GPU (the "
    "GPU path does not cast), got labels dtype int64",
    "float16_logits": "logits on the GPU must be float32 or float64 (the GPU "
    "path does not cast), got dtype float16",
}


@pytest.mark.parametrize("name", DTYPE_ERRORS)
def test_the_gpu_path_does_not_cast(api, name):
    result = api[f"error-{name}"]

    assert result["error"] == ["TypeError", DTYPE_ERRORS[name]]
    assert result["calls"] == [] and result["transfers"] == []


# The same arguments on the host, for the same message.
SAME_AS_CPU = {
    "shapes": (np.ones((2, 3)), np.ones((3, 2)), 2.0),
    "weight_shape": (np.ones((2, 3)), np.ones((2, 3)), np.ones(2)),
    "weight_overflow": (np.ones(3, np.float32), np.ones(3, np.float32), 1e40),
    "weight_dtype": (np.ones(3), np.ones(3), np.array(["a"])),
}


@pytest.mark.parametrize("name", SAME_AS_CPU)
def test_shape_and_weight_errors_read_as_on_the_cpu(api, name):
    result = api[f"error-{name}"]
    with pytest.raises((TypeError, ValueError)) as on_cpu:
        CPU["loss"](*SAME_AS_CPU[name])

    assert result["error"] == [type(on_cpu.value).__name__, str(on_cpu.value)]
    assert result["calls"] == [] and result["transfers"] == []


def test_out_shape_error_as_on_the_cpu(api):
    assert api["error-out_shape"]["error"] == [
        "ValueError",
        "out must have the logits' shape (3,), got out shape (4,)",
    ]
