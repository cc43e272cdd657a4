"""GPU check: the ``cuda`` tests, then the loss's throughput on this GPU.

One command, a few minutes on a data-centre GPU (sized for under 5 on an
H200)::

    python benchmarks/gpu_check.py [--json gpu_check.json] [--skip-tests]

1. ``pytest -m cuda``: the GPU conformance tests (skipped elsewhere).
2. GB/s of ``weighted_cross_entropy_with_logits`` on device arrays, for
   N = 1e6 .. 1e9 float32 and float64 elements (sizes that do not fit in
   the GPU's free memory are skipped), next to

   * a device-to-device copy moving the same bytes (the memory roof),
   * PyTorch's ``binary_cross_entropy_with_logits(..., pos_weight=...,
     reduction='none')``, when PyTorch with CUDA is installed,
   * CuPy's elementwise kernel of TensorFlow's formula, when CuPy is.

   Bytes counted per call: labels and logits read, the result written
   (3 N itemsize; the scalar pos_weight is negligible). Each figure is the
   best of a few timed loops, after a warm-up call (which compiles), timed
   with ``synchronize`` around each loop.
3. Python call overhead at N = 1e3: median microseconds per call, ours and
   PyTorch's, without synchronising between calls.
4. The fused path (``_device.run_fused``) at N = 1e6 .. 1e8 float32:
   milliseconds per call of the mean computed in one pass against the loss
   written out and then summed (numba-cuda's ``cuda.reduce``, into a device
   scalar), and of value and gradient from one call against two calls (the
   value alone, the gradient alone); with the fused float32 mean's relative
   error against the float64 mean of the same inputs.

It prints a table headed by the GPU's name, the driver and the library
versions, and writes the same as JSON. Needs the ``cuda`` extra and a GPU.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = [10**6, 10**7, 10**8, 10**9]
FUSED_SIZES = [10**6, 10**7, 10**8]
DTYPES = ["float32", "float64"]
POS_WEIGHT = 3.0
OVERHEAD_N = 1000
OVERHEAD_CALLS = 2000
# Each timed loop runs for about this long; the best of LOOPS loops counts.
LOOP_SECONDS = 0.2
LOOPS = 3
# Free memory kept in reserve when deciding whether a size fits.
MEMORY_MARGIN = 0.85


def run_cuda_tests() -> int:
    """``pytest -m cuda`` from the repository root; its exit status."""
    root = Path(__file__).resolve().parent.parent
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "cuda",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, cwd=root).returncode


def optional(name: str):
    """The module ``name`` if it imports and has a usable GPU, else None."""
    try:
        module = __import__(name)
    except ImportError:
        return None
    if name == "torch" and not module.cuda.is_available():
        return None
    if name == "cupy":
        try:
            module.cuda.runtime.getDeviceCount()
        except Exception:
            return None
    return module


@functools.cache
def fill_kernel(cuda):
    """A kernel that writes deterministic labels and logits on the device."""

    @cuda.jit
    def fill(labels, logits):
        for i in range(cuda.grid(1), labels.size, cuda.gridsize(1)):
            labels[i] = (i % 7) / 6
            logits[i] = ((i % 1001) - 500) * 0.03

    return fill


def timed(function, synchronize, seconds=LOOP_SECONDS, loops=LOOPS) -> float:
    """Best seconds per call of ``function()`` over ``loops`` timed loops."""
    function()  # warm-up: compiles, allocates
    synchronize()
    start = time.perf_counter()
    function()
    synchronize()
    once = max(time.perf_counter() - start, 1e-6)
    repeats = max(1, min(1000, int(seconds / once)))

    best = float("inf")
    for _ in range(loops):
        synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        synchronize()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def cupy_kernel(cupy):
    """TensorFlow's stable formula as one CuPy elementwise kernel."""
    return cupy.ElementwiseKernel(
        "T z, T x, T q",
        "T out",
        "out = (1 - z) * x"
        " + (1 + (q - 1) * z) * (log1p(exp(-fabs(x))) + max(-x, (T)0))",
        "wce_tf_formula",
    )


def time_ours(cuda, loss, labels, logits) -> float:
    """Seconds per call of the loss into a preallocated result."""
    out = cuda.device_array_like(logits)
    return timed(lambda: loss(labels, logits, POS_WEIGHT, out=out), cuda.synchronize)


def time_copy(cuda, n: int, dtype: str) -> float:
    """Seconds per device-to-device copy of 1.5 n elements: 3 n itemsize moved."""
    source = cuda.device_array(3 * n // 2, np.dtype(dtype))
    target = cuda.device_array(3 * n // 2, np.dtype(dtype))
    return timed(lambda: target.copy_to_device(source), cuda.synchronize)


def time_torch(cuda, torch, labels, logits) -> float:
    """Seconds per call of PyTorch's BCE with logits, pos_weight, no reduction."""
    z, x = torch.as_tensor(labels), torch.as_tensor(logits)
    weight = torch.tensor([POS_WEIGHT], dtype=x.dtype, device=x.device)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def synchronize():
        torch.cuda.synchronize()
        cuda.synchronize()

    return timed(lambda: bce(x, z, pos_weight=weight, reduction="none"), synchronize)


def time_cupy(cupy, labels, logits) -> float:
    """Seconds per call of TensorFlow's formula as a CuPy elementwise kernel."""
    z, x = cupy.asarray(labels), cupy.asarray(logits)
    kernel, result = cupy_kernel(cupy), cupy.empty_like(x)
    q = x.dtype.type(POS_WEIGHT)
    return timed(lambda: kernel(z, x, q, result), cupy.cuda.runtime.deviceSynchronize)


def throughput(cuda, loss, torch, cupy, n: int, dtype: str) -> dict | None:
    """GB/s of each contender at ``n`` elements of ``dtype``; None if too big."""
    itemsize = np.dtype(dtype).itemsize
    free, _ = cuda.current_context().get_memory_info()
    # Ours: labels, logits, result. Copy: 1.5 n in and out. PyTorch: its own
    # result and pos_weight broadcast, on top of the inputs.
    if 5 * n * itemsize > MEMORY_MARGIN * free:
        return None

    labels = cuda.device_array(n, np.dtype(dtype))
    logits = cuda.device_array(n, np.dtype(dtype))
    fill_kernel(cuda)[1024, 256](labels, logits)
    moved = 3 * n * itemsize
    row = {"n": n, "dtype": dtype, "bytes_per_call": moved}
    row["wce_numba_GBps"] = moved / time_ours(cuda, loss, labels, logits) / 1e9
    row["d2d_copy_GBps"] = moved / time_copy(cuda, n, dtype) / 1e9
    cuda.current_context().deallocations.clear()  # free now, not later

    # The other libraries allocate their own temporaries; running out of
    # memory there leaves a note in the row instead of ending the run.
    if torch is not None:
        try:
            row["torch_GBps"] = moved / time_torch(cuda, torch, labels, logits) / 1e9
        except (RuntimeError, MemoryError) as error:
            row["torch_error"] = " ".join(str(error).split())[:200]
        torch.cuda.empty_cache()
    if cupy is not None:
        try:
            row["cupy_GBps"] = moved / time_cupy(cupy, labels, logits) / 1e9
        except (RuntimeError, MemoryError, cupy.cuda.memory.OutOfMemoryError) as error:
            row["cupy_error"] = " ".join(str(error).split())[:200]
        cupy.get_default_memory_pool().free_all_blocks()
    return row


def overhead(cuda, loss, torch) -> dict:
    """Median microseconds per call at N = OVERHEAD_N, not synchronising."""
    z = np.linspace(0, 1, OVERHEAD_N, dtype=np.float32)
    x = np.linspace(-5, 5, OVERHEAD_N, dtype=np.float32)
    labels, logits = cuda.to_device(z), cuda.to_device(x)
    out = cuda.device_array_like(logits)

    def median_us(call, synchronize):
        for _ in range(20):
            call()
        synchronize()
        times = []
        for _ in range(OVERHEAD_CALLS):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        synchronize()
        return statistics.median(times) * 1e6

    result = {
        "n": OVERHEAD_N,
        "wce_numba_us": median_us(lambda: loss(labels, logits, 3.0), cuda.synchronize),
        "wce_numba_out_us": median_us(
            lambda: loss(labels, logits, 3.0, out=out), cuda.synchronize
        ),
    }
    if torch is not None:
        tz, tx = torch.as_tensor(z).cuda(), torch.as_tensor(x).cuda()
        weight = torch.tensor([3.0], device=tx.device)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        result["torch_us"] = median_us(
            lambda: bce(tx, tz, pos_weight=weight, reduction="none"),
            torch.cuda.synchronize,
        )
    return result


def fused(cuda, loss, n: int) -> dict | None:
    """Milliseconds per call, fused and not, at ``n`` float32; None if too big."""
    from wce_numba import _cuda
    from wce_numba._device import run_fused

    free, _ = cuda.current_context().get_memory_info()
    # labels, logits, the loss written out, the gradient; float64 copies of
    # labels and logits for the reference mean.
    if 4 * n * 4 + 2 * n * 8 > MEMORY_MARGIN * free:
        return None

    labels = cuda.device_array(n, np.float32)
    logits = cuda.device_array(n, np.float32)
    fill_kernel(cuda)[1024, 256](labels, logits)
    out = cuda.device_array(n, np.float32)
    total = cuda.device_array(1, np.float32)
    add = cuda.reduce(lambda a, b: a + b)

    def fused_mean():
        return run_fused(labels, logits, POS_WEIGHT, None, "mean", True, False, None)

    def loss_then_sum():
        loss(labels, logits, POS_WEIGHT, out=out)
        add(out, res=total)

    def value_and_grad():
        return run_fused(labels, logits, POS_WEIGHT, None, "mean", True, True, None)

    def two_calls():
        fused_mean()
        run_fused(labels, logits, POS_WEIGHT, None, "mean", False, True, None)

    row = {"n": n, "dtype": "float32"}
    for key, function in [
        ("fused_mean_ms", fused_mean),
        ("loss_then_sum_ms", loss_then_sum),
        ("value_and_grad_ms", value_and_grad),
        ("two_calls_ms", two_calls),
    ]:
        row[key] = timed(function, cuda.synchronize) * 1e3

    mean32 = float(fused_mean()[0].copy_to_host())
    wide = [_cuda.as_dtype(array, np.dtype(np.float64)) for array in (labels, logits)]
    mean64 = float(
        run_fused(*wide, POS_WEIGHT, None, "mean", True, False, None)[0].copy_to_host()
    )
    row["fused_mean_relative_error"] = abs(mean32 - mean64) / abs(mean64)
    cuda.current_context().deallocations.clear()
    return row


def environment(cuda, torch, cupy) -> dict:
    import numba

    import wce_numba

    device = cuda.get_current_device()
    name = getattr(device, "name", "unknown")
    info = {
        "gpu": name.decode() if isinstance(name, bytes) else str(name),
        "compute_capability": ".".join(map(str, device.compute_capability)),
    }
    versions = {
        "cuda_driver_api": lambda: cuda.cudadrv.driver.driver.get_version(),
        "cuda_runtime": lambda: cuda.runtime.get_version(),
    }
    for key, get in versions.items():
        try:
            info[key] = ".".join(map(str, get()))
        except Exception as error:  # reported, not fatal
            info[key] = f"unknown ({error})"
    info |= {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "wce_numba": wce_numba.__version__,
    }
    try:
        from importlib.metadata import version

        info["numba_cuda"] = version("numba-cuda")
    except Exception:
        pass
    try:  # the kernel-mode driver's version, as nvidia-smi reports it
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        info["driver"] = smi.stdout.strip().splitlines()[0]
    except Exception:
        pass
    if torch is not None:
        info["torch"] = torch.__version__
    if cupy is not None:
        info["cupy"] = cupy.__version__
    return info


COLUMNS = [
    ("wce_numba_GBps", "wce_numba"),
    ("d2d_copy_GBps", "d2d copy"),
    ("torch_GBps", "torch BCE"),
    ("cupy_GBps", "cupy TF formula"),
]


def table(report: dict) -> str:
    """The report as text: environment lines, then one row per size."""
    lines = [f"{key}: {value}" for key, value in report["environment"].items()]
    present = [
        (key, title)
        for key, title in COLUMNS
        if any(key in row for row in report["throughput"])
    ]
    header = f"{'N':>8} {'dtype':>8} " + " ".join(f"{t:>16}" for _, t in present)
    lines += ["", "GB/s (3 N itemsize bytes per call)", header]
    for row in report["throughput"]:
        cells = " ".join(
            f"{row[key]:16.1f}" if key in row else f"{'-':>16}" for key, _ in present
        )
        lines.append(f"{row['n']:8.0e} {row['dtype']:>8} {cells}")
    for row in report["throughput"]:
        for key in ("torch_error", "cupy_error"):
            if key in row:
                lines.append(f"{row['n']:8.0e} {row['dtype']:>8} {key}: {row[key]}")
    for skipped in report["skipped"]:
        lines.append(
            f"{skipped['n']:8.0e} {skipped['dtype']:>8} skipped: {skipped['why']}"
        )
    over = report["overhead"]
    lines += ["", f"call overhead at N = {over['n']} (median µs per call)"]
    lines += [
        f"  {key[:-3]:<18} {value:8.1f}" for key, value in over.items() if key != "n"
    ]
    lines += ["", "fused path, float32 (ms per call; error of the fused mean)"]
    titles = [title for _, title in FUSED_COLUMNS]
    lines.append(f"{'N':>8} " + " ".join(f"{title:>14}" for title in titles))
    for row in report["fused"]:
        cells = " ".join(f"{row[key]:14.3f}" for key, _ in FUSED_COLUMNS[:-1])
        error = row["fused_mean_relative_error"]
        lines.append(f"{row['n']:8.0e} {cells} {error:14.1e}")
    return "\n".join(lines)


FUSED_COLUMNS = [
    ("fused_mean_ms", "fused mean"),
    ("loss_then_sum_ms", "loss, then sum"),
    ("value_and_grad_ms", "value and grad"),
    ("two_calls_ms", "two calls"),
    ("fused_mean_relative_error", "mean rel. err"),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--json", default="gpu_check.json", help="where to write the JSON report"
    )
    parser.add_argument("--skip-tests", action="store_true", help="only benchmark")
    args = parser.parse_args(argv)

    from wce_numba import _cuda

    try:
        _cuda.require_gpu()
    except (ImportError, RuntimeError) as error:
        print(f"gpu_check needs a GPU: {error}", file=sys.stderr)
        return 2

    tests = 0 if args.skip_tests else run_cuda_tests()

    from numba import cuda

    from wce_numba import weighted_cross_entropy_with_logits as loss

    torch, cupy = optional("torch"), optional("cupy")
    report = {
        "environment": environment(cuda, torch, cupy),
        "throughput": [],
        "skipped": [],
        "fused": [],
    }
    report["environment"]["cuda_tests_exit_status"] = None if args.skip_tests else tests
    for dtype in DTYPES:
        for n in SIZES:
            row = throughput(cuda, loss, torch, cupy, n, dtype)
            if row is None:
                report["skipped"].append(
                    {"n": n, "dtype": dtype, "why": "does not fit in free GPU memory"}
                )
            else:
                report["throughput"].append(row)
                print(f"  measured N = {n:.0e} {dtype}", flush=True)
    report["overhead"] = overhead(cuda, loss, torch)
    for n in FUSED_SIZES:
        row = fused(cuda, loss, n)
        if row is None:
            report["skipped"].append(
                {"n": n, "dtype": "float32 fused", "why": "does not fit in memory"}
            )
        else:
            report["fused"].append(row)
            print(f"  measured fused N = {n:.0e}", flush=True)

    print(table(report))
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.json}")
    return tests


if __name__ == "__main__":
    sys.exit(main())
