"""The demo end to end on the real digits data, and its building blocks."""

from __future__ import annotations

import io
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

from wce_numba import demo
from wce_numba.cli import main

# The demo extra; without it the demo cannot run (tests/test_cli.py checks the
# message it gives instead).
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

COLUMNS = [
    "pos_weight",
    "train_loss",
    "precision",
    "recall",
    "F1",
    "false_neg",
    "false_pos",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``main(argv)``, run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def parse_table(stdout: str) -> dict[float, dict[str, float]]:
    """The printed table as {pos_weight: {column: value}}, in printed order."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == COLUMNS)
    rows = {}
    for line in lines[header + 1 :]:
        values = [float(cell) for cell in line.split()]
        rows[values[0]] = dict(zip(COLUMNS, values, strict=True))
    return rows


@pytest.fixture(scope="module")
def default_run() -> tuple[int, str, str]:
    """One run of ``wce-numba demo`` with every default, shared by the tests."""
    return run_main(["demo"])


@pytest.fixture(scope="module")
def split() -> demo.Split:
    return demo.load_digits_task()


def test_demo_prints_one_table_row_per_default_pos_weight(default_run):
    status, stdout, _ = default_run

    assert status == 0
    table = parse_table(stdout)
    assert list(table) == list(demo.DEFAULT_POS_WEIGHTS)


def test_larger_pos_weight_raises_recall_and_lowers_precision(default_run):
    table = parse_table(default_run[1])

    assert table[8.0]["recall"] > table[1.0]["recall"]
    assert table[8.0]["precision"] < table[1.0]["precision"]
    assert table[8.0]["false_neg"] < table[1.0]["false_neg"]
    assert table[8.0]["false_pos"] > table[1.0]["false_pos"]


def test_progress_bar_goes_to_stderr_only(default_run):
    _, stdout, stderr = default_run
    total_epochs = len(demo.DEFAULT_POS_WEIGHTS) * demo.DEFAULT_EPOCHS

    assert f"{total_epochs}/{total_epochs}" in stderr
    assert "epoch/s" not in stdout


def test_demo_output_is_identical_across_runs_and_entry_points(default_run):
    # A second run, in a fresh interpreter through ``python -m``, must print
    # exactly what the in-process run printed.
    completed = subprocess.run(
        [sys.executable, "-m", "wce_numba", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == default_run[1]


def test_no_progress_leaves_stderr_empty():
    status, stdout, stderr = run_main(
        ["demo", "--pos-weights", "1", "--epochs", "5", "--no-progress"]
    )

    assert status == 0
    assert list(parse_table(stdout)) == [1.0]
    assert stderr == ""


def test_plot_option_writes_a_png(tmp_path):
    path = tmp_path / "precision_recall.png"

    status, _, stderr = run_main(
        ["demo", "--pos-weights", "1", "8", "--epochs", "50", "--no-progress"]
        + ["--plot", str(path)]
    )

    assert status == 0
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert str(path) in stderr


def test_split_is_stratified_and_scaled_on_training_data_only(split):
    train_share = split.train_labels.mean()
    test_share = split.test_labels.mean()
    assert 0.09 < test_share < 0.11
    assert abs(train_share - test_share) < 0.01

    # Standardized with the training split's statistics: exact there (up to
    # rounding), only approximately on the test split.
    varying = split.train_features.std(axis=0) > 0
    np.testing.assert_allclose(split.train_features.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(split.train_features[:, varying].std(axis=0), 1.0)
    assert np.abs(split.test_features.mean(axis=0)).max() > 1e-3


def test_training_lowers_the_mean_loss(split):
    pos_weight = 4.0
    untrained = demo.LogisticModel(np.zeros(split.train_features.shape[1]), 0.0)

    model = demo.train_logistic_regression(
        split.train_features, split.train_labels, pos_weight, epochs=100
    )

    features, labels = split.train_features, split.train_labels
    before = demo.mean_loss(untrained, features, labels, pos_weight)
    after = demo.mean_loss(model, features, labels, pos_weight)
    # At logit 0 every example costs log(2), times pos_weight for positives.
    share = split.train_labels.mean()
    assert before == pytest.approx(np.log(2) * (1 - share + pos_weight * share))
    assert after < 0.5 * before


def test_evaluate_scores_zero_when_nothing_is_predicted_positive(split):
    # zero_division=0: precision of an empty prediction is 0, with no warning
    # (warnings are errors in this test suite).
    never = demo.LogisticModel(np.zeros(split.test_features.shape[1]), -100.0)

    scores = demo.evaluate(never, split.test_features, split.test_labels)

    assert scores == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "false_negatives": int(split.test_labels.sum()),
        "false_positives": 0,
    }


def test_plot_has_log2_axis_and_points_in_increasing_pos_weight(tmp_path):
    rows = [
        demo.SweepRow(q, 0.1, p, r, f1=0.5, false_negatives=1, false_positives=1)
        for q, p, r in [(4.0, 0.6, 0.9), (0.5, 0.9, 0.6), (1.0, 0.8, 0.8)]
    ]
    path = tmp_path / "unsorted.png"

    figure = demo.plot_precision_recall(rows, path)

    assert path.read_bytes().startswith(PNG_SIGNATURE)
    (axes,) = figure.axes
    assert axes.get_xscale() == "log"
    assert axes.xaxis.get_transform().base == 2
    precision, recall = axes.get_lines()
    np.testing.assert_array_equal(precision.get_xdata(), [0.5, 1.0, 4.0])
    np.testing.assert_array_equal(precision.get_ydata(), [0.9, 0.8, 0.6])
    np.testing.assert_array_equal(recall.get_ydata(), [0.6, 0.8, 0.9])


def test_noisy_slice_flips_a_share_of_its_labels_only():
    labels = np.r_[np.ones(100), np.zeros(900)]

    noisy = demo.add_noisy_slice(labels, seed=3)

    changed = noisy.labels != labels
    assert noisy.in_slice.sum() == round(demo.NOISY_FRACTION * 1000)
    assert changed.sum() == round(demo.FLIP_RATE * noisy.in_slice.sum())
    assert not changed[~noisy.in_slice].any()
    assert labels.sum() == 100  # the clean labels are not modified


def test_down_weighting_the_noisy_slice_improves_test_f1(split):
    # The sample weights reach the loss: with the noisy slice weighted 0.1
    # the models score better on the clean test labels than with weight 1.
    pos_weights = [1.0, 4.0]
    weighted = demo.run_sweep(split, pos_weights, noisy_weight=0.1, epochs=300)
    unweighted = demo.run_sweep(split, pos_weights, noisy_weight=1.0, epochs=300)

    for low, high in zip(unweighted, weighted, strict=True):
        assert high.f1 > low.f1
