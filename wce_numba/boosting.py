"""Custom objectives for gradient boosting: XGBoost and LightGBM.

A booster fits each tree to the first and second derivatives of the loss in
the raw margin x (the log-odds the trees add up). For the weighted cross
entropy with z = label, q = pos_weight and l = 1 - z + q z they are

    gradient = (1 - z) sigmoid(x) - q z sigmoid(-x)
    hessian  = l sigmoid(x) sigmoid(-x),

both computed in one fused pass by this package's kernels and multiplied by
the sample weights, as the built-in objectives do. For hard labels this is
the loss of XGBoost's ``binary:logistic`` with ``scale_pos_weight = q`` and
LightGBM's ``binary`` with ``scale_pos_weight = q``; soft labels and any
``pos_weight`` work the same way.

Neither library is imported here: the objectives only call methods of the
data set they are given (``get_label``, ``get_weight``), so this module
needs only NumPy and Numba.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import _objective, _validate
from ._typing import ArrayLike


def grad_hess(
    labels: ArrayLike,
    logits: ArrayLike,
    pos_weight: float,
    weight: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and hessian of the weighted cross entropy in the logits.

    Parameters
    ----------
    labels : array_like
        Targets in [0, 1], the same shape as ``logits``.
    logits : array_like
        Raw margins (log-odds). float32 and float64 are kept; other dtypes
        follow the rules of :func:`wce_numba.weighted_cross_entropy_with_logits`.
    pos_weight : float
        Weight of the positive term, one scalar.
    weight : array_like, optional
        Per-element sample weights of the logits' shape; both derivatives are
        multiplied by them. None means 1.

    Returns
    -------
    grad, hess : numpy.ndarray
        Arrays of the logits' shape and the result's dtype:
        ``weight * ((1 - z) sigmoid(x) - q z sigmoid(-x))`` and
        ``weight * l sigmoid(x) sigmoid(-x)`` with l = 1 - z + q z.

    Raises
    ------
    ValueError
        If labels and logits differ in shape, ``pos_weight`` is not a scalar
        or ``weight`` does not have the logits' shape.
    TypeError
        If an input is not real.

    Notes
    -----
    The hessian is formed as ``l e / (1 + e)^2`` with e = exp(-|x|), an even
    function of x that neither overflows nor cancels; it is within 2 ULP of
    the exact value for labels in [0, 1] and pos_weight >= 0. The gradient is
    the one of :func:`wce_numba.weighted_cross_entropy_with_logits_grad`.

    Examples
    --------
    >>> import numpy as np
    >>> from wce_numba.boosting import grad_hess
    >>> grad, hess = grad_hess([1.0, 0.0], [0.0, 2.0], pos_weight=3.0)
    >>> np.round(grad, 6), np.round(hess, 6)
    (array([-1.5     ,  0.880797]), array([0.75    , 0.104994]))
    """
    _check_scalar(pos_weight)
    prepared = _validate.prepare(labels, logits, pos_weight)
    dtype = prepared.compute_dtype
    shape = prepared.logits.shape
    if weight is None:
        sample_weight = dtype.type(1)
    else:
        sample_weight = _validate.as_real_array(weight, "weight")
        if sample_weight.shape != shape:
            raise ValueError(
                f"weight must have the logits' shape {shape}, got weight shape "
                f"{sample_weight.shape}"
            )
        sample_weight = np.ascontiguousarray(
            _validate.cast(sample_weight, dtype, "weight")
        ).ravel()

    grad = np.empty(shape, dtype)
    hess = np.empty(shape, dtype)
    _objective.fill_grad_hess(
        np.ascontiguousarray(prepared.labels).ravel(),
        np.ascontiguousarray(prepared.logits).ravel(),
        dtype.type(prepared.pos_weight),
        sample_weight,
        grad.reshape(-1),
        hess.reshape(-1),
    )
    return grad, hess


def _sample_weight(weight) -> np.ndarray | None:
    """A data set's sample weights, or None where it has none (an empty array)."""
    if weight is None or np.size(weight) == 0:
        return None
    return weight


def _labels_like(labels, predictions: np.ndarray) -> np.ndarray:
    """The data set's labels in the predictions' shape ((n,) or (n, 1))."""
    return np.asarray(labels).reshape(np.shape(predictions))


def _data_set_objective(pos_weight: float):
    """``objective(predictions, data) -> (grad, hess)`` for the training APIs.

    XGBoost's DMatrix and LightGBM's Dataset both answer ``get_label()`` and
    ``get_weight()`` (an empty array or None where there are no weights).
    """
    _check_scalar(pos_weight)

    def objective(predictions: np.ndarray, data) -> tuple[np.ndarray, np.ndarray]:
        labels = _labels_like(data.get_label(), predictions)
        weight = _sample_weight(data.get_weight())
        if weight is not None:
            weight = np.reshape(weight, np.shape(predictions))
        return grad_hess(labels, predictions, pos_weight, weight)

    return objective


def xgboost_objective(
    pos_weight: float,
) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """The weighted cross entropy as a custom objective for ``xgboost.train``.

    Parameters
    ----------
    pos_weight : float
        Weight of the positive term.

    Returns
    -------
    callable
        ``objective(predt, dtrain) -> (grad, hess)``, for
        ``xgboost.train(params, dtrain, obj=objective)``: ``predt`` are the
        raw margins, the labels and sample weights come from the DMatrix
        ``dtrain``. The trained booster outputs margins of the log-odds
        (predict with ``output_margin=True``, or set
        ``params["objective"] = "binary:logistic"`` to get probabilities).

    See Also
    --------
    xgboost_sklearn_objective : for ``xgboost.XGBClassifier(objective=...)``.

    Notes
    -----
    With hard labels, training with this objective gives the trees of the
    built-in ``binary:logistic`` with ``scale_pos_weight = pos_weight``, up
    to the rounding of the gradients (the built-in forms ``sigmoid(x) - z``
    in float32).

    Examples
    --------
    >>> import numpy as np
    >>> import xgboost as xgb
    >>> from wce_numba.boosting import xgboost_objective
    >>> features = np.repeat([[0.0], [1.0], [2.0], [3.0]], 10, axis=0)
    >>> dtrain = xgb.DMatrix(features, label=np.repeat([0, 0, 1, 1], 10))
    >>> booster = xgb.train(
    ...     {"max_depth": 1, "base_score": 0.0}, dtrain, num_boost_round=5,
    ...     obj=xgboost_objective(pos_weight=2.0))
    >>> margins = booster.predict(dtrain, output_margin=True)
    >>> bool(margins[0] < 0 < margins[-1])
    True
    """
    return _data_set_objective(pos_weight)


def xgboost_sklearn_objective(
    pos_weight: float,
) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """The weighted cross entropy for ``xgboost.XGBClassifier(objective=...)``.

    Parameters
    ----------
    pos_weight : float
        Weight of the positive term.

    Returns
    -------
    callable
        ``objective(y_true, y_pred, *, sample_weight=None) -> (grad, hess)``,
        the signature XGBoost's scikit-learn interface calls (with the
        ``sample_weight`` given to ``fit``). ``XGBClassifier`` keeps its
        logistic link: ``predict_proba`` gives sigmoid(margin).

    Examples
    --------
    >>> import numpy as np
    >>> from xgboost import XGBClassifier
    >>> from wce_numba.boosting import xgboost_sklearn_objective
    >>> features = np.repeat([[0.0], [1.0], [2.0], [3.0]], 10, axis=0)
    >>> model = XGBClassifier(
    ...     n_estimators=5, max_depth=1, base_score=0.5,
    ...     objective=xgboost_sklearn_objective(pos_weight=2.0))
    >>> model = model.fit(features, np.repeat([0, 0, 1, 1], 10))
    >>> model.predict(np.array([[0.0], [3.0]])).tolist()
    [0, 1]
    """
    _check_scalar(pos_weight)

    def objective(y_true, y_pred, *, sample_weight=None):
        labels = _labels_like(y_true, y_pred)
        return grad_hess(labels, y_pred, pos_weight, _sample_weight(sample_weight))

    return objective


def lightgbm_objective(
    pos_weight: float,
) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """The weighted cross entropy as a custom objective for ``lightgbm.train``.

    Parameters
    ----------
    pos_weight : float
        Weight of the positive term.

    Returns
    -------
    callable
        ``objective(preds, train_data) -> (grad, hess)``, to pass as
        ``params["objective"]`` to ``lightgbm.train`` (LightGBM 4): ``preds``
        are the raw scores, labels and weights come from the ``Dataset``.
        The booster then predicts raw scores (log-odds).

    See Also
    --------
    lightgbm_sklearn_objective : for ``lightgbm.LGBMClassifier(objective=...)``.

    Notes
    -----
    With hard labels, training with this objective gives the trees of the
    built-in ``binary`` objective with ``scale_pos_weight = pos_weight`` and
    ``boost_from_average = False`` (a custom objective starts from 0).

    Examples
    --------
    >>> import numpy as np
    >>> import lightgbm as lgb
    >>> from wce_numba.boosting import lightgbm_objective
    >>> features = np.repeat([[0.0], [1.0], [2.0], [3.0]], 10, axis=0)
    >>> labels = np.repeat([0, 0, 1, 1], 10)
    >>> params = {"objective": lightgbm_objective(pos_weight=2.0),
    ...           "num_leaves": 2, "min_data_in_leaf": 1, "verbose": -1}
    >>> booster = lgb.train(params, lgb.Dataset(features, labels),
    ...                     num_boost_round=5)
    >>> scores = booster.predict(np.array([[0.0], [3.0]]))
    >>> bool(scores[0] < 0 < scores[1])
    True
    """
    return _data_set_objective(pos_weight)


def lightgbm_sklearn_objective(
    pos_weight: float,
) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """The weighted cross entropy for ``lightgbm.LGBMClassifier(objective=...)``.

    Parameters
    ----------
    pos_weight : float
        Weight of the positive term.

    Returns
    -------
    callable
        ``objective(y_true, y_pred, weight) -> (grad, hess)``, the
        three-argument form LightGBM's scikit-learn interface calls with the
        ``sample_weight`` given to ``fit`` (None without). With a custom
        objective LightGBM cannot know the link: predict log-odds with
        ``predict(X, raw_score=True)`` (``predict`` and ``predict_proba``
        warn and return raw scores too).

    Examples
    --------
    >>> import numpy as np
    >>> from lightgbm import LGBMClassifier
    >>> from wce_numba.boosting import lightgbm_sklearn_objective
    >>> features = np.repeat([[0.0], [1.0], [2.0], [3.0]], 10, axis=0)
    >>> model = LGBMClassifier(
    ...     n_estimators=5, num_leaves=2, min_child_samples=1, verbose=-1,
    ...     objective=lightgbm_sklearn_objective(pos_weight=2.0))
    >>> model = model.fit(features, np.repeat([0, 0, 1, 1], 10))
    >>> scores = model.predict(np.array([[0.0], [3.0]]), raw_score=True)
    >>> bool(scores[0] < 0 < scores[1])
    True
    """
    _check_scalar(pos_weight)

    def objective(y_true, y_pred, weight):
        labels = _labels_like(y_true, y_pred)
        return grad_hess(labels, y_pred, pos_weight, _sample_weight(weight))

    return objective


def _check_scalar(pos_weight) -> None:
    """Refuse a pos_weight that is not one finite real number, up front.

    Checked when the objective is made, not at the first boosting round. A
    NaN or infinite weight would make every gradient NaN or infinite, and the
    booster would train on them without a word.
    """
    value = _validate.as_real_array(pos_weight, "pos_weight")
    if value.ndim != 0:
        raise ValueError(
            "pos_weight must be a scalar for a boosting objective, got shape "
            f"{value.shape}"
        )
    if not np.isfinite(value):
        raise ValueError(
            f"pos_weight must be finite for a boosting objective, got {value}"
        )
