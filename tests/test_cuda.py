"""The CUDA path: lazy import, clear errors, and conformance on a real GPU.

The tests marked ``cuda`` need an NVIDIA GPU, its driver and numba-cuda
(``pip install "wce_numba[cuda]"``); elsewhere they are skipped with the reason.
On a GPU they check the kernels against the exact values and the CPU, and the
public functions with Numba, CuPy and PyTorch arrays: the result's kind, its
residency, streams, and the bytes each call moves between host and device
(counted by spying on numba-cuda's transfer functions). The others run
everywhere, each in a fresh interpreter where what they check is what gets
imported.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from reference import exact_grad, exact_loss
from test_cuda_sim import same_bits, ulp_distance
from test_numerics import (
    CANCELLATION_EPS,
    ULP_BOUND,
    cancellation_errors,
    grad_term_sizes,
    grid,
    ulp_errors,
    worst,
)

from wce_numba import (
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_grad,
)
from wce_numba._device import is_device_array

INSTALL_HINT = 'pip install "wce_numba[cuda]"'

CPU = {
    "loss": weighted_cross_entropy_with_logits,
    "grad": weighted_cross_entropy_with_logits_grad,
}
EXACT = {"loss": exact_loss, "grad": exact_grad}
DTYPES = [np.float32, np.float64]

# GPU against CPU: each is within ULP_BOUND of the exact value, so they are
# within twice that of each other. They need not agree bit for bit: libdevice's
# expf and exp are not glibc's (the CUDA guide bounds expf by 2 ULP), and NVVM
# contracts a multiply and an add into one fma where the CPU rounds twice.
GPU_VS_CPU_ULP = {dtype: 2 * bound for dtype, bound in ULP_BOUND.items()}
# A float16 result is such a float32 value rounded once more (13 fewer bits):
# one float16 ULP apart at most.
GPU_VS_CPU_ULP[np.float16] = 1

# numba-cuda warns on every launch of fewer than 128 blocks, which the small
# test arrays are; that is about speed, not results.
low_occupancy = pytest.mark.filterwarnings("ignore:Grid size .* under-utilization")


def run_python(source: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0", **env},
        capture_output=True,
        text=True,
    )


def test_import_and_cpu_calls_do_not_import_numba_cuda():
    result = run_python(
        """
        import sys
        import numpy as np
        import wce_numba

        wce_numba.weighted_cross_entropy_with_logits(np.ones(3), np.zeros(3), 2.0)
        wce_numba.weighted_cross_entropy_with_logits_grad(1.0, 0.0, 2.0)
        print([m for m in sys.modules if m.startswith(("numba.cuda", "numba_cuda"))])
        """
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_numba_cuda_raises_import_error_saying_what_to_install():
    # None in sys.modules makes ``import numba_cuda`` fail, installed or not.
    # The module itself still imports (pytest's doctest collection imports it).
    result = run_python(
        """
        import sys
        sys.modules["numba_cuda"] = None
        from wce_numba import _cuda

        try:
            _cuda.cuda_ufunc("loss")
        except ImportError as error:
            print(error)
        """
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "CUDA arrays need numba-cuda and the CUDA libraries (runtime, NVVM, "
        f"NVRTC); install them with: {INSTALL_HINT}"
    )


def test_missing_driver_raises_runtime_error_saying_what_is_missing():
    result = run_python(
        """
        from wce_numba import _cuda

        try:
            _cuda.require_numba_cuda()
            _cuda.cuda_ufunc("loss")
        except ImportError:
            print("no numba-cuda")
        except RuntimeError as error:
            print(error)
        else:
            print("GPU")
        """
    )

    assert result.returncode == 0, result.stderr
    if result.stdout.strip() in ("no numba-cuda", "GPU"):
        pytest.skip(f"needs numba-cuda and no GPU, found: {result.stdout.strip()}")
    assert result.stdout.startswith(
        "CUDA arrays need an NVIDIA GPU with its driver, and the CUDA libraries "
        f"({INSTALL_HINT}); numba-cuda reports: "
    )


@pytest.fixture(scope="module")
def gpu():
    """numba.cuda and wce_numba._cuda, or a skip saying what is missing."""
    from wce_numba import _cuda

    try:
        _cuda.require_gpu()
    except (ImportError, RuntimeError) as error:
        pytest.skip(str(error))
    return _cuda.cuda, _cuda


def assert_close_to_cpu(computed, expected, dtype):
    distance = ulp_distance(computed, np.asarray(expected, dtype=dtype))
    assert (distance >= 0).all(), "NaN where the CPU has none, or the reverse"
    assert distance.max(initial=0) <= GPU_VS_CPU_ULP[dtype], (
        f"{distance.max()} ULP from the CPU result"
    )


def gpu_ufunc_on_grid(gpu, quantity, z, x, q):
    cuda, _cuda = gpu
    ufunc = _cuda.cuda_ufunc(quantity)
    return ufunc(cuda.to_device(z), cuda.to_device(x), cuda.to_device(q)).copy_to_host()


@pytest.mark.cuda
@low_occupancy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("quantity", ["loss", "grad"])
def test_gpu_ufunc_meets_the_ulp_contract(gpu, quantity, dtype):
    # The loss on the whole grid, the gradient for hard labels: the contract
    # of test_numerics, on the GPU.
    labels = None if quantity == "loss" else [0.0, 1.0]
    z, x, q = grid(dtype) if labels is None else grid(dtype, labels=labels)
    computed = gpu_ufunc_on_grid(gpu, quantity, z, x, q)

    errors = ulp_errors(computed, EXACT[quantity], z, x, q)

    assert computed.dtype == dtype
    assert errors.max() <= ULP_BOUND[dtype], worst(errors, z, x, q)


@pytest.mark.cuda
@low_occupancy
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_grad_with_soft_labels_within_bound_of_cancelling_terms(gpu, dtype):
    z, x, q = grid(dtype, labels=[0.5, 0.1, 0.9, 0.3, 1e-8, 1 - 1e-8])
    z, x, q = (v[np.isfinite(x)] for v in (z, x, q))
    computed = gpu_ufunc_on_grid(gpu, "grad", z, x, q)

    ratios = cancellation_errors(
        computed, exact_grad, grad_term_sizes(z, x, q), z, x, q
    )

    assert ratios.max() <= CANCELLATION_EPS, worst(ratios, z, x, q)


@pytest.mark.cuda
@low_occupancy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("quantity", ["loss", "grad"])
def test_gpu_ufunc_agrees_with_cpu_on_grid(gpu, quantity, dtype):
    z, x, q = grid(dtype)
    computed = gpu_ufunc_on_grid(gpu, quantity, z, x, q)
    expected = CPU[quantity](z, x, q)

    assert_close_to_cpu(computed, expected, dtype)


def layouts(rng, dtype):
    """(name, labels, logits, pos_weight, device layout, out layout) on the host."""
    z = rng.uniform(0, 1, (6, 4)).astype(dtype)
    x = rng.normal(0, 20, (6, 4)).astype(dtype)
    per_class = rng.uniform(0, 4, 4).astype(dtype)
    per_row = rng.uniform(0, 4, (6, 1)).astype(dtype)
    return [
        ("scalar_weight", z, x, 2.0, "C", None),
        ("same_shape_weight", z, x, z + 1, "C", None),
        ("per_class_weight", z, x, per_class, "C", None),
        ("per_row_weight", z, x, per_row, "C", None),
        ("fortran_order", z, x, per_class, "F", None),
        ("strided_views", z, x, per_class, "strided", None),
        ("reversed", z, x, 2.0, "reversed", None),
        ("strided_out", z, x, 2.0, "C", "strided"),
        ("given_out", z, x, per_class, "C", "C"),
        ("zero_d", z[0, 0], x[0, 0], 2.0, "C", None),
        ("empty", z[:0], x[:0], per_class, "C", None),
    ]


def on_device(cuda, array, layout):
    """``array`` copied to the device, then viewed there in ``layout``."""
    array = np.asarray(array)
    if layout == "F":
        return cuda.to_device(np.asfortranarray(array))
    if layout == "strided":
        return cuda.to_device(np.repeat(array, 2, axis=-1))[..., ::2]
    if layout == "reversed":
        return cuda.to_device(np.ascontiguousarray(array[::-1]))[::-1]
    return cuda.to_device(array)


@pytest.mark.cuda
@low_occupancy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("quantity", ["loss", "grad"])
def test_launch_agrees_with_cpu_in_every_layout_without_host_copies(
    gpu, monkeypatch, quantity, dtype
):
    cuda, _cuda = gpu
    from numba.cuda.cudadrv import driver

    transfers = []

    def record(direction, original):
        def transfer(dst, src, size, *args, **kwargs):
            transfers.append((direction, size))
            return original(dst, src, size, *args, **kwargs)

        return transfer

    rng = np.random.default_rng(11)
    for name, z, x, q, layout, out_layout in layouts(rng, dtype):
        labels, logits = on_device(cuda, z, layout), on_device(cuda, x, layout)
        scalar_weight = isinstance(q, float)
        pos_weight = q if scalar_weight else on_device(cuda, q, layout)
        out = None
        if out_layout is not None:
            out = on_device(cuda, np.zeros_like(x), out_layout)

        with monkeypatch.context() as patch:
            patch.setattr(
                driver, "host_to_device", record("H2D", driver.host_to_device)
            )
            patch.setattr(
                driver, "device_to_host", record("D2H", driver.device_to_host)
            )
            transfers.clear()
            result = _cuda.launch(quantity, labels, logits, pos_weight, out=out)
            cuda.synchronize()

        # Only a host scalar pos_weight crosses, as one element.
        allowed = [("H2D", np.dtype(dtype).itemsize)] if scalar_weight else []
        assert transfers == allowed, name
        if out is not None:
            assert result is out, name
        expected = CPU[quantity](z, x, q)
        assert result.shape == np.shape(expected), name
        assert_close_to_cpu(result.copy_to_host(), expected, dtype)


# The public functions with CUDA arrays. The first tests run everywhere (each
# in a fresh interpreter where it matters); those marked ``cuda`` need a GPU.

CAI_OBJECT = """
class DeviceArray:
    # Anything exposing the interface counts as a CUDA array.
    __cuda_array_interface__ = {
        "shape": (3,), "typestr": "<f8", "data": (0, False), "version": 3,
    }
"""


def test_cuda_array_without_numba_cuda_raises_import_error_through_the_api():
    result = run_python(
        CAI_OBJECT
        + """
import sys
sys.modules["numba_cuda"] = None
import wce_numba

try:
    wce_numba.weighted_cross_entropy_with_logits(DeviceArray(), DeviceArray(), 2.0)
except ImportError as error:
    print(error)
"""
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"install them with: {INSTALL_HINT}")


def test_cuda_array_without_a_gpu_raises_runtime_error_through_the_api():
    result = run_python(
        CAI_OBJECT
        + """
import wce_numba

try:
    wce_numba.weighted_cross_entropy_with_logits_grad(
        DeviceArray(), DeviceArray(), 2.0
    )
except ImportError:
    print("no numba-cuda")
except RuntimeError as error:
    print(error)
else:
    print("GPU")
"""
    )

    assert result.returncode == 0, result.stderr
    if result.stdout.strip() in ("no numba-cuda", "GPU"):
        pytest.skip(f"needs numba-cuda and no GPU, found: {result.stdout.strip()}")
    assert result.stdout.startswith("CUDA arrays need an NVIDIA GPU with its driver")


def test_placement_is_checked_before_numba_cuda_is_imported():
    # A mixed call fails fast with the placement, GPU or not.
    result = run_python(
        CAI_OBJECT
        + """
import sys
import numpy as np
import wce_numba

try:
    wce_numba.weighted_cross_entropy_with_logits(np.ones(3), DeviceArray(), 2.0)
except ValueError as error:
    print(error)
print([m for m in sys.modules if m.startswith(("numba.cuda", "numba_cuda"))])
"""
    )

    assert result.returncode == 0, result.stderr
    message, modules = result.stdout.strip().splitlines()
    assert message.endswith(
        "labels is a numpy.ndarray on the host, logits is a __main__.DeviceArray "
        "on the current CUDA device, pos_weight is a float on the host"
    )
    assert modules == "[]"


@pytest.mark.parametrize("quantity", ["loss", "grad"])
@pytest.mark.parametrize("stream", [0, object()])
def test_stream_with_host_arrays_is_a_value_error(quantity, stream):
    with pytest.raises(ValueError, match=r"^stream= applies only to CUDA arrays"):
        CPU[quantity](np.ones(3), np.zeros(3), 2.0, stream=stream)


@pytest.fixture
def transfers(gpu, monkeypatch):
    """The (direction, bytes) of every host-device copy numba-cuda makes."""
    from numba.cuda.cudadrv import driver

    moved = []

    def record(direction, original):
        def transfer(dst, src, size, *args, **kwargs):
            moved.append((direction, size))
            return original(dst, src, size, *args, **kwargs)

        return transfer

    monkeypatch.setattr(driver, "host_to_device", record("H2D", driver.host_to_device))
    monkeypatch.setattr(driver, "device_to_host", record("D2H", driver.device_to_host))
    return moved


README_VALUES = np.array([8.507712, 2.126928, 1.732868, 0.19434941], np.float32)


@pytest.mark.cuda
@pytest.mark.parametrize("library", ["numba", "cupy", "torch"])
def test_readme_example_stays_on_the_device(gpu, transfers, library):
    cuda, _ = gpu
    z = np.array([1, 0, 0.5, 1], np.float32)
    x = np.array([-2, 2, 0, 3], np.float32)
    if library == "numba":
        labels, logits = cuda.to_device(z), cuda.to_device(x)
    elif library == "cupy":
        cupy = pytest.importorskip("cupy")
        labels, logits = cupy.asarray(z), cupy.asarray(x)
    else:
        torch = pytest.importorskip("torch")
        labels, logits = torch.as_tensor(z).cuda(), torch.as_tensor(x).cuda()
    transfers.clear()

    result = weighted_cross_entropy_with_logits(labels, logits, pos_weight=4.0)
    cuda.synchronize()

    assert transfers == [("H2D", 4)]  # the scalar pos_weight, nothing back
    assert type(result).__module__.split(".")[0] == library
    values = np.asarray(
        result.copy_to_host() if library == "numba" else result.tolist()
    )
    np.testing.assert_allclose(values, README_VALUES, rtol=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize(
    "case",
    [
        "contiguous",
        "strided",
        "per_class",
        "host_class",
        "int_labels",
        "bool_labels",
        "float16_logits",
        "int_weight",
    ],
)
def test_bytes_moved_per_call_do_not_grow_with_n(gpu, transfers, case):
    # Casting other dtypes happens on the device: it moves nothing either.
    cuda, _ = gpu
    rng = np.random.default_rng(5)
    moved = {}
    for n in (10, 10_000):
        z = rng.uniform(0, 1, (n, 4)).astype(np.float32)
        x = rng.normal(0, 5, (n, 4)).astype(np.float32)
        per_class = np.array([0.5, 1.0, 2.0, 8.0], np.float32)
        if case == "int_labels":
            z = (z > 0.5).astype(np.int64)
        if case == "bool_labels":
            z = z > 0.5
        if case == "float16_logits":
            x = x.astype(np.float16)
        if case == "int_weight":
            per_class = np.array([1, 1, 2, 8], np.int64)
        labels, logits = cuda.to_device(z), cuda.to_device(x)
        pos_weight = 2.0
        if case == "strided":
            labels = cuda.to_device(np.repeat(z, 2, axis=1))[:, ::2]
            logits = cuda.to_device(np.repeat(x, 2, axis=1))[:, ::2]
        if case in ("per_class", "int_weight"):
            pos_weight = cuda.to_device(per_class)
        if case == "host_class":
            pos_weight = per_class
        cuda.synchronize()
        transfers.clear()

        result = weighted_cross_entropy_with_logits(labels, logits, pos_weight)
        cuda.synchronize()
        moved[n] = list(transfers)

        device_class = case in ("per_class", "int_weight")
        host_weight = per_class if device_class or case == "host_class" else 2.0
        expected = weighted_cross_entropy_with_logits(z, x, host_weight)
        assert result.dtype == expected.dtype
        assert_close_to_cpu(result.copy_to_host(), expected, expected.dtype.type)

    assert moved[10] == moved[10_000]
    assert all(direction == "H2D" for direction, _ in moved[10_000])
    assert sum(size for _, size in moved[10_000]) <= per_class.nbytes


# The CPU's dtype rules on the GPU: inputs of any real dtype are cast on the
# device to the compute dtype, and float16 results are cast from float32 there.
DTYPE_COMBINATIONS = [
    # (labels, logits, pos_weight: "host" for a host scalar, else a device dtype)
    ("int64", "float64", "host"),
    ("int32", "float32", "float32"),
    ("bool", "float32", "int64"),
    ("uint8", "float64", "bool"),
    ("float64", "float32", "float64"),
    ("float32", "float64", "float16"),
    ("float16", "float16", "host"),
    ("float32", "float16", "float16"),
    ("int8", "int32", "host"),
    ("int64", "int64", "int64"),
    ("bool", "bool", "host"),
    ("float32", "uint64", "float32"),
]


def sample(rng, dtype, kind, shape, hard_labels):
    """Values of ``dtype`` for an argument of ``kind``, on the host."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if kind == "labels":
        values = rng.integers(0, 2, shape)
        if not hard_labels and dtype.kind == "f":
            values = rng.uniform(0, 1, shape)
    elif kind == "logits":
        values = rng.normal(0, 20, shape)
        if dtype.kind in "iu":
            values = np.abs(values) if dtype.kind == "u" else values
            values = np.round(values)
    else:
        values = rng.choice([0, 1, 3, 100], shape)
    return values.astype(dtype)


@pytest.mark.cuda
@low_occupancy
@pytest.mark.parametrize("quantity", ["loss", "grad"])
@pytest.mark.parametrize("layout", ["C", "strided"])
@pytest.mark.parametrize("dtypes", DTYPE_COMBINATIONS, ids="-".join)
def test_api_on_gpu_casts_as_the_cpu_does(gpu, transfers, quantity, layout, dtypes):
    # Soft-label gradients may cancel (bounded relative to the terms, not in
    # ULP): the gradient is compared for hard labels.
    cuda, _ = gpu
    rng = np.random.default_rng(13)
    labels_type, logits_type, weight_type = dtypes
    z = sample(rng, labels_type, "labels", (64, 8), quantity == "grad")
    x = sample(rng, logits_type, "logits", (64, 8), False)
    q = 2.0 if weight_type == "host" else sample(rng, weight_type, "w", (8,), False)
    labels, logits = device_layout(cuda, z, layout), device_layout(cuda, x, layout)
    pos_weight = q if weight_type == "host" else cuda.to_device(q)
    cuda.synchronize()
    transfers.clear()

    result = CPU[quantity](labels, logits, pos_weight)
    cuda.synchronize()
    expected = CPU[quantity](z, x, q)

    # Only a host scalar pos_weight crosses; the casts move nothing.
    assert all(direction == "H2D" for direction, _ in transfers)
    assert sum(size for _, size in transfers) <= 8
    assert result.dtype == expected.dtype and result.shape == expected.shape
    assert_close_to_cpu(result.copy_to_host(), expected, expected.dtype.type)


@pytest.mark.cuda
@low_occupancy
@pytest.mark.parametrize("out_layout", ["C", "strided"])
@pytest.mark.parametrize("quantity", ["loss", "grad"])
def test_api_on_gpu_float16_logits_into_a_float16_out(gpu, quantity, out_layout):
    cuda, _ = gpu
    rng = np.random.default_rng(17)
    z = rng.integers(0, 2, (32, 8)).astype(np.float16)
    x = rng.normal(0, 8, (32, 8)).astype(np.float16)
    out = device_layout(cuda, np.zeros((32, 8), np.float16), out_layout)

    result = CPU[quantity](cuda.to_device(z), cuda.to_device(x), 2.0, out=out)

    assert result is out
    assert_close_to_cpu(out.copy_to_host(), CPU[quantity](z, x, 2.0), np.float16)


def every_value(rng, dtype, size=20_000):
    """Values of ``dtype`` across its range: random bit patterns for floats
    (subnormals, infinities and NaN included), random integers otherwise."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size).astype(bool)
    if dtype.kind == "f":
        unsigned = np.dtype(f"u{dtype.itemsize}")
        bits = rng.integers(0, np.iinfo(unsigned).max, size, unsigned, endpoint=True)
        return bits.view(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size, dtype, endpoint=True)


# The casts the GPU path makes: any real dtype to a compute dtype, and a
# float32 result to float16.
CASTS = [
    (source, target)
    for source in [
        "bool",
        "int8",
        "uint8",
        "int16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "float16",
        "float32",
        "float64",
    ]
    for target in ["float32", "float64"]
    if source != target
] + [("float32", "float16")]


@pytest.mark.cuda
@low_occupancy
@pytest.mark.parametrize(("source", "target"), CASTS)
def test_cast_kernel_rounds_as_numpy_astype(gpu, source, target):
    cuda, _cuda = gpu
    values = every_value(np.random.default_rng(19), source)

    cast = _cuda.as_dtype(cuda.to_device(values), np.dtype(target))
    with np.errstate(all="ignore"):  # float64 beyond float32 becomes inf
        expected = values.astype(target)

    assert same_bits(cast.copy_to_host(), expected)


def device_layout(cuda, array, layout):
    array = np.asarray(array)
    if layout == "strided":
        return cuda.to_device(np.repeat(array, 2, axis=-1))[..., ::2]
    if layout == "reversed":
        return cuda.to_device(np.ascontiguousarray(array[::-1]))[::-1]
    if layout == "fortran":
        return cuda.to_device(np.asfortranarray(array))
    return cuda.to_device(array)


@pytest.mark.cuda
@low_occupancy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("quantity", ["loss", "grad"])
@pytest.mark.parametrize("layout", ["C", "strided", "reversed", "fortran"])
@pytest.mark.parametrize("weight_shape", [(), (8,), (1, 8), (1, 1), "same"])
def test_api_on_gpu_matches_cpu_in_every_layout_and_broadcast(
    gpu, quantity, dtype, layout, weight_shape
):
    # The grid of test_numerics, as (rows, 8) arrays, through the public API;
    # hard labels only for the gradient, whose soft-label values may cancel
    # (bounded relative to the cancelling terms, not in ULP).
    cuda, _ = gpu
    z, x, q = grid(dtype) if quantity == "loss" else grid(dtype, labels=[0.0, 1.0])
    rows = z.size // 8
    z, x = z[: rows * 8].reshape(rows, 8), x[: rows * 8].reshape(rows, 8)
    rng = np.random.default_rng(2)
    if weight_shape == "same":
        weight_shape = z.shape
    q = rng.choice(q, weight_shape).astype(dtype)

    result = CPU[quantity](
        device_layout(cuda, z, layout),
        device_layout(cuda, x, layout),
        device_layout(cuda, q, layout) if q.ndim else q[()],
    )

    assert result.shape == z.shape and result.dtype == dtype
    assert_close_to_cpu(result.copy_to_host(), CPU[quantity](z, x, q), dtype)


@pytest.mark.cuda
@low_occupancy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("quantity", ["loss", "grad"])
def test_api_on_gpu_meets_the_ulp_contract(gpu, quantity, dtype):
    cuda, _ = gpu
    labels = None if quantity == "loss" else [0.0, 1.0]
    z, x, q = grid(dtype) if labels is None else grid(dtype, labels=labels)
    result = CPU[quantity](cuda.to_device(z), cuda.to_device(x), cuda.to_device(q))

    errors = ulp_errors(result.copy_to_host(), EXACT[quantity], z, x, q)

    assert errors.max() <= ULP_BOUND[dtype], worst(errors, z, x, q)


@pytest.mark.cuda
@low_occupancy
@pytest.mark.parametrize("quantity", ["loss", "grad"])
def test_api_on_gpu_scalars_empty_and_out(gpu, transfers, quantity):
    cuda, _ = gpu
    zero_d = CPU[quantity](
        cuda.to_device(np.array(1.0)), cuda.to_device(np.array(-2.0)), 4.0
    )
    empty = CPU[quantity](cuda.to_device(np.zeros(0)), cuda.to_device(np.zeros(0)), 2.0)
    out = cuda.device_array(3)
    given = CPU[quantity](
        cuda.to_device(np.ones(3)), cuda.to_device(np.zeros(3)), 2.0, out=out
    )

    assert zero_d.shape == () and is_device_array(zero_d)
    assert_close_to_cpu(
        zero_d.copy_to_host(), CPU[quantity](1.0, -2.0, 4.0), np.float64
    )
    assert empty.shape == (0,) and is_device_array(empty)
    assert given is out
    assert_close_to_cpu(
        out.copy_to_host(), CPU[quantity](np.ones(3), np.zeros(3), 2.0), np.float64
    )


@pytest.mark.cuda
@low_occupancy
def test_api_on_gpu_runs_on_the_given_stream(gpu):
    cuda, _ = gpu
    stream = cuda.stream()
    z, x = np.linspace(0, 1, 50), np.linspace(-5, 5, 50)
    labels, logits = cuda.to_device(z, stream=stream), cuda.to_device(x, stream=stream)

    result = weighted_cross_entropy_with_logits(labels, logits, 2.0, stream=stream)
    stream.synchronize()

    assert_close_to_cpu(result.copy_to_host(), CPU["loss"](z, x, 2.0), np.float64)
    # A stream pointer works as well.
    result = weighted_cross_entropy_with_logits(labels, logits, 2.0, stream=int(stream))
    stream.synchronize()
    assert_close_to_cpu(result.copy_to_host(), CPU["loss"](z, x, 2.0), np.float64)


@pytest.mark.cuda
@low_occupancy
def test_api_on_gpu_with_cupy_and_torch_streams(gpu):
    z, x = np.linspace(0, 1, 50), np.linspace(-5, 5, 50)
    expected = CPU["loss"](z, x, 2.0)
    tried = []
    try:
        import cupy
    except ImportError:
        pass
    else:
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            labels, logits = cupy.asarray(z), cupy.asarray(x)
            result = weighted_cross_entropy_with_logits(labels, logits, 2.0)
        stream.synchronize()
        assert isinstance(result, cupy.ndarray)
        assert_close_to_cpu(cupy.asnumpy(result), expected, np.float64)
        tried.append("cupy")
    try:
        import torch
    except ImportError:
        pass
    else:
        stream = torch.cuda.Stream()
        labels, logits = torch.as_tensor(z).cuda(), torch.as_tensor(x).cuda()
        torch.cuda.synchronize()
        result = weighted_cross_entropy_with_logits(labels, logits, 2.0, stream=stream)
        stream.synchronize()
        assert isinstance(result, torch.Tensor) and result.is_cuda
        assert_close_to_cpu(result.cpu().numpy(), expected, np.float64)
        tried.append("torch")
    if not tried:
        pytest.skip("neither CuPy nor PyTorch is installed")


# The fused path: the weighted loss, summed or averaged without being stored,
# and its gradient, from one pass (``_device.run_fused``).


def to_library(cuda, array, library):
    """``array`` on the device, as a Numba, CuPy or PyTorch array."""
    if library == "cupy":
        return pytest.importorskip("cupy").asarray(array)
    if library == "torch":
        return pytest.importorskip("torch").as_tensor(array).cuda()
    return cuda.to_device(array)


def from_device(result):
    """A device result of any of the three kinds, on the host."""
    package = type(result).__module__.split(".")[0]
    if package == "cupy":
        return result.get()
    if package == "torch":
        return result.cpu().numpy()
    return result.copy_to_host()


@pytest.mark.cuda
def test_fused_float32_mean_of_1e7_is_within_1e_6_of_the_float64_mean(gpu):
    # The GPU adds each float32 term in float64 (each within 3 ULP, 3.6e-7,
    # of its exact value) and rounds once: well inside 1e-6 of the mean of
    # the float64 losses, which float32 accumulation would not be.
    import math

    from wce_numba._device import run_fused

    cuda, _ = gpu
    rng = np.random.default_rng(31)
    n = 10**7
    z = rng.uniform(0, 1, n).astype(np.float32)
    x = rng.normal(0, 4, n).astype(np.float32)

    value, grad = run_fused(
        cuda.to_device(z), cuda.to_device(x), 3.0, None, "mean", True, False, None
    )
    computed = value.copy_to_host()
    expected = math.fsum(CPU["loss"](z.astype(np.float64), x.astype(np.float64), 3.0))
    expected /= n

    assert grad is None and computed.shape == () and computed.dtype == np.float32
    assert abs(float(computed) - expected) <= 1e-6 * expected
    # And it is the float32 rounding of the exact mean of its own terms (the
    # elementwise float32 losses), give or take the one ULP that a term
    # compiled differently in the elementwise kernel could shift it by.
    terms = CPU["loss"](cuda.to_device(z), cuda.to_device(x), 3.0).copy_to_host()
    own = np.float32(math.fsum(terms.astype(np.float64)) / n)
    assert ulp_distance(computed.reshape(1), own.reshape(1)).max() <= 1


def fused_case(rng, dtype, hard_labels):
    """Labels, logits, a per-class pos_weight and a per-row weight, host."""
    z = rng.uniform(0, 1, (64, 8))
    if hard_labels:
        z = np.round(z)
    x = rng.normal(0, 8, (64, 8))
    q = rng.choice([0.5, 1.0, 3.0], 8)
    w = rng.choice([0.0, 0.25, 1.0, 2.0], (64, 1))
    return [a.astype(dtype) for a in (z, x, q, w)]


@pytest.mark.cuda
@low_occupancy
@pytest.mark.parametrize("library", ["numba", "cupy", "torch"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_fused_value_and_grad_are_the_separate_calls_and_the_cpus(
    gpu, transfers, library, reduction
):
    # Hard labels, so the gradient has no cancelling terms and ULP bounds
    # apply: the GPU's loss and gradient are within GPU_VS_CPU_ULP of the
    # CPU's, and the weight (and 1/N) round once (twice) more.
    from wce_numba._device import run_fused

    cuda, _ = gpu
    z, x, q, w = fused_case(np.random.default_rng(37), np.float32, True)
    labels, logits = to_library(cuda, z, library), to_library(cuda, x, library)
    pos_weight = cuda.to_device(q)
    cuda.synchronize()
    transfers.clear()

    both = run_fused(labels, logits, pos_weight, w, reduction, True, True, None)
    value_only, _ = run_fused(
        labels, logits, pos_weight, w, reduction, True, False, None
    )
    _, grad_only = run_fused(
        labels, logits, pos_weight, w, reduction, False, True, None
    )
    moved = list(transfers)
    value, grad = (from_device(result) for result in both)

    # One pass gives the same numbers as two: the same scalar kernels, and
    # the same summation order, fixed by the grid.
    assert same_bits(value, from_device(value_only))
    assert same_bits(grad, from_device(grad_only))
    assert all(type(r).__module__.split(".")[0] == library for r in both)
    # Only the host weight crossed (64 float32), once per call.
    assert moved == [("H2D", w.nbytes)] * 3

    divisor = x.size if reduction == "mean" else 1
    weighted_loss = CPU["loss"](z, x, q) * w
    weighted_grad = CPU["grad"](z, x, q) * w / np.float32(divisor)
    assert grad.shape == x.shape and grad.dtype == np.float32
    assert ulp_distance(grad, weighted_grad).max() <= GPU_VS_CPU_ULP[np.float32] + 2
    if reduction == "none":
        assert value.shape == x.shape
        assert ulp_distance(value, weighted_loss).max() <= (
            GPU_VS_CPU_ULP[np.float32] + 1
        )
    else:
        # Each term within (ULP_BOUND + 1) eps of exact, the sum rounded once.
        terms = weighted_loss.astype(np.float64)
        expected = terms.sum() / divisor
        eps = float(np.finfo(np.float32).eps)
        tolerance = (ULP_BOUND[np.float32] + 1) * eps * np.abs(terms).sum() / divisor
        assert value.shape == () and value.dtype == np.float32
        assert abs(float(value) - expected) <= tolerance + eps * abs(expected)


@pytest.mark.cuda
@low_occupancy
def test_fused_converts_other_dtypes_in_the_kernel(gpu, transfers):
    # int8 labels, float16 logits (computed in float32, returned as float16),
    # an int64 per-class weight on the device.
    from wce_numba._device import run_fused

    cuda, _ = gpu
    rng = np.random.default_rng(41)
    z = rng.integers(0, 2, (128, 4)).astype(np.int8)
    x = rng.normal(0, 6, (128, 4)).astype(np.float16)
    w = np.array([0, 1, 2, 5], np.int64)
    labels, logits, weight = (cuda.to_device(a) for a in (z, x, w))
    cuda.synchronize()
    transfers.clear()

    value, grad = run_fused(labels, logits, 2.0, weight, "sum", True, True, None)
    moved = list(transfers)
    value, grad = value.copy_to_host(), grad.copy_to_host()

    assert value.dtype == grad.dtype == np.float16 and value.shape == ()
    assert moved == [("H2D", 4)]  # the host pos_weight, as float32
    w32 = w.astype(np.float32)
    weighted_grad = (CPU["grad"](z, x.astype(np.float32), 2.0) * w32).astype(np.float16)
    assert ulp_distance(grad, weighted_grad).max() <= GPU_VS_CPU_ULP[np.float16]
    terms = CPU["loss"](z, x.astype(np.float32), 2.0).astype(np.float64) * w
    np.testing.assert_allclose(float(value), terms.sum(), rtol=2**-10)


@pytest.mark.cuda
@low_occupancy
def test_fused_empty_scalar_and_special_values_on_the_gpu(gpu):
    from wce_numba._device import run_fused

    cuda, _ = gpu
    empty = cuda.to_device(np.zeros((0, 3)))
    one = (cuda.to_device(np.array(1.0)), cuda.to_device(np.array(-2.0)))
    with_nan = cuda.to_device(np.array([0.0, np.nan, 1.0]))
    with_inf = cuda.to_device(np.array([np.inf, -np.inf, 3.0]))
    hard = cuda.to_device(np.array([1.0, 0.0, 1.0]))

    empty_sum, _ = run_fused(empty, empty, 2.0, None, "sum", True, False, None)
    empty_mean, empty_grad = run_fused(
        empty, empty, 2.0, None, "mean", True, True, None
    )
    scalar_mean, _ = run_fused(*one, 4.0, 0.5, "mean", True, False, None)
    nan_sum, _ = run_fused(hard, with_nan, 2.0, None, "sum", True, False, None)
    inf_sum, inf_grad = run_fused(hard, with_inf, 2.0, None, "sum", True, True, None)

    assert empty_sum.copy_to_host() == 0.0
    assert np.isnan(empty_mean.copy_to_host()) and empty_grad.shape == (0, 3)
    assert_close_to_cpu(
        scalar_mean.copy_to_host(), 0.5 * CPU["loss"](1.0, -2.0, 4.0), np.float64
    )
    assert np.isnan(nan_sum.copy_to_host())
    # Labels 1 at +inf and 0 at -inf: finite losses, the kernels' limits.
    z, x = [1.0, 0.0, 1.0], [np.inf, -np.inf, 3.0]
    assert_close_to_cpu(
        inf_sum.copy_to_host(), CPU["loss"](z, x, 2.0).sum(), np.float64
    )
    assert_close_to_cpu(inf_grad.copy_to_host(), CPU["grad"](z, x, 2.0), np.float64)


@pytest.mark.cuda
@low_occupancy
def test_fused_runs_on_the_given_stream(gpu):
    from wce_numba._device import run_fused

    cuda, _ = gpu
    stream = cuda.stream()
    # Hard labels: gradients without cancelling terms, comparable in ULP.
    z, x = np.round(np.linspace(0, 1, 5000)), np.linspace(-5, 5, 5000)
    labels, logits = cuda.to_device(z, stream=stream), cuda.to_device(x, stream=stream)

    value, grad = run_fused(labels, logits, 2.0, None, "mean", True, True, stream)
    stream.synchronize()

    # 5000 terms, each within GPU_VS_CPU_ULP (4 ULP, 9e-16) of the CPU's.
    np.testing.assert_allclose(
        value.copy_to_host(), CPU["loss"](z, x, 2.0).mean(), rtol=1e-14
    )
    assert_close_to_cpu(grad.copy_to_host(), CPU["grad"](z, x, 2.0) / 5000, np.float64)
