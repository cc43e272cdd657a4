"""What the benchmark scripts share: data, the NumPy expression, timing, machine.

Only NumPy and the standard library are imported here, so that each peer's
worker in ``bench_peers.py`` imports nothing but the library it times.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import timeit
from collections.abc import Callable

import numpy as np

DEFAULT_SIZES = [1_000, 10_000, 30_000, 100_000, 1_000_000, 10_000_000, 30_000_000]
QUICK_SIZES = [1_000, 100_000, 1_000_000]
DTYPES = {"float32": np.float32, "float64": np.float64}
POS_WEIGHT = 2.0
SEED = 20261203

# One loop of calls lasts about TARGET seconds, and the median is taken over
# REPEAT loops; --quick shortens both.
TARGET, REPEAT = 0.1, 5
QUICK_TARGET, QUICK_REPEAT = 0.05, 3


def make_data(n: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Labels uniform in [0, 1] and logits normal with sd 3, from a fixed seed."""
    rng = np.random.default_rng(SEED)
    labels = rng.uniform(0.0, 1.0, n).astype(dtype)
    logits = rng.normal(0.0, 3.0, n).astype(dtype)
    return labels, logits


def numpy_loss(z, x, q, out, tmp1, tmp2):
    """TF's stable form, ``(1 - z) x + l (log1p(exp(-|x|)) + max(-x, 0))``.

    ``l = 1 + (q - 1) z``. Every step writes into a preallocated buffer, so the
    NumPy row pays for the passes over memory, not for allocation.
    """
    one = x.dtype.type(1)
    zero = x.dtype.type(0)

    # tmp1 = l = 1 + (q - 1) z
    np.multiply(z, q - one, out=tmp1)
    np.add(tmp1, one, out=tmp1)

    # tmp1 = l * (log1p(exp(-|x|)) + max(-x, 0)), by way of tmp2
    np.abs(x, out=tmp2)
    np.negative(tmp2, out=tmp2)
    np.exp(tmp2, out=tmp2)
    np.log1p(tmp2, out=tmp2)
    np.negative(x, out=out)
    np.maximum(out, zero, out=out)
    np.add(tmp2, out, out=tmp2)
    np.multiply(tmp1, tmp2, out=tmp1)

    # out = (1 - z) x + tmp1
    np.subtract(one, z, out=out)
    np.multiply(out, x, out=out)
    np.add(out, tmp1, out=out)
    return out


def calibrate(timer: timeit.Timer, target: float) -> tuple[int, float]:
    """Calls per loop so that one loop lasts at least ``target`` seconds.

    ``timeit.Timer.autorange`` with an adjustable target: try 1, 2, 5, 10, 20,
    ... calls until a loop is long enough. Returns the number of calls and the
    seconds that loop took.
    """
    number = 1
    while True:
        for step in (1, 2, 5):
            calls = number * step
            seconds = timer.timeit(calls)
            if seconds >= target:
                return calls, seconds
        number *= 10


def time_loops(func: Callable[[], object], target: float, repeat: int) -> list[float]:
    """Seconds per call in each of ``repeat`` loops, after a warm-up call.

    When a single call already lasts ``target``, the calibrating call counts as
    the first loop, which saves a call of the largest sizes.
    """
    func()
    timer = timeit.Timer(func)
    number, seconds = calibrate(timer, target)
    loops = [seconds] if number == 1 else []
    loops += timer.repeat(repeat=repeat - len(loops), number=number)
    return [loop / number for loop in loops]


def time_call(func: Callable[[], object], target: float, repeat: int) -> float:
    """Median seconds per call over ``repeat`` loops, after a warm-up call."""
    return statistics.median(time_loops(func, target, repeat))


def format_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms"


def cpu_model() -> str:
    """The CPU's model name, family and model number from /proc/cpuinfo."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip() and fields:
                    break
    except OSError:
        return platform.processor() or "unknown CPU"
    name = fields.get("model name", platform.processor() or "unknown CPU")
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def machine() -> dict[str, object]:
    """The CPU, its cores, the load on them and Python's version."""
    try:
        cores_usable = len(os.sched_getaffinity(0))
    except AttributeError:
        cores_usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": cores_usable,
        "load_average_at_start": load_average(),
        "python": platform.python_version(),
    }


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other processes sharing the cores."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def add_common_arguments(parser: argparse.ArgumentParser, sizes_note: str = ""):
    """``--sizes``, ``--dtypes`` and ``--quick``, as every script here takes them."""
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(float(v)) for v in s.split(",")],
        help="comma-separated element counts, e.g. 1e3,1e6 "
        f"(default {','.join(str(n) for n in DEFAULT_SIZES)}{sizes_note})",
    )
    parser.add_argument(
        "--dtypes",
        type=lambda s: s.split(","),
        default=list(DTYPES),
        help="comma-separated dtypes among float32,float64 (default both)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"sizes {QUICK_SIZES} and shorter timing loops, for a smoke run",
    )


def check_common_arguments(parser: argparse.ArgumentParser, args) -> None:
    """Exit with a usage error naming the option when a dtype or size is bad."""
    unknown = [d for d in args.dtypes if d not in DTYPES]
    if unknown:
        parser.error(f"--dtypes: expected float32 or float64, got {unknown}")
    if args.sizes is not None and min(args.sizes) < 1:
        parser.error(f"--sizes: expected positive element counts, got {args.sizes}")
