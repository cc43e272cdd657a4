"""Command line: ``wce-numba COMMAND`` or ``python -m wce_numba COMMAND``.

Each command is a subparser added by its own ``_add_<command>`` function, which
sets ``handler`` to the function that runs it. Arguments are checked while
they are parsed, by the ``type=`` functions below, so a bad value ends the
program with argparse's usage message and exit status 2 before any work
starts.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__, demo

# Largest seed the train/test split accepts (NumPy's legacy seeding limit).
_MAX_SEED = 2**32 - 1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    return _finite_float(text, allow_zero=False)


def _non_negative_float(text: str) -> float:
    return _finite_float(text, allow_zero=True)


def _finite_float(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    # NaN fails every comparison, so it is rejected here too.
    above_zero = value >= 0.0 if allow_zero else value > 0.0
    if not (above_zero and value < math.inf):
        kind = "non-negative" if allow_zero else "positive"
        raise argparse.ArgumentTypeError(
            f"must be a {kind} finite number, got {text!r}"
        )
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= _MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"must be an integer from 0 to {_MAX_SEED}, got {text!r}"
        )
    return value


def _png_path(text: str) -> Path:
    """A path that names a .png file which can be created or overwritten."""
    path = Path(text)
    if path.suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"must name a .png file, got {text!r}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory")

    directory = path.parent
    if not directory.is_dir():
        raise argparse.ArgumentTypeError(
            f"cannot write {text!r}: directory {str(directory)!r} does not exist"
        )
    writable = path if path.exists() else directory
    if not os.access(writable, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: permission denied")
    return path


def _add_demo(commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="sweep pos_weight on the digits data and report precision and recall",
        description=(
            "Train a logistic regression on scikit-learn's digits data as the task "
            '"is this digit a 9?" (about 10% positives), once per pos_weight, by '
            "gradient descent on the weighted cross entropy, and print test "
            "precision, recall and F1 for each. A fifth of the training images "
            "has 30% of its labels flipped and is down-weighted by a sample "
            "weight. Needs the demo extra: "
            'pip install "wce_numba[demo]".'
        ),
    )
    parser.add_argument(
        "--pos-weights",
        type=_positive_float,
        nargs="+",
        default=list(demo.DEFAULT_POS_WEIGHTS),
        metavar="Q",
        help="the pos_weight values to sweep (default: "
        + " ".join(f"{weight:g}" for weight in demo.DEFAULT_POS_WEIGHTS)
        + ")",
    )
    parser.add_argument(
        "--noisy-weight",
        type=_non_negative_float,
        default=demo.DEFAULT_NOISY_WEIGHT,
        metavar="W",
        help="sample weight of the training slice with noisy labels; 1 treats "
        "it like the rest (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=demo.DEFAULT_EPOCHS,
        metavar="N",
        help="full-batch gradient steps per model (default: %(default)s)",
    )
    parser.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=demo.DEFAULT_LEARNING_RATE,
        metavar="RATE",
        help="gradient descent step size (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        default=demo.DEFAULT_SEED,
        help="seed of the stratified train/test split and of the choice of the "
        "noisy slice (default: %(default)s)",
    )
    parser.add_argument(
        "--plot",
        type=_png_path,
        metavar="FILE.png",
        help="also write precision and recall versus pos_weight to this PNG",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="do not show the progress bar on stderr",
    )
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    missing = demo.missing_demo_modules()
    if missing:
        print(
            "the demo needs the demo extra, which is not fully installed "
            f"(missing: {', '.join(missing)}); install it with: "
            'pip install "wce_numba[demo]"',
            file=sys.stderr,
        )
        return 1

    split = demo.load_digits_task(args.seed)
    rows = demo.run_sweep(
        split,
        args.pos_weights,
        noisy_weight=args.noisy_weight,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        seed=args.seed,
        progress=not args.no_progress,
    )

    n_test_positives = int(split.test_labels.sum())
    print(
        f"Task:  is this digit a {demo.POSITIVE_DIGIT}? (scikit-learn's digits)\n"
        f"Data:  {len(split.train_labels)} training and {len(split.test_labels)} "
        f"test images, {n_test_positives} positives in test\n"
        f"Noise: {demo.FLIP_RATE:.0%} of the labels flipped in "
        f"{demo.NOISY_FRACTION:.0%} of the training images, which get sample "
        f"weight {args.noisy_weight:g}\n"
        f"Model: logistic regression, {args.epochs} gradient descent epochs at "
        f"learning rate {args.learning_rate:g}\n"
    )
    print(demo.format_table(rows))

    if args.plot is not None:
        try:
            demo.plot_precision_recall(rows, args.plot)
        except OSError as error:
            print(f"could not write the plot: {error}", file=sys.stderr)
            return 1
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def build_parser(prog: str = "wce-numba") -> argparse.ArgumentParser:
    """The argument parser with every command as a subparser.

    Parameters
    ----------
    prog : str, optional
        Program name shown in usage and error messages.

    Returns
    -------
    argparse.ArgumentParser
        Parsing gives a namespace whose ``handler`` runs the chosen command.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="TensorFlow's weighted cross entropy with logits, in Numba.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND"
    )
    _add_demo(commands)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "wce-numba") -> int:
    """Run the command line and return its exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; ``sys.argv[1:]`` by default.
    prog : str, optional
        Program name shown in usage and error messages.

    Returns
    -------
    int
        0 on success, 1 when the command could not run (for instance, the demo
        extra is not installed).

    Raises
    ------
    SystemExit
        With status 2 on bad arguments, after argparse prints the usage and a
        message naming the problem; with status 0 after ``--help``.
    """
    args = build_parser(prog).parse_args(argv)
    return args.handler(args)
