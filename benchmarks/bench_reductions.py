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
import tracemalloc

import numba
import numpy as np
from bench_common import DTYPES, POS_WEIGHT, SEED, make_data, numpy_loss, time_call

import wce_numba
from wce_numba import (
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_grad,
    weighted_cross_entropy_with_logits_value_and_grad,
)

DEFAULT_SIZES = [100_000, 1_000_000, 10_000_000, 30_000_000]
QUICK_SIZES = [100_000, 1_000_000]
# Longer loops than bench_common's: a fused call at 3e7 takes 50-200 ms.
TARGET, REPEAT = 0.2, 5
QUICK_TARGET, QUICK_REPEAT = 0.05, 3


def make_weighted_data(size: int, dtype):
    """``bench_common.make_data`` plus sample weights uniform in [0, 2]."""
    labels, logits = make_data(size, dtype)
    weight = np.random.default_rng(SEED + 1).uniform(0.0, 2.0, size).astype(dtype)
    return labels, logits, weight


def calls(size: int, dtype) -> dict[str, dict[str, object]]:
    """The timed callables, in two groups: the mean, and value and gradient."""
    labels, logits, weight = make_weighted_data(size, dtype)
    buffer, scratch, more_scratch = (np.empty_like(logits) for _ in range(3))
    q = dtype(POS_WEIGHT)

    def then_mean():
        weighted_cross_entropy_with_logits(labels, logits, POS_WEIGHT, out=buffer)
        return np.mean(buffer * weight)

    def numpy_mean():
        numpy_loss(labels, logits, q, buffer, scratch, more_scratch)
        return np.mean(buffer * weight)

    mean_group = {
        "fused": lambda: weighted_cross_entropy_with_logits(
            labels, logits, POS_WEIGHT, weight=weight, reduction="mean"
        ),
        "then mean": then_mean,
        "numpy": numpy_mean,
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


def run_table(sizes, dtypes, target, repeat) -> None:
    header = f"{'dtype':8} {'N':>10}  {'group':15} {'call':15} {'Melem/s':>9}"
    print(header)
    print("-" * len(header))
    for dtype_name in dtypes:
        for size in sizes:
            for group, group_calls in calls(size, DTYPES[dtype_name]).items():
                times = {
                    name: time_call(func, target, repeat)
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
    labels, logits, weight = make_weighted_data(size, dtype)

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
