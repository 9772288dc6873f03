"""Shared by the few-shot adaptation test and benchmark: a stream with a pattern nobody has
seen, a model trained before it appears, labels, bad model updates, per-worker metrics.

Nothing fakes the system under test: the model is meta-trained here on simulated data
that ends before the new pattern starts (features computed as the stream computes them
without label history), the workers are ``riskstream worker`` subprocesses, labels go
through the ``labels`` topic, and every figure is read back from Kafka, Redis or the
workers' ``/metrics``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from aiokafka import AIOKafkaProducer
from pipeline_helpers import WorkerProcess

from models.artifacts import Artifact, load_artifact, sha256_hex
from models.datasets import HANDBOOK_SCENARIOS, CardTesting, SimulatorConfig, simulate
from models.default_model import default_config
from models.features import FeatureFrame, build_features
from models.training import SupportConfig, fit_matching_network
from streams.model_registry import ModelRegistry, Send
from streams.producer import kafka_client_kwargs
from streams.records import Label, ModelUpdate, encode
from streams.services.topics import delete_topics, ensure_topics, list_topics
from streams.settings import Settings

SIGNING_KEY = "adaptation-test-key"
NEW_CODE = 4  # card testing: held out of training, starts mid-stream


@dataclass(frozen=True)
class FewShotStream:
    """Wire rows of a simulated stream and what the test knows about them."""

    rows: pd.DataFrame  # tx_id, ts (epoch s), card_id, terminal_id, amount, is_fraud, scenario, day
    start_day: int

    def records(self, mask: np.ndarray) -> list[tuple[dict[str, Any], int | None]]:
        part = self.rows.loc[mask, ["tx_id", "ts", "card_id", "terminal_id", "amount"]]
        return [(row, None) for row in part.to_dict("records")]

    def weeks(self, mask: np.ndarray) -> list[np.ndarray]:
        """``mask`` split into masks of consecutive 7-day spans (stream order kept)."""
        week = (self.rows.day.to_numpy() - int(self.rows.day.min())) // 7
        return [mask & (week == w) for w in np.unique(week[mask])]

    def new_frauds(self, mask: np.ndarray | None = None) -> pd.DataFrame:
        rows = self.rows if mask is None else self.rows.loc[mask]
        return rows[rows.scenario == NEW_CODE]


def simulate_stream(
    n_customers: int = 200, n_days: int = 50, start_day: int = 38, seed: int = 11
) -> tuple[pd.DataFrame, FewShotStream]:
    """The simulated frame (for training) and its wire rows; card testing from ``start_day``."""
    scenario = CardTesting(start_day=start_day, cards_per_day=3)
    config = SimulatorConfig(
        n_customers=n_customers,
        n_terminals=2 * n_customers,
        n_days=n_days,
        seed=seed,
        scenarios=HANDBOOK_SCENARIOS + (scenario,),
    )
    df = simulate(config)
    ts = df["ts"].astype("int64").to_numpy() / 1e9
    origin = pd.Timestamp(config.start_date).value / 1e9
    rows = pd.DataFrame(
        {
            "tx_id": [f"t{i}" for i in df["tx_id"].tolist()],
            "ts": ts,
            "card_id": ["c" + str(c) for c in df["card_id"].tolist()],
            "terminal_id": ["m" + str(t) for t in df["terminal_id"].tolist()],
            "amount": df["amount"].astype(float).to_numpy(),
            "is_fraud": df["is_fraud"].astype(int).to_numpy(),
            "scenario": df["scenario"].astype(int).to_numpy(),
            "day": ((ts - origin) // 86_400).astype(int),
        }
    )
    return df, FewShotStream(rows, start_day)


def train_base_model(
    df: pd.DataFrame, start_day: int, directory: Path, seed: int = 0, n_episodes: int = 3000
) -> Path:
    """Meta-train on the days before the new pattern; save the artifact in ``directory``.

    Terminal risk is computed without labels, as the stream sees it when no label history
    was replayed, so training and stream features agree.
    """
    features = features_without_labels(df)
    day = (pd.to_datetime(df["ts"]) - pd.to_datetime(df["ts"]).min().normalize()).dt.days
    train = (day < start_day).to_numpy()
    torch.set_num_threads(1)
    # the shipped model's configuration (synthetic tasks keep unseen patterns apart),
    # with fewer episodes than the default's 4000 so that it trains in seconds
    config = default_config(seed, n_episodes=n_episodes)
    artifact = fit_matching_network(
        df, features, train, config, SupportConfig(n_fraud=400, n_legit=1600, seed=seed)
    )
    artifact.meta["version"] = "base"
    artifact.save(directory)
    return directory


def offline_scores(df: pd.DataFrame, directory: Path) -> np.ndarray:
    """Scores of every row of ``df`` by the artifact in ``directory``, computed offline
    (features without label history, as the stream has before any label arrives)."""
    from models.scorer import Scorer

    x = features_without_labels(df).values
    return Scorer.from_artifact(directory, top_k=0).score_only(x)


def features_without_labels(df: pd.DataFrame) -> FeatureFrame:
    """Offline features of ``df`` as the stream computes them before any label arrives."""
    no_labels = pd.DataFrame({"tx_id": pd.Series([], dtype=df["tx_id"].dtype), "label": []})
    return build_features(df, labels=no_labels)


def worker_extra_env() -> dict[str, str]:
    """What ``pipeline_helpers.worker_env`` leaves out: the signing key."""
    return {"RISKSTREAM_MODEL_SIGNING_KEY": SIGNING_KEY}


def make_settings(
    kafka_bootstrap: str, redis_url: str, state_dir: Path, model: Path, **overrides: Any
) -> Settings:
    """Own app id and topics (created), the model, the test's signing key."""
    slug = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": kafka_bootstrap,
        "redis_url": redis_url,
        "state_dir": state_dir,
        "app_id": f"rs-adapt-{slug}",
        "topic_transactions": f"transactions-adapt-{slug}",
        "topic_labels": f"labels-adapt-{slug}",
        "topic_scores": f"scores-adapt-{slug}",
        "topic_alerts": f"alerts-adapt-{slug}",
        "topic_dlq": f"transactions.dlq-adapt-{slug}",
        "topic_model_updates": f"model-updates-adapt-{slug}",
        "model_path": model,
        "model_signing_key": SIGNING_KEY,
        "session_timeout_s": 6.0,
        "commit_interval_s": 0.5,
        "state_flush_interval_s": 0.5,
        "adapt_min_new_cases": 10,
        "adapt_interval_s": 3600.0,
        "pending_label_ttl_s": 30.0,
        # The test replays weeks in seconds: terminal counts cached for a wall-clock TTL
        # would serve features of days long gone (legit traffic then looks anomalous).
        "terminal_cache_ttl_s": 0.0,
    }
    values.update(overrides)
    settings = Settings(**values)
    ensure_topics(settings)
    return settings


def cleanup(settings: Settings, redis_client: Any) -> None:
    """Delete the test's topics (and Faust's) and its Redis keys."""
    names = {
        settings.topic_transactions,
        settings.topic_labels,
        settings.topic_scores,
        settings.topic_alerts,
        settings.topic_dlq,
        settings.topic_model_updates,
    }
    existing = list_topics(settings.kafka_bootstrap_servers)
    doomed = {t for t in existing if t in names or t.startswith(settings.app_id + "-")}
    delete_topics(settings.kafka_bootstrap_servers, doomed)
    keys = list(redis_client.scan_iter(match=f"{settings.app_id}:*"))
    if keys:
        redis_client.delete(*keys)


async def send_labels(settings: Settings, tx_ids: list[str], label: int = 1) -> float:
    """Produce analysts' labels; returns the wall time just before sending."""
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings), linger_ms=0)
    await producer.start()
    try:
        sent_at = time.time()
        for tx_id in tx_ids:
            record = Label(tx_id=tx_id, label=label, source="analyst", labelled_at=time.time())
            await producer.send(settings.topic_labels, encode(record), key=tx_id.encode())
        await producer.flush()
        return sent_at
    finally:
        await producer.stop()


def wait_scored(workers: list[WorkerProcess], total: int, timeout: float = 90.0) -> None:
    """Until the workers together scored ``total`` transactions."""
    deadline = time.monotonic() + timeout
    done = 0.0
    while time.monotonic() < deadline:
        done = sum(w.metric("riskstream_transactions_scored_total") for w in workers)
        if done >= total:
            return
        for w in workers:
            assert w.alive(), w.tail()
        time.sleep(0.2)
    raise TimeoutError(f"{done:.0f} of {total} transactions scored")


def labelled_metric(worker: WorkerProcess, name: str) -> dict[str, float]:
    """``{label value: sample}`` of a single-label metric on one worker."""
    out: dict[str, float] = {}
    try:
        text = worker.metrics()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('"')[1]] = float(value)
    return out


# --- bad model updates -------------------------------------------------------------------
def _signed(
    registry: ModelRegistry, version: str, blob: bytes, key: str | None = None
) -> ModelUpdate:
    update = ModelUpdate(
        version=version,
        parent="base",
        created_at=time.time(),
        sha256=sha256_hex(blob),
        signature="",
        metrics={},
        location=registry.weights_key(version),
    )
    if key is None:
        return registry.sign(update)
    from streams.records import sign_model_update

    return sign_model_update(update, key)


def _variant(
    base: Artifact, version: str, *, nan: bool = False, hidden: int | None = None
) -> bytes:
    from models.encoder import Encoder
    from models.matching import MatchingNetwork

    model = base.model
    if hidden is not None:
        encoder = Encoder(base.transform.n_features, hidden=(hidden,), emb_dim=8)
        model = MatchingNetwork(encoder)
    elif nan:
        import copy

        model = copy.deepcopy(base.model)
        with torch.no_grad():
            next(p for p in model.parameters() if p.dim() == 2)[0, 0] = float("nan")
    meta = {"version": version, "feature_schema": base.schema}
    return Artifact.build(model, base.transform, base.support, meta).to_bytes()


async def publish_bad_updates(registry: ModelRegistry, model_dir: Path, send: Send) -> list[str]:
    """A forged, a truncated, a NaN and a wrong-shape update; returns the expected reasons.

    Each is signed with the right key except the forged one, and its sha256 is that of the
    bytes stored, so each fails exactly the check it is meant to. None becomes current.
    """
    base = load_artifact(model_dir)
    forged_blob = _variant(base, "evil-forged")
    cut_blob = _variant(base, "evil-cut")[:-512]
    nan_blob = _variant(base, "evil-nan", nan=True)
    wide_blob = _variant(base, "evil-wide", hidden=7)
    bad = [
        (_signed(registry, "evil-forged", forged_blob, key="not-the-key"), forged_blob),
        (_signed(registry, "evil-cut", cut_blob), cut_blob),
        (_signed(registry, "evil-nan", nan_blob), nan_blob),
        (_signed(registry, "evil-wide", wide_blob), wide_blob),
    ]
    for update, blob in bad:
        await registry.publish_blob(update, blob, send, make_current=False, notes={"kind": "test"})
    return ["bad_signature", "truncated", "non_finite", "wrong_shape"]
