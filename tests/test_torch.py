"""PyTorch: forward and backward against PyTorch's own loss, gradcheck, training."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from wce_numba.demo import load_digits_task  # noqa: E402
from wce_numba.torch import (  # noqa: E402
    WeightedCrossEntropyWithLogits,
    WeightedCrossEntropyWithLogitsLoss,
    weighted_cross_entropy_with_logits,
)

F = torch.nn.functional

# PyTorch evaluates (1 - z) x + l softplus(-x) stepwise: a few roundings of
# terms as large as |x| + log 2, which cancel where the loss is small (z = 0,
# x << 0). So its error is up to a few eps (|x| + 1) absolute (``_atol``),
# and about 1e-5 (float32) or 1e-12 (float64) relative to a sum of 192 terms.
RTOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _atol(logits):
    return 8 * torch.finfo(logits.dtype).eps * (logits.abs().max().item() + 1)


REDUCTIONS = ["none", "mean", "sum"]


def _inputs(dtype, shape=(64, 3), seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=generator, dtype=dtype) * 2
    labels = (torch.rand(shape, generator=generator) < 0.3).to(dtype)
    labels[0] = 0.5  # a row of soft labels
    pos_weight = torch.tensor([0.5, 2.0, 8.0], dtype=dtype)
    weight = torch.rand(shape, generator=generator, dtype=dtype) + 0.5
    return labels, logits, pos_weight, weight


def _torch_loss(labels, logits, pos_weight, weight, reduction):
    return F.binary_cross_entropy_with_logits(
        logits, labels, weight=weight, pos_weight=pos_weight, reduction=reduction
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_forward_and_backward_match_pytorch(dtype, reduction, weighted):
    labels, logits, pos_weight, weight = _inputs(dtype)
    weight = weight if weighted else None
    ours_logits = logits.clone().requires_grad_()
    theirs_logits = logits.clone().requires_grad_()

    ours = weighted_cross_entropy_with_logits(
        labels, ours_logits, pos_weight, weight=weight, reduction=reduction
    )
    theirs = _torch_loss(labels, theirs_logits, pos_weight, weight, reduction)
    # A non-uniform upstream gradient for 'none', so each element's own
    # gradient is checked.
    upstream = torch.linspace(0.5, 1.5, ours.numel(), dtype=dtype).view_as(ours)
    ours.backward(upstream)
    theirs.backward(upstream)

    assert ours.dtype == dtype and ours.shape == theirs.shape
    atol = _atol(logits)
    torch.testing.assert_close(ours, theirs, rtol=RTOL[dtype], atol=atol)
    torch.testing.assert_close(
        ours_logits.grad, theirs_logits.grad, rtol=RTOL[dtype], atol=atol
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_passes_in_float64(reduction):
    labels, logits, pos_weight, weight = _inputs(torch.float64, shape=(6, 3))
    logits.requires_grad_()

    def loss(x):
        return weighted_cross_entropy_with_logits(
            labels, x, pos_weight, weight=weight, reduction=reduction
        )

    assert torch.autograd.gradcheck(loss, (logits,), eps=1e-6, atol=1e-8)


def test_module_keeps_pos_weight_as_a_buffer_and_matches_the_function():
    labels, logits, pos_weight, weight = _inputs(torch.float64)
    criterion = WeightedCrossEntropyWithLogitsLoss(pos_weight, weight=weight)

    loss = criterion(logits, labels)

    expected = weighted_cross_entropy_with_logits(
        labels, logits, pos_weight, weight=weight
    )
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    assert set(criterion.state_dict()) == {"pos_weight", "weight"}
    moved = criterion.to(torch.float32)
    assert moved.pos_weight.dtype == torch.float32


def test_inputs_are_not_modified_and_strided_views_work():
    labels, logits, pos_weight, _ = _inputs(torch.float32, shape=(8, 6))
    view = logits[:, ::2]  # non-contiguous
    copies = [t.clone() for t in (labels, logits, pos_weight)]

    ours = weighted_cross_entropy_with_logits(
        labels[:, ::2], view, pos_weight, reduction="none"
    )

    theirs = _torch_loss(labels[:, ::2], view, pos_weight, None, "none")
    torch.testing.assert_close(ours, theirs, rtol=RTOL[torch.float32], atol=_atol(view))
    for tensor, copy in zip((labels, logits, pos_weight), copies, strict=True):
        assert torch.equal(tensor, copy)


def test_cpu_tensors_reach_the_kernels_without_a_copy(monkeypatch):
    from wce_numba import api

    labels, logits, pos_weight, _ = _inputs(torch.float32)
    logits.requires_grad_()
    seen = {}
    fused = api.weighted_cross_entropy_with_logits_value_and_grad

    def spy(labels_array, logits_array, pos_weight_array, **options):
        seen["arrays"] = (labels_array, logits_array, pos_weight_array)
        return fused(labels_array, logits_array, pos_weight_array, **options)

    monkeypatch.setattr(api, "weighted_cross_entropy_with_logits_value_and_grad", spy)
    weighted_cross_entropy_with_logits(labels, logits, pos_weight)

    for array, tensor in zip(seen["arrays"], (labels, logits, pos_weight), strict=True):
        assert isinstance(array, np.ndarray)
        assert np.shares_memory(array, tensor.detach().numpy())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32_and_returned_in_its_dtype(dtype):
    labels, logits, pos_weight, _ = _inputs(torch.float32)
    half_labels, half_logits = labels.to(dtype), logits.to(dtype)

    loss = weighted_cross_entropy_with_logits(
        half_labels, half_logits, pos_weight, reduction="none"
    )

    expected = _torch_loss(
        half_labels.float(), half_logits.float(), pos_weight, None, "none"
    )
    assert loss.dtype == dtype
    # One rounding to the half dtype: half its epsilon, relative.
    torch.testing.assert_close(
        loss.float(), expected, rtol=torch.finfo(dtype).eps, atol=0
    )


def test_labels_that_require_grad_are_refused():
    labels, logits, pos_weight, _ = _inputs(torch.float64)
    labels.requires_grad_()

    with pytest.raises(ValueError, match="gradients flow only to logits"):
        WeightedCrossEntropyWithLogits.apply(labels, logits, pos_weight, None, "sum")


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match="reduction must be one of.*got 'average'"):
        WeightedCrossEntropyWithLogitsLoss(2.0, reduction="average")


def _train(criterion, digits, steps=60):
    """Full-batch SGD on a linear model; returns the losses and the weights."""
    torch.manual_seed(0)
    model = torch.nn.Linear(digits.train_features.shape[1], 1, dtype=torch.float64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    features = torch.from_numpy(digits.train_features)
    labels = torch.from_numpy(digits.train_labels)[:, None]
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = criterion(model(features), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, model.weight.detach()


def test_a_model_trains_as_with_pytorchs_loss():
    digits = load_digits_task()
    pos_weight = torch.tensor([4.0], dtype=torch.float64)

    ours, ours_weights = _train(WeightedCrossEntropyWithLogitsLoss(pos_weight), digits)
    theirs, theirs_weights = _train(
        torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight), digits
    )

    assert ours[-1] < 0.5 * ours[0]
    # Same start, same steps: the trajectories differ only by roundings of
    # the losses' gradients (~1e-16 relative), amplified little by 60 steps.
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    torch.testing.assert_close(ours_weights, theirs_weights, rtol=1e-10, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cuda_tensors_run_on_the_device_and_match_pytorch(reduction):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU visible to PyTorch")
    pytest.importorskip("numba.cuda")
    labels, logits, pos_weight, weight = (
        t.cuda() for t in _inputs(torch.float64, shape=(4096, 3))
    )
    ours_logits = logits.clone().requires_grad_()
    theirs_logits = logits.clone().requires_grad_()

    ours = weighted_cross_entropy_with_logits(
        labels, ours_logits, pos_weight, weight=weight, reduction=reduction
    )
    theirs = _torch_loss(labels, theirs_logits, pos_weight, weight, reduction)
    ours.sum().backward()
    theirs.sum().backward()

    assert ours.is_cuda and ours_logits.grad.is_cuda
    atol = _atol(logits)
    torch.testing.assert_close(ours, theirs, rtol=RTOL[torch.float64], atol=atol)
    torch.testing.assert_close(
        ours_logits.grad, theirs_logits.grad, rtol=RTOL[torch.float64], atol=atol
    )


@pytest.mark.cuda
def test_cuda_model_trains_on_a_side_stream():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU visible to PyTorch")
    pytest.importorskip("numba.cuda")
    digits = load_digits_task()
    criterion = WeightedCrossEntropyWithLogitsLoss(torch.tensor([4.0])).cuda()
    model = torch.nn.Linear(digits.train_features.shape[1], 1).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    features = torch.from_numpy(digits.train_features).float().cuda()
    labels = torch.from_numpy(digits.train_labels).float().cuda()[:, None]

    losses = []
    with torch.cuda.stream(torch.cuda.Stream()):
        for _ in range(30):
            optimizer.zero_grad()
            loss = criterion(model(features), labels)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())

    assert losses[-1] < 0.7 * losses[0]


def test_second_derivatives_raise_instead_of_being_dropped():
    logits = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    loss = WeightedCrossEntropyWithLogitsLoss(
        torch.tensor(2.0, dtype=torch.float64), reduction="sum"
    )(logits, labels)

    with pytest.raises(RuntimeError, match="first derivatives only"):
        torch.autograd.grad(loss, logits, create_graph=True)
