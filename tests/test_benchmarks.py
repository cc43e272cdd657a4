"""The peer benchmark runs end to end: table, JSON and plot, for NumPy and wce_numba.

Only the structure of the output is checked; no timing is asserted.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wce_numba import weighted_cross_entropy_with_logits

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_peers.py"
SIZE = 1_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One --quick run for numpy and wce_numba at one size and dtype."""
    folder = tmp_path_factory.mktemp("bench_peers")
    json_path, png_path = folder / "peers.json", folder / "peers.png"
    # The workers must import this checkout's wce_numba, as the tests do.
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    finished = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--sizes",
            str(SIZE),
            "--dtypes",
            "float32",
            "--libraries",
            "numpy,wce_numba",
            "--json",
            str(json_path),
            "--plot",
            str(png_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    with open(json_path) as f:
        report = json.load(f)
    return finished.stdout, report, png_path


def expected_rows():
    rows = {
        ("elementwise", "wce_numba"),
        ("elementwise", "wce_numba out="),
        ("elementwise", "numpy"),
        ("elementwise", "np.add"),
        ("mean", "numpy"),
    }
    if "reduction" in inspect.signature(weighted_cross_entropy_with_logits).parameters:
        rows.add(("mean", "wce_numba"))
    return rows


def test_json_has_one_row_per_requested_call(quick_run):
    _, report, _ = quick_run

    rows = {(row["op"], row["row"]) for row in report["table"]}

    assert rows == expected_rows()
    assert {row["n"] for row in report["table"]} == {SIZE}
    assert {row["dtype"] for row in report["table"]} == {"float32"}
    assert set(report["libraries"]) == {"numpy", "wce_numba"}


def test_json_columns_follow_from_the_time(quick_run):
    _, report, _ = quick_run
    add = next(r for r in report["table"] if r["row"] == "np.add")

    for row in report["table"]:
        # float32: elementwise reads two arrays and writes one, the mean reads two.
        nbytes = (3 if row["op"] == "elementwise" else 2) * SIZE * 4

        assert row["seconds"] > 0
        assert row["melem_per_s"] == pytest.approx(SIZE / row["seconds"] / 1e6)
        assert row["gb_per_s"] == pytest.approx(nbytes / row["seconds"] / 1e9)
        assert row["vs_add"] == pytest.approx(add["seconds"] / row["seconds"])


def test_mean_row_is_left_out_with_a_note_when_reduction_is_missing(quick_run):
    stdout, report, _ = quick_run
    notes = report["libraries"]["wce_numba"]["notes"]
    has_mean = ("mean", "wce_numba") in expected_rows()

    assert bool(notes) != has_mean
    for note in notes:
        assert note in stdout


def test_printed_table_names_versions_and_columns(quick_run):
    stdout, report, _ = quick_run

    assert "Melem/s" in stdout and "GB/s" in stdout and "vs add" in stdout
    assert f"numpy {report['libraries']['numpy']['versions']['numpy']}" in stdout
    for row in report["table"]:
        assert f"float32  {row['op']:<11} {SIZE:>9} {row['row']}" in stdout


def test_plot_is_a_png(quick_run):
    _, _, png_path = quick_run

    assert png_path.read_bytes()[: len(PNG_SIGNATURE)] == PNG_SIGNATURE
