"""The CUDA path: the scalar kernels compiled for NVIDIA GPUs, on first use.

Import this module only when a CUDA array is seen (``_device`` does, after
checking where the arguments live): it imports ``numba.cuda`` (from the
numba-cuda package), which ``import wce_numba`` never does. Without
numba-cuda it still imports, and every entry point raises an ImportError that
says what to install; without a usable GPU, a RuntimeError saying what is
missing.

Both ways of running a quantity on the GPU compile the scalar kernels of
``_kernels``, the same source as the CPU ufuncs:

* ``cuda_ufunc``: ``numba.vectorize(SIGNATURES, target='cuda')``. ``launch``
  gives it one-dimensional views of C-contiguous arrays only.
* ``strided_kernel``: a ``cuda.jit`` kernel over the broadcast index, for the
  rest: strided, Fortran-ordered or negatively strided arrays, a per-class
  ``pos_weight`` that broadcasts, a strided ``out``.

Dtypes follow the CPU's rules (``_validate``): the logits decide the compute
and result dtypes, and every input of another real dtype (bool, integers,
float16, the other float) is cast on the device by ``cast_kernel`` into a new
device array, on the call's stream, before either path runs; a float16 result
is computed in float32 and cast back the same way. Casting reads and writes
device memory only: no byte crosses to or from the host.

Why the ufunc gets only flat arrays: numba-cuda's ufunc call path
(``numba/cuda/deviceufunc.py``) flattens multi-dimensional arguments with
``ravel()``, and a device array that cannot be flattened in place (a broadcast,
strided or Fortran-ordered view) is copied to the host, flattened there and
copied back. A multi-dimensional ``out`` of that kind is even replaced by such
a copy, so the caller's array is never written. One-dimensional arguments are
never flattened, so ``launch`` keeps every byte on the device.
"""

from __future__ import annotations

import functools
import warnings

import numba
import numpy as np

from ._device import is_device_array
from ._ufuncs import KERNELS, SIGNATURES
from ._validate import as_real_array, cast, check_broadcasts_to, result_dtypes

INSTALL_HINT = 'pip install "wce_numba[cuda]"'

try:
    # numba-cuda (the package ``numba_cuda``) provides ``numba.cuda``; Numba's
    # own deprecated copy lacks the extension API used below.
    import numba_cuda  # noqa: F401
    from numba import cuda
    from numba.cuda.cpython.unsafe.tuple import tuple_setitem
    from numba.cuda.extending import overload
except (ImportError, RuntimeError) as error:
    # RuntimeError: numba.cuda is there but cannot load the CUDA runtime.
    _MISSING_NUMBA_CUDA: Exception | None = error
    cuda = None
else:
    _MISSING_NUMBA_CUDA = None

# forall launches one thread per element in blocks of at most 1024 threads,
# and numba-cuda warns (NumbaPerformanceWarning) about every grid of fewer
# than 128 blocks. A small array cannot fill a GPU whatever the grid, so
# launches of fewer elements than this run with that warning silenced.
_SMALL_LAUNCH = 128 * 1024


def require_numba_cuda() -> None:
    """Raise ImportError, saying what to install, unless numba-cuda is there."""
    if _MISSING_NUMBA_CUDA is not None:
        raise ImportError(
            "CUDA arrays need numba-cuda and the CUDA libraries (runtime, NVVM, "
            f"NVRTC); install them with: {INSTALL_HINT}"
        ) from _MISSING_NUMBA_CUDA


def require_gpu() -> None:
    """Raise, saying what is missing, unless a GPU can run the kernels.

    ImportError without numba-cuda; RuntimeError without a working driver and
    GPU, or without the NVVM library that compiles the kernels (what
    ``numba.cuda.is_available()`` checks).
    """
    if _gpu_ready():
        return

    reason = cuda.cuda_error() or "the NVVM library (libnvvm) was not found"
    reason = " ".join(reason.split())  # the driver's message spans lines
    raise RuntimeError(
        "CUDA arrays need an NVIDIA GPU with its driver, and the CUDA "
        f"libraries ({INSTALL_HINT}); numba-cuda reports: {reason}"
    )


@functools.cache
def _gpu_ready() -> bool:
    """Whether numba-cuda is there and finds a GPU; asked once per process."""
    require_numba_cuda()
    return bool(cuda.is_available())


def build_ufunc(quantity: str):
    """Compile the CUDA ufunc for ``quantity`` ('loss' or 'grad'), uncached.

    numba-cuda compiles the scalar kernel as a device function for the
    compute capability of the current device, so this needs a GPU (the PTX
    tests stand one in). CUDA ufuncs cannot be cached on disk (numba-cuda
    rejects ``cache=True``); they compile again in each process.
    """
    require_numba_cuda()
    return numba.vectorize(SIGNATURES, target="cuda")(KERNELS[quantity])


@functools.cache
def cuda_ufunc(quantity: str):
    """The CUDA ufunc for ``quantity``: float32 and float64, built on first use.

    A numba-cuda ufunc-like object, not a NumPy ufunc: it takes device arrays
    and a ``stream`` keyword. Call it with one-dimensional arrays only (see
    the module docstring); ``launch`` does.
    """
    require_gpu()
    return build_ufunc(quantity)


def unravel_index(flat, shape):
    """The index of element ``flat``, in C order, of an array of ``shape``."""
    index = [0] * len(shape)
    for axis in range(len(shape) - 1, -1, -1):
        flat, index[axis] = divmod(flat, shape[axis])
    return tuple(index)


def broadcast_index(index, shape):
    """The element of an array of ``shape`` that broadcasting pairs with ``index``.

    Axes are matched from the right. ``i % n`` is ``i`` where the extents
    agree and 0 where the axis is repeated (``n`` = 1).
    """
    offset = len(index) - len(shape)
    return tuple(i % n for i, n in zip(index[offset:], shape, strict=True))


@functools.cache
def _register_index_overloads() -> None:
    """Give compiled kernels their versions of the two index functions above.

    The Python versions serve the CUDA simulator, which runs kernels as
    Python; these build the same tuples in place, one axis at a time.
    """

    @overload(unravel_index)
    def _unravel_index(flat, shape):
        def impl(flat, shape):
            index = shape
            for axis in range(len(shape) - 1, -1, -1):
                index = tuple_setitem(index, axis, flat % shape[axis])
                flat //= shape[axis]
            return index

        return impl

    @overload(broadcast_index)
    def _broadcast_index(index, shape):
        def impl(index, shape):
            offset = len(index) - len(shape)
            result = shape
            for axis in range(len(shape)):
                extent = shape[axis]
                result = tuple_setitem(result, axis, index[axis + offset] % extent)
            return result

        return impl


@functools.cache
def strided_kernel(quantity: str):
    """The ``cuda.jit`` kernel for ``quantity`` over any layout and broadcast.

    ``kernel.forall(out.size)(labels, logits, pos_weight, out)`` evaluates
    every element of ``out`` in place; labels and logits have ``out``'s shape,
    ``pos_weight`` (at least one-dimensional) broadcasts to it. Each launch
    specialises on the arrays' dtype, dimensions and layout.
    """
    require_numba_cuda()
    _register_index_overloads()
    scalar = cuda.jit(device=True)(KERNELS[quantity])

    def kernel(labels, logits, pos_weight, out):
        # A grid-stride loop: correct for any grid; forall launches one thread
        # per element, so each thread runs it once.
        for flat in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            index = unravel_index(flat, out.shape)
            weight = pos_weight[broadcast_index(index, pos_weight.shape)]
            out[index] = scalar(labels[index], logits[index], weight)

    return cuda.jit(kernel)


@functools.cache
def cast_kernel():
    """The ``cuda.jit`` kernel that casts one device array into another.

    ``kernel.forall(out.size)(source, out)`` writes every element of
    ``source`` into ``out``, of the same shape, converted to ``out``'s dtype
    as NumPy's ``astype`` converts: rounded to nearest (PTX ``cvt.rn``),
    True to 1, out-of-range floats to inf. Each launch specialises on the two
    dtypes and layouts; ``cast_into`` gives it flat views where it can.
    """
    require_numba_cuda()
    _register_index_overloads()

    def kernel(source, out):
        for flat in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            index = unravel_index(flat, out.shape)
            out[index] = source[index]

    return cuda.jit(kernel)


def cast_into(source, out, stream=0) -> None:
    """Write ``source`` into ``out`` (same shape, any dtype) on the device.

    Asynchronous on ``stream``, like every launch here; C-contiguous arrays
    are cast as one-dimensional views, which index cheapest.
    """
    if out.size == 0:
        return
    if source.is_c_contiguous() and out.is_c_contiguous():
        source, out = source.ravel(), out.ravel()
    cast_kernel().forall(out.size, stream=stream)(source, out)


def as_dtype(array, dtype: np.dtype, stream=0):
    """``array`` itself if it has ``dtype``, else a new device array cast to it.

    The copy is C-contiguous and made on the device (``cast_into``).
    """
    if array.dtype == dtype:
        return array
    converted = cuda.device_array(array.shape, dtype=dtype)
    cast_into(array, converted, stream)
    return converted


def as_stream(stream):
    """``stream`` as numba-cuda takes it: a Numba stream, or 0 (the default).

    Accepts a Numba stream, a stream pointer (int; 0 is the default stream),
    a CuPy ``Stream`` (its ``ptr``) or a ``torch.cuda.Stream`` (its
    ``cuda_stream``); other streams are wrapped with ``cuda.external_stream``.
    """
    if type(stream).__module__.startswith("numba"):
        return stream
    pointer = stream
    for attribute in ("cuda_stream", "ptr"):  # PyTorch, CuPy
        pointer = getattr(pointer, attribute, pointer)
    if isinstance(pointer, bool) or not isinstance(pointer, int):
        raise TypeError(
            "stream must be a Numba stream, a CuPy or PyTorch CUDA stream, or a "
            f"stream pointer (int), got {type(stream).__name__}"
        )
    if pointer == 0:
        return 0
    # 1 and 2 are CUDA's handles of the legacy and per-thread default streams,
    # which CuPy and PyTorch export in __cuda_array_interface__.
    if pointer == 1:
        return cuda.legacy_default_stream()
    if pointer == 2:
        return cuda.per_thread_default_stream()
    return cuda.external_stream(pointer)


def exported_stream(value):
    """The stream ``value``'s producer exported with it (an int), or None.

    Version 3 of the CUDA array interface names the stream on which the
    array's data will be ready; Numba's own arrays export theirs likewise.
    """
    interface = getattr(value, "__cuda_array_interface__", None)
    if not isinstance(interface, dict):
        return None
    return interface.get("stream")


def _same_stream(exported, stream) -> bool:
    """Whether an array exported on ``exported`` is ready in order on ``stream``."""
    if exported is None:
        return True
    try:
        ours = int(stream)
    except TypeError:  # the simulator's streams have no handle
        return False
    # A handle of 0 is the legacy default stream, which the interface calls 1.
    return (exported or 1) == (ours or 1)


def device_array(value, name: str, stream=0):
    """``value`` as a numba-cuda device array, never copied, else TypeError.

    An array from another library is wrapped in place. Its producer may still
    be writing it on the stream it exported: numba-cuda then synchronises
    with that stream (as the CUDA array interface asks), unless it is the
    stream this call runs on, where the order is already right.
    """
    if getattr(value, "__cuda_ndarray__", False):
        return value
    if hasattr(value, "__cuda_array_interface__"):
        exported = exported_stream(value)
        sync = not _same_stream(exported, stream)
        return cuda.as_cuda_array(value, sync=sync)
    raise TypeError(
        f"{name} must be a CUDA device array here, got {type(value).__name__}"
    )


def _check_dtype(array, name: str) -> None:
    """TypeError unless ``array`` has a dtype the CPU accepts, as the CPU says it.

    The CPU's own check runs on an empty host array of the same dtype: the
    same rules and message, and nothing is read from the device.
    """
    as_real_array(np.empty(0, array.dtype), name)


def _check_inputs(labels, logits, pos_weight) -> tuple[np.dtype, np.dtype]:
    """The checks of ``_validate.prepare``, in its order; (compute, result) dtype.

    ``pos_weight`` is a device array or an ndarray already checked by
    ``as_real_array``.
    """
    _check_dtype(labels, "labels")
    _check_dtype(logits, "logits")
    _check_dtype(pos_weight, "pos_weight")

    if labels.shape != logits.shape:
        raise ValueError(
            "labels and logits must have the same shape, got labels shape "
            f"{labels.shape} and logits shape {logits.shape}"
        )
    check_broadcasts_to(pos_weight, logits.shape, "pos_weight")
    return result_dtypes(logits)


def _check_out(out, shape: tuple, dtype: np.dtype) -> None:
    """The checks of ``_validate.check_out`` that apply to a device array."""
    if out.shape != shape:
        raise ValueError(
            f"out must have the logits' shape {shape}, got out shape {out.shape}"
        )
    if out.dtype != dtype:
        raise TypeError(f"out must have dtype {dtype}, got out dtype {out.dtype}")


def launch(quantity: str, labels, logits, pos_weight, out=None, stream=0):
    """Evaluate ``quantity`` elementwise on the GPU; returns the device ``out``.

    Every array stays where it is: labels, logits and ``out`` must be device
    arrays (numba-cuda's, or anything with ``__cuda_array_interface__``).
    ``pos_weight`` is a device array that broadcasts to the logits' shape, or
    a host scalar or array (cast and checked on the host as on the CPU, then
    copied to the device once, the only host-to-device transfer). Without
    ``out`` the result is a new C-contiguous device array. The launches are
    asynchronous on ``stream`` (a Numba stream or 0), and nothing here
    synchronises.

    Dtypes are the CPU's: the logits decide the compute dtype (float32 or
    float64) and the result's (float16 logits are computed in float32), and
    ``out`` must have the result's. Device inputs of another dtype are cast
    on the device first, and a float16 result is cast from a float32 one.

    Contiguous arrays with a scalar or same-shaped contiguous ``pos_weight``
    go to the CUDA ufunc as one-dimensional views; everything else to the
    strided kernel. Neither path copies data through the host. Zero-size
    arrays launch nothing.
    """
    require_gpu()
    labels = device_array(labels, "labels", stream)
    logits = device_array(logits, "logits", stream)
    if out is not None:
        out = device_array(out, "out", stream)
    on_host = not is_device_array(pos_weight)
    if on_host:
        pos_weight = as_real_array(pos_weight, "pos_weight")
    else:
        pos_weight = device_array(pos_weight, "pos_weight", stream)

    compute_dtype, result_dtype = _check_inputs(labels, logits, pos_weight)
    if on_host:
        # A handful of weights: cast on the host, refusing finite values the
        # compute dtype cannot hold, as the CPU does.
        pos_weight = cast(pos_weight, compute_dtype, "pos_weight")
    if out is not None:
        _check_out(out, logits.shape, result_dtype)

    if out is None:
        # Allocated outside ``stream`` (numba-cuda's allocation is synchronous
        # anyway): an array bound to a stream exports it, and CuPy and
        # PyTorch would synchronise with it when wrapping the result.
        out = cuda.device_array(logits.shape, dtype=result_dtype)
    if out.size == 0:
        return out
    if on_host:
        pos_weight = cuda.to_device(np.ascontiguousarray(pos_weight), stream=stream)

    with warnings.catch_warnings():
        # TODO: catch_warnings swaps the process's warning filters, which is
        # not thread-safe: concurrent small calls may see numba-cuda's
        # low-occupancy warning after all. Stop-gap until launches choose
        # their own grid (the kernels loop over the grid, so any size works).
        if out.size < _SMALL_LAUNCH:
            warnings.filterwarnings("ignore", "Grid size .* under-utilization")

        # TODO: a device label or pos_weight beyond the compute dtype's range
        # (float64 1e40 with float32 logits) becomes inf here, where the CPU
        # raises ValueError: finding it would take a reduction read back on
        # the host, a synchronisation this path never makes. Stop-gap: the
        # README says so; a host pos_weight is still checked.
        labels = as_dtype(labels, compute_dtype, stream)
        logits = as_dtype(logits, compute_dtype, stream)
        pos_weight = as_dtype(pos_weight, compute_dtype, stream)
        result = out
        if result_dtype != compute_dtype:
            result = cuda.device_array(out.shape, dtype=compute_dtype)

        _evaluate(quantity, labels, logits, pos_weight, result, stream)

        if result is not out:
            cast_into(result, out, stream)
    return out


def _evaluate(quantity: str, labels, logits, pos_weight, out, stream) -> None:
    """Launch ``quantity`` on arrays of one compute dtype, by layout."""
    # A one-element pos_weight becomes a one-dimensional array of length 1,
    # which the ufunc broadcasts on the device with stride 0.
    if pos_weight.size == 1:
        pos_weight = pos_weight.reshape(1)

    contiguous = all(a.is_c_contiguous() for a in (labels, logits, out))
    flat_weight = pos_weight.size == 1 or (
        pos_weight.shape == logits.shape and pos_weight.is_c_contiguous()
    )
    if contiguous and flat_weight:
        cuda_ufunc(quantity)(
            labels.ravel(),
            logits.ravel(),
            pos_weight.ravel(),
            out=out.ravel(),
            stream=stream,
        )
    else:
        strided_kernel(quantity).forall(out.size, stream=stream)(
            labels, logits, pos_weight, out
        )
