"""The command line's parsing, errors and start-up, without running a sweep."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from wce_numba import __version__
from wce_numba.cli import main

BAD_ARGUMENTS = [
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["demo", "--epochs", "0"], "argument --epochs: must be a positive integer"),
    (["demo", "--epochs", "-3"], "argument --epochs: must be a positive integer"),
    (["demo", "--epochs", "2.5"], "argument --epochs: must be a positive integer"),
    (["demo", "--learning-rate", "0"], "argument --learning-rate: must be a positive"),
    (["demo", "--pos-weights"], "argument --pos-weights: expected at least one"),
    (["demo", "--pos-weights", "1", "-2"], "--pos-weights: must be a positive finite"),
    (["demo", "--pos-weights", "0"], "--pos-weights: must be a positive finite"),
    (["demo", "--pos-weights", "nan"], "--pos-weights: must be a positive finite"),
    (["demo", "--pos-weights", "inf"], "--pos-weights: must be a positive finite"),
    (["demo", "--pos-weights", "two"], "--pos-weights: must be a positive finite"),
    (["demo", "--seed", "-1"], "argument --seed: must be an integer from 0"),
    (["demo", "--plot", "curve.jpg"], "argument --plot: must name a .png file"),
    (["demo", "--plot", "curve"], "argument --plot: must name a .png file"),
]


def assert_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)

    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: wce-numba")
    assert message in err


@pytest.mark.parametrize(("argv", "message"), BAD_ARGUMENTS)
def test_bad_argument_exits_2_with_a_message_naming_it(argv, message, capsys):
    assert_usage_error(argv, message, capsys)


def test_plot_into_a_missing_directory_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "missing" / "curve.png"

    assert_usage_error(["demo", "--plot", str(path)], "does not exist", capsys)


def test_plot_onto_a_directory_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "folder.png"
    path.mkdir()

    assert_usage_error(["demo", "--plot", str(path)], "is a directory", capsys)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="needs POSIX permissions that apply (root may write anywhere)",
)
def test_plot_into_a_read_only_directory_is_a_usage_error(tmp_path, capsys):
    folder = tmp_path / "read_only"
    folder.mkdir(mode=0o500)

    assert_usage_error(
        ["demo", "--plot", str(folder / "curve.png")], "permission denied", capsys
    )


def test_python_dash_m_reports_bad_arguments_with_status_2():
    completed = subprocess.run(
        [sys.executable, "-m", "wce_numba", "demo", "--epochs", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 2
    assert "python -m wce_numba demo: error: argument --epochs" in completed.stderr
    assert completed.stdout == ""


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])

    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"wce-numba {__version__}\n"


def test_missing_demo_extra_names_the_install_command(monkeypatch, capsys):
    # A None entry in sys.modules makes the module unimportable, as if absent.
    monkeypatch.setitem(sys.modules, "tqdm", None)

    status = main(["demo"])

    assert status == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "tqdm" in err
    assert 'pip install "wce_numba[demo]"' in err


def test_importing_the_package_does_not_import_the_demo_extra():
    code = (
        "import sys, wce_numba, wce_numba.cli, wce_numba.demo\n"
        "print(sorted({'sklearn', 'matplotlib', 'tqdm'} & set(sys.modules)))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert completed.stdout == "[]\n"
