"""Dask arrays and xarray DataArrays in the public functions.

A call with a Dask array among its arguments returns lazy Dask arrays:

* elementwise results are computed block by block by the public functions
  themselves on NumPy blocks, so by the same kernels and bit-identical to a
  NumPy call; labels, and a broadcast pos_weight or weight, are rechunked to
  the logits' blocks first;
* a sum or mean is a tree reduction: the fused pass sums each block
  (``reduction='sum'``), and the partial sums, as float64, are added exactly
  (``math.fsum``) up the tree; a mean then divides by the number of elements
  of the whole array, and a mean's gradient uses that number too.

A call with a DataArray returns DataArrays with the logits' dims and
coordinates (a reduced value is a 0-d DataArray); arguments are aligned by
coordinate (an exact join: mismatched labels are an error) and broadcast by
dim name, and the data underneath (NumPy or Dask) takes the paths above.

Seen by the type's module name only, so ``import wce_numba`` never imports
Dask or xarray; they are imported when such an argument arrives.
"""

from __future__ import annotations

import math

import numpy as np

from . import _validate

_PACKAGES = ("dask", "xarray")
_NAMES = ("labels", "logits", "pos_weight", "weight")


def _package(value) -> str:
    return type(value).__module__.split(".")[0]


def is_collection(*arguments) -> bool:
    """Whether any argument is a Dask array or an xarray object."""
    return any(_package(value) in _PACKAGES for value in arguments)


def elementwise(quantity: str, labels, logits, pos_weight, out, stream):
    """The plain loss or gradient of collections (see ``fused``)."""
    value, grad = fused(
        labels,
        logits,
        pos_weight,
        None,
        "none",
        quantity == "loss",
        quantity == "grad",
        out,
        stream,
    )
    return value if quantity == "loss" else grad


def fused(
    labels, logits, pos_weight, weight, reduction, want_value, want_grad, out, stream
):
    """``(value, grad)`` as ``api._fused`` gives them, for Dask or xarray input.

    Shapes and dtypes are checked here, before any graph is built; what only
    a look at the data can refuse (a label beyond the logits' dtype) raises
    when the block holding it is computed.
    """
    if out is not None:
        raise TypeError(
            "out= is not supported with Dask arrays or xarray DataArrays; got "
            f"out={type(out).__name__}"
        )
    if stream is not None:
        raise ValueError("stream= applies only to CUDA arrays, not to Dask or xarray")

    operands = (labels, logits, pos_weight, weight)
    if any(_package(value) == "xarray" for value in operands):
        return _run_xarray(operands, reduction, want_value, want_grad)
    return _run_dask(operands, reduction, want_value, want_grad)


def _meta(value, name: str) -> np.ndarray:
    """An array of ``value``'s shape and dtype that holds no memory, checked.

    Dask arrays are never computed for this: only shape and dtype are read.
    """
    if not hasattr(value, "dtype"):
        value = _validate.as_real_array(value, name)
    _validate.as_real_array(np.empty(0, value.dtype), name)
    return np.broadcast_to(np.zeros((), value.dtype), value.shape)


def _check(labels, logits, pos_weight, weight) -> np.dtype:
    """The shape and dtype checks of a NumPy call; returns the result's dtype."""
    labels_meta = _meta(labels, "labels")
    logits_meta = _meta(logits, "logits")
    _validate.check_same_shape(labels_meta, logits_meta)
    for name, value in (("pos_weight", pos_weight), ("weight", weight)):
        if value is not None:
            meta = _meta(value, name)
            _validate.check_broadcasts_to(meta, logits_meta.shape, name)
    return _validate.result_dtypes(np.empty(0, logits_meta.dtype))[1]


def _chunked_like(value, chunks: tuple):
    """``value`` as a Dask array whose blocks line up with ``chunks``.

    ``value`` broadcasts to the shape of ``chunks`` (aligned on the right, as
    in NumPy); its axes of length 1 stay single chunks, the others take the
    reference's chunks, so every block meets exactly its blocks. Scalars and
    None are returned as they are and reach every block whole.
    """
    import dask.array as da

    if value is None or np.ndim(value) == 0:
        return value
    shape = np.shape(value)
    offset = len(chunks) - len(shape)
    wanted = tuple(
        (1,) if length == 1 else chunks[offset + axis]
        for axis, length in enumerate(shape)
    )
    if _package(value) != "dask":
        return da.from_array(np.asarray(value), chunks=wanted)
    return value if value.chunks == wanted else value.rechunk(wanted)


def _value_block(labels, logits, pos_weight, weight, *, reduction):
    """One block's weighted loss, or its sum as a float64 block of ones' shape.

    The block's sum is exact, rounded once to float64 (not to the result
    dtype), so the tree adds partial sums that lost nothing a float32 or
    float16 result would see.
    """
    from . import api

    if reduction == "none":
        return np.asarray(
            api.weighted_cross_entropy_with_logits(
                labels, logits, pos_weight, weight=weight
            )
        )
    total, _ = api._fused_cpu(
        labels,
        logits,
        pos_weight,
        weight,
        "sum",
        True,
        False,
        None,
        total_dtype=np.dtype(np.float64),
    )
    return np.full((1,) * logits.ndim, total, dtype=np.float64)


def _grad_block(labels, logits, pos_weight, weight, *, reduction, count):
    """One block's scaled gradient; a mean divides by the whole array's size."""
    from . import api

    _, grad = api._fused_cpu(
        labels, logits, pos_weight, weight, reduction, False, True, None, count=count
    )
    return np.asarray(grad)


def _exact_sum(partials, axis=None, keepdims=False):
    """Combine and aggregate step of the tree: float64 partial sums, added exactly."""
    total = math.fsum(np.ravel(partials))
    if keepdims:
        return np.full((1,) * partials.ndim, total)
    return np.float64(total)


def _partials(block, axis=None, keepdims=False):
    """Chunk step of the tree: each block already is its partial sum."""
    return block


def _run_dask(operands, reduction, want_value, want_grad):
    import dask.array as da

    labels, logits, pos_weight, weight = operands
    for name, value in zip(_NAMES, operands, strict=True):
        if _package(value) == "dask" and any(map(math.isnan, value.shape)):
            raise ValueError(
                f"{name} has unknown chunk sizes (shape {value.shape}, as after "
                "boolean indexing), so the arguments cannot be checked and "
                "aligned; call .compute_chunk_sizes() on it first"
            )
    result_dtype = _check(labels, logits, pos_weight, weight)

    # The logits' chunks rule; NumPy logits next to Dask labels take theirs.
    reference = logits if _package(logits) == "dask" else labels
    if _package(reference) != "dask":
        reference = da.asarray(logits)
    chunks = reference.chunks
    blocks = tuple(_chunked_like(value, chunks) for value in operands)
    count = math.prod(np.shape(logits))
    meta = np.empty((0,) * len(chunks), result_dtype)

    value = grad = None
    if want_value and reduction == "none":
        value = da.map_blocks(
            _value_block,
            *blocks,
            reduction="none",
            dtype=result_dtype,
            meta=meta,
            token="weighted-cross-entropy",
        )
    elif want_value:
        partials = da.map_blocks(
            _value_block,
            *blocks,
            reduction="sum",
            chunks=tuple((1,) * len(axis) for axis in chunks),
            dtype=np.float64,
            meta=np.empty((0,) * len(chunks), np.float64),
            token="weighted-cross-entropy-sum",
        )
        total = da.reduction(
            partials,
            chunk=_partials,
            combine=_exact_sum,
            aggregate=_exact_sum,
            dtype=np.float64,
            concatenate=True,
        )
        value = (total / count if reduction == "mean" else total).astype(result_dtype)
    if want_grad:
        grad = da.map_blocks(
            _grad_block,
            *blocks,
            reduction=reduction,
            count=count,
            dtype=result_dtype,
            meta=meta,
            token="weighted-cross-entropy-grad",
        )
    return value, grad


def _run_xarray(operands, reduction, want_value, want_grad):
    import xarray as xr

    from . import api

    for name, value in zip(_NAMES, operands, strict=True):
        if _package(value) == "xarray" and not isinstance(value, xr.DataArray):
            raise TypeError(
                f"{name} must be an xarray DataArray (or an array), got "
                f"{type(value).__name__}; pass each variable of a Dataset alone"
            )
    named = {
        name: value
        for name, value in zip(_NAMES, operands, strict=True)
        if isinstance(value, xr.DataArray)
    }
    reference = named.get("logits", named.get("labels"))
    if reference is None:
        raise TypeError(
            "a DataArray pos_weight or weight needs labels or logits as "
            "DataArrays to broadcast against, got labels "
            f"{type(operands[0]).__name__} and logits {type(operands[1]).__name__}"
        )
    if "labels" in named and "logits" in named:
        if set(named["labels"].dims) != set(named["logits"].dims):
            raise ValueError(
                "labels and logits must have the same dims, got labels dims "
                f"{named['labels'].dims} and logits dims {named['logits'].dims}"
            )

    # Coordinates must match exactly; the weights broadcast by dim name.
    aligned = xr.align(*named.values(), join="exact")
    broadcast = dict(zip(named, xr.broadcast(*aligned), strict=True))
    template = broadcast["logits" if "logits" in named else "labels"]
    for name, value in named.items():
        extra = [dim for dim in value.dims if dim not in reference.dims]
        if extra:
            # As for arrays: the result keeps the logits' shape, so an
            # argument that would grow it is an error.
            raise ValueError(
                f"{name} must broadcast to the logits' dims {reference.dims}, "
                f"got {name} dims {value.dims} (extra: {tuple(extra)})"
            )
    template = template.transpose(*reference.dims, ...)
    data = [
        broadcast[name].transpose(*template.dims).data if name in broadcast else value
        for name, value in zip(_NAMES, operands, strict=True)
    ]

    value, grad = api._fused(
        *data, reduction, want_value, want_grad, out=None, stream=None
    )
    if value is not None:
        value = (
            xr.DataArray(value, dims=template.dims, coords=template.coords)
            if reduction == "none"
            else xr.DataArray(value)
        )
    if grad is not None:
        grad = xr.DataArray(grad, dims=template.dims, coords=template.coords)
    return value, grad
