"""Boosting objectives: the hessian's accuracy, and training equal to the built-ins."""

import re

import numpy as np
import pytest
from reference import exact_grad, exact_hess, max_ulp_error

from wce_numba import weighted_cross_entropy_with_logits_grad
from wce_numba.boosting import (
    grad_hess,
    lightgbm_objective,
    lightgbm_sklearn_objective,
    xgboost_objective,
    xgboost_sklearn_objective,
)
from wce_numba.demo import load_digits_task

# The contract of the package's derivatives: 2 ULP in float64, 3 in float32
# (the largest seen for the hessian over these inputs: 0.57 and 1.06).
ULP_BOUND = {np.float32: 3.0, np.float64: 2.0}
POS_WEIGHT = 4.0
ROUNDS = 20


def _hessian(labels, logits, pos_weight):
    return grad_hess(labels, logits, pos_weight)[1]


def _gradient(labels, logits, pos_weight):
    return grad_hess(labels, logits, pos_weight)[0]


def _logits_over_every_scale(dtype, count, rng):
    """Logits from 1e-4 to past the subnormal cut-off of exp(-|x|), both signs."""
    top = 6.9 if dtype == np.float64 else 4.7  # ln 1000 and ln 110
    magnitude = np.exp(rng.uniform(-9.0, top, count))
    return (magnitude * rng.choice([-1.0, 1.0], count)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pos_weight", [0.0, 0.25, 1.0, 16.0, 1e6])
def test_hessian_is_within_the_ulp_bound_of_the_exact_value(dtype, pos_weight):
    rng = np.random.default_rng(7)
    logits = _logits_over_every_scale(dtype, 400, rng)
    labels = rng.choice([0.0, 1.0, 0.5, 0.1], logits.size).astype(dtype)

    error = max_ulp_error(_hessian, exact_hess, labels, logits, dtype(pos_weight))

    assert error <= ULP_BOUND[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hessian_at_the_extremes_is_within_the_ulp_bound(dtype):
    finfo = np.finfo(dtype)
    magnitudes = np.array(
        [0.0, finfo.smallest_subnormal, 1e-30, 1.0, 87.0, 88.7, 103.0, 700.0,
         709.0, 744.0, 746.0, float(finfo.max)]
    ).astype(dtype)  # fmt: skip
    logits = np.concatenate([magnitudes, -magnitudes])
    labels = np.ones_like(logits)

    for pos_weight in (1e-3, 1.0, 1e6):
        error = max_ulp_error(_hessian, exact_hess, labels, logits, dtype(pos_weight))
        assert error <= ULP_BOUND[dtype], pos_weight


def test_hessian_is_the_central_difference_of_the_gradient():
    rng = np.random.default_rng(3)
    logits = rng.uniform(-8.0, 8.0, 500)
    labels = rng.choice([0.0, 1.0, 0.3], logits.size)
    step = 1e-5

    def gradient(x):
        return weighted_cross_entropy_with_logits_grad(labels, x, POS_WEIGHT)

    difference = (gradient(logits + step) - gradient(logits - step)) / (2 * step)
    _, hess = grad_hess(labels, logits, POS_WEIGHT)

    # Truncation error h^2 |f'''| / 6 <= 1e-10 * q, rounding eps |g| / h
    # <= 1e-10 * q: an absolute 1e-8 leaves room for both.
    np.testing.assert_allclose(hess, difference, rtol=0, atol=1e-8)


def test_gradient_is_bitwise_the_public_gradient():
    rng = np.random.default_rng(4)
    logits = rng.normal(0.0, 5.0, 1000).astype(np.float32)
    labels = (rng.random(logits.size) < 0.2).astype(np.float32)

    grad, _ = grad_hess(labels, logits, POS_WEIGHT)

    expected = weighted_cross_entropy_with_logits_grad(labels, logits, POS_WEIGHT)
    np.testing.assert_array_equal(grad, expected)
    assert grad.dtype == np.float32


def test_gradient_meets_the_ulp_bound_too():
    rng = np.random.default_rng(5)
    logits = _logits_over_every_scale(np.float64, 300, rng)
    labels = rng.choice([0.0, 1.0], logits.size)

    error = max_ulp_error(_gradient, exact_grad, labels, logits, 3.0)

    assert error <= ULP_BOUND[np.float64]


def test_sample_weights_scale_both_derivatives():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(20, 3))
    labels = (rng.random(logits.shape) < 0.5).astype(np.float64)
    weight = rng.uniform(0.0, 3.0, logits.shape)

    grad, hess = grad_hess(labels, logits, POS_WEIGHT, weight)

    unweighted_grad, unweighted_hess = grad_hess(labels, logits, POS_WEIGHT)
    # One rounding of a product on each side: equal to 1 ULP.
    np.testing.assert_allclose(grad, weight * unweighted_grad, rtol=2.3e-16, atol=0)
    np.testing.assert_allclose(hess, weight * unweighted_hess, rtol=2.3e-16, atol=0)
    assert grad.shape == hess.shape == logits.shape


def test_inputs_are_not_modified():
    logits = np.linspace(-3, 3, 7)
    labels = np.ones(7)
    weight = np.full(7, 2.0)
    copies = [a.copy() for a in (logits, labels, weight)]

    grad_hess(labels, logits, POS_WEIGHT, weight)

    for array, copy in zip((logits, labels, weight), copies, strict=True):
        np.testing.assert_array_equal(array, copy)


def test_a_non_scalar_pos_weight_is_refused_when_the_objective_is_made():
    with pytest.raises(ValueError, match=r"pos_weight must be a scalar.*\(2,\)"):
        xgboost_objective([1.0, 2.0])


def test_weight_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"weight must have the logits' shape \(3,\)"):
        grad_hess([0, 1, 1], [0.0, 1.0, 2.0], 2.0, weight=[1.0, 2.0])


@pytest.fixture(scope="module")
def digits():
    return load_digits_task()


@pytest.fixture(scope="module")
def sample_weight(digits):
    return np.random.default_rng(8).uniform(0.5, 2.0, digits.train_labels.size)


def _tree_structure(dump: str) -> str:
    """An XGBoost JSON tree dump without its leaf values, gains and covers."""
    return re.sub(r'"(leaf|gain|cover)": [-+0-9.eE]+', "", dump)


@pytest.mark.parametrize("weighted", [False, True])
def test_xgboost_custom_objective_grows_the_built_in_trees(
    digits, sample_weight, weighted
):
    xgb = pytest.importorskip("xgboost")

    def matrix(features, labels, weight=None):
        # A margin of 0 to start from in both runs: the built-in objective
        # would otherwise estimate its own intercept from the labels.
        zeros = np.zeros(labels.size)
        return xgb.DMatrix(features, label=labels, weight=weight, base_margin=zeros)

    train = matrix(
        digits.train_features, digits.train_labels, sample_weight if weighted else None
    )
    params = {"tree_method": "hist", "max_depth": 3, "eta": 0.3, "seed": 0}
    built_in = xgb.train(
        {**params, "objective": "binary:logistic", "scale_pos_weight": POS_WEIGHT},
        train,
        ROUNDS,
    )
    custom = xgb.train(params, train, ROUNDS, obj=xgboost_objective(POS_WEIGHT))

    test = matrix(digits.test_features, digits.test_labels)
    built_in_margin = built_in.predict(test, output_margin=True)
    custom_margin = custom.predict(test, output_margin=True)
    # XGBoost forms sigmoid(x) - z in float32 (an absolute error up to
    # 6e-8 per gradient), this package rounds the exact value once: over 20
    # rounds the leaves drift by a few float32 ULPs of margins up to ~10.
    np.testing.assert_allclose(custom_margin, built_in_margin, rtol=0, atol=2e-6)
    probability = 1 / (1 + np.exp(-custom_margin.astype(np.float64)))
    built_in_probability = 1 / (1 + np.exp(-built_in_margin.astype(np.float64)))
    np.testing.assert_allclose(probability, built_in_probability, rtol=0, atol=1e-6)
    assert list(map(_tree_structure, custom.get_dump(dump_format="json"))) == list(
        map(_tree_structure, built_in.get_dump(dump_format="json"))
    )


def test_xgboost_sklearn_objective_matches_scale_pos_weight(digits, sample_weight):
    xgb = pytest.importorskip("xgboost")
    params = {"n_estimators": ROUNDS, "max_depth": 3, "learning_rate": 0.3}
    # base_score 0.5 (a margin of 0) in both: the classifier keeps the
    # logistic link for a callable objective and would otherwise estimate it.
    built_in = xgb.XGBClassifier(**params, base_score=0.5, scale_pos_weight=POS_WEIGHT)
    custom = xgb.XGBClassifier(
        **params, base_score=0.5, objective=xgboost_sklearn_objective(POS_WEIGHT)
    )

    for model in (built_in, custom):
        model.fit(
            digits.train_features, digits.train_labels, sample_weight=sample_weight
        )

    np.testing.assert_allclose(
        custom.predict_proba(digits.test_features),
        built_in.predict_proba(digits.test_features),
        rtol=0,
        atol=1e-6,
    )


def _lightgbm_structure(tree: dict):
    if "leaf_value" in tree:
        return "leaf"
    return (
        tree["split_feature"],
        tree["threshold"],
        _lightgbm_structure(tree["left_child"]),
        _lightgbm_structure(tree["right_child"]),
    )


LIGHTGBM_PARAMS = {
    "num_leaves": 8,
    "learning_rate": 0.3,
    "verbose": -1,
    "seed": 0,
    "deterministic": True,
    "force_row_wise": True,
}


@pytest.mark.parametrize("weighted", [False, True])
def test_lightgbm_custom_objective_grows_the_built_in_trees(
    digits, sample_weight, weighted
):
    lgb = pytest.importorskip("lightgbm")

    def train(objective_params):
        data = lgb.Dataset(
            digits.train_features,
            digits.train_labels,
            weight=sample_weight if weighted else None,
        )
        return lgb.train({**LIGHTGBM_PARAMS, **objective_params}, data, ROUNDS)

    # A custom objective starts from a score of 0; so must the built-in.
    built_in = train(
        {
            "objective": "binary",
            "scale_pos_weight": POS_WEIGHT,
            "boost_from_average": False,
        }
    )
    custom = train({"objective": lightgbm_objective(POS_WEIGHT)})

    # LightGBM rounds both gradients to float32 before building histograms;
    # its double-precision built-in and this package round to the same floats
    # here, so the scores agree far below the stated 1e-6.
    np.testing.assert_allclose(
        custom.predict(digits.test_features, raw_score=True),
        built_in.predict(digits.test_features, raw_score=True),
        rtol=0,
        atol=1e-6,
    )
    structures = [
        [
            _lightgbm_structure(tree["tree_structure"])
            for tree in model.dump_model()["tree_info"]
        ]
        for model in (custom, built_in)
    ]
    assert structures[0] == structures[1]


def test_lightgbm_sklearn_objective_applies_sample_weights(digits, sample_weight):
    lgb = pytest.importorskip("lightgbm")
    params = {
        "n_estimators": ROUNDS,
        "num_leaves": 8,
        "learning_rate": 0.3,
        "verbose": -1,
        "deterministic": True,
        "force_row_wise": True,
    }
    built_in = lgb.LGBMClassifier(
        **params, scale_pos_weight=POS_WEIGHT, boost_from_average=False
    )
    custom = lgb.LGBMClassifier(
        **params, objective=lightgbm_sklearn_objective(POS_WEIGHT)
    )

    for model in (built_in, custom):
        model.fit(
            digits.train_features, digits.train_labels, sample_weight=sample_weight
        )

    np.testing.assert_allclose(
        custom.predict(digits.test_features, raw_score=True),
        built_in.predict(digits.test_features, raw_score=True),
        rtol=0,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("pos_weight", "error", "message"),
    [
        ("a", TypeError, r"pos_weight must have a real dtype"),
        (None, TypeError, r"pos_weight must"),
        (np.nan, ValueError, r"pos_weight must be finite"),
        (np.inf, ValueError, r"pos_weight must be finite"),
    ],
)
def test_objectives_refuse_a_bad_pos_weight_when_made(pos_weight, error, message):
    for make in (xgboost_objective, lightgbm_objective):
        with pytest.raises(error, match=message):
            make(pos_weight)
