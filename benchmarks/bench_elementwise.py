"""Throughput of the elementwise loss: wce_numba against NumPy and memory bandwidth.

Prints, per dtype and size N, the median time of one call as Melem/s and GB/s
for five ways of computing ``N`` losses:

``cpu``       the package's one-thread ufunc, ``cpu_ufunc("loss", "cpu")``;
``parallel``  the package's multi-thread ufunc, ``cpu_ufunc("loss", "parallel")``;
``api``       ``weighted_cross_entropy_with_logits(..., out=...)``: validation,
              then one core or, from the dispatcher's threshold for these
              arrays, all cores, as the dispatcher runs them;
``numpy``     TensorFlow's stable form written as NumPy ufunc calls with
              preallocated ``out=`` buffers;
``np.add``    ``np.add(labels, logits, out=result)``, the bandwidth reference.

GB/s counts the bytes of labels and logits read and of the result written
(3 N itemsize; ``pos_weight`` is a scalar). ``np.add`` reads two arrays and
writes one of the same size, so it moves the same bytes, and the ``vs add``
column (throughput over ``np.add``'s) says how close a row is to being limited
by memory rather than by arithmetic.

``--threshold`` instead sweeps N from 1e3 to 1e6 and reports from which N the
``parallel`` ufunc beats the ``cpu`` one, and from which N the API on all cores
beats the API on one: the measurement behind the size thresholds of
``wce_numba._dispatch`` (``PARALLEL_THRESHOLD``, ``LOOP_THRESHOLD``).

Timings are wall clock, taken after a warm-up call, so compilation (or loading
from Numba's cache) is excluded. Each measurement repeats a loop of calls whose
length is calibrated so that one loop takes about ``target`` seconds: small N
get many calls per loop, large N a few. The median over the loops is reported.

Run from the repository root::

    .venv/bin/python benchmarks/bench_elementwise.py
    .venv/bin/python benchmarks/bench_elementwise.py --quick
    .venv/bin/python benchmarks/bench_elementwise.py --threshold
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import timeit
from collections.abc import Callable

import llvmlite
import numba
import numpy as np
from bench_common import (
    DEFAULT_SIZES,
    DTYPES,
    POS_WEIGHT,
    QUICK_REPEAT,
    QUICK_SIZES,
    QUICK_TARGET,
    REPEAT,
    TARGET,
    add_common_arguments,
    calibrate,
    check_common_arguments,
    format_seconds,
    load_average,
    machine,
    make_data,
    numpy_loss,
    time_call,
)

import wce_numba
from wce_numba import _dispatch, weighted_cross_entropy_with_logits
from wce_numba._ufuncs import cpu_ufunc

ROWS = ["cpu", "parallel", "api", "numpy", "np.add"]

# Threshold sweep: 8 points per decade from 1e3 to 1e6 (4 with --quick). Its
# loops are shorter and more numerous, alternating cpu and parallel, so that
# load from other processes, which comes in bursts, hits both about equally.
THRESHOLD_SIZES = sorted({int(round(10 ** (3 + k / 8))) for k in range(25)})
QUICK_THRESHOLD_SIZES = THRESHOLD_SIZES[::2]
THRESHOLD_TARGET, THRESHOLD_REPEAT = 0.04, 5


def make_calls(n: int, dtype) -> dict[str, Callable[[], object]]:
    """The five timed calls over the same data, all writing into one result."""
    labels, logits = make_data(n, dtype)
    q = dtype(POS_WEIGHT)
    out = np.empty_like(logits)
    tmp1 = np.empty_like(logits)
    tmp2 = np.empty_like(logits)
    cpu = cpu_ufunc("loss", "cpu")
    parallel = cpu_ufunc("loss", "parallel")
    return {
        "cpu": lambda: cpu(labels, logits, q, out=out),
        "parallel": lambda: parallel(labels, logits, q, out=out),
        "api": lambda: weighted_cross_entropy_with_logits(labels, logits, q, out=out),
        "numpy": lambda: numpy_loss(labels, logits, q, out, tmp1, tmp2),
        "np.add": lambda: np.add(labels, logits, out=out),
    }


def check_same_formula() -> None:
    """Stop early if the NumPy expression and the ufunc disagree on the data."""
    for dtype in DTYPES.values():
        calls = make_calls(1_000, dtype)
        ours = np.array(calls["cpu"]())
        theirs = np.array(calls["numpy"]())
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        if not np.allclose(ours, theirs, rtol=rtol, atol=0):
            raise SystemExit(f"numpy expression disagrees with the ufunc ({dtype})")


def time_in_turn(funcs: list[Callable[[], object]], target: float, repeat: int):
    """Median and fastest seconds per call for calls timed in turn, loop by loop.

    Interleaving the loops spreads load from other processes evenly over the
    calls compared, so a burst of it does not favour one of them. Returns one
    ``(median, fastest)`` pair per call.
    """
    timers = [timeit.Timer(func) for func in funcs]
    for func in funcs:
        func()
    numbers = [calibrate(timer, target)[0] for timer in timers]
    loops: list[list[float]] = [[] for _ in funcs]
    for _ in range(repeat):
        for timer, number, times in zip(timers, numbers, loops, strict=True):
            times.append(timer.timeit(number) / number)
    return [(statistics.median(times), min(times)) for times in loops]


def environment() -> dict[str, object]:
    """Machine and versions; calls the parallel ufunc so the threading layer is set."""
    x = np.ones(1_000)
    cpu_ufunc("loss", "parallel")(x, x, 2.0)
    return {
        **machine(),
        "wce_numba": package_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "threading_layer": numba.threading_layer(),
        "numba_threads": numba.get_num_threads(),
        "dispatcher": dispatcher_settings(),
    }


def package_version() -> str:
    """wce_numba's version, with the git commit and whether the package differs."""
    version = wce_numba.__version__
    where = os.path.dirname(os.path.abspath(wce_numba.__file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--", "."],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return version
    return f"{version} (git {commit}{', with local changes' if changes else ''})"


def print_environment(env: dict[str, object]) -> None:
    print(f"CPU: {env['cpu']}, {env['cores']} cores ({env['cores_usable']} usable)")
    print(f"load average at start: {env['load_average_at_start']}")
    print(
        f"wce_numba {env['wce_numba']}, python {env['python']}, "
        f"numpy {env['numpy']}, numba {env['numba']}, llvmlite {env['llvmlite']}"
    )
    print(
        f"numba threading layer: {env['threading_layer']}, "
        f"{env['numba_threads']} threads"
    )
    for name, value in env["dispatcher"].items():  # type: ignore[attr-defined]
        print(f"{name} = {value}")
    print()


def run_table(sizes, dtypes, target, repeat) -> list[dict[str, object]]:
    """Time every row for every dtype and size, printing the table as it goes."""
    header = (
        f"{'dtype':<8} {'N':>10} {'row':<9} {'time':>10} "
        f"{'Melem/s':>9} {'GB/s':>7} {'vs add':>7}"
    )
    print(header)
    print("-" * len(header))
    results = []
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        for n in sizes:
            calls = make_calls(n, dtype)
            seconds = {name: time_call(calls[name], target, repeat) for name in ROWS}
            nbytes = 3 * n * np.dtype(dtype).itemsize
            for name in ROWS:
                row = {
                    "dtype": dtype_name,
                    "n": n,
                    "row": name,
                    "seconds": seconds[name],
                    "melem_per_s": n / seconds[name] / 1e6,
                    "gb_per_s": nbytes / seconds[name] / 1e9,
                    "vs_add": seconds["np.add"] / seconds[name],
                }
                results.append(row)
                print(
                    f"{dtype_name:<8} {n:>10} {name:<9} "
                    f"{format_seconds(row['seconds']):>10} "
                    f"{row['melem_per_s']:>9.1f} {row['gb_per_s']:>7.2f} "
                    f"{row['vs_add']:>7.3f}"
                )
            del calls
            print()
    return results


def set_thresholds(size: int) -> dict[str, object]:
    """Set the dispatcher's size thresholds to ``size``; returns the old values.

    ``PARALLEL_THRESHOLD`` and, where the dispatcher has it, the per-dtype
    ``LOOP_THRESHOLD``: 0 sends every call to all cores, a size above N keeps
    it on one. The dispatcher reads them at each call.
    """
    saved = {name: getattr(_dispatch, name) for name in THRESHOLD_NAMES}
    _dispatch.PARALLEL_THRESHOLD = size
    if "LOOP_THRESHOLD" in saved:
        _dispatch.LOOP_THRESHOLD = {np.dtype(d): size for d in DTYPES.values()}
    return saved


def restore_thresholds(saved: dict[str, object]) -> None:
    for name, value in saved.items():
        setattr(_dispatch, name, value)


THRESHOLD_NAMES = [
    name
    for name in ("PARALLEL_THRESHOLD", "LOOP_THRESHOLD")
    if hasattr(_dispatch, name)
]


def api_on_cores(size: int, labels, logits, q, out):
    """The public API with the dispatcher's thresholds at ``size`` for one call."""
    saved = set_thresholds(size)
    try:
        return weighted_cross_entropy_with_logits(labels, logits, q, out=out)
    finally:
        restore_thresholds(saved)


def threshold_calls(n: int, dtype) -> dict[str, Callable[[], object]]:
    """The pairs of calls the sweep compares, over about ``n`` elements.

    ``cpu``/``parallel``: the two ufuncs, scalar pos_weight. ``flat_*``: the
    API on the table's data (C-contiguous, scalar pos_weight). ``class_*``: the
    API on logits of shape (n // 10, 10) with one pos_weight per class, a
    layout the dispatcher serves differently from the flat one. ``*_one``
    holds a call on one core, ``*_all`` sends it to all cores.
    """
    labels, logits = make_data(n, dtype)
    q = dtype(POS_WEIGHT)
    out = np.empty_like(logits)
    cpu = cpu_ufunc("loss", "cpu")
    parallel = cpu_ufunc("loss", "parallel")

    rows = n // CLASSES
    labels_2d = labels[: rows * CLASSES].reshape(rows, CLASSES)
    logits_2d = logits[: rows * CLASSES].reshape(rows, CLASSES)
    out_2d = out[: rows * CLASSES].reshape(rows, CLASSES)
    q_class = np.linspace(0.5, POS_WEIGHT * 2, CLASSES).astype(dtype)

    return {
        "cpu": lambda: cpu(labels, logits, q, out=out),
        "parallel": lambda: parallel(labels, logits, q, out=out),
        "flat_one": lambda: api_on_cores(n + 1, labels, logits, q, out),
        "flat_all": lambda: api_on_cores(0, labels, logits, q, out),
        "class_one": lambda: api_on_cores(n + 1, labels_2d, logits_2d, q_class, out_2d),
        "class_all": lambda: api_on_cores(0, labels_2d, logits_2d, q_class, out_2d),
    }


CLASSES = 10

# The comparisons the sweep reports: (more cores, one core, column, title).
COMPARISONS = [
    ("parallel", "cpu", "ufuncs", "parallel ufunc vs cpu ufunc"),
    ("flat_all", "flat_one", "API flat", "API, flat arrays, scalar pos_weight"),
    ("class_all", "class_one", "API per class", "API, (N/10, 10), pos_weight (10,)"),
]


def run_threshold(sizes, dtypes, target, repeat) -> dict[str, object]:
    """Sweep N (1e3..1e6 by default): from which N do more cores pay off?

    Three comparisons, their calls timed in turn loop by loop: the
    ``parallel`` ufunc against the ``cpu`` ufunc, and the public API sent to
    all cores against the API held on one, for flat arrays with a scalar
    pos_weight and for per-class weights. The API comparisons are what the
    dispatcher's thresholds decide, whatever way of using the cores it picks
    for each layout on this machine.

    Prints the median times per call and their ratio. The JSON also keeps the
    fastest loops: the median is what a caller sees on this machine as loaded
    while measuring, the fastest loop estimates it with its cores free, since
    other processes can only slow a loop down.
    """
    names = [name for fast, slow, _, _ in COMPARISONS for name in (slow, fast)]
    sweep: dict[str, list[dict[str, float]]] = {}
    for dtype_name in dtypes:
        print(f"{dtype_name:<8}" + "".join(f"{c[2]:>27}" for c in COMPARISONS))
        print(f"{'N':>8}" + f"{'1 core':>10} {'all':>9} {'ratio':>6}" * 3)
        sweep[dtype_name] = []
        for n in sizes:
            calls = threshold_calls(n, DTYPES[dtype_name])
            timings = time_in_turn([calls[name] for name in names], target, repeat)
            point = {"n": n}
            for name, (median, best) in zip(names, timings, strict=True):
                point[name] = median
                point[name + "_best"] = best
            sweep[dtype_name].append(point)
            line = f"{n:>8}"
            for fast, slow, _, _ in COMPARISONS:
                line += (
                    f" {format_seconds(point[slow]):>9}"
                    f" {format_seconds(point[fast]):>9}"
                    f" {point[fast] / point[slow]:>6.2f}"
                )
            print(line)
        print()

    result: dict[str, object] = {"sweep": sweep}
    for fast, slow, _, title in COMPARISONS:
        print(f"{title} (ratio < 1: all cores faster)")
        for stat, stat_title in (("", "medians"), ("_best", "fastest loops")):
            crossover = {
                d: crossover_size(sweep, [d], fast + stat, slow + stat) for d in dtypes
            }
            crossover[" and ".join(dtypes)] = crossover_size(
                sweep, list(dtypes), fast + stat, slow + stat
            )
            result[f"crossover_{fast}{stat}"] = crossover
            for label, n in crossover.items():
                print(f"  {stat_title}, {label}: {describe_crossover(n, sizes)}")
    return result


def dispatcher_settings() -> dict[str, object]:
    """The dispatcher's thresholds as this run found them, for the record."""
    settings: dict[str, object] = {}
    for name in THRESHOLD_NAMES:
        value = getattr(_dispatch, name)
        if isinstance(value, dict):
            value = {str(k): v for k, v in value.items()}
        settings[name] = value
    return settings


def describe_crossover(n: int | None, sizes: list[int]) -> str:
    if n is None:
        return f"not faster at the largest N swept ({sizes[-1]})"
    if n == sizes[0]:
        return f"faster at every N swept, from N = {n} on (or below)"
    return f"faster from N = {n} on"


def crossover_size(sweep, dtypes, fast: str, slow: str) -> int | None:
    """Smallest swept N from which ``fast`` beats ``slow`` at every larger N too.

    None if it does not at the largest N swept.
    """
    found = None
    points = zip(*(sweep[d] for d in dtypes), strict=True)
    for row in reversed(list(points)):
        if not all(point[fast] < point[slow] for point in row):
            break
        found = row[0]["n"]
    return found


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput of wce_numba's loss against NumPy and np.add."
    )
    add_common_arguments(
        parser, sizes_note="; with --threshold, 8 per decade from 1e3 to 1e6"
    )
    parser.add_argument(
        "--threshold",
        action="store_true",
        help="measure where the parallel ufunc overtakes the cpu one, "
        "instead of the table",
    )
    parser.add_argument("--json", metavar="FILE", help="also save the results here")
    args = parser.parse_args(argv)
    check_common_arguments(parser, args)
    if args.sizes is None and args.threshold:
        args.sizes = QUICK_THRESHOLD_SIZES if args.quick else THRESHOLD_SIZES
    elif args.sizes is None:
        args.sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        target, repeat = QUICK_TARGET, QUICK_REPEAT
    elif args.threshold:
        target, repeat = THRESHOLD_TARGET, THRESHOLD_REPEAT
    else:
        target, repeat = TARGET, REPEAT

    env = environment()
    print_environment(env)
    check_same_formula()

    report: dict[str, object] = {
        "environment": env,
        "argv": sys.argv[1:],
        "target_seconds_per_loop": target,
        "repeat": repeat,
    }
    if args.threshold:
        report["threshold"] = run_threshold(args.sizes, args.dtypes, target, repeat)
    else:
        report["table"] = run_table(args.sizes, args.dtypes, target, repeat)

    report["load_average_at_end"] = load_average()
    print(f"load average at end: {report['load_average_at_end']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"results saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
