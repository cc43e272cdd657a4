"""Throughput of the loss and its mean: wce_numba against NumPy and ML frameworks.

Times, per dtype and size N, one call computing N losses (``elementwise``) and
one computing their mean (``mean``) in each library that is installed:

``wce_numba``        ``weighted_cross_entropy_with_logits(labels, logits, q)``,
                     which returns a new array like the frameworks do, and
                     ``wce_numba out=`` writing into a preallocated one; the
                     mean with ``reduction="mean"`` where the installed
                     package has that keyword (else the row is left out);
``numpy``            TF's stable form as NumPy ufunc calls with preallocated
                     ``out=`` buffers, then ``np.mean``; and ``np.add(labels,
                     logits, out=result)``, the memory-bound reference;
``numexpr``          the same expression in ``numexpr.evaluate`` (``out=``),
                     and ``sum(...)`` of it over N for the mean;
``torch``            ``F.binary_cross_entropy_with_logits(logits, labels,
                     pos_weight=q)`` with ``reduction="none"`` and ``"mean"``,
                     and ``torch.compile`` of the expression (and its mean);
``tensorflow``       ``tf.nn.weighted_cross_entropy_with_logits`` (and
                     ``tf.reduce_mean`` of it), eagerly and in
                     ``tf.function(jit_compile=True)``, i.e. through XLA;
``jax``              ``jax.jit`` of the expression (and ``jnp.mean`` of it).

The expression is ``(1 - z) x + l (log1p(exp(-|x|)) + max(-x, 0))`` with
``l = 1 + (q - 1) z``, z the labels, x the logits and q the scalar pos_weight.

Each library runs in its own process (this script again, in worker mode,
under the same Python), so no library's import, thread pool or allocator
affects another's timings; each worker sends its timings back as JSON. A
library that is not installed is skipped with a note. Before timing, every
worker checks each of its calls against a float64 evaluation of the
expression on 1000 elements. Thread counts are left at each library's default
and reported.

Timings are wall clock, the median over repeated loops of calls after a
warm-up call on the same arrays (so JIT compilation, which happens on the
first call for a new shape, is excluded), as ``bench_elementwise.py`` takes
them. JAX calls wait for their result (``block_until_ready``); the others
return it computed.

GB/s counts the bytes of labels and logits read and, for ``elementwise``, of
the result written: 3 N itemsize, or 2 N itemsize for the mean. ``vs add`` is
``np.add``'s time over the row's at the same dtype and N: 1.0 is as fast as
moving the elementwise call's bytes allows.

Run from the repository root, with the ``bench`` extra installed::

    python benchmarks/bench_peers.py --plot peers.png
    python benchmarks/bench_peers.py --quick --libraries numpy,wce_numba
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

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
    check_common_arguments,
    format_seconds,
    load_average,
    machine,
    make_data,
    numpy_loss,
    time_loops,
)

# The libraries, in the order they run and are listed, with the modules each
# needs: a library is skipped when one of them cannot be found.
LIBRARIES = {
    "wce_numba": ["wce_numba", "numba"],
    "numpy": ["numpy"],
    "numexpr": ["numexpr"],
    "torch": ["torch"],
    "tensorflow": ["tensorflow"],
    "jax": ["jax", "jaxlib"],
}
OPS = ["elementwise", "mean"]
REFERENCE = "np.add"

# Every worker checks its calls on this many elements before timing them.
CHECK_SIZE = 1_000

# numexpr's spelling of the expression; max(-x, 0) as where(), which it has.
NUMEXPR_LOSS = (
    "(1 - z) * x + (1 + (q - 1) * z) * (log1p(exp(-abs(x))) + where(x < 0, -x, 0))"
)

# -- workers: one function per library, run in that library's own process --


def numpy_worker(notes: list[str]) -> tuple[dict, Callable]:
    def calls(labels, logits, q):
        out, tmp1, tmp2 = (np.empty_like(logits) for _ in range(3))

        def mean():
            return np.mean(numpy_loss(labels, logits, q, out, tmp1, tmp2))

        return {
            ("elementwise", "numpy"): lambda: numpy_loss(
                labels, logits, q, out, tmp1, tmp2
            ),
            ("elementwise", REFERENCE): lambda: np.add(labels, logits, out=out),
            ("mean", "numpy"): mean,
        }

    info = {"versions": {"numpy": np.__version__}, "threads": "1 (NumPy's ufuncs)"}
    return info, calls


def wce_numba_worker(notes: list[str]) -> tuple[dict, Callable]:
    import numba
    from bench_elementwise import package_version

    from wce_numba import weighted_cross_entropy_with_logits as wce

    # The fused mean (``reduction="mean"``) is newer than the loss: decided
    # from the signature, so that an error inside a timed call still surfaces.
    has_mean = "reduction" in inspect.signature(wce).parameters
    if not has_mean:
        notes.append(
            "wce_numba mean: left out, this wce_numba has no reduction= keyword"
        )

    def calls(labels, logits, q):
        out = np.empty_like(logits)
        rows = {
            ("elementwise", "wce_numba"): lambda: wce(labels, logits, q),
            ("elementwise", "wce_numba out="): lambda: wce(labels, logits, q, out=out),
        }
        if has_mean:
            rows["mean", "wce_numba"] = lambda: wce(labels, logits, q, reduction="mean")
        return rows

    # The threading layer is known only after a parallel call.
    ones = np.ones(1_000_000)
    wce(ones, ones, POS_WEIGHT)
    info = {
        "versions": {"wce_numba": package_version(), "numba": numba.__version__},
        "threads": f"{numba.get_num_threads()} (Numba, "
        f"threading layer {numba.threading_layer()})",
    }
    return info, calls


def numexpr_worker(notes: list[str]) -> tuple[dict, Callable]:
    import numexpr

    def calls(labels, logits, q):
        out = np.empty_like(logits)
        local = {"z": labels, "x": logits, "q": q}
        n = logits.dtype.type(logits.size)
        return {
            ("elementwise", "numexpr"): lambda: numexpr.evaluate(
                NUMEXPR_LOSS, local_dict=local, out=out
            ),
            ("mean", "numexpr"): lambda: (
                numexpr.evaluate(f"sum({NUMEXPR_LOSS})", local_dict=local) / n
            ),
        }

    info = {
        "versions": {"numexpr": numexpr.__version__},
        "threads": f"{numexpr.get_num_threads()} (numexpr)",
    }
    return info, calls


def torch_worker(notes: list[str]) -> tuple[dict, Callable]:
    import torch
    import torch.nn.functional as F

    def expression(z, x):
        weight = 1 + (POS_WEIGHT - 1) * z
        softplus = torch.log1p(torch.exp(-x.abs())) + torch.clamp(-x, min=0)
        return (1 - z) * x + weight * softplus

    # torch.compile's default: static shapes first, dynamic after a change of
    # shape; every shape is warmed up before it is timed all the same.
    compiled = torch.compile(expression)
    compiled_mean = torch.compile(lambda z, x: expression(z, x).mean())

    def calls(labels, logits, q):
        z, x = torch.from_numpy(labels), torch.from_numpy(logits)
        weight = torch.tensor(q)

        def eager(reduction):
            return lambda: F.binary_cross_entropy_with_logits(
                x, z, pos_weight=weight, reduction=reduction
            )

        return {
            ("elementwise", "torch"): eager("none"),
            ("elementwise", "torch.compile"): lambda: compiled(z, x),
            ("mean", "torch"): eager("mean"),
            ("mean", "torch.compile"): lambda: compiled_mean(z, x),
        }

    info = {
        "versions": {"torch": torch.__version__},
        "threads": f"{torch.get_num_threads()} intra-op (torch)",
    }
    return info, calls


def tensorflow_worker(notes: list[str]) -> tuple[dict, Callable]:
    import tensorflow as tf

    def loss(z, x):
        return tf.nn.weighted_cross_entropy_with_logits(z, x, POS_WEIGHT)

    def mean(z, x):
        return tf.reduce_mean(loss(z, x))

    def calls(labels, logits, q):
        z, x = tf.constant(labels), tf.constant(logits)

        # A new tf.function per shape: each traces and compiles once, in the
        # warm-up call, with no retracing across shapes.
        xla_loss = tf.function(loss, jit_compile=True)
        xla_mean = tf.function(mean, jit_compile=True)
        return {
            ("elementwise", "tensorflow"): lambda: loss(z, x),
            ("elementwise", "tensorflow XLA"): lambda: xla_loss(z, x),
            ("mean", "tensorflow"): lambda: mean(z, x),
            ("mean", "tensorflow XLA"): lambda: xla_mean(z, x),
        }

    threading = tf.config.threading
    intra = threading.get_intra_op_parallelism_threads()
    inter = threading.get_inter_op_parallelism_threads()
    info = {
        "versions": {"tensorflow": tf.__version__},
        "threads": f"intra-op {intra or 'default'}, inter-op {inter or 'default'} "
        f"(TensorFlow; default: all {os.cpu_count()} cores)",
    }
    return info, calls


def jax_worker(notes: list[str]) -> tuple[dict, Callable]:
    import jax

    # float64 arrays need x64 mode; float32 arrays stay float32 in it, since
    # Python scalars are weakly typed.
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import jaxlib

    def expression(z, x):
        weight = 1 + (POS_WEIGHT - 1) * z
        softplus = jnp.log1p(jnp.exp(-jnp.abs(x))) + jnp.maximum(-x, 0)
        return (1 - z) * x + weight * softplus

    loss = jax.jit(expression)
    mean = jax.jit(lambda z, x: jnp.mean(expression(z, x)))

    def calls(labels, logits, q):
        z, x = jax.device_put(labels), jax.device_put(logits)
        return {
            ("elementwise", "jax.jit"): lambda: loss(z, x).block_until_ready(),
            ("mean", "jax.jit"): lambda: mean(z, x).block_until_ready(),
        }

    info = {
        "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__},
        "threads": f"XLA's default pool on {jax.devices()[0].platform} "
        f"({os.cpu_count()} cores)",
    }
    return info, calls


WORKERS = {
    "wce_numba": wce_numba_worker,
    "numpy": numpy_worker,
    "numexpr": numexpr_worker,
    "torch": torch_worker,
    "tensorflow": tensorflow_worker,
    "jax": jax_worker,
}


def check_calls(library: str, calls: Callable) -> None:
    """Stop if a call disagrees with the expression evaluated in float64.

    Each term of the loss is computed to a few units in the last place of
    its own magnitude, at most (1 + q)(|x| + 1); the terms can cancel, so the
    bound is on the absolute error: 16 ulps of that magnitude per element, and
    for the mean the same bound averaged, times N for the rounding of a sum.
    """
    for dtype_name, dtype in DTYPES.items():
        labels, logits = make_data(CHECK_SIZE, dtype)
        z, x = labels.astype(np.float64), logits.astype(np.float64)
        expected = numpy_loss(z, x, POS_WEIGHT, *(np.empty_like(x) for _ in range(3)))
        scale = 16 * np.finfo(dtype).eps * (1 + POS_WEIGHT) * (np.abs(x) + 1)
        bounds = {"elementwise": scale, "mean": CHECK_SIZE * scale.mean()}
        expected_by_op = {"elementwise": expected, "mean": expected.mean()}

        for (op, row), call in calls(labels, logits, dtype(POS_WEIGHT)).items():
            if row == REFERENCE:
                continue
            got = np.asarray(call(), dtype=np.float64)
            error = np.abs(got - expected_by_op[op])
            if got.shape != np.shape(expected_by_op[op]) or np.any(error > bounds[op]):
                raise SystemExit(
                    f"{library}: {row} ({op}, {dtype_name}) disagrees with the "
                    f"expression in float64: largest error {np.max(error):.3g}"
                )


def run_worker(args: argparse.Namespace) -> dict:
    """Time one library's calls for every dtype and size; the worker's report."""
    notes: list[str] = []
    info, calls = WORKERS[args.worker](notes)
    check_calls(args.worker, calls)

    rows = []
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        for n in args.sizes:
            labels, logits = make_data(n, dtype)
            timed = calls(labels, logits, dtype(POS_WEIGHT))
            progress = []
            for (op, row), call in timed.items():
                loops = time_loops(call, args.target, args.repeats)
                seconds = statistics.median(loops)
                key = {"dtype": dtype_name, "n": n, "op": op, "row": row}
                rows.append({**key, "s": seconds, "fastest_s": min(loops)})
                progress.append(f"{row} {op} {format_seconds(seconds)}")
            print(f"  {dtype_name} N={n}: " + ", ".join(progress), file=sys.stderr)
            # Up to 3e7 float64 elements: free this size's arrays (and the
            # library's copies) before making the next size's.
            del timed, labels, logits
    return {**info, "notes": notes, "rows": rows}


# -- the parent: runs the workers, prints the table, saves JSON and the plot --


def missing_modules(library: str) -> list[str]:
    return [m for m in LIBRARIES[library] if importlib.util.find_spec(m) is None]


def run_library(library: str, args: argparse.Namespace) -> dict:
    """Run one library's worker in a new process; its report, or why there is none."""
    missing = missing_modules(library)
    if missing:
        return {"skipped": f"not installed ({', '.join(missing)} not found)"}

    with tempfile.TemporaryDirectory() as folder:
        output = os.path.join(folder, "report.json")
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            library,
            "--worker-output",
            output,
            "--sizes",
            ",".join(str(n) for n in args.sizes),
            "--dtypes",
            ",".join(args.dtypes),
            "--repeats",
            str(args.repeats),
        ]
        if args.quick:
            command.append("--quick")
        # TensorFlow's C++ start-up messages are logging, not results.
        env = {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ}
        start = time.perf_counter()
        finished = subprocess.run(command, env=env, check=False)
        seconds = time.perf_counter() - start
        if finished.returncode != 0:
            return {"skipped": f"worker failed (exit status {finished.returncode})"}
        with open(output) as f:
            report = json.load(f)
    report["wall_seconds"] = seconds
    return report


def table_rows(reports: dict[str, dict]) -> list[dict]:
    """Every timing with Melem/s, GB/s and the ratio to np.add's time."""
    timings = [row for r in reports.values() for row in r.get("rows", [])]
    reference = {
        (row["dtype"], row["n"]): row["s"] for row in timings if row["row"] == REFERENCE
    }
    rows = []
    for row in timings:
        itemsize = np.dtype(row["dtype"]).itemsize
        arrays = 3 if row["op"] == "elementwise" else 2
        add = reference.get((row["dtype"], row["n"]))
        rows.append(
            {
                "dtype": row["dtype"],
                "n": row["n"],
                "op": row["op"],
                "library": row["library"],
                "row": row["row"],
                "seconds": row["s"],
                "fastest_loop_seconds": row["fastest_s"],
                "melem_per_s": row["n"] / row["s"] / 1e6,
                "gb_per_s": arrays * row["n"] * itemsize / row["s"] / 1e9,
                "vs_add": None if add is None else add / row["s"],
            }
        )
    order = row_order(rows)
    rows.sort(
        key=lambda r: (
            list(DTYPES).index(r["dtype"]),
            OPS.index(r["op"]),
            r["n"],
            order.index(r["row"]),
        )
    )
    return rows


def row_order(rows: list[dict]) -> list[str]:
    """Row names in the order they first appear: by library, then as timed."""
    names: list[str] = []
    for row in rows:
        if row["row"] not in names:
            names.append(row["row"])
    return names


def print_table(rows: list[dict]) -> None:
    width = max([len(r["row"]) for r in rows] + [4])
    header = (
        f"{'dtype':<8} {'op':<11} {'N':>9} {'row':<{width}} {'time':>10} "
        f"{'Melem/s':>9} {'GB/s':>7} {'vs add':>7}"
    )
    print(header)
    print("-" * len(header))
    previous = None
    for row in rows:
        block = (row["dtype"], row["op"], row["n"])
        if previous is not None and block != previous:
            print()
        previous = block
        ratio = "" if row["vs_add"] is None else f"{row['vs_add']:.3f}"
        print(
            f"{row['dtype']:<8} {row['op']:<11} {row['n']:>9} "
            f"{row['row']:<{width}} {format_seconds(row['seconds']):>10} "
            f"{row['melem_per_s']:>9.1f} {row['gb_per_s']:>7.2f} {ratio:>7}"
        )
    print()


def print_summary(rows: list[dict], sizes: list[int], key: str, title: str) -> None:
    """Melem/s per row and N, one block per dtype and operation.

    ``key`` names the seconds per call to use: the median or the fastest loop.
    """
    names = row_order(rows)
    width = max(len(name) for name in names) + 2
    for dtype in DTYPES:
        for op in OPS:
            block = [r for r in rows if r["dtype"] == dtype and r["op"] == op]
            if not block:
                continue
            print(f"Melem/s, {title}, {dtype}, {op}")
            print(f"{'N':<{width}}" + "".join(f"{n:>9.0e}" for n in sizes))
            for name in names:
                speed = {
                    r["n"]: r["n"] / r[key] / 1e6 for r in block if r["row"] == name
                }
                if speed:
                    cells = (
                        f"{speed[n]:>9.1f}" if n in speed else f"{'':>9}" for n in sizes
                    )
                    print(f"{name:<{width}}" + "".join(cells))
            print()


def line_style(row: dict, variant: int) -> dict:
    """A colour per library, a dash pattern per variant within it."""
    import matplotlib.pyplot as plt

    if row["row"] == REFERENCE:
        return {"color": "black", "linestyle": ":", "marker": "", "linewidth": 2}
    colors = plt.get_cmap("tab10").colors
    color = colors[list(LIBRARIES).index(row["library"]) % len(colors)]
    dashes = ["-", "--", "-."][variant % 3]
    return {"color": color, "linestyle": dashes, "marker": "o", "markersize": 3.5}


def plot(rows: list[dict], dtypes: list[str], path: str, title: str) -> None:
    """Melem/s against N, log-log: a panel per dtype and operation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = row_order(rows)
    first = {name: next(r for r in rows if r["row"] == name) for name in names}
    variants = {}
    for name in names:
        library = first[name]["library"]
        variants[name] = sum(first[m]["library"] == library for m in variants)

    figure, axes = plt.subplots(
        len(dtypes), len(OPS), figsize=(12, 4.5 * len(dtypes) + 1.2), squeeze=False
    )
    handles = {}
    for axis_row, dtype in zip(axes, dtypes, strict=True):
        for axis, op in zip(axis_row, OPS, strict=True):
            for name in names:
                # np.add, the reference, is drawn in every panel.
                points = sorted(
                    (r["n"], r["melem_per_s"])
                    for r in rows
                    if r["dtype"] == dtype
                    and r["row"] == name
                    and (r["op"] == op or name == REFERENCE)
                )
                if points:
                    style = line_style(first[name], variants[name])
                    x, y = zip(*points, strict=True)
                    label = f"{name} (reference)" if name == REFERENCE else name
                    (line,) = axis.plot(x, y, label=label, **style)
                    handles.setdefault(label, line)
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_title(f"{dtype}, {op}")
            axis.set_xlabel("N (elements)")
            axis.set_ylabel("Melem/s (higher is faster)")
            axis.grid(True, which="major", alpha=0.4)
            axis.grid(True, which="minor", alpha=0.15)

    columns = 5
    legend_rows = -(-len(handles) // columns)
    figure.suptitle(title, fontsize=10)
    figure.legend(
        list(handles.values()),
        list(handles.keys()),
        loc="lower center",
        ncol=columns,
        frameon=False,
    )
    bottom = 0.035 * legend_rows / (len(dtypes) / 2) + 0.01
    figure.tight_layout(rect=(0, bottom, 1, 0.96))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def environment() -> dict[str, object]:
    """The machine and Python, as the parent sees them, and the date."""
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return {**machine(), "date": date}


def print_libraries(reports: dict[str, dict]) -> None:
    for library, report in reports.items():
        if "skipped" in report:
            print(f"{library}: skipped, {report['skipped']}")
            continue
        versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
        print(
            f"{library}: {versions}; threads: {report['threads']}; "
            f"run took {report['wall_seconds']:.0f} s"
        )
        for note in report["notes"]:
            print(f"  note: {note}")
    print()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput of wce_numba's loss and mean against NumPy, "
        "numexpr, PyTorch, TensorFlow and JAX, one process per library."
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--libraries",
        type=lambda s: s.split(","),
        default=list(LIBRARIES),
        help=f"comma-separated, among {','.join(LIBRARIES)} (default all; numpy "
        f"always runs, for the {REFERENCE} reference)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help=f"timed loops per call, the median is reported (default {REPEAT}, "
        f"{QUICK_REPEAT} with --quick)",
    )
    parser.add_argument("--plot", metavar="PNG", help="save a plot of Melem/s vs N")
    parser.add_argument("--json", metavar="FILE", help="also save the results here")
    parser.add_argument("--worker", choices=list(LIBRARIES), help=argparse.SUPPRESS)
    parser.add_argument("--worker-output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    check_common_arguments(parser, args)
    unknown = [lib for lib in args.libraries if lib not in LIBRARIES]
    if unknown:
        parser.error(f"--libraries: expected some of {list(LIBRARIES)}, got {unknown}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats: expected a positive count, got {args.repeats}")
    if args.plot is not None and not args.plot.endswith(".png"):
        parser.error(f"--plot: expected a .png file name, got {args.plot!r}")

    if args.sizes is None:
        args.sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    if args.repeats is None:
        args.repeats = QUICK_REPEAT if args.quick else REPEAT
    args.target = QUICK_TARGET if args.quick else TARGET
    args.libraries = [
        lib for lib in LIBRARIES if lib in args.libraries or lib == "numpy"
    ]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        report = run_worker(args)
        with open(args.worker_output, "w") as f:
            json.dump(report, f)
        return 0

    env = environment()
    print(
        f"CPU: {env['cpu']}, {env['cores']} cores ({env['cores_usable']} usable); "
        f"Python {env['python']}; {env['date']}"
    )
    print(f"load average at start: {env['load_average_at_start']}")
    print()

    reports = {}
    for library in args.libraries:
        print(f"{library}:", file=sys.stderr)
        reports[library] = run_library(library, args)
    for library, report in reports.items():
        for row in report.get("rows", []):
            row["library"] = library

    rows = table_rows(reports)
    print_libraries(reports)
    if rows:
        print_table(rows)
        print_summary(rows, args.sizes, "seconds", "medians")
        # Other processes can only slow a loop down: on a loaded machine the
        # fastest loop estimates what the call does with the cores free.
        print_summary(rows, args.sizes, "fastest_loop_seconds", "fastest loops")
    env["load_average_at_end"] = load_average()
    print(f"load average at end: {env['load_average_at_end']}")

    if args.json:
        result = {
            "environment": env,
            "argv": sys.argv[1:],
            "target_seconds_per_loop": args.target,
            "repeat": args.repeats,
            "libraries": {
                lib: {k: v for k, v in r.items() if k != "rows"}
                for lib, r in reports.items()
            },
            "table": rows,
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"results saved to {args.json}")
    if args.plot and rows:
        title = (
            f"weighted cross entropy, medians: {env['cpu']}, {env['cores']} cores, "
            f"{env['date']}, load average {env['load_average_at_start'].split()[0]} "
            f"at start, {env['load_average_at_end'].split()[0]} at end"
        )
        plot(rows, args.dtypes, args.plot, title)
        print(f"plot saved to {args.plot}")
    return 0 if "skipped" not in reports["numpy"] else 1


if __name__ == "__main__":
    sys.exit(main())
