"""From a transaction table to a scoring artifact: features, transform, meta-training, support.

:func:`fit_matching_network` is what ``riskstream train`` and the evaluation drivers call:
it standardizes the training rows, meta-trains on episodes cut from them, and picks the
support set the scorer attends over (the most recent frauds plus a random legit sample).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.artifacts import Artifact, SupportSet
from models.episodes import TaskData
from models.features.definitions import DAY_SECONDS
from models.features.offline import FeatureFrame, epoch_seconds
from models.features.transform import FeatureTransform
from models.meta_train import MetaTrainConfig, ProgressFn, meta_train


@dataclass(frozen=True)
class SupportConfig:
    """How many labelled cases the default support set holds."""

    n_fraud: int = 400
    n_legit: int = 1600
    seed: int = 0


def segments_of(df: pd.DataFrame, n_segments: int = 8) -> np.ndarray:
    """Customer segments for episodes: a stable hash of ``card_id`` into ``n_segments``.

    >>> segments_of(pd.DataFrame({"card_id": [0, 1, 9]}), 4).tolist()
    [2, 2, 3]
    """
    codes = pd.util.hash_array(df["card_id"].astype(str).to_numpy())
    return (codes % np.uint64(n_segments)).astype(np.int64)


def task_data(df: pd.DataFrame, x: np.ndarray, segment: np.ndarray | None = None) -> TaskData:
    """:class:`TaskData` of standardized ``x`` rows of ``df`` (needs ``is_fraud``, ``ts``;
    ``scenario`` optional: all frauds are scenario 1 without it)."""
    y = df["is_fraud"].to_numpy().astype(np.int8)
    if "scenario" in df.columns:
        scenario = df["scenario"].to_numpy().astype(np.int64)
    else:
        scenario = y.astype(np.int64)
    day = np.floor(epoch_seconds(df["ts"]) / DAY_SECONDS).astype(np.int64)
    return TaskData(x=x, y=y, scenario=scenario, day=day, segment=segment)


def select_support(
    x_raw: np.ndarray,
    y: np.ndarray,
    ts: np.ndarray,
    case_ids: Sequence[Any],
    config: SupportConfig,
) -> SupportSet:
    """The most recent ``n_fraud`` frauds and ``n_legit`` random legit rows (raw features).

    >>> x = np.arange(12, dtype=np.float32).reshape(6, 2)
    >>> s = select_support(x, np.array([1, 0, 1, 0, 1, 0]), np.arange(6.0), list("abcdef"),
    ...                    SupportConfig(n_fraud=2, n_legit=1))
    >>> s.case_ids[:2], s.n_fraud, len(s)
    (('e', 'c'), 2, 3)
    """
    y = np.asarray(y)
    fraud = np.flatnonzero(y == 1)
    fraud = fraud[np.argsort(-np.asarray(ts)[fraud], kind="stable")][: config.n_fraud]
    legit = np.flatnonzero(y == 0)
    rng = np.random.default_rng(config.seed)
    if legit.size > config.n_legit:
        legit = np.sort(rng.choice(legit, size=config.n_legit, replace=False))
    idx = np.concatenate([fraud, legit])
    ids = np.asarray([str(c) for c in case_ids], dtype=object)
    return SupportSet.build(x_raw[idx], y[idx], ids[idx].tolist())


def fit_matching_network(
    df: pd.DataFrame,
    features: FeatureFrame,
    train_mask: np.ndarray,
    config: MetaTrainConfig | None = None,
    support: SupportConfig | None = None,
    progress: ProgressFn | None = None,
) -> Artifact:
    """Meta-train on the ``train_mask`` rows; return an unsaved :class:`Artifact`.

    ``features`` must be :func:`models.features.build_features` of ``df`` (same rows).
    """
    config = config or MetaTrainConfig()
    support = support or SupportConfig(seed=config.seed)
    mask = np.asarray(train_mask, dtype=bool)
    train_df = df.loc[mask]
    x_raw = features.values[mask]
    transform = FeatureTransform.fit(x_raw, names=features.names)
    data = task_data(train_df, transform.transform(x_raw), segments_of(train_df))
    started = time.perf_counter()
    model = meta_train(config, data, progress)
    train_seconds = time.perf_counter() - started
    case_ids = train_df["tx_id"].to_numpy() if "tx_id" in train_df else np.flatnonzero(mask)
    sup = select_support(x_raw, data.y, epoch_seconds(train_df["ts"]), case_ids.tolist(), support)
    meta = {
        "feature_schema": features.schema,
        "training_config": {
            **config.to_dict(),
            "support": {"n_fraud": support.n_fraud, "n_legit": support.n_legit},
            "train_rows": int(mask.sum()),
            "train_frauds": int(data.y.sum()),
            "train_seconds": round(train_seconds, 2),
        },
    }
    return Artifact.build(model, transform, sup, meta)


SCALES: dict[str, dict[str, int]] = {
    # customers, terminals, days; terminals = 2 × customers keeps the handbook's density
    "tiny": {"n_customers": 150, "n_terminals": 300, "n_days": 75},
    "small": {"n_customers": 1000, "n_terminals": 2000, "n_days": 120},
    "handbook": {"n_customers": 5000, "n_terminals": 10_000, "n_days": 183},
}


def validation_metrics(df: pd.DataFrame, scores: np.ndarray) -> dict[str, float]:
    """AUC, AP and CP@100 of ``scores`` on the rows of ``df`` (the evaluation's metrics)."""
    from models.evaluation.metrics import auc_roc, average_precision, card_precision_at_k

    y = df["is_fraud"].to_numpy()
    days = np.floor(epoch_seconds(df["ts"]) / DAY_SECONDS).astype(np.int64)
    return {
        "val_auc_roc": auc_roc(y, scores),
        "val_average_precision": average_precision(y, scores),
        "val_card_precision_at_100": card_precision_at_k(days, df["card_id"].to_numpy(), y, scores),
    }


def score_rows(artifact: Artifact, x_raw: np.ndarray, batch: int = 4096) -> np.ndarray:
    """Scores of raw feature rows with the artifact's own support set (numpy scorer)."""
    from models.scorer import Scorer

    scorer = Scorer.from_artifact(artifact, top_k=0)
    parts = [scorer.score_only(x_raw[i : i + batch]) for i in range(0, len(x_raw), batch)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
