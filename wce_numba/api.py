"""Public API: TensorFlow's weighted cross entropy with logits, and its gradient."""

from __future__ import annotations

import numpy as np

from . import _collections, _device, _dispatch, _validate
from ._typing import ArrayLike


def _loss_or_grad(
    quantity: str, labels, logits, pos_weight, name, weight, reduction, out, stream
):
    """The loss or the gradient alone: the plain elementwise call when it can."""
    if weight is None and reduction == "none" and name is stream is None:
        result = _dispatch.run_quick(quantity, labels, logits, pos_weight, out)
        if result is not None:
            return result

    _validate.check_name(name)
    _validate.check_reduction(reduction)
    if weight is None and reduction == "none":
        return _elementwise(quantity, labels, logits, pos_weight, out, stream)

    want_value = quantity == "loss"
    value, grad = _fused(
        labels,
        logits,
        pos_weight,
        weight,
        reduction,
        want_value,
        not want_value,
        out,
        stream,
    )
    return value if want_value else grad


def _elementwise(quantity: str, labels, logits, pos_weight, out, stream):
    """Validate, choose the compiled ufunc, compute, and return in the right dtype."""
    if _collections.is_collection(labels, logits, pos_weight):
        return _collections.elementwise(
            quantity, labels, logits, pos_weight, out, stream
        )
    if any(_device.is_device_array(a) for a in (labels, logits, pos_weight, out)):
        return _device.run(quantity, labels, logits, pos_weight, out, stream)
    _device.stream_argument(stream, labels, logits, pos_weight)
    if any(isinstance(a, np.ma.MaskedArray) for a in (labels, logits, pos_weight)):
        return _masked(quantity, labels, logits, pos_weight, out)

    prepared = _validate.prepare(labels, logits, pos_weight)
    if out is not None:
        _validate.check_out(out, prepared.logits.shape, prepared.result_dtype)

    # float16 is computed in float32, and some layouts of ``out`` cannot be
    # handed to the ufunc (see ``can_write_directly``): those compute into a
    # fresh array first.
    direct = (
        out is not None
        and prepared.result_dtype == prepared.compute_dtype
        and _dispatch.can_write_directly(out, prepared)
    )
    result = _dispatch.run_cpu(quantity, prepared, out if direct else None)
    return _deliver(result, out, direct, prepared)


def _deliver(result, out, direct: bool, prepared):
    """``result`` in the caller's dtype, or copied into ``out`` when given."""
    if out is None:
        if prepared.result_dtype == prepared.compute_dtype:
            return result
        # A float16 result beyond float16's range is inf, the correctly
        # rounded value; NumPy's cast would warn about it.
        with np.errstate(over="ignore"):
            return result.astype(prepared.result_dtype)
    if not direct:
        out[...] = result
    return out


def _fused(
    labels, logits, pos_weight, weight, reduction, want_value, want_grad, out, stream
):
    """Weighted, reduced loss and/or gradient from one pass: ``(value, grad)``.

    ``out``, if given, receives the one result asked for: the elementwise
    array, or for a reduced loss a 0-d array.
    """
    if out is stream is None:
        result = _dispatch.run_fused_quick(
            labels, logits, pos_weight, weight, reduction, want_value, want_grad
        )
        if result is not None:
            return result

    arguments = (labels, logits, pos_weight, weight, out)
    if _collections.is_collection(*arguments):
        return _collections.fused(
            *arguments[:4], reduction, want_value, want_grad, out, stream
        )
    if any(_device.is_device_array(a) for a in arguments):
        return _device.run_fused(
            labels,
            logits,
            pos_weight,
            weight,
            reduction,
            want_value,
            want_grad,
            stream,
            out,
        )
    _device.stream_argument(stream, labels, logits, pos_weight)
    if any(isinstance(a, np.ma.MaskedArray) for a in arguments[:4]):
        return _masked_fused(
            labels, logits, pos_weight, weight, reduction, want_value, want_grad, out
        )
    return _fused_cpu(
        labels, logits, pos_weight, weight, reduction, want_value, want_grad, out
    )


def _fused_cpu(
    labels,
    logits,
    pos_weight,
    weight,
    reduction,
    want_value,
    want_grad,
    out,
    count=None,
    total_dtype=None,
):
    """``_fused`` for host arrays; ``count`` replaces N in a mean.

    ``total_dtype`` (float64 for a partial sum in a larger reduction) is the
    dtype of a reduced value, rounded once; default the result dtype.
    """
    prepared = _validate.prepare(labels, logits, pos_weight)
    weight = _validate.prepare_weight(weight, prepared)
    reduced = want_value and reduction != "none"

    direct = False
    if out is not None:
        if reduced:
            _validate.check_out(out, (), prepared.result_dtype, "the reduced shape")
        else:
            _validate.check_out(out, prepared.logits.shape, prepared.result_dtype)
            direct = (
                prepared.result_dtype == prepared.compute_dtype
                and _dispatch.can_write_directly(out, prepared, weight)
            )

    array_out = out if direct else None
    value, grad = _dispatch.run_fused(
        prepared,
        weight,
        reduction,
        want_value,
        want_grad,
        loss_out=array_out if want_value else None,
        grad_out=None if want_value else array_out,
        count=count,
        total_dtype=total_dtype,
    )

    if reduced:
        with np.errstate(over="ignore"):  # beyond the dtype: inf, no warning
            value = (total_dtype or prepared.result_dtype).type(value)
        if out is not None and not want_grad:
            out[()] = value
            value = out
    elif want_value:
        value = _as_result(value, out if not want_grad else None, direct, prepared)
    if want_grad:
        grad = _as_result(grad, out if not want_value else None, direct, prepared)
    return value, grad


def _as_result(array, out, direct: bool, prepared):
    """An elementwise result as returned: caller's dtype, ``out``, or a scalar."""
    result = _deliver(array, out, direct, prepared)
    if out is None and prepared.logits.ndim == 0:
        return result[()]  # as a ufunc does: a 0-d call gives a NumPy scalar
    return result


def _masked(quantity: str, labels, logits, pos_weight, out):
    """Masked inputs give a masked result, as NumPy's ufuncs do.

    Masked elements are computed from harmless fill values (label 0, logit 0,
    pos_weight 1) and masked in the result, whatever lies under the mask.
    """
    if out is not None:
        raise TypeError(
            "out= is not supported with masked arrays; got out= and a "
            "numpy.ma.MaskedArray input"
        )

    mask = _mask_of(labels, logits, pos_weight)
    labels, logits, pos_weight, _ = _fill_masked(mask, labels, logits, pos_weight)
    result = _elementwise(quantity, labels, logits, pos_weight, None, None)
    return np.ma.MaskedArray(result, mask=mask)


def _fill_masked(mask, labels, logits, pos_weight, weight=None):
    """The arguments with harmless values wherever ``mask`` is set.

    Label 0, logit 0, pos_weight 1 and sample weight 0 at every masked
    position, whichever argument's mask set it: a NaN, an infinity or a
    value beyond the dtype's range under the mask is never seen (it would
    make a weighted term NaN, or raise). Unmasked arguments that broadcast
    are filled at their broadcast shape.
    """
    filled = []
    for value, fill in ((labels, 0), (logits, 0), (pos_weight, 1), (weight, 0)):
        data = np.ma.getdata(value if value is not None else 1)
        if mask.any():
            data = np.where(mask, fill, data).astype(np.asarray(data).dtype)
        filled.append(data)
    return filled


def _mask_of(*arguments) -> np.ndarray:
    """Where any argument is masked, broadcast to the logits' shape."""
    shape = np.shape(arguments[1])
    mask = np.zeros(shape, bool)
    for argument in arguments:
        if argument is not None:
            mask = mask | np.ma.getmaskarray(argument)
    return np.broadcast_to(mask, shape)


def _masked_fused(
    labels, logits, pos_weight, weight, reduction, want_value, want_grad, out
):
    """``_fused`` for masked input: masked elements count for nothing.

    They are computed from harmless fill values with a sample weight of 0,
    so they add nothing to a sum, a mean divides by the number of unmasked
    elements (as ``numpy.ma.mean`` does), and elementwise results are masked
    where any input is.
    """
    if out is not None:
        raise TypeError(
            "out= is not supported with masked arrays; got out= and a "
            "numpy.ma.MaskedArray input"
        )

    mask = _mask_of(labels, logits, pos_weight, weight)
    value, grad = _fused_cpu(
        *_fill_masked(mask, labels, logits, pos_weight, weight),
        reduction,
        want_value,
        want_grad,
        None,
        count=int(mask.size - np.count_nonzero(mask)),
    )
    if want_value and reduction == "none":
        value = np.ma.MaskedArray(value, mask=mask)
    if want_grad:
        grad = np.ma.MaskedArray(grad, mask=mask)
    return value, grad


def weighted_cross_entropy_with_logits(
    labels: ArrayLike,
    logits: ArrayLike,
    pos_weight: ArrayLike,
    name: str | None = None,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "none",
    out: np.ndarray | None = None,
    stream=None,
):
    """Weighted sigmoid cross entropy between ``labels`` and ``logits``.

    The drop-in counterpart of ``tf.nn.weighted_cross_entropy_with_logits``:
    the usual sigmoid cross entropy with the positive term scaled by
    ``pos_weight``. With z = labels, x = logits and q = pos_weight::

        loss = z * q * -log(sigmoid(x)) + (1 - z) * -log(1 - sigmoid(x))

    A ``pos_weight`` above 1 makes missed positives cost more (recall goes up),
    below 1 makes false alarms cost more (precision goes up).

    Parameters
    ----------
    labels : array_like
        Targets, usually in [0, 1] (hard 0/1 or soft). Same shape as
        ``logits``; no broadcasting between the two. Bool, integer and float
        dtypes are accepted and cast to the result's dtype. Values outside
        [0, 1] follow the same formula, unclipped.
    logits : array_like
        Unnormalized log-odds. Their dtype decides the result's: float32 and
        float64 are kept, float16 is computed in float32 and returned as
        float16, bool and integers give float64.
    pos_weight : array_like
        Weight of the positive term: a scalar, or an array that broadcasts to
        the logits' shape (for example one weight per class, shape ``(C,)``,
        for logits of shape ``(N, C)``). Any real value, 0 and negative
        included, is used as given.
    name : str, optional
        Accepted for compatibility with TensorFlow and ignored (anything but a
        str or None raises TypeError, which catches a positional ``out``).
    weight : array_like, optional
        Per-element sample weights multiplying the loss, broadcastable to the
        logits' shape like ``pos_weight`` (shape ``(N, 1)`` weighs whole rows
        of logits ``(N, C)``). Default: no weighting. Not in TensorFlow's
        signature; PyTorch's ``weight`` of ``binary_cross_entropy_with_logits``.
    reduction : {'none', 'sum', 'mean'}, optional
        ``'none'`` (default, TensorFlow's behaviour): the elementwise loss.
        ``'sum'``: the sum of ``weight * loss``. ``'mean'``: that sum divided
        by the number of elements (PyTorch's rule, also with weights: the
        mean of the weighted terms, not a division by the sum of weights).
        A reduced loss is computed in one pass without storing the
        elementwise loss and summed in float64 without loss (see
        :func:`weighted_cross_entropy_with_logits_value_and_grad`). The mean
        of no elements is NaN.
    out : numpy.ndarray, optional
        Array of the logits' shape and the result's dtype that receives the
        loss (a 0-d array for a reduced loss). It may be one of the inputs;
        otherwise inputs are never written. With CUDA arrays, a CUDA array of
        that shape and dtype.
    stream : optional
        Only with CUDA arrays: the CUDA stream to run on, as a Numba stream, a
        CuPy ``Stream``, a ``torch.cuda.Stream`` or a stream pointer (int).
        By default, the stream the logits' library exported with them (CuPy's
        or PyTorch's current stream), else CUDA's default stream.

    Returns
    -------
    numpy.ndarray, numpy scalar or CUDA array
        The elementwise loss with the logits' shape (a NumPy scalar for 0-d
        input, as NumPy's ufuncs return), or ``out`` when given. A reduced
        loss is a NumPy scalar of the result's dtype (a 0-d CUDA array of the
        logits' kind for CUDA input). Masked-array
        input gives a masked array, masked where any input is. CUDA input
        gives a result on the same device, of the logits' kind (see Notes).

    Raises
    ------
    ValueError
        If labels and logits differ in shape, ``pos_weight`` does not
        broadcast to the logits' shape, ``out`` has the wrong shape, an input
        is a ragged nested list, a finite label, pos_weight or weight
        overflows the logits' dtype (1e40 with float32 logits), ``weight``
        does not broadcast to the logits' shape, or ``reduction`` is not one
        of the three names. With CUDA arrays: if
        the arguments do not live on one device (the message says where each
        lives), or ``stream`` is given for host arrays. On the GPU only a
        host ``pos_weight`` is checked for overflow (see Notes).
    TypeError
        If an input is not real (complex, object, string) or ``out`` has the
        wrong dtype; the message names the argument and its dtype. CUDA
        arrays are checked alike, with the same messages.
    ImportError, RuntimeError
        For CUDA arrays without numba-cuda (ImportError) or without a usable
        GPU and driver (RuntimeError); the message says what to install.

    See Also
    --------
    weighted_cross_entropy_with_logits_grad : the derivative with respect to
        the logits.
    weighted_cross_entropy_with_logits_value_and_grad : the reduced loss and
        its gradient from one pass.

    Notes
    -----
    TensorFlow evaluates the stable form, with l = 1 + (q - 1) z,

        loss = (1 - z) x + l (log1p(exp(-|x|)) + max(-x, 0)).

    This package computes the same value as

        loss = (1 - z) softplus(x) + q z softplus(-x),

    with softplus(x) = max(x, 0) + log1p(exp(-|x|)). For labels in [0, 1]
    and q >= 0 both terms are non-negative, so nothing cancels: the result is
    within 2 ULP (float64) or 3 ULP (float32) of the exact value of the loss
    at the given inputs, where TensorFlow's form loses digits at large
    negative logits with soft labels.

    Differences from TensorFlow, all deliberate:

    * Infinite logits give the limit of the loss, not NaN: a term whose
      coefficient is 0 contributes 0, so x = +inf with z = 1 gives 0 and
      x = -inf with z = 0 gives 0 (TensorFlow computes 0 * inf = NaN).
      NaN in any input still gives NaN.
    * float16 logits are computed in float32 and rounded once.
    * Integer and bool logits are accepted and give float64.

    On the GPU: a call runs there when any argument is a CUDA array (one with
    ``__cuda_array_interface__``: a CuPy array, a PyTorch CUDA tensor, a Numba
    device array). Labels, logits and ``out`` must then all be on that device;
    ``pos_weight`` may also be a host scalar or a host array of at most 4096
    elements (copied over on each call). Nothing else crosses between host and
    device. Dtypes follow the CPU's rules (see Parameters): inputs of another
    dtype are cast on the device (float16 logits are computed in float32 and
    the result is cast back there), except that a device label or pos_weight
    beyond the compute dtype's range becomes inf instead of raising, since
    seeing it would take a read back to the host. The result stays on the
    device, in a new array of the logits' kind: a CuPy array for CuPy logits,
    a PyTorch tensor for PyTorch logits, a Numba device array otherwise (0-d
    for 0-d input). Every launch is asynchronous on ``stream``; nothing is
    synchronised.

    References
    ----------
    TensorFlow, ``tf.nn.weighted_cross_entropy_with_logits``,
    https://www.tensorflow.org/api_docs/python/tf/nn/weighted_cross_entropy_with_logits

    Examples
    --------
    >>> import numpy as np
    >>> from wce_numba import weighted_cross_entropy_with_logits
    >>> labels = np.array([1.0, 0.0, 0.5, 1.0], dtype=np.float32)
    >>> logits = np.array([-2.0, 2.0, 0.0, 3.0], dtype=np.float32)
    >>> loss = weighted_cross_entropy_with_logits(labels, logits, pos_weight=4.0)
    >>> loss.dtype
    dtype('float32')
    >>> np.round(loss, 6)
    array([8.507712, 2.126928, 1.732868, 0.194349], dtype=float32)

    Per-class weights broadcast along the last axis:

    >>> loss = weighted_cross_entropy_with_logits(
    ...     labels=[[1, 0], [1, 1]], logits=[[0.0, 0.0], [2.0, -2.0]],
    ...     pos_weight=[1.0, 3.0])
    >>> np.round(loss, 6)
    array([[0.693147, 0.693147],
           [0.126928, 6.380784]])

    Infinite logits give the limit of the loss:

    >>> weighted_cross_entropy_with_logits([1.0, 0.0], [np.inf, -np.inf], 2.0)
    array([0., 0.])

    Sample weights and a fused mean, as PyTorch's ``reduction='mean'``:

    >>> mean = weighted_cross_entropy_with_logits(
    ...     labels, logits, 4.0, weight=[1.0, 1.0, 0.0, 2.0], reduction="mean")
    >>> round(float(mean), 6)
    2.755835
    """
    return _loss_or_grad(
        "loss", labels, logits, pos_weight, name, weight, reduction, out, stream
    )


def weighted_cross_entropy_with_logits_grad(
    labels: ArrayLike,
    logits: ArrayLike,
    pos_weight: ArrayLike,
    name: str | None = None,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "none",
    out: np.ndarray | None = None,
    stream=None,
):
    """Derivative of the weighted cross entropy with respect to the logits.

    Elementwise ``d loss / d logits`` for the loss of
    :func:`weighted_cross_entropy_with_logits`, with the same arguments,
    shapes, dtypes and errors.

    Parameters
    ----------
    labels : array_like
        Targets, same shape as ``logits``.
    logits : array_like
        Unnormalized log-odds; their dtype decides the result's.
    pos_weight : array_like
        Weight of the positive term, a scalar or broadcastable to the logits.
    name : str, optional
        Accepted for symmetry with the loss (and TensorFlow) and ignored.
    weight : array_like, optional
        Sample weights, as for the loss: the gradient is multiplied by them.
    reduction : {'none', 'sum', 'mean'}, optional
        The reduction of the loss whose gradient is wanted: ``'none'`` and
        ``'sum'`` give ``weight * dloss/dx``, ``'mean'`` divides that by the
        number of elements. The result is elementwise in every case.
    out : numpy.ndarray, optional
        Array of the logits' shape and the result's dtype for the gradient
        (with CUDA arrays, a CUDA array).
    stream : optional
        Only with CUDA arrays: the CUDA stream to run on, as for the loss.

    Returns
    -------
    numpy.ndarray, numpy scalar or CUDA array
        The gradient with the logits' shape, or ``out`` when given. CUDA input
        gives a result on the device, of the logits' kind (CuPy, PyTorch, or a
        Numba device array), as for the loss.

    Raises
    ------
    ValueError
        On mismatched shapes or placement, as for the loss.
    TypeError
        On non-real input or a wrong ``out`` dtype, as for the loss.
    ImportError, RuntimeError
        For CUDA arrays without numba-cuda or without a GPU, as for the loss.

    See Also
    --------
    weighted_cross_entropy_with_logits : the loss itself.

    Notes
    -----
    With sigmoid(x) = 1 / (1 + exp(-x)), the gradient is

        d loss / dx = (1 - z) sigmoid(x) - q z sigmoid(-x),

    which equals TensorFlow's ``(1 - z) - l sigmoid(-x)`` but does not cancel
    for hard labels: for z = 0 or z = 1 a single product remains, within
    2 ULP of the exact value. It is finite at infinite logits.

    Examples
    --------
    >>> import numpy as np
    >>> from wce_numba import weighted_cross_entropy_with_logits_grad
    >>> grad = weighted_cross_entropy_with_logits_grad(
    ...     [1.0, 0.0, 0.5], [0.0, 0.0, 2.0], pos_weight=2.0)
    >>> np.round(grad, 6)
    array([-1.      ,  0.5     ,  0.321196])
    """
    return _loss_or_grad(
        "grad", labels, logits, pos_weight, name, weight, reduction, out, stream
    )


def weighted_cross_entropy_with_logits_value_and_grad(
    labels: ArrayLike,
    logits: ArrayLike,
    pos_weight: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    reduction: str = "mean",
    stream=None,
):
    """The reduced loss and its gradient with respect to the logits, in one pass.

    What a training step needs: the value of the (weighted, reduced) loss of
    :func:`weighted_cross_entropy_with_logits` and its gradient, computed
    together from a single read of the inputs, without the elementwise loss
    ever being stored. Equal to calling
    ``weighted_cross_entropy_with_logits(..., weight=weight,
    reduction=reduction)`` and ``weighted_cross_entropy_with_logits_grad``
    with the same arguments.

    Parameters
    ----------
    labels, logits, pos_weight : array_like
        As for :func:`weighted_cross_entropy_with_logits`.
    weight : array_like, optional
        Per-element sample weights, broadcastable to the logits' shape (one
        per example, shape ``(N, 1)``, for logits ``(N, C)``). Default: 1.
    reduction : {'mean', 'sum', 'none'}, optional
        ``'mean'`` (default): the sum of ``weight * loss`` divided by the
        number of elements, PyTorch's rule (not by the sum of the weights).
        ``'sum'``: that sum. ``'none'``: the elementwise ``weight * loss``.
    stream : optional
        Only with CUDA arrays: the CUDA stream to run on, as for the loss.

    Returns
    -------
    value : scalar, numpy.ndarray or CUDA array
        The reduced loss as a NumPy scalar of the result dtype (a 0-d array
        of the logits' kind for CUDA input; ``float(value)`` brings it to the
        host), or the elementwise array for ``reduction='none'``.
    grad : numpy.ndarray or CUDA array
        ``d value / d logits``, with the logits' shape: ``weight * dloss/dx``,
        divided by the number of elements for ``'mean'``.

    Raises
    ------
    ValueError, TypeError, ImportError, RuntimeError
        As for :func:`weighted_cross_entropy_with_logits`; ``weight`` is
        checked like ``pos_weight``, and an unknown ``reduction`` raises
        ValueError.

    See Also
    --------
    weighted_cross_entropy_with_logits : the loss alone.
    weighted_cross_entropy_with_logits_grad : the gradient alone.

    Notes
    -----
    On the CPU, float64 sums are exact (partial sums that keep their
    rounding errors, added with ``math.fsum``) and rounded once; float32
    terms are summed in float64, within 6e-14 relative (a millionth of a
    float32 ULP), then rounded to float32. Either way a reduced value is
    within the elementwise error bound of the exact sum or mean of the
    computed terms, whatever the number of elements. On the GPU each block
    sums its terms in float64 (see the README). The gradient of a
    mean is ``weight * dloss/dx / N`` rounded once, within half an ULP more
    than the elementwise gradient's bound.

    Examples
    --------
    >>> import numpy as np
    >>> from wce_numba import weighted_cross_entropy_with_logits_value_and_grad
    >>> labels = np.array([1.0, 0.0, 1.0, 0.0])
    >>> logits = np.array([2.0, -1.0, -0.5, 3.0])
    >>> value, grad = weighted_cross_entropy_with_logits_value_and_grad(
    ...     labels, logits, pos_weight=2.0, weight=[1.0, 1.0, 1.0, 0.5])
    >>> round(float(value), 6)
    1.009891
    >>> np.round(grad, 6)
    array([-0.059601,  0.067235, -0.31123 ,  0.119072])
    """
    _validate.check_reduction(reduction)
    return _fused(
        labels, logits, pos_weight, weight, reduction, True, True, None, stream
    )
