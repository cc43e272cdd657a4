"""Dask arrays and xarray DataArrays in the public functions.

A call with a Dask array among its arguments returns a lazy Dask array: each
block is computed by the public function itself on NumPy blocks (so by the
same kernels, bit-identical to a NumPy call), with labels, and a broadcast
pos_weight, rechunked to the logits' chunks first. A call with a DataArray
returns a DataArray with the logits' dims and coordinates; arguments are
aligned by coordinate (an exact join: mismatched labels are an error) and
broadcast by dimension name, and the data underneath (NumPy or Dask) takes
the path above.

Seen by the type's module name only, so ``import wce_numba`` never imports
Dask or xarray; they are imported when such an argument arrives.
"""

from __future__ import annotations

import numpy as np

from . import _validate

_PACKAGES = ("dask", "xarray")


def _package(value) -> str:
    return type(value).__module__.split(".")[0]


def is_collection(*arguments) -> bool:
    """Whether any argument is a Dask array or an xarray object."""
    return any(_package(value) in _PACKAGES for value in arguments)


def _public_function(quantity: str):
    from . import api

    return {
        "loss": api.weighted_cross_entropy_with_logits,
        "grad": api.weighted_cross_entropy_with_logits_grad,
    }[quantity]


def run(quantity: str, labels, logits, pos_weight, out=None, stream=None):
    """The public function of ``quantity`` on Dask or xarray arguments.

    The arguments are checked here, before any graph is built; values that
    only a look at the data can refuse (a label beyond the logits' dtype)
    raise when the block holding them is computed.
    """
    if out is not None:
        raise TypeError(
            "out= is not supported with Dask arrays or xarray DataArrays; got "
            f"out={type(out).__name__}"
        )
    if stream is not None:
        raise ValueError("stream= applies only to CUDA arrays, not to Dask or xarray")

    function = _public_function(quantity)
    if any(_package(value) == "xarray" for value in (labels, logits, pos_weight)):
        return _run_xarray(function, labels, logits, pos_weight)
    return _run_dask(function, labels, logits, pos_weight)


def _meta(value, name: str) -> np.ndarray:
    """An array of ``value``'s shape and dtype that holds no memory, checked.

    Dask arrays are never computed for this: only shape and dtype are read.
    """
    if not hasattr(value, "dtype"):
        value = _validate.as_real_array(value, name)
    _validate.as_real_array(np.empty(0, value.dtype), name)
    return np.broadcast_to(np.zeros((), value.dtype), value.shape)


def _check(labels, logits, pos_weight) -> np.dtype:
    """The shape and dtype checks of a NumPy call; returns the result's dtype."""
    labels_meta = _meta(labels, "labels")
    logits_meta = _meta(logits, "logits")
    weight_meta = _meta(pos_weight, "pos_weight")
    if labels_meta.shape != logits_meta.shape:
        raise ValueError(
            "labels and logits must have the same shape, got labels shape "
            f"{labels_meta.shape} and logits shape {logits_meta.shape}"
        )
    _validate.check_broadcasts_to(weight_meta, logits_meta.shape, "pos_weight")
    return _validate.result_dtypes(np.empty(0, logits_meta.dtype))[1]


def _chunked_like(value, chunks: tuple):
    """``value`` as a Dask array whose blocks line up with ``chunks``.

    ``value`` broadcasts to the shape of ``chunks`` (aligned on the right, as
    in NumPy); its axes of length 1 stay single chunks, the others take the
    reference's chunks, so every block meets exactly its blocks.
    """
    import dask.array as da

    shape = np.shape(value)
    offset = len(chunks) - len(shape)
    wanted = tuple(
        (1,) if length == 1 else chunks[offset + axis]
        for axis, length in enumerate(shape)
    )
    if _package(value) != "dask":
        return da.from_array(np.asarray(value), chunks=wanted)
    return value if value.chunks == wanted else value.rechunk(wanted)


def _block(labels, logits, pos_weight, *, function):
    """One block: the public function on NumPy blocks, as an array (0-d too)."""
    return np.asarray(function(labels, logits, pos_weight))


def _run_dask(function, labels, logits, pos_weight):
    import dask.array as da

    result_dtype = _check(labels, logits, pos_weight)

    # The logits' chunks rule; NumPy logits next to Dask labels take theirs.
    reference = logits if _package(logits) == "dask" else labels
    if _package(reference) != "dask":
        reference = da.asarray(logits)
    chunks = reference.chunks
    labels = _chunked_like(labels, chunks)
    logits = _chunked_like(logits, chunks)
    if np.ndim(pos_weight) > 0:
        pos_weight = _chunked_like(pos_weight, chunks)

    return da.map_blocks(
        _block,
        labels,
        logits,
        pos_weight,
        function=function,
        dtype=result_dtype,
        meta=np.empty((0,) * len(chunks), result_dtype),
        token=function.__name__.replace("_", "-"),
    )


def _run_xarray(function, labels, logits, pos_weight):
    import xarray as xr

    arguments = {"labels": labels, "logits": logits, "pos_weight": pos_weight}
    named = {k: v for k, v in arguments.items() if isinstance(v, xr.DataArray)}
    reference = named.get("logits", named.get("labels"))
    if reference is None:
        raise TypeError(
            "a DataArray pos_weight needs labels or logits as DataArrays to "
            "broadcast against, got labels "
            f"{type(labels).__name__} and logits {type(logits).__name__}"
        )
    if "labels" in named and "logits" in named:
        if set(labels.dims) != set(logits.dims):
            raise ValueError(
                "labels and logits must have the same dims, got labels dims "
                f"{labels.dims} and logits dims {logits.dims}"
            )

    # Coordinates must match exactly; pos_weight broadcasts by dim name.
    aligned = xr.align(*named.values(), join="exact")
    broadcast = dict(zip(named, xr.broadcast(*aligned), strict=True))
    template = broadcast["logits" if "logits" in named else "labels"]
    template = template.transpose(*reference.dims, ...)
    data = {
        name: broadcast[name].transpose(*template.dims).data
        if name in broadcast
        else value
        for name, value in arguments.items()
    }

    result = function(data["labels"], data["logits"], data["pos_weight"])
    return xr.DataArray(result, dims=template.dims, coords=template.coords)
