"""TensorFlow's weighted cross entropy with logits as Numba-compiled kernels.

The public API is re-exported here; everything else lives in private modules:
``_kernels`` (scalar math, one source for every target), ``_fastmath`` and
``_intrinsics`` (the primitives it uses), ``_ufuncs`` (ufunc builders per
target), ``_loops`` (contiguous CPU loops), ``_validate`` (argument checks),
``_fused`` (the one-pass weighted, reduced loss and gradient), ``_dispatch``
(how a CPU call runs), ``_device`` and ``_cuda`` (the GPU path),
``_collections`` (Dask and xarray arguments), ``_objective`` (the fused
gradient-and-hessian loop) and ``api`` (the documented functions).

Integrations are public modules of their own, imported on demand and never
by ``import wce_numba``: ``wce_numba.torch`` (PyTorch autograd) and
``wce_numba.boosting`` (XGBoost and LightGBM objectives).
"""

from .api import (
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_grad,
    weighted_cross_entropy_with_logits_value_and_grad,
)

__all__ = [
    "weighted_cross_entropy_with_logits",
    "weighted_cross_entropy_with_logits_grad",
    "weighted_cross_entropy_with_logits_value_and_grad",
]

__version__ = "0.1.0"
