"""The rivals of the matching network, behind one small interface.

Every baseline has ``fit(X, y) -> self`` and ``score(X) -> scores`` (higher = more
suspicious). The scikit-learn ones (logistic regression, linear SVM, random forest,
histogram gradient boosting) and XGBoost are batch learners; the River ones (online
logistic regression, HalfSpaceTrees) also speak River's language, ``learn_one``,
``predict_proba_one`` and ``score_one``, and their ``fit`` is one ``learn_one`` pass in
the order given (time order, so they learn as they would in the stream).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 3)); y = (X[:, 0] > 1).astype(int)
>>> s = make_baseline("logistic_regression", C=1.0).fit(X, y).score(X)
>>> bool(s[y == 1].mean() > s[y == 0].mean())
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from river import anomaly, compose, linear_model, optim, preprocessing
from sklearn.base import ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

FloatArray = npt.NDArray[np.float64]


class Baseline(Protocol):
    """What the evaluation drivers need from a model."""

    name: str

    def fit(self, X: Any, y: Any) -> Baseline: ...  # noqa: N803 - the usual ML naming

    def score(self, X: Any) -> FloatArray: ...  # noqa: N803


class SklearnBaseline:
    """A scikit-learn (or XGBoost) classifier scored by P(fraud) or its decision function.

    >>> import numpy as np
    >>> m = SklearnBaseline("lr", LogisticRegression()).fit(np.eye(2), [0, 1])
    >>> m.score(np.eye(2)).shape
    (2,)
    """

    def __init__(self, name: str, estimator: Any) -> None:
        self.name = name
        self.estimator = estimator

    def fit(self, X: Any, y: Any) -> SklearnBaseline:  # noqa: N803
        self.estimator.fit(np.asarray(X, dtype=np.float64), np.asarray(y).astype(int))
        return self

    def score(self, X: Any) -> FloatArray:  # noqa: N803
        X = np.asarray(X, dtype=np.float64)  # noqa: N806
        if isinstance(self.estimator, RandomForestClassifier):
            # Parallel prediction adds the trees up in thread order, so the float sums (and
            # the scores' last digits) would change from run to run.
            self.estimator.n_jobs = 1
        if hasattr(self.estimator, "predict_proba"):
            return np.asarray(self.estimator.predict_proba(X)[:, 1], dtype=np.float64)
        return np.asarray(self.estimator.decision_function(X), dtype=np.float64)


def _row_dicts(X: Any, names: Sequence[str]) -> list[dict[str, float]]:  # noqa: N803
    rows = np.asarray(X, dtype=np.float64)
    return [dict(zip(names, row.tolist(), strict=True)) for row in rows]


class _RiverBaseline:
    """Shared batch helpers over a River model that learns one dict at a time."""

    name = "river"

    def __init__(self, feature_names: Sequence[str] | None) -> None:
        self.feature_names = list(feature_names) if feature_names is not None else None

    def _names(self, n_columns: int) -> list[str]:
        if self.feature_names is None:
            self.feature_names = [f"x{i}" for i in range(n_columns)]
        return self.feature_names

    def learn_one(self, x: Mapping[str, float], y: int) -> None:
        raise NotImplementedError

    def score_one(self, x: Mapping[str, float]) -> float:
        raise NotImplementedError

    def predict_proba_one(self, x: Mapping[str, float]) -> dict[int, float]:
        """``{0: 1 - s, 1: s}`` with ``s = score_one(x)`` in [0, 1]."""
        s = min(max(self.score_one(x), 0.0), 1.0)
        return {0: 1.0 - s, 1: s}

    def fit(self, X: Any, y: Any) -> _RiverBaseline:  # noqa: N803
        names = self._names(np.asarray(X).shape[1])
        for x, label in zip(_row_dicts(X, names), np.asarray(y).astype(int).tolist(), strict=True):
            self.learn_one(x, label)
        return self

    def score(self, X: Any) -> FloatArray:  # noqa: N803
        names = self._names(np.asarray(X).shape[1])
        return np.array([self.score_one(x) for x in _row_dicts(X, names)], dtype=np.float64)


class RiverLogisticRegression(_RiverBaseline):
    """River's online logistic regression on standardized features (running mean/var).

    >>> m = RiverLogisticRegression(lr=0.1)
    >>> for _ in range(50):
    ...     m.learn_one({"a": 1.0}, 1); m.learn_one({"a": -1.0}, 0)
    >>> m.predict_proba_one({"a": 1.0})[1] > 0.8
    True
    """

    name = "river_logistic_regression"

    def __init__(
        self,
        *,
        lr: float = 0.01,
        l2: float = 0.0,
        fraud_weight: float = 1.0,
        feature_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(feature_names)
        self.lr = lr
        self.l2 = l2
        self.fraud_weight = fraud_weight
        self.model = compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.SGD(lr), l2=l2),
        )

    def learn_one(self, x: Mapping[str, float], y: int) -> None:
        # River's LR takes a per-sample weight through the optimizer step size; repeating a
        # fraud `fraud_weight` times is the simplest way to counter 1:100 imbalance online.
        repeats = max(1, round(self.fraud_weight)) if y == 1 else 1
        for _ in range(repeats):
            self.model.learn_one(dict(x), bool(y))

    def score_one(self, x: Mapping[str, float]) -> float:
        return float(self.model.predict_proba_one(dict(x)).get(True, 0.0))


class HalfSpaceTreesDetector(_RiverBaseline):
    """River's HalfSpaceTrees anomaly detector on min-max scaled features (unsupervised).

    Labels are ignored unless ``legit_only``: then frauds are not learnt from, so they
    stay anomalous. ``score_one`` is River's anomaly score (higher = more unusual).

    >>> m = HalfSpaceTreesDetector(window_size=10, seed=0)
    >>> for i in range(40):
    ...     m.learn_one({"a": (i % 5) / 10}, 0)
    >>> m.score_one({"a": 5.0}) >= m.score_one({"a": 0.2})
    True
    """

    name = "half_space_trees"

    def __init__(
        self,
        *,
        n_trees: int = 25,
        height: int = 8,
        window_size: int = 250,
        legit_only: bool = True,
        seed: int = 0,
        feature_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(feature_names)
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.legit_only = legit_only
        self.seed = seed
        self.model = compose.Pipeline(
            preprocessing.MinMaxScaler(),
            anomaly.HalfSpaceTrees(
                n_trees=n_trees, height=height, window_size=window_size, seed=seed
            ),
        )

    def learn_one(self, x: Mapping[str, float], y: int = 0) -> None:
        if self.legit_only and y == 1:
            return
        self.model.learn_one(dict(x))

    def score_one(self, x: Mapping[str, float]) -> float:
        return float(self.model.score_one(dict(x)))


BASELINE_NAMES: tuple[str, ...] = (
    "logistic_regression",
    "linear_svm",
    "random_forest",
    "gradient_boosting",
    "xgboost",
    "river_logistic_regression",
    "half_space_trees",
)


def make_baseline(
    name: str,
    *,
    seed: int = 0,
    n_jobs: int = 1,
    feature_names: Sequence[str] | None = None,
    **params: Any,
) -> Baseline:
    """Build a baseline by name with hyperparameters ``params`` (their library's names).

    >>> make_baseline("random_forest", max_depth=3).name
    'random_forest'
    >>> make_baseline("knn")
    Traceback (most recent call last):
    ...
    ValueError: unknown baseline 'knn'; choose from logistic_regression, linear_svm, \
random_forest, gradient_boosting, xgboost, river_logistic_regression, half_space_trees
    """
    estimator: ClassifierMixin | Any
    if name == "logistic_regression":
        estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, **params))
    elif name == "linear_svm":
        estimator = make_pipeline(StandardScaler(), LinearSVC(random_state=seed, **params))
    elif name == "random_forest":
        estimator = RandomForestClassifier(random_state=seed, n_jobs=n_jobs, **params)
    elif name == "gradient_boosting":
        estimator = HistGradientBoostingClassifier(random_state=seed, **params)
    elif name == "xgboost":
        try:
            from xgboost import XGBClassifier
        except ImportError as exc:  # a dev extra, not a runtime dependency
            raise ImportError("the xgboost baseline needs `pip install xgboost`") from exc
        # base_score=0.5 reproduces the handbook's XGBoost rows (3.x otherwise fits it).
        estimator = XGBClassifier(random_state=seed, n_jobs=n_jobs, base_score=0.5, **params)
    elif name == "river_logistic_regression":
        return RiverLogisticRegression(feature_names=feature_names, **params)
    elif name == "half_space_trees":
        return HalfSpaceTreesDetector(seed=seed, feature_names=feature_names, **params)
    else:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINE_NAMES)}")
    return SklearnBaseline(name, estimator)
