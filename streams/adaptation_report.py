"""Before/after figures of an adaptation, read back from the ``scores`` topic.

Recall on a fraud pattern is measured per ``model_version`` (every score record names the
model that produced it), so "after" counts only transactions scored once the new
weights were live. Two operating points: the alert threshold, and the threshold that
flags 1 % of the legit transactions scored by the same version (recall at 1 % FPR).

Examples
--------
>>> scores = {"f1": ScoreRow(0.9, "v1", 0.0), "f2": ScoreRow(0.3, "v1", 0.0),
...           "l1": ScoreRow(0.2, "v1", 0.0), "f3": ScoreRow(0.95, "v2", 0.0)}
>>> rows = recall_by_version(scores, fraud_ids={"f1", "f2", "f3"}, legit_ids={"l1"},
...                          threshold=0.8)
>>> rows["v1"].n_fraud, rows["v1"].recall_at_threshold, rows["v2"].recall_at_threshold
(2, 0.5, 1.0)
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from models.evaluation.metrics import recall_at_fpr
from streams.settings import Settings


@dataclass(frozen=True)
class ScoreRow:
    """What the stream said about one transaction."""

    score: float
    model_version: str
    scored_at: float


@dataclass(frozen=True)
class VersionRecall:
    """Recall on a set of frauds among the transactions one model version scored."""

    version: str
    n_fraud: int
    n_legit: int
    recall_at_threshold: float
    recall_at_1pct_fpr: float
    fpr_at_threshold: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


async def read_scores(
    settings: Settings, *, idle_s: float = 2.0, timeout_s: float = 120.0
) -> dict[str, ScoreRow]:
    """Every score record of ``settings.topic_scores`` so far, by ``tx_id`` (latest wins)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.producer import kafka_client_kwargs

    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(settings), group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    out: dict[str, ScoreRow] = {}
    try:
        partitions = await topic_partitions(consumer, settings.topic_scores)
        tps = [TopicPartition(settings.topic_scores, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline, quiet = time.monotonic() + timeout_s, time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
            for records in batch.values():
                for record in records:
                    v = orjson.loads(record.value)
                    out[v["tx_id"]] = ScoreRow(v["score"], v["model_version"], v["scored_at"])
            if batch:
                quiet = time.monotonic()
            caught_up = all([await consumer.position(tp) >= ends[tp] for tp in tps])
            if caught_up and time.monotonic() - quiet >= idle_s:
                break
    finally:
        await consumer.stop()
    return out


async def topic_partitions(consumer: Any, topic: str, timeout_s: float = 10.0) -> set[int]:
    """Partitions of ``topic`` as seen by an aiokafka client (waits for its metadata)."""
    deadline = time.monotonic() + timeout_s
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions or time.monotonic() > deadline:
            return set(partitions or ())
        # with no subscription the client holds no topic metadata until asked for all
        await consumer._client.force_metadata_update()
        if not consumer.partitions_for_topic(topic):
            await asyncio.sleep(0.1)


def recall_by_version(
    scores: dict[str, ScoreRow],
    fraud_ids: Collection[str],
    legit_ids: Collection[str] | None = None,
    *,
    threshold: float,
    max_fpr: float = 0.01,
) -> dict[str, VersionRecall]:
    """Recall on ``fraud_ids`` per model version (legit: ``legit_ids``, or every other tx)."""
    frauds = set(fraud_ids)
    legit = set(legit_ids) if legit_ids is not None else set(scores) - frauds
    by_version: dict[str, tuple[list[float], list[float]]] = {}
    for tx_id, row in scores.items():
        if tx_id in frauds or tx_id in legit:
            pos, neg = by_version.setdefault(row.model_version, ([], []))
            (pos if tx_id in frauds else neg).append(row.score)
    out: dict[str, VersionRecall] = {}
    for version, (pos, neg) in by_version.items():
        p, n = np.asarray(pos), np.asarray(neg)
        y = np.r_[np.ones(len(p)), np.zeros(len(n))]
        at_fpr = recall_at_fpr(y, np.r_[p, n], max_fpr) if len(p) and len(n) else math.nan
        out[version] = VersionRecall(
            version=version,
            n_fraud=len(p),
            n_legit=len(n),
            recall_at_threshold=float((p >= threshold).mean()) if len(p) else math.nan,
            recall_at_1pct_fpr=float(at_fpr),
            fpr_at_threshold=float((n >= threshold).mean()) if len(n) else math.nan,
        )
    return out


def before_after_table(
    rows: Iterable[tuple[str, VersionRecall]], label_to_live_s: float | None = None
) -> Any:
    """A rich table: stage, model version, recall at the threshold and at 1 % FPR."""
    from rich.table import Table

    table = Table(title="new fraud pattern: before and after adaptation")
    for column in ("", "model", "frauds scored", "recall@threshold", "recall@1% FPR", "FPR"):
        table.add_column(column)
    for stage, r in rows:
        table.add_row(
            stage,
            r.version,
            str(r.n_fraud),
            f"{r.recall_at_threshold:.2f}",
            f"{r.recall_at_1pct_fpr:.2f}",
            f"{r.fpr_at_threshold:.4f}",
        )
    if label_to_live_s is not None:
        table.caption = f"label → new weights live in every worker: {label_to_live_s:.2f} s"
    return table


async def wait_for_live(
    settings: Settings,
    workers: int,
    *,
    version: str | None = None,
    other_than: str | None = None,
    timeout_s: float = 30.0,
) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """Until ``workers`` workers score with one version (``version``, or any version but
    ``other_than``), as they report it in Redis; returns it and the workers' reports
    (``live_at``, ``label_to_live_s``). On timeout, what was seen so far."""
    from streams.adaptation import registry_of
    from streams.redis_conn import connect_redis

    redis = connect_redis(settings)
    registry = registry_of(settings, redis)
    seen: tuple[str | None, dict[str, dict[str, Any]]] = (None, {})
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            by_version: dict[str, dict[str, dict[str, Any]]] = {}
            for worker, info in (await registry.live_workers()).items():
                by_version.setdefault(str(info.get("version")), {})[worker] = info
            for name, live in by_version.items():
                if (version is None or name == version) and name != other_than:
                    seen = (name, live)
                    if len(live) >= workers:
                        return seen
            await asyncio.sleep(0.02)
        return seen
    finally:
        await redis.aclose()
