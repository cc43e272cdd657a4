"""The dispatcher: chooses which compiled ufunc serves a call, and runs it.

On the CPU there are two ufuncs per quantity, compiled from the same kernel:
``cpu`` (one thread) and ``parallel`` (Numba's threading layer). Starting the
thread pool costs microseconds per call, so small arrays stay on one core.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from ._ufuncs import cpu_ufunc
from ._validate import Prepared

logger = logging.getLogger("wce_numba")

# Element count from which the parallel ufunc is used. Measured on 2 cores
# (AMD EPYC Zen 4, numba 0.68.1, OpenMP layer) with
# ``python benchmarks/bench_elementwise.py --threshold``: below about 2e4
# elements the thread start-up costs more than the second core gains.
PARALLEL_THRESHOLD = 20_000

# Numba's workqueue threading layer (its fallback when neither tbb nor OpenMP
# loads) aborts the whole process when two threads launch parallel work at
# once. One parallel call at a time, whatever the layer: a caller that finds
# another call in flight runs the serial ufunc instead. The cores are busy
# with the call in flight anyway, and both ufuncs give bit-identical results.
_parallel_slot = threading.Lock()


def select_ufunc(quantity: str, size: int) -> tuple[np.ufunc, bool]:
    """The CPU ufunc for ``size`` elements, and whether it holds the parallel slot.

    A True second value means the caller must release ``_parallel_slot`` after
    the call (``run_cpu`` does).
    """
    if size >= PARALLEL_THRESHOLD and _parallel_slot.acquire(blocking=False):
        return cpu_ufunc(quantity, "parallel"), True

    if size >= PARALLEL_THRESHOLD:
        logger.debug(
            "%s: another parallel call is in flight; running %d elements on one core",
            quantity,
            size,
        )
    return cpu_ufunc(quantity, "cpu"), False


def can_write_directly(out: np.ndarray, prepared: Prepared) -> bool:
    """Whether the ufunc may write into the caller's ``out`` itself.

    Numba 0.68's CPU ufunc loops (both targets) ignore the output's stride:
    given an ``out`` that NumPy walks with a step other than one element (a
    strided or reversed view, or a layout unlike the inputs') they write it
    as if contiguous, which gives wrong results and can corrupt the heap.
    Inputs of any stride are read correctly. So ``out`` goes to the ufunc
    only when it and the labels and logits are all C-contiguous; otherwise
    the API computes into a fresh array and copies, at the cost of one more
    pass over the result.
    """
    return (
        out.flags.c_contiguous
        and out.dtype.isnative
        and prepared.labels.flags.c_contiguous
        and prepared.logits.flags.c_contiguous
    )


def run_cpu(quantity: str, prepared: Prepared, out: np.ndarray | None):
    """Evaluate ``quantity`` elementwise on the CPU; returns what the ufunc returns.

    ``out`` must already have the compute dtype (the API handles float16).
    """
    ufunc, holds_slot = select_ufunc(quantity, prepared.logits.size)
    try:
        # The kernels' error-free transformations meet inf - inf, and form
        # products that overflow, inside branches whose results they then
        # discard (at infinite logits, or for a term whose coefficient is 0),
        # which raises the FPU's invalid and overflow flags that NumPy would
        # report as warnings. The results follow the documented limits: NaN
        # only from NaN inputs, inf only where the exact value exceeds the
        # largest float (the correctly rounded result).
        with np.errstate(invalid="ignore", over="ignore"):
            return ufunc(prepared.labels, prepared.logits, prepared.pos_weight, out=out)
    finally:
        if holds_slot:
            _parallel_slot.release()
