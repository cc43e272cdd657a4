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

``launch_fused`` runs the weighted loss and its gradient together, and sums
the loss without storing it: ``fused_kernel`` computes both per element from
the same scalar kernels and adds the loss into one float64 partial sum per
block, and ``finish_kernel`` adds the partials into the 0-d result.

Dtypes follow the CPU's rules (``_validate``): the logits decide the compute
and result dtypes, and every input of another real dtype (bool, integers,
float16, the other float) is cast on the device by ``cast_kernel`` into a new
device array, on the call's stream, before either elementwise path runs; a
float16 result is computed in float32 and cast back the same way. The fused
kernel converts each element as it reads and writes it instead, so that a
reduction needs no array the size of its inputs. Casting reads and writes
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

import contextlib
import functools
import warnings
from dataclasses import dataclass

import numba
import numpy as np

from ._device import is_device_array
from ._intrinsics import fdiv
from ._ufuncs import KERNELS, SIGNATURES
from ._validate import (
    as_real_array,
    cast,
    check_broadcasts_to,
    check_reduction,
    result_dtypes,
)

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

# The fused kernel's grid: blocks of REDUCTION_THREADS threads (a power of two,
# for the pairwise sum within a block), at most REDUCTION_BLOCKS of them, each
# thread looping over the elements a grid apart. 1024 blocks of 256 threads
# are about as many threads as a large GPU keeps resident (an H100 or H200:
# 132 multiprocessors of 2048), and the partial sums, one float64 per block,
# take 8 KiB whatever the size of the input.
REDUCTION_THREADS = 256
REDUCTION_BLOCKS = 1024


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

    Axes are matched from the right. ``index`` lies in the broadcast shape,
    where each extent of ``shape`` is 1 (the axis is repeated: element 0) or
    the broadcast one (the index itself): no division needed.
    """
    offset = len(index) - len(shape)
    return tuple(0 if n == 1 else i for i, n in zip(index[offset:], shape, strict=True))


@functools.cache
def _register_index_overloads() -> None:
    """Give compiled kernels their versions of the two index functions above.

    The Python versions serve the CUDA simulator, which runs kernels as
    Python; these build the same tuples in place, one axis at a time.
    """

    @overload(unravel_index)
    def _unravel_index(flat, shape):
        if len(shape) == 1:
            # The kernels' flat indices are below the size: their own index,
            # without the 64-bit division (dozens of instructions on a GPU).
            return lambda flat, shape: (flat,)

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
                repeated = shape[axis] == 1
                element = 0 if repeated else index[axis + offset]
                result = tuple_setitem(result, axis, element)
            return result

        return impl


@functools.cache
def device_function(quantity: str):
    """The scalar kernel for ``quantity`` as a CUDA device function."""
    require_numba_cuda()
    return cuda.jit(device=True)(KERNELS[quantity])


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
    scalar = device_function(quantity)

    def kernel(labels, logits, pos_weight, out):
        # A grid-stride loop: correct for any grid; forall launches one thread
        # per element, so each thread runs it once.
        for flat in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            index = unravel_index(flat, out.shape)
            weight = pos_weight[broadcast_index(index, pos_weight.shape)]
            out[index] = scalar(labels[index], logits[index], weight)

    return cuda.jit(kernel)


# Summing on the GPU. Each element's value v = weight * loss is rounded once in
# the compute dtype, as the elementwise result is, then widened to float64
# exactly. Thread t adds the elements t, t + G, t + 2 G, ... (G threads in the
# grid) in sequence; a block adds its threads' sums pairwise (``block_total``)
# into one partial; ``finish_kernel`` adds the partials the same way. An
# element passes through at most m = N / G + log2(T) + B / T + log2(T)
# additions (T threads a block, B blocks), so the float64 sum is within
# m 2^-53 sum|v| of the exact one: with T = 256, B = 1024 and N = 1e7,
# m = 59 and the bound is 7e-15 relative (4e-13 at N = 1e9), far below the
# float32 result's own rounding (6e-8), which happens once, at the end. A
# float32 accumulator would not do: even a pairwise float32 sum is only
# bounded by log2(N) 2^-24 = 1.4e-6 at N = 1e7. A float64 add per element is
# cheap beside the ~100 float32 operations of the loss itself, even on GPUs
# whose float64 rate is 1/64 of float32's. The order is fixed by the grid,
# with no atomics, so the same call gives the same bits every time.
def block_total(sums, value):
    """The sum of ``value`` over the threads of a block, pairwise, for all.

    ``sums`` is a shared array with one slot per thread of the block (a power
    of two). Each round adds the upper half of the slots into the lower
    half, so a value passes through log2(threads) additions, the fewest any
    order can give.
    """
    thread = cuda.threadIdx.x
    sums[thread] = value
    cuda.syncthreads()

    half = sums.size // 2
    while half > 0:
        if thread < half:
            sums[thread] += sums[thread + half]
        cuda.syncthreads()
        half //= 2
    return sums[0]


@functools.cache
def _block_total():
    """``block_total`` as a CUDA device function."""
    require_numba_cuda()
    return cuda.jit(device=True)(block_total)


@functools.cache
def fused_kernel(
    reduction: str,
    want_value: bool,
    want_grad: bool,
    weighted: bool,
    compute_dtype: str,
    threads: int,
):
    """The ``cuda.jit`` kernel of ``launch_fused``: one pass over the inputs.

    ``kernel[blocks, threads](labels, logits, pos_weight, weight, values,
    grads, partials, count)`` visits every element of the logits (any
    number of blocks, exactly ``threads`` threads each) and converts it and
    the matching labels, ``pos_weight`` and ``weight`` (each broadcasting to
    the logits' shape) to ``compute_dtype``. It then writes, as asked:

    * ``values``: ``weight * loss`` (reduction "none" with ``want_value``);
    * ``partials[block]``: the float64 sum of ``weight * loss`` over the
      block's elements (reduction "sum" or "mean" with ``want_value``);
    * ``grads``: ``weight * dloss/dx``, divided by ``count`` (the number of
      elements, in the compute dtype) for "mean" (``want_grad``).

    Arguments it does not use may be any array. The flags are constants of
    the compiled kernel: Numba prunes the branches they switch off.
    """
    require_numba_cuda()
    _register_index_overloads()
    loss, loss_grad = device_function("loss"), device_function("grad")
    total_of_block = _block_total()
    compute = numba.from_dtype(np.dtype(compute_dtype))
    float64 = numba.float64

    write_values = want_value and reduction == "none"
    accumulate = want_value and reduction != "none"
    divide_grads = reduction == "mean"

    def kernel(labels, logits, pos_weight, weight, values, grads, partials, count):
        sums = cuda.shared.array(threads, float64)
        thread_sum = float64(0)
        for flat in range(cuda.grid(1), logits.size, cuda.gridsize(1)):
            index = unravel_index(flat, logits.shape)
            z = compute(labels[index])
            x = compute(logits[index])
            q = compute(pos_weight[broadcast_index(index, pos_weight.shape)])
            if weighted:
                w = compute(weight[broadcast_index(index, weight.shape)])

            if want_value:
                value = loss(z, x, q)
                if weighted:
                    value = w * value
                if write_values:
                    values[index] = value
                if accumulate:
                    thread_sum += float64(value)

            if want_grad:
                slope = loss_grad(z, x, q)
                if weighted:
                    slope = w * slope
                if divide_grads:
                    slope = fdiv(slope, count)
                grads[index] = slope

        if accumulate:
            # Every thread of the block takes part, none left the loop early.
            block_sum = total_of_block(sums, thread_sum)
            if cuda.threadIdx.x == 0:
                partials[cuda.blockIdx.x] = block_sum

    return cuda.jit(kernel)


@functools.cache
def finish_kernel(threads: int):
    """The ``cuda.jit`` kernel that adds the partial sums into the result.

    ``kernel[1, threads](partials, divisor, result)``: one block sums the
    float64 ``partials`` (thread t takes t, t + threads, ..., then the block
    pairwise), divides by ``divisor`` (float64: 1 for a sum, N for a mean,
    0 for the mean of nothing, which is NaN) and rounds once, into the 0-d
    ``result`` of the result dtype (float16 too, straight from float64).
    """
    require_numba_cuda()
    total_of_block = _block_total()
    float64 = numba.float64

    def kernel(partials, divisor, result):
        sums = cuda.shared.array(threads, float64)
        thread_sum = float64(0)
        for block in range(cuda.threadIdx.x, partials.size, threads):
            thread_sum += partials[block]

        total = total_of_block(sums, thread_sum)
        if cuda.threadIdx.x == 0:
            result[()] = fdiv(total, divisor)

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


@dataclass(frozen=True)
class DeviceInputs:
    """A GPU call's checked inputs: ``_validate.Prepared``'s part on the device.

    ``weights`` maps "pos_weight" (and "weight" where given) to a device
    array, or to a host ndarray already cast to the compute dtype.
    """

    labels: object
    logits: object
    weights: dict
    compute_dtype: np.dtype
    result_dtype: np.dtype


def _device_inputs(labels, logits, weights: dict, stream) -> DeviceInputs:
    """The checks of ``_validate.prepare``, in its order, on device arrays.

    Labels and logits must be device arrays; each weight (by name) a device
    array, or anything the CPU takes as one, checked and cast on the host as
    there (a finite value beyond the compute dtype is an error). Nothing is
    copied or launched.
    """
    labels = device_array(labels, "labels", stream)
    logits = device_array(logits, "logits", stream)
    weights = {
        name: device_array(value, name, stream)
        if is_device_array(value)
        else as_real_array(value, name)
        for name, value in weights.items()
    }

    for name, array in {"labels": labels, "logits": logits, **weights}.items():
        _check_dtype(array, name)
    if labels.shape != logits.shape:
        raise ValueError(
            "labels and logits must have the same shape, got labels shape "
            f"{labels.shape} and logits shape {logits.shape}"
        )
    for name, array in weights.items():
        check_broadcasts_to(array, logits.shape, name)
    compute_dtype, result_dtype = result_dtypes(logits)

    # A handful of host weights: cast on the host, refusing finite values the
    # compute dtype cannot hold, as the CPU does.
    weights = {
        name: array if is_device_array(array) else cast(array, compute_dtype, name)
        for name, array in weights.items()
    }
    return DeviceInputs(labels, logits, weights, compute_dtype, result_dtype)


def _weight_on_device(weight, stream):
    """A weight from ``DeviceInputs`` on the device: host ones are copied.

    A one-element weight becomes shape (1,), which the kernels broadcast as
    index % 1 and the ufunc with stride 0.
    """
    if not is_device_array(weight):
        weight = cuda.to_device(np.ascontiguousarray(weight), stream=stream)
    return weight.reshape(1) if weight.size == 1 else weight


def _flat_views(arrays: list, weights: list):
    """One-dimensional views of ``arrays`` and ``weights``, or None.

    ``arrays`` share a shape and each weight broadcasts to it. Flat views
    pair the same elements when every array is C-contiguous and each weight
    has one element or is a C-contiguous array of that shape; a flat index
    is cheaper than unravelling one per axis.
    """
    shape = arrays[0].shape
    flat = all(array.is_c_contiguous() for array in arrays) and all(
        weight.size == 1 or (weight.shape == shape and weight.is_c_contiguous())
        for weight in weights
    )
    if not flat:
        return None
    return [array.ravel() for array in arrays], [weight.ravel() for weight in weights]


@contextlib.contextmanager
def _small_grids_allowed(allowed: bool = True):
    """Silence numba-cuda's low-occupancy warning for launches made inside.

    A grid sized to a small input is the right grid: the warning then says
    nothing about the call.
    """
    with warnings.catch_warnings():
        # TODO: catch_warnings swaps the process's warning filters, which is
        # not thread-safe: concurrent small calls may see numba-cuda's
        # low-occupancy warning after all. Stop-gap until launches choose
        # their own grid (the kernels loop over the grid, so any size works).
        if allowed:
            warnings.filterwarnings("ignore", "Grid size .* under-utilization")
        yield


def check_out(
    out, shape: tuple, dtype: np.dtype, shape_name: str = "the logits' shape"
) -> None:
    """The checks of ``_validate.check_out`` that apply to a device array."""
    if out.shape != shape:
        raise ValueError(
            f"out must have {shape_name} {shape}, got out shape {out.shape}"
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
    inputs = _device_inputs(labels, logits, {"pos_weight": pos_weight}, stream)
    result_dtype, compute_dtype = inputs.result_dtype, inputs.compute_dtype
    if out is not None:
        out = device_array(out, "out", stream)
        check_out(out, inputs.logits.shape, result_dtype)

    if out is None:
        # Allocated outside ``stream`` (numba-cuda's allocation is synchronous
        # anyway): an array bound to a stream exports it, and CuPy and
        # PyTorch would synchronise with it when wrapping the result.
        out = cuda.device_array(inputs.logits.shape, dtype=result_dtype)
    if out.size == 0:
        return out
    pos_weight = _weight_on_device(inputs.weights["pos_weight"], stream)

    with _small_grids_allowed(out.size < _SMALL_LAUNCH):
        # TODO: a device label or pos_weight beyond the compute dtype's range
        # (float64 1e40 with float32 logits) becomes inf here, where the CPU
        # raises ValueError: finding it would take a reduction read back on
        # the host, a synchronisation this path never makes. Stop-gap: the
        # README says so; a host pos_weight is still checked.
        labels = as_dtype(inputs.labels, compute_dtype, stream)
        logits = as_dtype(inputs.logits, compute_dtype, stream)
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
    views = _flat_views([labels, logits, out], [pos_weight])
    if views is not None:
        (flat_labels, flat_logits, flat_out), (flat_weight,) = views
        cuda_ufunc(quantity)(
            flat_labels, flat_logits, flat_weight, out=flat_out, stream=stream
        )
    else:
        strided_kernel(quantity).forall(out.size, stream=stream)(
            labels, logits, pos_weight, out
        )


def launch_fused(
    labels,
    logits,
    pos_weight,
    weight,
    reduction: str,
    *,
    want_value: bool,
    want_grad: bool,
    stream=0,
):
    """The weighted loss, reduced, and its gradient, from one pass on the GPU.

    Returns ``(value, grad)`` as new Numba device arrays, each None unless
    wanted (see ``_device.run_fused`` for what they hold): an elementwise
    value or gradient of the logits' shape and the result dtype, or a 0-d
    value for "sum" and "mean". Inputs follow ``launch``'s rules, ``weight``
    (None for 1) those of ``pos_weight``; unlike ``launch``, inputs of
    another dtype are converted element by element inside ``fused_kernel``,
    so the only memory added besides the results is one float64 per block.

    Two launches at most, asynchronous on ``stream``: ``fused_kernel`` over
    the elements, then, for a sum or mean, ``finish_kernel`` on its partial
    sums. An empty input launches only the latter: a sum of 0, a mean of NaN.
    """
    check_reduction(reduction)
    require_gpu()
    weights = {"pos_weight": pos_weight}
    if weight is not None:
        weights["weight"] = weight
    inputs = _device_inputs(labels, logits, weights, stream)
    shape, size = inputs.logits.shape, inputs.logits.size
    reduced = reduction != "none"

    # Allocated outside ``stream``, as in ``launch``.
    values = grads = total = partials = None
    if want_value and not reduced:
        values = cuda.device_array(shape, dtype=inputs.result_dtype)
    if want_grad:
        grads = cuda.device_array(shape, dtype=inputs.result_dtype)
    threads = REDUCTION_THREADS
    blocks = min(REDUCTION_BLOCKS, -(-size // threads))
    if want_value and reduced:
        total = cuda.device_array((), dtype=inputs.result_dtype)
        partials = cuda.device_array(blocks, dtype=np.float64)

    # The grid is sized to the input (up to REDUCTION_BLOCKS), and the sum of
    # the partials takes one block: small grids by design.
    with _small_grids_allowed():
        if size and (want_value or want_grad):
            kernel = fused_kernel(
                reduction,
                want_value,
                want_grad,
                weight is not None,
                inputs.compute_dtype.name,
                threads,
            )
            arguments = _fused_arguments(inputs, (values, grads), partials, stream)
            kernel[blocks, threads, stream](*arguments)
        if total is not None:
            divisor = np.float64(size if reduction == "mean" else 1)
            finish_kernel(threads)[1, threads, stream](partials, divisor, total)

    return (total if reduced else values), grads


def _fused_arguments(inputs: DeviceInputs, outputs: tuple, partials, stream):
    """``fused_kernel``'s arguments, as flat views where they pair elements.

    ``outputs`` are the values and grads arrays, None where not wanted. Host
    weights are copied to the device here. An argument the kernel does not
    use gets the logits, which it then never reads there nor writes.
    """
    weights = [_weight_on_device(w, stream) for w in inputs.weights.values()]
    arrays = [inputs.labels, inputs.logits]
    arrays += [output for output in outputs if output is not None]
    views = _flat_views(arrays, weights)
    if views is not None:
        arrays, weights = views

    labels, logits, *given = arrays
    unused = logits
    given = iter(given)
    values, grads = (unused if output is None else next(given) for output in outputs)
    pos_weight, weight = [*weights, unused][:2]
    partials = unused if partials is None else partials
    count = inputs.compute_dtype.type(inputs.logits.size)
    return labels, logits, pos_weight, weight, values, grads, partials, count
