"""Fit-and-score helpers the protocol drivers share: tuned baselines and few-shot heads.

Baselines are tuned on the validation split only: every grid point is fitted on the
validation training window and scored on the validation window; the best average
precision wins, and its F1-best threshold on those validation scores is kept for the
threshold metrics. The final model is then refitted on the real training window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.adaptation import AdaptedModel
from models.artifacts import Artifact, SupportSet
from models.baselines import make_baseline
from models.evaluation.metrics import average_precision, best_f1_threshold
from models.features import FeatureFrame
from models.meta_train import MetaTrainConfig
from models.scorer import Scorer
from models.training import SupportConfig, fit_matching_network, score_rows

N_JOBS = 2  # the machine's two cores; scikit-learn and XGBoost only

#: Validation grids (first point = the default). Small on purpose: the whole handbook
#: report must run in minutes on two shared cores.
GRIDS: dict[str, list[dict[str, Any]]] = {
    "logistic_regression": [{"C": 1.0}, {"C": 0.01}],
    "linear_svm": [{"C": 1.0}, {"C": 0.01}],
    "random_forest": [
        {"n_estimators": 100, "max_samples": 0.05, "min_samples_leaf": 1},
        {"n_estimators": 100, "max_samples": 0.05, "min_samples_leaf": 5},
    ],
    "gradient_boosting": [
        {"max_iter": 200, "learning_rate": 0.05},
        {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 15, "l2_regularization": 1.0},
    ],
    "xgboost": [
        {"n_estimators": 200, "max_depth": 4, "learning_rate": 0.1},
        {"n_estimators": 200, "max_depth": 6, "learning_rate": 0.05},
    ],
    "river_logistic_regression": [{"lr": 0.01}],
    "half_space_trees": [{"n_trees": 25, "height": 8, "window_size": 250}],
}

#: HalfSpaceTrees only keeps the mass profile of its latest windows, so it learns from the
#: most recent training rows (rows are in time order) rather than the whole history.
TAIL_ROWS: dict[str, int] = {"half_space_trees": 25_000}

#: Fewer trees and iterations, for the small-scale test run.
SMALL_GRIDS: dict[str, list[dict[str, Any]]] = {
    "logistic_regression": [{"C": 1.0}],
    "linear_svm": [{"C": 1.0}],
    "random_forest": [{"n_estimators": 30, "min_samples_leaf": 2}],
    "gradient_boosting": [{"max_iter": 50}],
    "xgboost": [{"n_estimators": 50, "max_depth": 4, "learning_rate": 0.1}],
    "river_logistic_regression": [{"lr": 0.01}],
    "half_space_trees": [{"n_trees": 10, "height": 6, "window_size": 100}],
}


@dataclass
class Fitted:
    """A model's final test scores, the threshold chosen on validation, and what it took."""

    name: str
    scores: np.ndarray
    threshold: float
    params: dict[str, Any]
    seconds: float
    cpu_seconds: float
    validation: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def grid_for(name: str, small: bool, tune: bool) -> list[dict[str, Any]]:
    """The grid to search for ``name`` (one point when not tuning).

    >>> grid_for("logistic_regression", small=False, tune=False)
    [{'C': 1.0}]
    """
    grid = (SMALL_GRIDS if small else GRIDS)[name]
    return grid if tune else grid[:1]


def tune_and_fit_baseline(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    val_train: np.ndarray,
    val_test: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    grid: list[dict[str, Any]],
    feature_names: tuple[str, ...],
    seed: int = 0,
) -> Fitted:
    """Pick params on validation by AP, then refit on ``train`` and score ``test``."""
    started, cpu_started = time.perf_counter(), time.process_time()
    val_train, train = _tail(name, val_train), _tail(name, train)
    best: tuple[float, dict[str, Any], np.ndarray] | None = None
    tried: list[dict[str, Any]] = []
    for params in grid:
        model = make_baseline(name, seed=seed, n_jobs=N_JOBS, feature_names=feature_names, **params)
        scores = model.fit(x[val_train], y[val_train]).score(x[val_test])
        ap = average_precision(y[val_test], scores)
        tried.append({"params": params, "val_average_precision": ap})
        if best is None or ap > best[0]:
            best = (ap, params, scores)
    assert best is not None  # noqa: S101 - grids are never empty
    val_ap, params, val_scores = best
    threshold = best_f1_threshold(y[val_test], val_scores)
    model = make_baseline(name, seed=seed, n_jobs=N_JOBS, feature_names=feature_names, **params)
    scores = model.fit(x[train], y[train]).score(x[test])
    return Fitted(
        name=name,
        scores=scores,
        threshold=threshold,
        params=params,
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
        validation={"average_precision": val_ap},
        info={"grid": tried},
    )


def _tail(name: str, mask: np.ndarray) -> np.ndarray:
    """``mask`` limited to its last ``TAIL_ROWS[name]`` rows (unchanged for other models)."""
    limit = TAIL_ROWS.get(name)
    rows = np.flatnonzero(mask)
    if limit is None or rows.size <= limit:
        return mask
    out = np.zeros_like(mask)
    out[rows[-limit:]] = True
    return out


def meta_config(head: str, seed: int, n_episodes: int | None) -> MetaTrainConfig:
    """D1's default meta-training config with another head (or ``"mlp"``: supervised).

    >>> meta_config("mlp", 0, 10).algorithm, meta_config("siamese", 0, 10).head
    ('supervised', 'siamese')
    """
    from models.default_model import default_config

    config = default_config(seed, n_episodes)
    if head == "mlp":
        return config.with_(algorithm="supervised")
    return config.with_(head=head)


def fit_head(
    tx: pd.DataFrame,
    features: FeatureFrame,
    train: np.ndarray,
    *,
    head: str,
    seed: int,
    n_episodes: int | None,
    support: SupportConfig | None = None,
) -> Artifact:
    """Meta-train one head on the ``train`` rows (D1's :func:`fit_matching_network`)."""
    config = meta_config(head, seed, n_episodes)
    return fit_matching_network(tx, features, train, config, support or SupportConfig(seed=seed))


def score_head(artifact: Artifact, x_raw: np.ndarray) -> np.ndarray:
    """Scores of raw rows: the stream's numpy scorer for a matching network, torch otherwise."""
    if artifact.model.kind == "matching":
        return np.asarray(score_rows(artifact, x_raw), dtype=np.float64)
    adapted = AdaptedModel(
        artifact.model,
        to_tensor(artifact.transform.transform(artifact.support.x)),
        to_tensor(artifact.support.y.astype(np.float32)),
    )
    # Small batches: the Siamese head builds a [batch, support, dim] tensor.
    query = artifact.transform.transform(x_raw)
    return np.asarray(adapted.predict_proba(query, batch_size=512), np.float64)


def support_scorer(
    model: Any, transform: Any, x_raw: np.ndarray, y: np.ndarray, group: Any = None
) -> Scorer:
    """The stream's numpy scorer with a given support set of raw rows.

    ``group`` tags fraud patterns: each counts as its own class and the highest wins.
    """
    ids = [f"case{i}" for i in range(len(y))]
    return Scorer(model, transform, SupportSet.build(x_raw, y, ids, group), top_k=0)


def fit_and_score_head(
    tx: pd.DataFrame,
    features: FeatureFrame,
    val_train: np.ndarray,
    val_test: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    head: str,
    seed: int,
    n_episodes: int | None,
) -> Fitted:
    """Validation fit (for the threshold), final fit, test scores."""
    started, cpu_started = time.perf_counter(), time.process_time()
    y = tx["is_fraud"].to_numpy()
    val_art = fit_head(tx, features, val_train, head=head, seed=seed, n_episodes=n_episodes)
    val_scores = score_head(val_art, features.values[val_test])
    threshold = best_f1_threshold(y[val_test], val_scores)
    art = fit_head(tx, features, train, head=head, seed=seed, n_episodes=n_episodes)
    scores = score_head(art, features.values[test])
    config = art.meta["training_config"]
    return Fitted(
        name=head,
        scores=scores,
        threshold=threshold,
        params={
            "kind": art.model.kind,
            **{k: config[k] for k in ("algorithm", "n_episodes", "hidden", "emb_dim")},
        },
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
        validation={"average_precision": average_precision(y[val_test], val_scores)},
        info={"support": config.get("support"), "train_seconds": config.get("train_seconds")},
    )


def to_tensor(a: np.ndarray) -> Any:
    import torch

    return torch.as_tensor(np.asarray(a, dtype=np.float32))
