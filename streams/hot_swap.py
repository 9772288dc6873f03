"""Every worker reads every model update, verifies it, and swaps it in between batches.

:class:`HotSwap` runs inside each worker. Its consumer has no group: it is assigned every
partition of ``model-updates`` and starts at the end, so each worker sees each update
(not a share of them) and never replays history. History comes from Redis instead: at
start, a worker loads the registry's current version (a worker that starts late scores
with what the others score with), and registers its own startup model as the first
version when the registry is empty. Every ``reconcile_s`` it compares again with the
registry, in case an announcement was missed.

An update is verified (:func:`streams.model_verification.verify_update`) off the event
loop, then staged on the :class:`~streams.runtime.ScorerRuntime`, which makes it live at
the next micro-batch: in-flight batches finish on the old model. Records older than the
one applied (a replay) are refused as ``stale_version``. Once live, the worker records
it in the registry (``riskstream model list`` shows it) and observes label→live.

Examples
--------
>>> class Runtime:
...     version = "v1"
>>> swap = HotSwap(Settings(), Runtime(), registry=None, worker_id="w1")
>>> swap.worker_id, swap.applied is None
('w1', True)
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from models.artifacts import Artifact
from models.scorer import Scorer
from streams.metrics import METRICS, RiskstreamMetrics
from streams.model_registry import ModelRegistry
from streams.model_verification import Reference, UpdateRejected, verify_update
from streams.records import ModelUpdate, RecordError, parse_model_update
from streams.redis_conn import REDIS_ERRORS
from streams.settings import Settings

log = logging.getLogger(__name__)
LABEL_TIME_METRIC = "label_time"  # in ModelUpdate.metrics: Kafka time of the triggering label


def default_worker_id() -> str:
    """``host-pid``: unique among the workers of a deployment.

    >>> default_worker_id().endswith(str(os.getpid()))
    True
    """
    return f"{socket.gethostname()}-{os.getpid()}"


def artifact_of_scorer(scorer: Scorer) -> Artifact:
    """The artifact a :class:`~models.scorer.Scorer` was built from (weights, transform,
    support, schema and version)."""
    meta = {"version": scorer.version, "feature_schema": scorer.schema}
    return Artifact.build(scorer.model, scorer.transform, scorer.support, meta, scorer.pattern_head)


class HotSwap:
    """Applies model updates to one worker's scorer runtime.

    Parameters
    ----------
    settings
        Topic, signing key, explanation size, Kafka connection.
    runtime
        The worker's :class:`~streams.runtime.ScorerRuntime`.
    registry
        The :class:`~streams.model_registry.ModelRegistry` holding the weights.
    metrics
        Where received/rejected updates and label→live are recorded.
    worker_id
        This worker's name in the registry's ``model:live`` hash.
    """

    def __init__(
        self,
        settings: Settings,
        runtime: Any,
        registry: ModelRegistry | None,
        *,
        metrics: RiskstreamMetrics = METRICS,
        worker_id: str | None = None,
        reconcile_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.registry = registry
        self.metrics = metrics
        self.worker_id = worker_id or default_worker_id()
        self.reconcile_s = reconcile_s
        self.applied: ModelUpdate | None = None
        self.rejected: deque[tuple[str, str, str]] = deque(maxlen=100)  # version, reason, detail
        self.synced = False
        self._key = settings.model_signing_key.get_secret_value()
        self._watchers: set[asyncio.Task[None]] = set()

    # --- applying one update ---------------------------------------------------------
    async def handle_raw(self, value: bytes | None) -> bool:
        """Parse and apply one ``model-updates`` message; False when it was refused."""
        try:
            update = parse_model_update(value or b"")
        except RecordError as err:
            self._reject("?", "error", f"unreadable model update: {err}")
            return False
        return await self.apply(update)

    async def apply(self, update: ModelUpdate) -> bool:
        """Verify ``update`` and stage it; False (and a counted rejection) when refused."""
        if self.applied is not None and update.created_at <= self.applied.created_at:
            detail = (
                f"announced {update.created_at:.3f}, running one from {self.applied.created_at:.3f}"
            )
            self._reject(update.version, "stale_version", detail)
            return False
        if self.registry is None:
            raise RuntimeError("HotSwap needs a registry to fetch weights")
        try:
            blob = await self.registry.fetch_weights(update.location)
        except REDIS_ERRORS as exc:  # weights unreachable: keep scoring, reconcile later
            self._reject(update.version, "missing_weights", f"Redis unavailable: {exc!r}")
            return False
        reference = Reference.of_scorer(self.runtime.current)
        try:
            scorer = await asyncio.to_thread(self._load, update, blob, reference)
        except UpdateRejected as exc:
            self._reject(update.version, exc.reason, exc.detail)
            return False
        self.runtime.swap(scorer)
        self.applied = update
        self.metrics.record_model_update()
        log.info("model %s verified and staged (parent %s)", update.version, update.parent)
        watcher = asyncio.ensure_future(self._watch_live(scorer, update))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return True

    def _load(self, update: ModelUpdate, blob: bytes | None, reference: Reference | None) -> Scorer:
        artifact = verify_update(update, blob, self._key, reference)
        try:
            return Scorer.from_artifact(artifact, top_k=self.settings.explain_top_k)
        except ValueError as exc:  # ArtifactError is a ValueError
            raise UpdateRejected("error", str(exc)) from None

    def _reject(self, version: str, reason: str, detail: str) -> None:
        log.warning("model update %s rejected (%s): %s", version, reason, detail)
        self.rejected.append((version, reason, detail))
        self.metrics.record_model_update(rejected_reason=reason)

    async def _watch_live(self, scorer: Any, update: ModelUpdate) -> None:
        """Wait for the next batch boundary, then report the version live."""
        started = time.monotonic()
        while self.runtime.staged is scorer:
            await asyncio.sleep(0.002 if time.monotonic() - started < 0.5 else 0.05)
        if self.runtime.current is not scorer:
            return  # superseded before it ever scored
        info: dict[str, float] = {}
        label_time = update.metrics.get(LABEL_TIME_METRIC)
        if label_time:
            info["label_to_live_s"] = time.time() - float(label_time)
            self.metrics.record_label_to_live(info["label_to_live_s"])
        if self.registry is not None:
            try:
                await self.registry.mark_live(self.worker_id, update.version, **info)
            except REDIS_ERRORS as exc:
                log.warning("could not record live model in Redis: %r", exc)

    # --- the registry ----------------------------------------------------------------
    async def sync_with_registry(self) -> None:
        """Load the registry's current version (or register ours when it is empty)."""
        if self.registry is None:
            return
        current = await self.registry.current()
        scorer = self.runtime.current
        if current is None and isinstance(scorer, Scorer):
            current = await self.registry.bootstrap(artifact_of_scorer(scorer))
        self.synced = True
        if current is None:
            return
        if self.applied is None and current.version == self.runtime.version:
            self.applied = current
            await self.registry.mark_live(self.worker_id, current.version)
            return
        if self.applied is None or current.created_at > self.applied.created_at:
            if self.applied is None:
                log.info(
                    "loading model %s from the registry (started with %s)",
                    current.version,
                    self.runtime.version,
                )
            await self.apply(current)

    # --- the consumer ----------------------------------------------------------------
    async def run(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Consume ``model-updates`` from the end until ``stopping()``; never raises."""
        while not stopping():
            try:
                await self._consume(stopping)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("model-updates consumer failed; restarting in 1 s")
                await asyncio.sleep(1.0)

    async def _consume(self, stopping: Callable[[], bool]) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from streams.adaptation_report import topic_partitions
        from streams.producer import kafka_client_kwargs
        from streams.services.topics import create_topics

        topic = self.settings.topic_model_updates
        replication = self.settings.topic_replication
        await asyncio.to_thread(create_topics, self.settings, {topic: 1}, replication=replication)
        consumer = AIOKafkaConsumer(
            **kafka_client_kwargs(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id=f"{self.settings.app_id}-model-updates",
        )
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, topic) or {0}
            assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
            for tp in assigned:
                await consumer.position(tp)  # fixes "the end" before reading the registry
            await self._sync_quietly()
            next_reconcile = time.monotonic() + self.reconcile_s
            while not stopping():
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    for message in messages:
                        await self.handle_raw(message.value)
                if not self.synced or time.monotonic() >= next_reconcile:
                    await self._sync_quietly()
                    next_reconcile = time.monotonic() + self.reconcile_s
        finally:
            await consumer.stop()

    async def _sync_quietly(self) -> None:
        try:
            await self.sync_with_registry()
        except REDIS_ERRORS as exc:
            self.synced = False
            log.warning(
                "model registry unavailable (%r); keeping model %s", exc, self.runtime.version
            )
