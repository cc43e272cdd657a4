"""PyTorch: the weighted cross entropy as an autograd Function and a loss module.

The forward pass runs this package's kernels on the tensors' memory and keeps
the gradient with respect to the logits for the backward pass, which only
scales it by the incoming gradient. CPU tensors reach the kernels as NumPy
views of their memory (no copy); CUDA tensors are passed as they are, through
``__cuda_array_interface__``, and the kernels run on PyTorch's current
stream, so the result is ordered with the rest of the model's work.

Needs the ``torch`` extra (``pip install "wce_numba[torch]"``);
``import wce_numba`` never imports PyTorch.
"""

from __future__ import annotations

import numpy as np
import torch

from . import api

REDUCTIONS = ("none", "mean", "sum")

# Dtypes NumPy has no type for are computed in float32 and cast back.
_WIDENED = {torch.bfloat16: torch.float32}


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}, "
            f"got {reduction!r}"
        )


def _kernel_input(value):
    """What the kernels read: a NumPy view of a CPU tensor, a CUDA tensor as is.

    Tensors are detached first (a tensor that requires grad refuses both
    ``numpy()`` and ``__cuda_array_interface__``); neither step copies, and
    the kernels never write their inputs.
    """
    if not isinstance(value, torch.Tensor):
        return value
    value = value.detach()
    if value.dtype in _WIDENED:
        value = value.to(_WIDENED[value.dtype])
    return value if value.is_cuda else value.numpy()


def _as_tensor(result, like: torch.Tensor) -> torch.Tensor:
    """A kernel's result as a tensor on ``like``'s device, in its dtype.

    CUDA results already are tensors; NumPy results are wrapped without a
    copy (a NumPy scalar from a 0-d call becomes a 0-d tensor).
    """
    if not isinstance(result, torch.Tensor):
        result = torch.from_numpy(np.asarray(result))
    return result if result.dtype == like.dtype else result.to(like.dtype)


def _value_and_grad(labels, logits, pos_weight, weight, reduction, need_grad):
    """The (reduced) loss, and its gradient in the logits when ``need_grad``.

    One fused pass of the package's kernels over the kernels' inputs (NumPy
    views or CUDA tensors) gives both; CUDA work goes on PyTorch's current
    stream of the logits' device.
    """
    options = {"weight": weight, "reduction": reduction}
    if isinstance(logits, torch.Tensor):
        options["stream"] = torch.cuda.current_stream(logits.device)

    if not need_grad:
        value = api.weighted_cross_entropy_with_logits(
            labels, logits, pos_weight, **options
        )
        return value, None
    return api.weighted_cross_entropy_with_logits_value_and_grad(
        labels, logits, pos_weight, **options
    )


class WeightedCrossEntropyWithLogits(torch.autograd.Function):
    """Autograd Function: the loss forward, its logit gradient backward.

    ``WeightedCrossEntropyWithLogits.apply(labels, logits, pos_weight, weight,
    reduction)`` takes the arguments of :func:`weighted_cross_entropy_with_logits`
    positionally. Gradients flow to ``logits`` only: labels, pos_weight and
    weight are treated as constants, and a tensor among them that requires
    grad is refused (detach it) rather than silently given no gradient.
    Differentiable once (no double backward).
    """

    @staticmethod
    def forward(ctx, labels, logits, pos_weight, weight=None, reduction="mean"):
        """Loss of ``logits`` against ``labels``; saves the logit gradient."""
        constants = ctx.needs_input_grad[0:1] + ctx.needs_input_grad[2:4]
        if any(constants):
            raise ValueError(
                "gradients flow only to logits; labels, pos_weight and weight "
                "must not require grad (pass them .detach()ed)"
            )

        value, grad = _value_and_grad(
            _kernel_input(labels),
            _kernel_input(logits),
            _kernel_input(pos_weight),
            _kernel_input(weight),
            reduction,
            need_grad=ctx.needs_input_grad[1],
        )
        if grad is not None:
            ctx.save_for_backward(_as_tensor(grad, logits))
        return _as_tensor(value, logits).to(logits.device)

    @staticmethod
    def backward(ctx, grad_output):
        """The saved logit gradient scaled by the incoming one; None for the rest.

        First derivatives only. Under ``create_graph=True`` (grad mode on
        here) the product below would be differentiated as if the saved
        gradient did not depend on the logits, silently dropping the second
        derivative: that raises instead.
        """
        if torch.is_grad_enabled():
            raise RuntimeError(
                "wce_numba.torch gives first derivatives only: "
                "create_graph=True (second derivatives, gradgradcheck) is not "
                "supported; use torch.nn.functional.binary_cross_entropy_with_"
                "logits for higher-order derivatives"
            )
        (grad,) = ctx.saved_tensors
        return None, grad_output * grad, None, None, None


def weighted_cross_entropy_with_logits(
    labels: torch.Tensor,
    logits: torch.Tensor,
    pos_weight,
    *,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Weighted cross entropy with logits on tensors, differentiable in the logits.

    Parameters
    ----------
    labels : torch.Tensor
        Targets in [0, 1], the logits' shape, on their device.
    logits : torch.Tensor
        Log-odds: float16, bfloat16 (computed in float32), float32 or
        float64, on the CPU or a CUDA device.
    pos_weight : float or torch.Tensor
        Weight of the positive term: a scalar or a tensor that broadcasts to
        the logits' shape (one weight per class).
    weight : torch.Tensor, optional
        Sample weights that broadcast to the logits' shape; None means 1.
    reduction : {'mean', 'sum', 'none'}
        'none': the elementwise loss; 'sum': the sum of ``weight * loss``;
        'mean': that sum divided by the number of elements (PyTorch's rule).

    Returns
    -------
    torch.Tensor
        The loss on the logits' device and in their dtype; 0-d unless
        ``reduction='none'``.

    Raises
    ------
    ValueError
        For an unknown ``reduction``, labels, pos_weight or weight that
        require grad, or shapes and devices the package refuses (see
        :func:`wce_numba.weighted_cross_entropy_with_logits`).

    Notes
    -----
    The value is ``torch.nn.functional.binary_cross_entropy_with_logits(
    logits, labels, weight=weight, pos_weight=pos_weight,
    reduction=reduction)`` evaluated without its cancellation, and with the
    package's accuracy: the forward pass is one call of
    :func:`wce_numba.weighted_cross_entropy_with_logits_value_and_grad`
    (sums accumulated exactly and rounded once), which also gives the
    gradient that the backward pass scales.

    Examples
    --------
    >>> import torch
    >>> from wce_numba.torch import weighted_cross_entropy_with_logits
    >>> logits = torch.tensor([-2.0, 2.0, 0.0], requires_grad=True)
    >>> labels = torch.tensor([1.0, 0.0, 0.5])
    >>> loss = weighted_cross_entropy_with_logits(labels, logits, pos_weight=4.0)
    >>> loss.backward()
    >>> round(loss.item(), 5), [round(g, 5) for g in logits.grad.tolist()]
    (4.1225, [-1.1744, 0.2936, -0.25])
    """
    _check_reduction(reduction)
    return WeightedCrossEntropyWithLogits.apply(
        labels, logits, pos_weight, weight, reduction
    )


class WeightedCrossEntropyWithLogitsLoss(torch.nn.Module):
    """The weighted cross entropy as a loss module, like ``nn.BCEWithLogitsLoss``.

    Parameters
    ----------
    pos_weight : float or torch.Tensor
        Weight of the positive term (a scalar or one per class), kept as a
        buffer, so it moves with ``.to(device)`` and is saved in the
        ``state_dict``.
    weight : torch.Tensor, optional
        Fixed sample weights broadcasting to the logits' shape, also a buffer.
    reduction : {'mean', 'sum', 'none'}
        As in :func:`weighted_cross_entropy_with_logits`.

    Examples
    --------
    >>> import torch
    >>> from wce_numba.torch import WeightedCrossEntropyWithLogitsLoss
    >>> criterion = WeightedCrossEntropyWithLogitsLoss(pos_weight=4.0)
    >>> logits = torch.tensor([-2.0, 2.0, 0.0])
    >>> round(criterion(logits, torch.tensor([1.0, 0.0, 0.5])).item(), 5)
    4.1225
    """

    def __init__(self, pos_weight, weight=None, reduction: str = "mean"):
        super().__init__()
        _check_reduction(reduction)
        self.register_buffer("pos_weight", torch.as_tensor(pos_weight))
        self.register_buffer(
            "weight", None if weight is None else torch.as_tensor(weight)
        )
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of ``logits`` against ``labels`` (PyTorch's argument order)."""
        return weighted_cross_entropy_with_logits(
            labels,
            logits,
            self.pos_weight,
            weight=self.weight,
            reduction=self.reduction,
        )
