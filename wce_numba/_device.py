"""Placement: which calls run on the GPU, where each argument lives, what comes back.

A call runs on the GPU when any argument is a CUDA array: anything exposing
``__cuda_array_interface__`` (CuPy arrays, PyTorch CUDA tensors, Numba device
arrays) or marked as a Numba device array. Seeing that takes only
``hasattr``; this module imports ``numba.cuda`` (through ``_cuda``) only when
a call goes to the GPU, so ``import wce_numba`` and CPU calls never do.

Rules, checked before anything is launched or copied:

* labels, logits and ``out`` must all be CUDA arrays on one device;
* ``pos_weight`` and ``weight`` may also be host scalars or small host arrays
  (at most ``HOST_WEIGHT_LIMIT`` elements, such as one weight per class),
  copied to the device on each call; a larger host array is an error, since
  copying it silently on every call would hide the cost of moving real data.

Results are allocated on the device and returned as the logits' kind where
wrapping them costs no copy: a CuPy array for CuPy logits, a PyTorch tensor
for PyTorch logits, a Numba device array otherwise. A reduced value (sum or
mean) is a 0-d array of that kind, still on the device: reading it on the host
would wait for the GPU, which the caller may not want yet.
"""

from __future__ import annotations

import logging

from . import _validate

logger = logging.getLogger("wce_numba")

# Largest host pos_weight or weight (in elements) that a GPU call copies to the
# device: 32 KiB of float64, one launch's worth of argument traffic, and room
# for a weight per class for thousands of classes.
HOST_WEIGHT_LIMIT = 4096

# The weights a GPU call may take from the host (see HOST_WEIGHT_LIMIT).
_WEIGHTS = ("pos_weight", "weight")


def is_device_array(value) -> bool:
    """Whether ``value`` is a CUDA array; decided without importing numba.cuda.

    numba-cuda's simulator arrays carry only the ``__cuda_ndarray__`` mark.
    """
    return hasattr(value, "__cuda_array_interface__") or bool(
        getattr(value, "__cuda_ndarray__", False)
    )


def _kind(value) -> str:
    """The type's name with its top-level package: ``cupy.ndarray``, ``float``."""
    kind = type(value)
    package = kind.__module__.split(".")[0]
    if package == "builtins":
        return kind.__name__
    if package == "numba":
        package = "numba.cuda"
    return f"{package}.{kind.__name__}"


def device_id(value) -> int | None:
    """The CUDA device ``value`` lives on, where its type says; None if unknown."""
    device = getattr(value, "device", None)
    for attribute in ("id", "index"):  # cupy.cuda.Device, torch.device
        number = getattr(device, attribute, None)
        if isinstance(number, int):
            return number
    # A Numba device array's memory belongs to a context on one device.
    context = getattr(getattr(value, "gpu_data", None), "context", None)
    number = getattr(getattr(context, "device", None), "id", None)
    return number if isinstance(number, int) else None


def where(value) -> str:
    """Where ``value`` lives, for an error message."""
    if not is_device_array(value):
        return f"a {_kind(value)} on the host"
    number = device_id(value)
    device = "the current CUDA device" if number is None else f"CUDA device {number}"
    return f"a {_kind(value)} on {device}"


def _placement_error(problem: str, arguments: dict) -> ValueError:
    places = ", ".join(f"{name} is {where(value)}" for name, value in arguments.items())
    return ValueError(f"{problem}: {places}")


def check_placement(labels, logits, pos_weight, out, weight=None) -> None:
    """ValueError, saying where each argument lives, unless the GPU can run this.

    ``out`` and ``weight`` take part only when given (not None).
    """
    given = {"labels": labels, "logits": logits, "pos_weight": pos_weight}
    given |= {
        name: value
        for name, value in (("weight", weight), ("out", out))
        if value is not None
    }

    must_be_on_device = [
        given[name] for name in ("labels", "logits", "out") if name in given
    ]
    on_devices = {
        device_id(value) for value in given.values() if is_device_array(value)
    }
    if not all(is_device_array(value) for value in must_be_on_device):
        raise _placement_error(
            "labels, logits and out must all be CUDA arrays when any argument is "
            "one (no data is copied between host and device implicitly)",
            given,
        )
    if len(on_devices - {None}) > 1:
        raise _placement_error("all CUDA arrays must be on one device", given)

    for name in _WEIGHTS:
        if name not in given or is_device_array(given[name]):
            continue
        host_weight = _validate.as_real_array(given[name], name)
        if host_weight.size > HOST_WEIGHT_LIMIT:
            raise _placement_error(
                f"a host {name} may have at most {HOST_WEIGHT_LIMIT} elements "
                f"when labels and logits are CUDA arrays, got {host_weight.size} "
                "(move it to the device once, yourself)",
                given,
            )


def as_callers_kind(result, like):
    """``result`` (a Numba device array) as ``like``'s kind, sharing its memory.

    CuPy and PyTorch wrap it through ``__cuda_array_interface__``, without a
    copy; anything else gets the Numba device array itself.
    """
    package = type(like).__module__.split(".")[0]
    if package == "cupy":
        import cupy

        return cupy.asarray(result)
    if package == "torch":
        import torch

        return torch.as_tensor(result, device=like.device)
    return result


def stream_argument(stream, labels, logits, pos_weight) -> None:
    """ValueError for ``stream=`` on a call that runs on the host."""
    if stream is not None:
        raise ValueError(
            "stream= applies only to CUDA arrays, and no argument is one: labels "
            f"is {where(labels)}, logits is {where(logits)}, pos_weight is "
            f"{where(pos_weight)}"
        )


def _launch_stream(stream, logits):
    """The stream a GPU call runs on, as ``_cuda`` takes it.

    ``stream`` None means the stream the logits' producer exported with them
    (CuPy's and PyTorch's current stream), else CUDA's default stream.
    """
    from . import _cuda

    if stream is None:
        stream = _cuda.exported_stream(logits)
        stream = 0 if stream is None else stream
    return _cuda.as_stream(stream)


def run(quantity: str, labels, logits, pos_weight, out, stream):
    """Evaluate ``quantity`` on the GPU; the device result, as the caller's kind.

    ``stream`` None runs on the stream the logits' producer exported with them
    (CuPy's and PyTorch's current stream), else on CUDA's default stream.
    """
    check_placement(labels, logits, pos_weight, out)
    from . import _cuda

    _cuda.require_gpu()
    stream = _launch_stream(stream, logits)
    logger.debug("%s: CUDA arrays, running on the GPU (stream %s)", quantity, stream)

    result = _cuda.launch(quantity, labels, logits, pos_weight, out=out, stream=stream)

    if out is not None:
        return out
    return as_callers_kind(result, logits)


def run_fused(
    labels,
    logits,
    pos_weight,
    weight,
    reduction: str,
    want_value: bool,
    want_grad: bool,
    stream,
    out=None,
):
    """The weighted, reduced loss and its gradient on the GPU, from one pass.

    Returns ``(value, grad)``, each None unless wanted, as the logits' kind:

    * value: ``weight * loss`` elementwise for ``reduction="none"``; the sum
      of those for "sum"; that sum over N = ``logits.size`` for "mean" (NaN
      for an empty array, as PyTorch's mean, where NumPy's warns and gives
      NaN too; an empty sum is 0), as a 0-d device array in the result
      dtype. The terms, rounded in the compute dtype as the elementwise
      value is, are summed in float64 (see ``_cuda.block_total``) and the
      sum, or the sum divided by N, is rounded once into the result dtype.
    * grad: ``weight * dloss/dx`` elementwise, divided by N in the compute
      dtype for "mean" (N exact there up to 2^24 in float32): the gradient
      of the value with respect to the logits.

    Each term is the product ``weight * loss`` as NumPy forms it: NaN
    anywhere gives a NaN sum, and a weight of 0 on an infinite loss gives
    NaN. ``weight`` None means 1; otherwise it obeys ``pos_weight``'s rules:
    a device array on the logits' device, or a host scalar or small host
    array, broadcastable to the logits' shape. Dtypes are the elementwise
    call's: the logits decide the compute and result dtypes. Everything runs
    asynchronously on ``stream`` (None: as in ``run``); nothing is read back.
    Asking for neither value nor grad checks the arguments and launches
    nothing. ``out``, a device array, receives the one result asked for (of
    its shape and dtype: 0-d for a reduced value) and is returned in its
    place, after one more device-side copy.
    """
    _validate.check_reduction(reduction)
    check_placement(labels, logits, pos_weight, out, weight)
    from . import _cuda

    _cuda.require_gpu()
    stream = _launch_stream(stream, logits)
    logger.debug(
        "fused %s reduction (value %s, grad %s): CUDA arrays, on the GPU (stream %s)",
        reduction,
        want_value,
        want_grad,
        stream,
    )

    value, grad = _cuda.launch_fused(
        labels,
        logits,
        pos_weight,
        weight,
        reduction,
        want_value=want_value,
        want_grad=want_grad,
        stream=stream,
    )

    if out is not None:
        result = value if want_value else grad
        destination = _cuda.device_array(out, "out", stream)
        reduced = want_value and reduction != "none"
        shape_name = "the reduced shape" if reduced else "the logits' shape"
        _cuda.check_out(destination, result.shape, result.dtype, shape_name)
        _cuda.cast_into(result, destination, stream)
        return (out, None) if want_value else (None, out)
    return tuple(
        None if result is None else as_callers_kind(result, logits)
        for result in (value, grad)
    )
