"""Public API: TensorFlow's weighted cross entropy with logits, and its gradient."""

from __future__ import annotations

import numpy as np

from . import _collections, _device, _dispatch, _validate
from ._typing import ArrayLike


def _elementwise(
    quantity: str, labels, logits, pos_weight, out, name=None, stream=None
):
    """Validate, choose the compiled ufunc, compute, and return in the right dtype."""
    _validate.check_name(name)
    if _collections.is_collection(labels, logits, pos_weight):
        return _collections.run(quantity, labels, logits, pos_weight, out, stream)
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

    if out is None:
        if prepared.result_dtype == prepared.compute_dtype:
            return result
        return result.astype(prepared.result_dtype)
    if not direct:
        out[...] = result
    return out


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

    result = _elementwise(
        quantity,
        np.ma.filled(labels, 0),
        np.ma.filled(logits, 0),
        np.ma.filled(pos_weight, 1),
        None,
    )
    mask = (
        np.ma.getmaskarray(labels)
        | np.ma.getmaskarray(logits)
        | np.ma.getmaskarray(pos_weight)
    )
    return np.ma.MaskedArray(result, mask=mask)


def weighted_cross_entropy_with_logits(
    labels: ArrayLike,
    logits: ArrayLike,
    pos_weight: ArrayLike,
    name: str | None = None,
    *,
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
    out : numpy.ndarray, optional
        Array of the logits' shape and the result's dtype that receives the
        loss. It may be one of the inputs; otherwise inputs are never written.
        With CUDA arrays, a CUDA array of that shape and dtype.
    stream : optional
        Only with CUDA arrays: the CUDA stream to run on, as a Numba stream, a
        CuPy ``Stream``, a ``torch.cuda.Stream`` or a stream pointer (int).
        By default, the stream the logits' library exported with them (CuPy's
        or PyTorch's current stream), else CUDA's default stream.

    Returns
    -------
    numpy.ndarray, numpy scalar or CUDA array
        The elementwise loss with the logits' shape (a NumPy scalar for 0-d
        input, as NumPy's ufuncs return), or ``out`` when given. Masked-array
        input gives a masked array, masked where any input is. CUDA input
        gives a result on the same device, of the logits' kind (see Notes).

    Raises
    ------
    ValueError
        If labels and logits differ in shape, ``pos_weight`` does not
        broadcast to the logits' shape, ``out`` has the wrong shape, an input
        is a ragged nested list, or a finite label or pos_weight overflows
        the logits' dtype (1e40 with float32 logits). With CUDA arrays: if
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
    """
    return _elementwise("loss", labels, logits, pos_weight, out, name, stream)


def weighted_cross_entropy_with_logits_grad(
    labels: ArrayLike,
    logits: ArrayLike,
    pos_weight: ArrayLike,
    name: str | None = None,
    *,
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
    return _elementwise("grad", labels, logits, pos_weight, out, name, stream)
