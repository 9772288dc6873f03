"""Every baseline learns a simple fraud pattern; River ones speak River's language."""

from __future__ import annotations

import numpy as np
import pytest

from models.baselines import (
    BASELINE_NAMES,
    HalfSpaceTreesDetector,
    RiverLogisticRegression,
    make_baseline,
)
from models.evaluation.metrics import auc_roc


def _toy(n: int = 1200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frauds (5 %) have large amounts and a high terminal risk; legit traffic does not."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.05).astype(int)
    X = rng.normal(size=(n, 4))
    X[:, 0] += 3.0 * y
    X[:, 1] += 2.0 * y
    return X, y


SMALL = {
    "random_forest": {"n_estimators": 20, "max_depth": 5},
    "gradient_boosting": {"max_iter": 30},
    "xgboost": {"n_estimators": 30, "max_depth": 3},
    "river_logistic_regression": {"lr": 0.05, "fraud_weight": 5},
    "half_space_trees": {"n_trees": 10, "window_size": 100},
}


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_each_baseline_ranks_frauds_above_legit(name: str) -> None:
    X, y = _toy()
    X_test, y_test = _toy(seed=1)
    model = make_baseline(name, seed=0, **SMALL.get(name, {})).fit(X, y)
    scores = model.score(X_test)
    assert scores.shape == (len(y_test),) and np.isfinite(scores).all()
    # HalfSpaceTrees never sees a label: an anomaly score is a weaker but real signal.
    assert auc_roc(y_test, scores) > (0.75 if name == "half_space_trees" else 0.9)


@pytest.mark.parametrize("name", ["random_forest", "xgboost", "half_space_trees"])
def test_same_seed_same_scores(name: str) -> None:
    X, y = _toy()
    a = make_baseline(name, seed=3, n_jobs=2, **SMALL[name]).fit(X, y).score(X)
    b = make_baseline(name, seed=3, n_jobs=2, **SMALL[name]).fit(X, y).score(X)
    np.testing.assert_array_equal(a, b)


def test_river_logistic_regression_learns_one_at_a_time() -> None:
    m = RiverLogisticRegression(lr=0.1)
    before = m.predict_proba_one({"amount": 5.0})
    assert before[1] == pytest.approx(0.5)
    for _ in range(100):
        m.learn_one({"amount": 5.0}, 1)
        m.learn_one({"amount": -5.0}, 0)
    proba = m.predict_proba_one({"amount": 5.0})
    assert sum(proba.values()) == pytest.approx(1.0)
    assert proba[1] > 0.8 and m.score_one({"amount": -5.0}) < 0.2


def test_fraud_weight_pushes_fraud_scores_up_on_imbalanced_data() -> None:
    X, y = _toy()
    plain = make_baseline("river_logistic_regression", lr=0.05).fit(X, y).score(X)
    weighted = make_baseline("river_logistic_regression", lr=0.05, fraud_weight=10).fit(X, y)
    assert weighted.score(X)[y == 1].mean() > plain[y == 1].mean() + 0.05


def test_half_space_trees_does_not_learn_from_frauds_by_default() -> None:
    m = HalfSpaceTreesDetector(n_trees=5, window_size=20, seed=0)
    for i in range(60):
        m.learn_one({"a": (i % 10) / 10}, 0)
    before = m.score_one({"a": 0.95})
    for _ in range(60):
        m.learn_one({"a": 0.95}, 1)  # ignored: legit_only
    assert m.score_one({"a": 0.95}) == before
    assert 0.0 <= m.predict_proba_one({"a": 0.95})[1] <= 1.0


def test_feature_names_become_the_dict_keys() -> None:
    m = make_baseline("river_logistic_regression", feature_names=["amount", "risk"])
    m.fit(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1, 0]))
    assert isinstance(m, RiverLogisticRegression)
    assert m.feature_names == ["amount", "risk"]


def test_unknown_baseline_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown baseline 'knn'"):
        make_baseline("knn")
