"""The shipped default model: simulate, build features, validate, train, save.

``riskstream train`` runs :func:`train_default`. Hyperparameters were chosen on the
validation split (the handbook split moved back two weeks; see :func:`handbook_config`
and :func:`fewshot_config` for the two tuned variants); the saved artifact is
then trained on the ``history_days`` ending with the handbook's training window
(2018-07-31 at the ``handbook`` scale; the last day of the data at smaller scales), so
the handbook test window is never used by the default model.

A worker that starts without history (a new deployment, or the demo's first days) sees
transactions no steady-state row looks like: every terminal count is 0 for the first
eight days and card windows are short. Trained on the history window alone, the network
flagged every such transaction (legit alert rate 100 % in the first week of a fresh world).
So the first ``cold_start_days`` of the simulation join the training rows, features as
a fresh stream computes them; :func:`cold_start_alert_rates` measures the effect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from models.artifacts import Artifact
from models.episodes import EpisodeConfig
from models.features.offline import build_features
from models.meta_train import MetaTrainConfig, ProgressFn
from models.training import (
    SCALES,
    SupportConfig,
    fit_matching_network,
    score_rows,
    validation_metrics,
)

DEFAULT_HISTORY_DAYS = 56
DEFAULT_COLD_START_DAYS = 28
HANDBOOK_TRAIN_END = date(2018, 7, 31)

StageFn = Callable[[str], None]


def handbook_config(seed: int = 0) -> MetaTrainConfig:
    """Best on the handbook validation split: 4000 episodes, lr 1e-3, weight EMA 0.998.

    (Validation, 56 days of history: AUC 0.888-0.899, AP 0.710-0.721, CP@100 0.337-0.339
    over seeds 0-2.)
    """
    return MetaTrainConfig(seed=seed)


def fewshot_config(
    seed: int = 0, train_scenarios: Sequence[int] | None = None, synthetic_share: float = 0.3
) -> MetaTrainConfig:
    """For adapting to unseen patterns: 30 % synthetic tasks keep every feature direction
    apart in the embedding (k = 10 card-testing recall at 1 % FPR 0.24 → 0.75 with support
    refresh), at a cost of about 0.015 AP on the handbook validation split.

    (50 % was tried: k = 10 card testing 0.688 ± 0.049 and account takeover 0.596 ± 0.042
    in ``riskstream evaluate fewshot``, against 0.702 ± 0.045 and 0.578 ± 0.056 here, so no
    better, while handbook validation AUC fell from 0.887 to 0.876.)"""
    episode = EpisodeConfig(scenarios=train_scenarios, synthetic_share=synthetic_share)
    return MetaTrainConfig(seed=seed, episode=episode)


def default_config(seed: int = 0, n_episodes: int | None = None) -> MetaTrainConfig:
    """The shipped model's configuration: :func:`fewshot_config`, since the stream's
    promise is adapting to new patterns from a few labels."""
    cfg = fewshot_config(seed)
    return cfg if n_episodes is None else cfg.with_(n_episodes=n_episodes)


def _windows(df: pd.DataFrame, history_days: int) -> tuple[np.ndarray, Any, date]:
    """Final training mask, validation split, and the last training day."""
    from models.evaluation.protocol import handbook_split

    days = _days(df)
    last = date.fromisoformat(str(days.max()))
    train_end = HANDBOOK_TRAIN_END if last >= HANDBOOK_TRAIN_END else last
    # validation: the same shape ending 14 days earlier (7-day delay + 7-day test window)
    val_train_start = train_end - timedelta(days=6 + 14)
    split = handbook_split(df, val_train_start, history_days=history_days)
    end = np.datetime64(train_end, "D")
    final = (days > end - np.timedelta64(history_days, "D")) & (days <= end)
    return final, split, train_end


def _days(df: pd.DataFrame) -> np.ndarray:
    return np.asarray(pd.to_datetime(df["ts"]).to_numpy(), dtype="datetime64[D]")


def with_cold_start(
    df: pd.DataFrame, mask: np.ndarray, cold_start_days: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Add the world's first ``cold_start_days`` to the training ``mask``.

    Their timestamps are moved to just before the first masked day, so the episodes' time
    windows (drawn between the first and last training day) stay contiguous instead of
    mostly falling in the empty months between the two periods. Features are computed
    beforehand, so they keep the cold values; only the episode and support clocks move.

    >>> ts = pd.to_datetime(["2018-04-01", "2018-04-02", "2018-06-01", "2018-06-02"])
    >>> df = pd.DataFrame({"ts": ts})
    >>> moved, m = with_cold_start(df, np.array([False, False, True, True]), 1)
    >>> m.tolist(), moved["ts"].dt.strftime("%m-%d").tolist()
    ([True, False, True, True], ['05-31', '04-02', '06-01', '06-02'])
    """
    days = _days(df)
    cold = days < days.min() + np.timedelta64(cold_start_days, "D")
    cold &= ~mask
    if not cold.any() or not mask.any():
        return df, mask
    shift = days[mask].min() - days[cold].max() - np.timedelta64(1, "D")
    moved = df.copy()
    moved.loc[cold, "ts"] = pd.to_datetime(moved.loc[cold, "ts"]) + pd.Timedelta(shift)
    return moved, mask | cold


def cold_start_alert_rates(
    art: Artifact, *, seed: int = 1, n_customers: int = 1000, threshold: float = 0.8
) -> dict[str, float]:
    """Legit alert rate of ``art`` in a fresh world with no history and no labels.

    The share of legit transactions scored at or above ``threshold`` in days 0-6, 7-13
    and 14-29 of a new ``n_customers`` world (features as a new stream computes them).
    """
    from models.datasets import SimulatorConfig, simulate
    from models.scorer import Scorer

    world = SimulatorConfig(
        n_customers=n_customers, n_terminals=2 * n_customers, n_days=30, seed=seed
    )
    df = simulate(world)
    no_labels = pd.DataFrame({"tx_id": pd.Series([], dtype=df["tx_id"].dtype), "label": []})
    x = build_features(df, labels=no_labels).values
    scores = Scorer.from_artifact(art, top_k=0).score_only(x)
    day = (_days(df) - _days(df).min()).astype(np.int64)
    legit = df["is_fraud"].to_numpy() == 0
    out: dict[str, float] = {}
    for lo, hi in ((0, 7), (7, 14), (14, 30)):
        rows = legit & (day >= lo) & (day < hi)
        out[f"cold_legit_alert_rate_days_{lo}_{hi - 1}"] = float(np.mean(scores[rows] >= threshold))
    return out


def train_default(
    scale: str = "handbook",
    *,
    seed: int = 0,
    n_episodes: int | None = None,
    history_days: int = DEFAULT_HISTORY_DAYS,
    cold_start_days: int = DEFAULT_COLD_START_DAYS,
    support: SupportConfig | None = None,
    validate: bool = True,
    progress: ProgressFn | None = None,
    stage: StageFn | None = None,
) -> Artifact:
    """Train the default artifact on simulated data of ``scale`` (see ``SCALES``).

    ``stage(text)`` announces each step; ``progress(i, metrics)`` each episode (called
    for the validation run first when ``validate``).
    """
    from models.datasets import SimulatorConfig, simulate

    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; one of {sorted(SCALES)}")
    say = stage or (lambda _text: None)
    size = SCALES[scale]
    sim = SimulatorConfig(
        n_customers=size["n_customers"],
        n_terminals=size["n_terminals"],
        n_days=size["n_days"],
        seed=seed,
    )
    say(f"simulating {scale} scale ({sim.n_customers} cards, {sim.n_days} days)")
    df = simulate(sim)
    say(f"building features for {len(df):,} transactions")
    features = build_features(df)
    config = default_config(seed, n_episodes)
    support = support or SupportConfig(seed=seed)
    final_mask, split, train_end = _windows(df, history_days)
    metrics: dict[str, float] = {}
    if validate and split.test.any() and split.train.any():
        say("meta-training on the validation split")
        val_df, val_mask = with_cold_start(df, split.train, cold_start_days)
        val = fit_matching_network(val_df, features, val_mask, config, support, progress)
        scores = score_rows(val, features.values[split.test])
        metrics = validation_metrics(df.loc[split.test], scores)
    say(
        f"meta-training the default model ({history_days} days ending {train_end}"
        f" + the first {cold_start_days} days, cold)"
    )
    train_df, train_mask = with_cold_start(df, final_mask, cold_start_days)
    art = fit_matching_network(train_df, features, train_mask, config, support, progress)
    if validate:
        say("measuring alert rates of a fresh world (no history)")
        metrics.update(cold_start_alert_rates(art, seed=seed + 1))
    art.meta["metrics"] = {k: float(v) for k, v in metrics.items()}
    art.meta["training_config"]["data"] = {
        "simulator": {"scale": scale, "seed": seed, **SCALES[scale]},
        "train_end": train_end.isoformat(),
        "history_days": history_days,
        "cold_start_days": cold_start_days,
        "validation": split.describe(df["is_fraud"]) if metrics else None,
    }
    art.meta["notes"] = "riskstream default model (riskstream train)"
    return art
