"""Contiguous loops: the CPU fast path for C-contiguous arrays.

Numba's ufunc loop calls the kernel through a pointer for each element, so
LLVM cannot vectorize across elements there. These loops over flat,
contiguous arrays inline the same kernels (``_kernels``) and let LLVM's loop
vectorizer run them on 4 float64 lanes (AVX2; float32 is computed in
float64), which, with the branch-free, libm-free kernels, is what makes the
CPU path fast. Each element is computed by the same kernel as in the ufuncs,
independently, so results are bit-identical to theirs.

Numba's on-disk cache (``cache=True``) is keyed on this file alone: an edit
to the kernels or the primitives they call leaves stale machine code here
until ``wce_numba/__pycache__/*.nb*`` is deleted (installs and upgrades
rewrite every file, which starts the cache afresh).

``error_model="numpy"`` drops Numba's division-by-zero checks, whose branches
and possible exceptions would stop the vectorizer. ``nogil=True`` lets the
dispatcher run blocks of one call on several threads.
"""

from numba import njit, types

from . import _kernels

LOSS = 0
GRAD = 1

_loss = njit(error_model="numpy", forceinline=True)(_kernels.loss)
_grad = njit(error_model="numpy", forceinline=True)(_kernels.loss_grad)

_OPTIONS = {"nogil": True, "cache": True, "error_model": "numpy"}


def _signatures(weight_is_array: bool) -> list:
    """float32 and float64 signatures; inputs typed read-only so both kinds fit."""
    signatures = []
    for float_type in (types.float32, types.float64):
        readonly = types.Array(float_type, 1, "C", readonly=True)
        writable = types.Array(float_type, 1, "C")
        weight = readonly if weight_is_array else float_type
        signatures.append(types.void(types.int64, readonly, readonly, weight, writable))
    return signatures


@njit(_signatures(weight_is_array=False), **_OPTIONS)
def fill_scalar_weight(quantity, labels, logits, pos_weight, out):
    """``out[i] = quantity(labels[i], logits[i], pos_weight)`` for every i."""
    if quantity == LOSS:
        for i in range(logits.size):
            out[i] = _loss(labels[i], logits[i], pos_weight)
    else:
        for i in range(logits.size):
            out[i] = _grad(labels[i], logits[i], pos_weight)


@njit(_signatures(weight_is_array=True), **_OPTIONS)
def fill_array_weight(quantity, labels, logits, pos_weight, out):
    """``out[i] = quantity(labels[i], logits[i], pos_weight[i])`` for every i."""
    if quantity == LOSS:
        for i in range(logits.size):
            out[i] = _loss(labels[i], logits[i], pos_weight[i])
    else:
        for i in range(logits.size):
            out[i] = _grad(labels[i], logits[i], pos_weight[i])
