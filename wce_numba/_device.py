"""Placement: which calls run on the GPU, where each argument lives, what comes back.

A call runs on the GPU when any argument is a CUDA array: anything exposing
``__cuda_array_interface__`` (CuPy arrays, PyTorch CUDA tensors, Numba device
arrays) or marked as a Numba device array. Seeing that takes only
``hasattr``; this module imports ``numba.cuda`` (through ``_cuda``) only when
a call goes to the GPU, so ``import wce_numba`` and CPU calls never do.

Rules, checked before anything is launched or copied:

* labels, logits and ``out`` must all be CUDA arrays on one device;
* ``pos_weight`` may also be a host scalar or a small host array (at most
  ``HOST_WEIGHT_LIMIT`` elements, such as one weight per class), copied to
  the device on each call; a larger host array is an error, since copying it
  silently on every call would hide the cost of moving real data.

The result is allocated on the device and returned as the logits' kind where
wrapping it costs no copy: a CuPy array for CuPy logits, a PyTorch tensor for
PyTorch logits, a Numba device array otherwise.
"""

from __future__ import annotations

import logging

from . import _validate

logger = logging.getLogger("wce_numba")

# Largest host pos_weight (in elements) that a GPU call copies to the device:
# 32 KiB of float64, one launch's worth of argument traffic, and room for a
# weight per class for thousands of classes.
HOST_WEIGHT_LIMIT = 4096

_ARGUMENTS = ("labels", "logits", "pos_weight", "out")


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


def check_placement(labels, logits, pos_weight, out) -> None:
    """ValueError, saying where each argument lives, unless the GPU can run this."""
    given = dict(zip(_ARGUMENTS, (labels, logits, pos_weight, out), strict=True))
    if out is None:
        del given["out"]

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

    if not is_device_array(pos_weight):
        weight = _validate.as_real_array(pos_weight, "pos_weight")
        if weight.size > HOST_WEIGHT_LIMIT:
            raise _placement_error(
                f"a host pos_weight may have at most {HOST_WEIGHT_LIMIT} elements "
                f"when labels and logits are CUDA arrays, got {weight.size} (move "
                "it to the device once, yourself)",
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


def run(quantity: str, labels, logits, pos_weight, out, stream):
    """Evaluate ``quantity`` on the GPU; the device result, as the caller's kind.

    ``stream`` None runs on the stream the logits' producer exported with them
    (CuPy's and PyTorch's current stream), else on CUDA's default stream.
    """
    check_placement(labels, logits, pos_weight, out)
    from . import _cuda

    _cuda.require_gpu()
    if stream is None:
        stream = _cuda.exported_stream(logits)
        stream = 0 if stream is None else stream
    stream = _cuda.as_stream(stream)
    logger.debug("%s: CUDA arrays, running on the GPU (stream %s)", quantity, stream)

    result = _cuda.launch(quantity, labels, logits, pos_weight, out=out, stream=stream)

    if out is not None:
        return out
    return as_callers_kind(result, logits)
