"""The score pipeline: one micro-batch of raw ``transactions`` messages in, records out.

For a batch: validate every message (bad ones → ``transactions.dlq`` with a reason),
update per-card state and build each feature vector in arrival order, read terminal
risk (cached per event day: a Redis round trip only for terminals not fetched yet on
the batch's days), score the whole batch with one numpy call, emit one ``scores``
record per transaction. Then, in the background (:mod:`streams.batch_writer`), one
Redis round trip writes terminal counts and scored vectors and claims alerts, and the
new alerts go out; the batch's delivery futures include that work, so its offsets are
acknowledged only after it.

Whatever a message contains, :meth:`ScorePipeline.process` does not raise for it: a
record that cannot be parsed, keyed, featurized or scored is dead-lettered. It raises
:class:`EmitError` only when Kafka refuses the outputs; the caller then retries the same
records later and never acknowledges them before (at-least-once). A retry is safe: a
card does not learn the same input offset twice (``CardStates.learn_one``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson
from aiokafka.errors import KafkaError

from models.features.definitions import DAY_SECONDS
from streams import native
from streams.alert_dedupe import AlertClaims
from streams.batch_writer import AlertCandidate, BatchWriter
from streams.emitter import Emitter, Message
from streams.metrics import METRICS, RiskstreamMetrics
from streams.outputs import (
    DECISION_NAMES,
    BatchExplanations,
    decision_codes,
    score_record_bytes,
    score_record_bytes_native,
    score_value,
)
from streams.records import RecordError, dead_letter, encode
from streams.redis_conn import RedisGuard
from streams.runtime import ScorerRuntime
from streams.score_columns import (
    Dead,
    InputRecord,
    TxBatch,
    assemble_rows,
    validate_batch,
    validate_batch_native,
)
from streams.scored_store import ScoredStore, encode_entries, encode_entries_native
from streams.settings import Settings
from streams.tables import CardStates
from streams.terminal_store import TerminalStore
from streams.timing import LatencyBreakdown

log = logging.getLogger(__name__)
Futures = list[asyncio.Future[Any]]
__all__ = [
    "EmitError",
    "Futures",
    "InputRecord",
    "RawRecord",
    "ScorePipeline",
    "assemble_rows",
]


class RawRecord(NamedTuple):
    """A Kafka message as the pipeline needs it (for Faust events and tests)."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None


class EmitError(Exception):
    """Kafka did not take the outputs; the batch must be retried, not acknowledged."""


class ScorePipeline:
    """Scores micro-batches; shared by the batch consumer hook and the Faust agent."""

    def __init__(
        self,
        settings: Settings,
        *,
        runtime: ScorerRuntime[Any],
        cards: CardStates,
        terminals: TerminalStore,
        scored: ScoredStore,
        claims: AlertClaims,
        emitter: Emitter,
        redis: Any,
        guard: RedisGuard,
        metrics: RiskstreamMetrics = METRICS,
        native_kernels: bool | None = None,
    ) -> None:
        self.settings = settings
        # the compiled kernels (streams.native) or their Python references: same outputs
        self.native = native.active() if native_kernels is None else native_kernels
        self._validate_batch = validate_batch_native if self.native else validate_batch
        self._record_bytes = score_record_bytes_native if self.native else score_record_bytes
        self._entries: Callable[..., list[bytes]] = (
            encode_entries_native if self.native else encode_entries
        )
        self.runtime = runtime
        self.cards = cards
        self.terminals = terminals
        self.scored = scored
        self.claims = claims
        self.emitter = emitter
        self.redis = redis
        self.guard = guard
        self.metrics = metrics
        self.timing = LatencyBreakdown()  # where produce→score time goes (logged)
        self._started = 0.0  # when the micro-batch being processed began (epoch s)
        self.writer = BatchWriter(
            redis=redis,
            guard=guard,
            terminals=terminals,
            scored=scored,
            claims=claims,
            send=self._send,
            alerts_topic=settings.topic_alerts,
            alert_threshold=settings.alert_threshold,
            metrics=metrics,
        )

    # --- entry point -----------------------------------------------------------------
    async def process(self, records: Sequence[InputRecord]) -> Futures:
        """Handle ``records``; returns the outputs' delivery futures.

        Raises
        ------
        EmitError
            Kafka refused outputs; retry the same records later.
        """
        if not records:
            return []
        self.metrics.record_consumed(len(records))
        self._started = time.time()
        try:
            return await self._process(records)
        except EmitError:
            raise
        except Exception:  # a bug, not the input: isolate the record that triggers it
            log.exception("micro-batch of %d failed; retrying one record at a time", len(records))
            futures: Futures = []
            for record in records:
                try:
                    futures += await self._process([record])
                except EmitError:
                    raise
                except Exception as exc:
                    err = RecordError("scoring_error", f"{type(exc).__name__}: {exc}")
                    futures += await self._dead_letter([(record, err)])
            return futures

    async def _process(self, records: Sequence[InputRecord]) -> Futures:
        settings = self.settings
        batch, dead = self._validate_batch(
            records, max_bytes=settings.max_message_bytes, max_features=settings.max_features
        )
        futures: Futures = []
        if len(batch):
            futures += await self._score(batch, dead)
        if dead:
            futures += await self._dead_letter(dead)
        return futures

    # --- steps -----------------------------------------------------------------------
    async def _score(self, batch: TxBatch, dead: Dead) -> Futures:
        scorer = self.runtime.for_batch()  # the model is fixed for the whole batch
        ts = batch.ts
        days = np.floor(ts / DAY_SECONDS)  # day_index of every transaction at once
        day_ints = days.astype(np.int64)
        terminals = self.terminals
        needed = terminals.needed(batch.terminal_ids, day_ints)
        missing = terminals.stale(needed)
        if missing:  # new, or needed on a later event day: wait for them
            await self.guard.attempt(lambda: terminals.fetch(missing))
        if terminals.cache_ttl_s > 0:  # old in wall-clock time: refreshed in the background
            terminals.refresh_soon(terminals.expired(needed), self.guard)
        # the card's state is the only thing a transaction reads of the one before it:
        # one call applies the batch in arrival order; the rest is column by column
        card, learnt = self.cards.featurize_and_learn_batch(
            batch.card_ids, ts, batch.amounts, batch.partitions, batch.offsets
        )
        terminal = terminals.rows(batch.terminal_ids, day_ints)
        terminals.count_rows(batch.terminal_ids, day_ints, learnt)
        X = assemble_rows(batch.amounts, ts, days, card, terminal, batch.features, scorer.schema)
        started = time.perf_counter()
        scores, why = self._score_rows(scorer, X)
        scoring_s = time.perf_counter() - started
        ok = np.isfinite(scores)
        if ok.all():
            return await self._emit(scorer.version, batch, None, X, scores, why, scoring_s)
        for j in np.flatnonzero(~ok).tolist():
            err = RecordError("scoring_error", "non-finite feature or score")
            dead.append((batch.records[j], err))
        valid = np.flatnonzero(ok)
        if not valid.size:
            return []
        return await self._emit(scorer.version, batch, valid, X, scores, why, scoring_s)

    @staticmethod
    def _score_rows(scorer: Any, X: np.ndarray) -> tuple[np.ndarray, BatchExplanations]:
        if len(X) == 0:
            return np.zeros(0), BatchExplanations([], [], [], [])
        try:
            top_of = getattr(scorer, "score_batch_top", None)
            if top_of is not None:  # explanations as arrays, serialized in bulk
                scores, top, weights = top_of(X)
                why = BatchExplanations(top, weights, scorer.case_ids, scorer.case_labels)
            else:
                scores, lists = scorer.score_batch(X)
                why = BatchExplanations.from_tuples(list(lists))
            out = np.asarray(scores, dtype=np.float64)
            return np.where(np.isfinite(out), np.clip(out, 0.0, 1.0), np.nan), why
        except Exception:
            log.exception("batch scoring failed; scoring rows one by one")
        out = np.full(len(X), np.nan)
        explanations: list[Any] = [[] for _ in range(len(X))]
        for j in range(len(X)):
            try:
                s, w = scorer.score_batch(X[j : j + 1])
                out[j] = float(np.clip(s[0], 0.0, 1.0))
                explanations[j] = w[0]
            except Exception:  # noqa: S112 - the row is dead-lettered by the caller
                continue
        return out, BatchExplanations.from_tuples(explanations)

    async def _emit(
        self,
        version: str,
        batch: TxBatch,
        valid: np.ndarray | None,
        X: np.ndarray,
        scores: np.ndarray,
        why: BatchExplanations,
        scoring_s: float,
    ) -> Futures:
        """Score records out, scored vectors buffered, alerts to the background writer.

        ``valid``: the rows (of ``batch``, ``X``, ``scores``, ``why``) to emit; None: all.
        """
        settings = self.settings
        alert_at = settings.alert_threshold
        scored_at = time.time()
        rows: Any = np.arange(len(batch)) if valid is None else valid
        out = batch if valid is None else batch.take(valid.tolist())
        if valid is not None:
            X, scores = X[valid], scores[valid]
        codes = decision_codes(scores, review=settings.review_threshold, alert=alert_at)
        stamps = out.stamps
        latencies = np.where(stamps > 0, scored_at - stamps / 1000.0, np.nan)
        latencies_ms = np.where(np.isfinite(latencies), np.round(latencies * 1000.0, 3), 0.0)
        keys, values = self._record_bytes(
            tx_ids=out.tx_ids,
            card_ids=out.card_ids,
            scores=scores,
            decisions=codes,
            model_version=version,
            scored_at=scored_at,
            latencies_ms=latencies_ms,
            why=why,
            rows=rows,
        )
        partitions = out.partitions.tolist()
        messages: list[Message] = list(zip(partitions, keys, values, strict=True))
        alerts = self._alerts(out, version, scored_at, scores, codes, latencies_ms, why, rows)
        entries = self._entries(
            X,
            terminal_ids=out.terminal_ids,
            ts=out.ts,
            card_ids=out.card_ids,
            model_version=version,
            scores=scores,
        )
        futures = await self._send(settings.topic_scores, messages)
        self.scored.add(dict(zip(out.tx_ids, entries, strict=True)), scored_at)
        # Redis round trip and alerts in the background; the batch is acked after them
        futures.append(self.writer.submit(alerts))
        self.timing.add(stamps.astype(np.float64), started=self._started, scored=scored_at)
        self.timing.maybe_log()
        counts = np.bincount(codes, minlength=len(DECISION_NAMES)).tolist()
        self.metrics.record_scored_batch(
            scores=scores,
            latencies_s=latencies,
            scoring_seconds=scoring_s,
            decisions=dict(zip(DECISION_NAMES, counts, strict=True)),
        )
        return futures

    def _alerts(
        self,
        out: TxBatch,
        version: str,
        scored_at: float,
        scores: np.ndarray,
        codes: np.ndarray,
        latencies_ms: np.ndarray,
        why: BatchExplanations,
        rows: Any,
    ) -> list[AlertCandidate]:
        """The batch's alert candidates, each with its score record as a dict (few rows:
        the record is built again here rather than kept for every row)."""
        alerting = np.flatnonzero(scores >= self.settings.alert_threshold).tolist()
        if not alerting:
            return []
        support_rows = [int(rows[n]) for n in alerting]
        explanations = why.json_rows(support_rows)
        candidates: list[AlertCandidate] = []
        for n, support_row, explanation in zip(alerting, support_rows, explanations, strict=True):
            value = score_value(
                tx_id=out.tx_ids[n],
                card_id=out.card_ids[n],
                score=float(scores[n]),
                decision=DECISION_NAMES[int(codes[n])],
                model_version=version,
                scored_at=scored_at,
                latency_ms=float(latencies_ms[n]),
                explanation=orjson.Fragment(explanation),
            )
            candidates.append(
                (
                    int(out.partitions[n]),
                    out.tx_ids[n],
                    float(out.amounts[n]),
                    value,
                    why.row(support_row),
                )
            )
        return candidates

    async def _dead_letter(self, dead: Dead) -> Futures:
        messages: list[Message] = []
        for record, err in dead:
            letter = dead_letter(
                record.value or b"",
                err,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            messages.append((None, record.key, encode(letter)))
            self.metrics.record_dead_letter(err.reason)
        return await self._send(self.settings.topic_dlq, messages)

    async def _send(self, topic: str, messages: list[Message]) -> Futures:
        if not messages:
            return []
        try:
            return await self.emitter.send_many(topic, messages)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise EmitError(f"could not send to {topic}: {exc!r}") from exc
