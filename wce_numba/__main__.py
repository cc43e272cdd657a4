"""``python -m wce_numba``: the same command line as ``wce-numba``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m wce_numba"))
