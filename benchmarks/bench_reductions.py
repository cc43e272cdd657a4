"""Fused reductions and value_and_grad against their unfused equivalents.

Prints, per dtype and size N, the median time of one call (Melem/s) for:

mean of the loss
    ``fused``        ``weighted_cross_entropy_with_logits(..., reduction="mean")``
    ``then mean``    the package's elementwise call into a buffer, then ``np.mean``
    ``numpy``        TensorFlow's stable form as NumPy ufuncs, then ``np.mean``
    ``torch``        ``binary_cross_entropy_with_logits(..., reduction="mean")``
                     on tensors sharing the arrays' memory (when installed)
loss and gradient of the mean
    ``value_and_grad``  one fused call
    ``separate``        the reduced loss and the gradient as two calls

and the speed-ups the issue asks for: fused mean over "then mean" (target at
least 2x) and value_and_grad over separate calls (target at least 1.5x).

``--memory`` instead measures, for N = 1e8 float32 by default, the peak of
memory allocated during one call (``tracemalloc``, which sees NumPy's
allocations) for the fused mean and for the elementwise call plus
``np.mean``: the fused call should need O(threads), not O(N). (Numba's own
allocations are not traced: the fused pass adds one buffer of 512 elements
per thread, 4 kB at most.)

Run from the repository root::

    .venv/bin/python benchmarks/bench_reductions.py
    .venv/bin/python benchmarks/bench_reductions.py --quick
    .venv/bin/python benchmarks/bench_reductions.py --memory
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import timeit
import tracemalloc

import numba
import numpy as np

import wce_numba
from wce_numba import (
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_grad,
    weighted_cross_entropy_with_logits_value_and_grad,
)

DEFAULT_SIZES = [100_000, 1_000_000, 10_000_000, 30_000_000]
QUICK_SIZES = [100_000, 1_000_000]
DTYPES = {"float32": np.float32, "float64": np.float64}
POS_WEIGHT = 2.0
SEED = 20261203
TARGET, REPEAT = 0.2, 5
QUICK_TARGET, QUICK_REPEAT = 0.05, 3


def make_data(size: int, dtype):
    """Labels uniform in [0, 1], logits normal with sd 3, weights in [0, 2]."""
    rng = np.random.default_rng(SEED)
    labels = rng.random(size).astype(dtype)
    logits = (3 * rng.standard_normal(size)).astype(dtype)
    weight = rng.uniform(0.0, 2.0, size).astype(dtype)
    return labels, logits, weight


def numpy_mean(labels, logits, weight):
    """TensorFlow's stable form in NumPy, weighted, then its mean."""
    log_weight = 1 + (POS_WEIGHT - 1) * labels
    softplus = np.log1p(np.exp(-np.abs(logits))) + np.maximum(-logits, 0)
    return np.mean(weight * ((1 - labels) * logits + log_weight * softplus))


def calls(size: int, dtype) -> dict[str, dict[str, object]]:
    """The timed callables, in two groups: the mean, and value and gradient."""
    labels, logits, weight = make_data(size, dtype)
    buffer = np.empty_like(logits)

    def then_mean():
        weighted_cross_entropy_with_logits(labels, logits, POS_WEIGHT, out=buffer)
        return np.mean(buffer * weight)

    mean_group = {
        "fused": lambda: weighted_cross_entropy_with_logits(
            labels, logits, POS_WEIGHT, weight=weight, reduction="mean"
        ),
        "then mean": then_mean,
        "numpy": lambda: numpy_mean(labels, logits, weight),
    }
    if importlib.util.find_spec("torch") is not None:
        import torch
        import torch.nn.functional as F

        tensors = [torch.from_numpy(a) for a in (labels, logits, weight)]
        pos_weight = torch.tensor(POS_WEIGHT, dtype=tensors[1].dtype)
        mean_group["torch"] = lambda: F.binary_cross_entropy_with_logits(
            tensors[1], tensors[0], weight=tensors[2], pos_weight=pos_weight
        )

    def separate():
        value = weighted_cross_entropy_with_logits(
            labels, logits, POS_WEIGHT, weight=weight, reduction="mean"
        )
        grad = weighted_cross_entropy_with_logits_grad(
            labels, logits, POS_WEIGHT, weight=weight, reduction="mean"
        )
        return value, grad

    grad_group = {
        "value_and_grad": lambda: weighted_cross_entropy_with_logits_value_and_grad(
            labels, logits, POS_WEIGHT, weight=weight
        ),
        "separate": separate,
    }
    return {"mean": mean_group, "value and grad": grad_group}


def median_time(func, target: float, repeat: int) -> float:
    """Median seconds per call over ``repeat`` loops of about ``target`` s."""
    func()  # warm-up: compilation or loading from the cache
    timer = timeit.Timer(func)
    number, elapsed = 1, timer.timeit(1)
    while elapsed < target / 2:
        number *= 2
        elapsed = timer.timeit(number)
    return statistics.median(timer.repeat(repeat, number)) / number


def run_table(sizes, dtypes, target, repeat) -> None:
    header = f"{'dtype':8} {'N':>10}  {'group':15} {'call':15} {'Melem/s':>9}"
    print(header)
    print("-" * len(header))
    for dtype_name in dtypes:
        for size in sizes:
            for group, group_calls in calls(size, DTYPES[dtype_name]).items():
                times = {
                    name: median_time(func, target, repeat)
                    for name, func in group_calls.items()
                }
                for name, seconds in times.items():
                    print(
                        f"{dtype_name:8} {size:>10,}  {group:15} {name:15} "
                        f"{size / seconds / 1e6:9.0f}"
                    )
                if group == "mean":
                    speedup = times["then mean"] / times["fused"]
                    print(f"{'':37}fused mean speed-up: {speedup:.2f}x (target 2)")
                else:
                    speedup = times["separate"] / times["value_and_grad"]
                    print(
                        f"{'':37}value_and_grad speed-up: {speedup:.2f}x (target 1.5)"
                    )


def peak_bytes(func) -> int:
    """Peak bytes allocated (as tracemalloc sees them) during one call."""
    func()
    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run_memory(size: int, dtype_name: str) -> None:
    dtype = DTYPES[dtype_name]
    labels, logits, weight = make_data(size, dtype)

    def then_mean():
        loss = weighted_cross_entropy_with_logits(labels, logits, POS_WEIGHT)
        return np.mean(loss * weight)

    fused = peak_bytes(
        lambda: weighted_cross_entropy_with_logits(
            labels, logits, POS_WEIGHT, weight=weight, reduction="mean"
        )
    )
    unfused = peak_bytes(then_mean)
    inputs = labels.nbytes + logits.nbytes + weight.nbytes
    print(f"N = {size:,} {dtype_name}: inputs take {inputs / 1e6:,.0f} MB")
    print(f"  fused mean:             peak {fused / 1e3:12,.1f} kB allocated")
    print(f"  elementwise + np.mean:  peak {unfused / 1e3:12,.1f} kB allocated")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=lambda text: [int(float(v)) for v in text.split(",")]
    )
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    parser.add_argument(
        "--memory", action="store_true", help="peak memory instead of speed"
    )
    parser.add_argument(
        "--memory-size", type=lambda text: int(float(text)), default=100_000_000
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    dtypes = args.dtypes.split(",")
    print(
        f"wce_numba {wce_numba.__version__}, numpy {np.__version__}, numba "
        f"{numba.__version__}, Python {platform.python_version()}, "
        f"{numba.config.NUMBA_NUM_THREADS} threads"
    )
    if args.memory:
        for dtype_name in dtypes[:1]:
            run_memory(args.memory_size, dtype_name)
        return 0

    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    target, repeat = (QUICK_TARGET, QUICK_REPEAT) if args.quick else (TARGET, REPEAT)
    run_table(sizes, dtypes, target, repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
