"""The dispatcher: chooses how a CPU call runs, and runs it.

C-contiguous labels and logits, with a scalar or same-shaped C-contiguous
pos_weight (the common case), go to the contiguous loops of ``_loops``, which
LLVM vectorizes; from ``LOOP_THRESHOLD`` elements they run on equal blocks,
one per core, the caller's thread taking the first. Every other layout goes
to the ufuncs, compiled from the same kernels: ``cpu`` (one thread) and
``parallel`` (Numba's threading layer). Small arrays run on one core: starting
work on other cores costs tens of microseconds. Large arrays use every core,
in one of two ways:

* Numba's ``parallel`` ufunc, when its threading layer is TBB: safe from any
  number of Python threads and across ``fork()``, and fast.
* Otherwise the ``cpu`` ufunc on equal blocks of rows, one per thread of a
  small pool. NumPy releases the GIL inside the ufunc loop, so the blocks run
  at the same time. Numba's other layers are unfit here: under GNU OpenMP (what
  a pip install gets without TBB) the parallel ufunc was 20 times slower than
  the serial one on a light kernel and not faster on ours, and a process that
  forks after using it kills its children; the workqueue layer aborts the
  process when two threads launch parallel work at once.

Every path gives results bit-identical to the serial ufunc: each element is
computed by the same kernel, independently.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import logging
import math
import os
import sys
import threading
from fractions import Fraction

import numba
import numpy as np

from ._ufuncs import cpu_ufunc
from ._validate import Prepared

logger = logging.getLogger("wce_numba")

# Element count from which a call on the ufunc path (layouts the contiguous
# loops do not take, such as a per-class pos_weight) uses every core.
# Measured on 2 cores (AMD EPYC family 25 model 1, AVX2, numba 0.68.1, shared
# with other processes) with ``python benchmarks/bench_elementwise.py
# --threshold``: all cores crossed over at 42,170 elements in each of three
# runs and lost at 17,783-23,714 in 7 of 8 measurements.
PARALLEL_THRESHOLD = 50_000

# Element counts from which the contiguous loops use every core, per dtype.
# Measured the same way (one core against all, alternately): with the
# earlier float32 kernel (~3-5 ns an element) float32 crossed at 7.5e4-4.2e5
# elements in three runs on a shared machine, float64 at 2.4e4-4.2e4 (~12 ns
# each); handing a block to the pool cost 30-280 us depending on the load
# from other processes. With the float64-lane float32 kernel (~3 ns), on a
# quiet machine (Zen 2, ``--threshold --quick``), all cores were faster from
# 1e5 for float32 (not at 5.6e4) and from 1.8e4 for float64.
LOOP_THRESHOLD = {np.dtype(np.float32): 100_000, np.dtype(np.float64): 1 << 15}

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def thread_count() -> int:
    """Threads for a multi-core call: Numba's ``NUMBA_NUM_THREADS`` setting."""
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def _block_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The shared pool of block workers, created on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=thread_count(), thread_name_prefix="wce_numba"
            )
        return _pool


def _forget_pool_after_fork() -> None:
    # A forked child inherits the pool object but none of its threads; work
    # handed to it would wait forever. The child starts a pool of its own.
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _load_pip_tbb() -> None:
    # pip installs TBB's library into <prefix>/lib, which Numba's loader does
    # not search; loading it by path first lets Numba find it.
    for name in ("libtbb.so.12", "libtbb.12.dylib"):
        path = os.path.join(sys.prefix, "lib", name)
        if os.path.exists(path):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                return
            return


@functools.cache
def parallel_ufunc_is_safe() -> bool:
    """Whether Numba's parallel ufuncs run (or will run) on the TBB layer.

    Numba picks its layer once, at the first parallel launch in the process:
    from then on ``numba.threading_layer()`` names it. Before that, TBB will
    be picked if the configuration asks for it first and its library loads.
    """
    try:
        return numba.threading_layer() == "tbb"
    except ValueError:
        pass

    requested = numba.config.THREADING_LAYER
    priority = list(numba.config.THREADING_LAYER_PRIORITY)
    if requested == "default" and priority[:1] != ["tbb"]:
        return False
    if requested not in ("default", "safe", "threadsafe", "tbb"):
        return False

    _load_pip_tbb()
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401
    except ImportError:
        return False
    return True


def _in_blocks(length: int, pieces: int, run_block) -> None:
    """``run_block(start, stop)`` over ``pieces`` equal parts of ``range(length)``.

    The first part runs on the calling thread, the others on the pool; returns
    when all are done.
    """
    bounds = [length * k // pieces for k in range(pieces + 1)]
    pool = _block_pool()
    futures = [
        pool.submit(run_block, bounds[k], bounds[k + 1]) for k in range(1, pieces)
    ]
    run_block(bounds[0], bounds[1])
    for future in futures:
        future.result()


def _run_blocks(ufunc, prepared: Prepared, out: np.ndarray, threads: int) -> None:
    """``ufunc`` over equal blocks of rows of the logits, one block per thread."""
    labels, logits, pos_weight = prepared.labels, prepared.logits, prepared.pos_weight
    rows = logits.shape[0]
    # pos_weight is split with the rows only where it has them; a per-class
    # weight (or a scalar) broadcasts to every block whole.
    split_weight = pos_weight.ndim == logits.ndim and pos_weight.shape[0] == rows

    def run_block(start: int, stop: int) -> None:
        ufunc(
            labels[start:stop],
            logits[start:stop],
            pos_weight[start:stop] if split_weight else pos_weight,
            out=out[start:stop],
        )

    _in_blocks(rows, threads, run_block)


def _contiguous(prepared: Prepared, out: np.ndarray | None) -> bool:
    """Whether the contiguous loops can serve this call."""
    labels, logits, pos_weight = prepared.labels, prepared.logits, prepared.pos_weight
    return (
        labels.flags.c_contiguous
        and logits.flags.c_contiguous
        and (
            pos_weight.ndim == 0
            or (pos_weight.shape == logits.shape and pos_weight.flags.c_contiguous)
        )
        and (out is None or out.flags.c_contiguous)
    )


def _run_loops(quantity: str, prepared: Prepared, out: np.ndarray | None):
    """The contiguous loops over flat views, on one core or on equal blocks."""
    from . import _loops  # loading the compiled loops costs time: not at import

    logits = prepared.logits
    result = out if out is not None else np.empty(logits.shape, logits.dtype)
    code = _loops.GRAD if quantity == "grad" else _loops.LOSS
    labels_flat, logits_flat = prepared.labels.reshape(-1), logits.reshape(-1)
    result_flat = result.reshape(-1)
    if prepared.pos_weight.ndim == 0:
        fill, weight, split_weight = (
            _loops.fill_scalar_weight,
            prepared.pos_weight[()],
            False,
        )
    else:
        fill, weight, split_weight = (
            _loops.fill_array_weight,
            prepared.pos_weight.reshape(-1),
            True,
        )

    def run_block(start: int, stop: int) -> None:
        fill(
            code,
            labels_flat[start:stop],
            logits_flat[start:stop],
            weight[start:stop] if split_weight else weight,
            result_flat[start:stop],
        )

    size = logits.size
    pieces = thread_count() if size >= LOOP_THRESHOLD[logits.dtype] else 1
    _in_blocks(size, pieces, run_block)

    # As a ufunc does: a 0-d call without out= gives a NumPy scalar.
    return result[()] if out is None and logits.ndim == 0 else result


_QUICK_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_LARGEST = {dtype: float(np.finfo(dtype).max) for dtype in _QUICK_DTYPES}
# Scalar types of pos_weight the quick paths take: those the general path
# converts without a question (not bool, not longdouble).
_QUICK_SCALARS = (float, int, np.float16, np.float32, np.float64)


def _quick_weight(labels, logits, pos_weight):
    """``pos_weight`` in the logits' dtype if the quick paths can take the call.

    None if not: see ``run_quick`` for what they take.
    """
    if type(labels) is not np.ndarray or type(logits) is not np.ndarray:
        return None
    dtype = logits.dtype
    if (
        labels.dtype != dtype
        or dtype not in _QUICK_DTYPES
        or labels.shape != logits.shape
        or logits.ndim == 0
        or logits.size >= LOOP_THRESHOLD[dtype]
        or not (labels.flags.c_contiguous and logits.flags.c_contiguous)
        or not _quick_scalar(pos_weight, dtype)
    ):
        return None
    return dtype.type(pos_weight)


def _quick_scalar(value, dtype: np.dtype) -> bool:
    """Whether ``value`` is a finite number that ``dtype`` holds, as a scalar.

    NaN and infinities fail too; the general path handles them, and raises
    for a finite value the dtype cannot hold. (A NumPy scalar is compared as
    a Python float: against the float64 limit, a float32 scalar would
    convert the limit to float32, overflowing.)
    """
    return (
        type(value) in _QUICK_SCALARS
        and -_LARGEST[dtype] <= _python_number(value) <= _LARGEST[dtype]
    )


def _quick_sample_weight(weight, logits: np.ndarray):
    """A sample ``weight`` the quick fused path takes, as the kernel wants it.

    None (meaning 1), a scalar as ``_quick_scalar`` takes, or a C-contiguous
    array of the logits' dtype and shape (flattened); else False.
    """
    dtype = logits.dtype
    if weight is None:
        return dtype.type(1)
    if _quick_scalar(weight, dtype):
        return dtype.type(weight)
    if (
        type(weight) is np.ndarray
        and weight.dtype == dtype
        and weight.shape == logits.shape
        and weight.flags.c_contiguous
    ):
        return weight.reshape(-1)
    return False


def _python_number(value):
    """A Python int as it is, any float scalar as a Python float."""
    return value if type(value) is int else float(value)


def _quick_out(out, labels: np.ndarray, logits: np.ndarray) -> bool:
    """Whether the quick path may write ``out`` (see ``run_quick``)."""
    return (
        type(out) is np.ndarray
        and out.dtype == logits.dtype
        and out.shape == logits.shape
        and out.flags.c_contiguous
        and out.flags.writeable
        and not np.may_share_memory(out, labels)
        and not np.may_share_memory(out, logits)
    )


def run_quick(quantity: str, labels, logits, pos_weight, out=None):
    """The commonest small call, straight to the one-core loop; else None.

    Two C-contiguous native float32 or float64 arrays of one dtype and shape
    (not 0-d), fewer elements than ``LOOP_THRESHOLD``, and a finite Python
    or NumPy float (or a Python int) ``pos_weight`` within the dtype's
    range: every check of the general path is then known to pass, and
    skipping its conversions saves most of the fixed cost of a call (tens of
    microseconds against a few).
    ``out``, if given, must be a writeable C-contiguous ndarray of the
    logits' dtype and shape that shares no memory with the inputs. Anything
    else returns None, and the caller takes the general path, which gives
    the same result bit for bit.
    """
    weight = _quick_weight(labels, logits, pos_weight)
    if weight is None or not (out is None or _quick_out(out, labels, logits)):
        return None
    dtype = logits.dtype

    from . import _loops

    result = np.empty(logits.shape, dtype) if out is None else out
    code = _loops.GRAD if quantity == "grad" else _loops.LOSS
    if logits.ndim == 1:
        _loops.fill_scalar_weight(code, labels, logits, weight, result)
    else:
        flat = (labels.reshape(-1), logits.reshape(-1), weight, result.reshape(-1))
        _loops.fill_scalar_weight(code, *flat)
    return result


def run_cpu(quantity: str, prepared: Prepared, out: np.ndarray | None):
    """Evaluate ``quantity`` elementwise on the CPU; returns what the ufunc returns.

    ``out``, when given, must have the compute dtype and be safe to hand to the
    ufunc (see ``can_write_directly``); the API sees to both.
    """
    if _contiguous(prepared, out):
        return _run_loops(quantity, prepared, out)

    size = prepared.logits.size
    threads = thread_count()
    rows = prepared.logits.shape[0] if prepared.logits.ndim else 0

    # The kernels' error-free transformations meet inf - inf, and form
    # products that overflow, inside branches whose results they then
    # discard (at infinite logits, or for a term whose coefficient is 0),
    # which raises the FPU's invalid and overflow flags that NumPy would
    # report as warnings. The results follow the documented limits: NaN only
    # from NaN inputs, inf only where the exact value exceeds the largest
    # float (the correctly rounded result).
    with np.errstate(invalid="ignore", over="ignore"):
        if size < PARALLEL_THRESHOLD or threads == 1:
            ufunc = cpu_ufunc(quantity, "cpu")
        elif parallel_ufunc_is_safe():
            ufunc = cpu_ufunc(quantity, "parallel")
        elif (
            rows >= threads
            and prepared.labels.flags.c_contiguous
            and prepared.logits.flags.c_contiguous
        ):
            # Blocks of rows of C-contiguous arrays are contiguous, and so are
            # the blocks of ``out`` (see can_write_directly for why it matters).
            if out is None:
                out = np.empty(prepared.logits.shape, prepared.compute_dtype)
            _run_blocks(cpu_ufunc(quantity, "cpu"), prepared, out, threads)
            return out
        else:
            logger.debug(
                "%s: %d rows of these layouts are not split over %d threads",
                quantity,
                rows,
                threads,
            )
            ufunc = cpu_ufunc(quantity, "cpu")

        return ufunc(prepared.labels, prepared.logits, prepared.pos_weight, out=out)


def can_write_directly(out: np.ndarray, prepared: Prepared, *others) -> bool:
    """Whether the ufunc may write into the caller's ``out`` itself.

    Numba 0.68's CPU ufunc loop ignores the output's stride when the inputs
    are contiguous: given an ``out`` that NumPy walks with a step other than
    one element (a strided or reversed view, or a layout unlike the inputs')
    it writes it as if contiguous, which gives wrong results and can corrupt
    the heap. Inputs of any stride are read correctly. So ``out`` goes to the
    ufunc (or the contiguous loops) only when it and the labels and logits are
    all C-contiguous, ``out`` is in native byte order and does not partly
    overlap an input (``others`` are further inputs, such as sample
    weights); otherwise the API computes into a fresh array and copies, at
    the cost of one more pass over the result.
    """
    return (
        out.flags.c_contiguous
        and out.dtype.isnative
        and prepared.labels.flags.c_contiguous
        and prepared.logits.flags.c_contiguous
        and not any(
            _overlaps_partly(out, array)
            for array in (
                prepared.labels,
                prepared.logits,
                prepared.pos_weight,
                *others,
            )
        )
    )


def _overlaps_partly(out: np.ndarray, array: np.ndarray) -> bool:
    """Whether ``out`` shares memory with ``array`` without being the same view.

    Writing element i of ``out`` may then change an element of ``array`` that
    is read later (or by another block's thread): ``out`` one element ahead
    of the logits would feed each result into the next. NumPy's ufuncs copy
    such operands; here the API computes into a fresh array instead. ``out``
    that is exactly an input is safe: each element is read before it is
    written, by the thread that writes it.
    """
    if not np.may_share_memory(out, array):
        return False
    same_view = (
        out.__array_interface__["data"][0] == array.__array_interface__["data"][0]
        and out.shape == array.shape
        and out.strides == array.strides
    )
    return not same_view


def run_fused(
    prepared: Prepared,
    weight: np.ndarray,
    reduction: str,
    want_value: bool,
    want_grad: bool,
    loss_out: np.ndarray | None = None,
    grad_out: np.ndarray | None = None,
    count: int | None = None,
    total_dtype: np.dtype | None = None,
):
    """Weighted (and reduced) loss and scaled gradient from one pass; CPU.

    Returns ``(value, grad)``, each None unless asked for: ``value`` is the
    elementwise ``weight * loss`` (reduction "none") or its sum, or the sum
    over ``count`` (default: the number of elements) for "mean", as a scalar
    of ``total_dtype`` (default: the compute dtype), rounded once; ``grad``
    is ``weight * d loss / d logits``, divided by ``count`` for "mean".
    ``weight`` has the compute dtype and broadcasts to the logits' shape.
    ``loss_out``/``grad_out``, when given, receive the arrays; they must be
    C-contiguous, of the compute dtype, and safe to write directly (see
    ``can_write_directly``).

    Nothing of the size of the input is allocated beyond the requested
    arrays: contiguous inputs are read in place, and other layouts (a
    per-class pos_weight or weight, a strided view) are copied a chunk of
    rows at a time.
    """
    from . import _fused  # loading the compiled pass costs time: not at import

    logits = prepared.logits
    dtype = logits.dtype
    count = logits.size if count is None else count
    reduce = want_value and reduction != "none"
    if want_value and not reduce and loss_out is None:
        loss_out = np.empty(logits.shape, dtype)
    if want_grad and grad_out is None:
        grad_out = np.empty(logits.shape, dtype)
    scale_hi, scale_lo = _scale(reduction, count, dtype)

    chunks = _Chunks(
        (prepared.labels, logits, prepared.pos_weight, weight),
        (None if reduce else loss_out, grad_out),
    )
    blocks = {}

    def run_block(start: int, stop: int) -> None:
        lanes = np.zeros(2 * _fused.LANES) if reduce else None
        for labels, logits_part, pos_weight, sample_weight, outputs in chunks.pieces(
            start, stop
        ):
            _fused.fused_pass(
                labels,
                logits_part,
                pos_weight,
                sample_weight,
                scale_hi,
                scale_lo,
                outputs[0],
                outputs[1],
                lanes,
            )
        blocks[start] = lanes

    pieces = (
        min(thread_count(), chunks.rows) if logits.size >= LOOP_THRESHOLD[dtype] else 1
    )
    _in_blocks(chunks.rows, pieces, run_block)

    grad = grad_out if want_grad else None
    if not want_value:
        return None, grad
    if not reduce:
        return loss_out, grad
    lanes = np.stack(list(blocks.values()))
    return _reduced(lanes, reduction, count, total_dtype or dtype), grad


def run_fused_quick(
    labels,
    logits,
    pos_weight,
    sample_weight,
    reduction: str,
    want_value: bool,
    want_grad: bool,
):
    """A small fused call on contiguous arrays; else None.

    Takes what ``run_quick`` takes (see there), with a sample weight that is
    None, a scalar, or an array like the logits, and skips the general
    path's conversions and its splitting into pieces and blocks, which cost
    far more than the pass itself below ``LOOP_THRESHOLD`` elements. Returns
    ``(value, grad)`` as ``run_fused`` does, bit for bit.
    """
    weight = _quick_weight(labels, logits, pos_weight)
    if weight is None:
        return None
    sample_weight = _quick_sample_weight(sample_weight, logits)
    if sample_weight is False:
        return None
    from . import _fused

    dtype = logits.dtype
    reduce = want_value and reduction != "none"
    loss_out = np.empty(logits.shape, dtype) if want_value and not reduce else None
    grad_out = np.empty(logits.shape, dtype) if want_grad else None
    lanes = np.zeros(2 * _fused.LANES) if reduce else None
    scale_hi, scale_lo = _scale(reduction, logits.size, dtype)

    _fused.fused_pass(
        labels.reshape(-1),
        logits.reshape(-1),
        weight,
        sample_weight,
        scale_hi,
        scale_lo,
        None if loss_out is None else loss_out.reshape(-1),
        None if grad_out is None else grad_out.reshape(-1),
        lanes,
    )

    value = loss_out
    if reduce:
        value = _reduced(lanes[np.newaxis], reduction, logits.size, dtype)
    return value, grad_out


def _reduced(lanes: np.ndarray, reduction: str, count: int, dtype: np.dtype):
    """The sum or mean from the fused pass's lanes (one row per block)."""
    total_hi, total_lo = _sum_of_lanes(lanes)
    total = (
        total_hi
        if reduction == "sum"
        else _divide_exactly(total_hi, total_lo, count, dtype)
    )
    # A total beyond the dtype's range is inf, the correctly rounded value;
    # NumPy's conversion would warn about it.
    with np.errstate(over="ignore"):
        return dtype.type(total)


# Elements per piece when a layout has to be copied to contiguous memory: big
# enough that the per-piece cost is noise, small enough to stay in the cache.
_PIECE = 1 << 14


class _Chunks:
    """Contiguous 1-D pieces of a call's operands, by rows of the logits.

    Where labels and logits are C-contiguous and each weight is a scalar or
    a C-contiguous array of the logits' shape, the whole call is one flat
    range and its pieces are views. Otherwise the rows (the first axis) are
    cut into pieces of about ``_PIECE`` elements, each operand broadcast to
    the piece's shape and copied; the outputs are always C-contiguous, so
    their pieces are views.
    """

    def __init__(self, operands: tuple, outputs: tuple) -> None:
        self.shape = operands[1].shape
        size = operands[1].size
        self.flat = all(
            array.ndim == 0 or (array.shape == self.shape and array.flags.c_contiguous)
            for array in operands
        )
        if self.flat:
            labels, logits, pos_weight, weight = operands
            self.operands = [
                labels.reshape(-1),
                logits.reshape(-1),
                _flat_or_scalar(pos_weight),
                _flat_or_scalar(weight),
            ]
            self.outputs = [_flat_or_none(array) for array in outputs]
            self.rows, self.rows_per_piece = size, max(size, 1)
        else:
            self.operands = list(operands)
            self.outputs = list(outputs)
            self.rows = self.shape[0]
            row_size = max(size // max(self.rows, 1), 1)
            self.rows_per_piece = max(_PIECE // row_size, 1)

    def pieces(self, start: int, stop: int):
        """``(labels, logits, pos_weight, weight, outputs)`` per piece of rows."""
        for first in range(start, stop, self.rows_per_piece):
            last = min(first + self.rows_per_piece, stop)
            operands = [self._piece(array, first, last) for array in self.operands]
            outputs = [
                None if array is None else array[first:last].reshape(-1)
                for array in self.outputs
            ]
            yield (*operands, outputs)

    def _piece(self, array, first: int, last: int):
        if self.flat:
            return array if np.ndim(array) == 0 else array[first:last]
        if array.ndim == 0:
            return array[()]
        rows = np.broadcast_to(array, self.shape)[first:last]
        return np.ascontiguousarray(rows).reshape(-1)


def _flat_or_scalar(array: np.ndarray):
    """A 0-d array as a NumPy scalar, any other as a flat view."""
    return array[()] if array.ndim == 0 else array.reshape(-1)


def _flat_or_none(array: np.ndarray | None):
    return None if array is None else array.reshape(-1)


@functools.lru_cache(maxsize=64)
def _scale(reduction: str, count: int, dtype: np.dtype) -> tuple:
    """The gradient's factor, 1 or ``1 / count``, as a pair ``(hi, lo)``.

    A training loop calls with the same batch size every step: cached.
    """
    if reduction != "mean":
        return dtype.type(1), dtype.type(0)
    exact = Fraction(1, max(count, 1))
    hi = dtype.type(float(exact))
    lo = dtype.type(float(exact - Fraction(float(hi))))
    return hi, lo


def _sum_of_lanes(lanes: np.ndarray) -> tuple[float, float]:
    """The total of the fused pass's lanes as a float64 pair ``(hi, lo)``.

    One row per block: its partial sums, then their errors; ``math.fsum``
    adds them all exactly and rounds once. Where a lane is not
    finite (an infinite or NaN term), the error terms are meaningless and
    the plain sum of the partial sums gives the limit: inf, -inf or NaN.
    """
    partial_sums = lanes[:, : lanes.shape[1] // 2]
    if np.isfinite(lanes).all():
        values = lanes.ravel().tolist()
        try:
            total = math.fsum(values)
            return total, math.fsum([*values, -total])
        except OverflowError:  # the exact total lies beyond the float64 range
            pass
    with np.errstate(invalid="ignore", over="ignore"):
        return float(np.sum(partial_sums)), 0.0


def _divide_exactly(
    total_hi: float, total_lo: float, count: int, dtype: np.dtype
) -> float:
    """``(total_hi + total_lo) / count`` for a result of ``dtype``; NaN for 0/0.

    Rounded once to float64 for a float64 result. For a narrower one, the
    float64 quotient of the leading part is within 2**-52 relative of the
    exact mean, a ten-millionth of a float32 ULP, before its final rounding:
    the exact division (about 10 us in ``Fraction``) is not needed there.
    """
    if count == 0:
        return math.nan
    if not math.isfinite(total_hi) or dtype != np.float64:
        return total_hi / count
    return float((Fraction(total_hi) + Fraction(total_lo)) / count)
