"""Fused loop for second-order boosting: gradient and hessian in one pass.

Gradient boosting (XGBoost, LightGBM) asks a custom objective for the first
and second derivatives of the loss in the raw margin at every round. This
loop computes both per element from the same inputs, inlining the scalar
kernels of ``_kernels`` so LLVM vectorizes it like the loops of ``_loops``,
and multiplies in the sample weights on the way out. Each derivative is
computed by its own kernel, so the gradient is bit-identical to
``weighted_cross_entropy_with_logits_grad``.
"""

from numba import njit, types

from . import _kernels

_grad = njit(error_model="numpy", forceinline=True)(_kernels.loss_grad)
_hess = njit(error_model="numpy", forceinline=True)(_kernels.loss_hess)


def _signatures() -> list:
    """float32 and float64; sample weights as an array or as one scalar."""
    signatures = []
    for float_type in (types.float32, types.float64):
        readonly = types.Array(float_type, 1, "C", readonly=True)
        writable = types.Array(float_type, 1, "C")
        for weight in (readonly, float_type):
            signatures.append(
                types.void(readonly, readonly, float_type, weight, writable, writable)
            )
    return signatures


@njit(_signatures(), nogil=True, cache=True, error_model="numpy")
def fill_grad_hess(labels, logits, pos_weight, weight, grad, hess):
    """``grad[i], hess[i]`` = weight times d/dx and d^2/dx^2 of the loss at i.

    ``weight`` is an array of per-element weights or a scalar for all.
    """
    for i in range(logits.size):
        scale = weight[i] if hasattr(weight, "size") else weight
        grad[i] = scale * _grad(labels[i], logits[i], pos_weight)
        hess[i] = scale * _hess(labels[i], logits[i], pos_weight)
