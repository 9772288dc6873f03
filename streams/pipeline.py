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
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, cast

import numpy as np
from aiokafka.errors import KafkaError

from models.features import free_feature_values
from models.features.definitions import (
    CARD_WINDOWS_DAYS,
    DAY_SECONDS,
    NIGHT_END_SECONDS,
    TERMINAL_WINDOWS_DAYS,
)
from streams.alert_dedupe import AlertClaims
from streams.batch_writer import AlertCandidate, BatchWriter
from streams.emitter import Emitter, Message
from streams.metrics import METRICS, RiskstreamMetrics
from streams.outputs import BatchExplanations, decisions, dumps, score_values
from streams.records import RecordError, Transaction, dead_letter, encode, parse_transaction
from streams.redis_conn import RedisGuard
from streams.runtime import ScorerRuntime
from streams.scored_store import ScoredStore, encode_entries
from streams.settings import Settings
from streams.tables import CardStates
from streams.terminal_store import TerminalStore
from streams.timing import LatencyBreakdown

log = logging.getLogger(__name__)
Futures = list[asyncio.Future[Any]]


class InputRecord(Protocol):
    """What the pipeline reads of a Kafka message (aiokafka's ``ConsumerRecord`` fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...  # milliseconds
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


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


Dead = list[tuple[InputRecord, RecordError]]


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
    ) -> None:
        self.settings = settings
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
        txs, inputs, dead = self._validate(records)
        futures: Futures = []
        if txs:
            futures += await self._score(txs, inputs, dead)
        if dead:
            futures += await self._dead_letter(dead)
        return futures

    # --- steps -----------------------------------------------------------------------
    def _validate(
        self, records: Sequence[InputRecord]
    ) -> tuple[list[Transaction], list[InputRecord], Dead]:
        max_bytes, max_features = self.settings.max_message_bytes, self.settings.max_features
        txs: list[Transaction] = []
        inputs: list[InputRecord] = []
        dead: Dead = []
        for record in records:
            try:
                # a None value (tombstone) is the parser's to reject, with its reason
                value = cast(bytes, record.value)
                tx = parse_transaction(value, max_bytes=max_bytes, max_features=max_features)
            except RecordError as err:
                dead.append((record, err))
                continue
            except Exception as exc:  # the parser promises RecordError only; never trust it
                dead.append((record, RecordError("scoring_error", f"parser: {exc!r}")))
                continue
            key = record.key
            if key is None or key != tx.card_id.encode():
                shown = "none" if key is None else repr(key[:60])
                detail = f"Kafka key {shown} must be the card_id {tx.card_id[:60]!r}"
                dead.append((record, RecordError("bad_key", detail)))
                continue
            txs.append(tx)
            inputs.append(record)
        return txs, inputs, dead

    async def _score(
        self, txs: list[Transaction], inputs: list[InputRecord], dead: Dead
    ) -> Futures:
        scorer = self.runtime.for_batch()  # the model is fixed for the whole batch
        schema = scorer.schema
        ts_all = np.fromiter([tx.ts for tx in txs], dtype=np.float64, count=len(txs))
        days = np.floor(ts_all / DAY_SECONDS)  # day_index of every transaction at once
        pairs = list(
            zip([tx.terminal_id for tx in txs], days.astype(np.int64).tolist(), strict=True)
        )
        terminals = self.terminals
        missing = terminals.missing(pairs)
        if missing:  # new, or needed on a later event day: wait for them
            await self.guard.attempt(lambda: terminals.fetch(missing))
        if terminals.cache_ttl_s > 0:  # old in wall-clock time: refreshed in the background
            seen = {terminal for terminal, _ in pairs}
            terminals.refresh_soon(terminals.expired(seen), self.guard)
        terminal = terminals.features(pairs)

        # Per transaction only what depends on the one before it (the card's state);
        # the rest of the row is assembled column by column for the whole batch.
        card_rows: list[tuple[float, ...]] = []
        terminal_rows: list[tuple[float, ...]] = []
        kept: list[int] = []
        learnt: list[tuple[str, int]] = []
        featurize_and_learn = self.cards.featurize_and_learn
        add_card, add_terminal, keep = card_rows.append, terminal_rows.append, kept.append
        for i, tx in enumerate(txs):
            record = inputs[i]
            try:
                pair = pairs[i]
                card, learnt_now = featurize_and_learn(
                    tx.card_id, tx.ts, tx.amount, record.partition, record.offset
                )
                if learnt_now:
                    learnt.append(pair)
            except Exception as exc:
                dead.append((record, RecordError("scoring_error", f"features: {exc!r}")))
                continue
            add_card(card)
            add_terminal(terminal[pair])
            keep(i)
        self.terminals.add_transactions(learnt)
        X = assemble_rows(
            [txs[i] for i in kept], ts_all[kept], days[kept], card_rows, terminal_rows, schema
        )
        started = time.perf_counter()
        scores, why = self._score_rows(scorer, X)
        scoring_s = time.perf_counter() - started
        ok = np.isfinite(scores)
        if not ok.all():
            for j in np.flatnonzero(~ok).tolist():
                err = RecordError("scoring_error", "non-finite feature or score")
                dead.append((inputs[kept[j]], err))
        valid = np.flatnonzero(ok).tolist()
        if not valid:
            return []
        return await self._emit(scorer.version, txs, inputs, kept, valid, X, scores, why, scoring_s)

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
        txs: list[Transaction],
        inputs: list[InputRecord],
        kept: list[int],
        rows: list[int],
        X: np.ndarray,
        scores: np.ndarray,
        why: BatchExplanations,
        scoring_s: float,
    ) -> Futures:
        settings = self.settings
        alert_at = settings.alert_threshold
        scored_at = time.time()
        batch_scores = scores[rows]
        decided = decisions(batch_scores, review=settings.review_threshold, alert=alert_at)
        out_txs = [txs[kept[j]] for j in rows]
        out_inputs = [inputs[kept[j]] for j in rows]
        nan = float("nan")
        stamps = [record.timestamp for record in out_inputs]
        latencies = [
            scored_at - stamp / 1000.0 if stamp is not None and stamp > 0 else nan
            for stamp in stamps
        ]
        score_list = batch_scores.tolist()
        tx_ids = [tx.tx_id for tx in out_txs]
        card_ids = [tx.card_id for tx in out_txs]
        values = score_values(
            tx_ids=tx_ids,
            card_ids=card_ids,
            scores=score_list,
            decisions=decided,
            model_version=version,
            scored_at=scored_at,
            latencies_ms=[round(x * 1000.0, 3) if x == x else 0.0 for x in latencies],
            explanations=why.json_rows(rows),  # the batch's explanation arrays, in bulk
        )
        messages: list[Message] = list(
            zip(
                [record.partition for record in out_inputs],
                [tx_id.encode() for tx_id in tx_ids],
                [dumps(value) for value in values],
                strict=True,
            )
        )
        alerts: list[AlertCandidate] = [
            (out_inputs[n].partition, tx_ids[n], out_txs[n].amount, values[n], why.row(rows[n]))
            for n in np.flatnonzero(batch_scores >= alert_at).tolist()
        ]
        entries = dict(
            zip(
                tx_ids,
                encode_entries(
                    X[rows],
                    terminal_ids=[tx.terminal_id for tx in out_txs],
                    ts=[tx.ts for tx in out_txs],
                    card_ids=card_ids,
                    model_version=version,
                    scores=score_list,
                ),
                strict=True,
            )
        )
        futures = await self._send(settings.topic_scores, messages)
        self.scored.add(entries, scored_at)
        # Redis round trip and alerts in the background; the batch is acked after them
        futures.append(self.writer.submit(alerts))
        self.timing.add(
            np.array([0 if stamp is None else stamp for stamp in stamps], dtype=np.float64),
            started=self._started,
            scored=scored_at,
        )
        self.timing.maybe_log()
        counts = {d: decided.count(d) for d in ("allow", "review", "block")}
        self.metrics.record_scored_batch(
            scores=batch_scores,
            latencies_s=latencies,
            scoring_seconds=scoring_s,
            decisions=counts,
        )
        return futures

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


N_CARD_WINDOW = 2 * len(CARD_WINDOWS_DAYS)
N_CARD = N_CARD_WINDOW + 2  # the windows, then time since the last tx and amount / mean
N_TERMINAL = 2 * len(TERMINAL_WINDOWS_DAYS)


def assemble_rows(
    txs: Sequence[Transaction],
    ts: np.ndarray,
    days: np.ndarray,
    card_rows: Sequence[Sequence[float]],
    terminal_rows: Sequence[Sequence[float]],
    schema: Any,
) -> np.ndarray:
    """The float32 feature matrix of a batch, in :func:`feature_row`'s layout.

    ``ts`` and ``days`` (``floor(ts / 86400)``) are the transactions' times as arrays:
    the time features are computed for the whole batch with the float64 arithmetic of
    :func:`models.features.tx_features` (so the same values); card and terminal
    features are copied in as two blocks. A unit test holds each row equal to
    :func:`feature_row`.

    >>> from types import SimpleNamespace as NS
    >>> from models.features import FeatureSchema
    >>> schema = FeatureSchema()
    >>> tx = NS(amount=3.0, features={})
    >>> X = assemble_rows([tx], np.array([0.0]), np.array([0.0]), [[1.0] * 8], [[2.0] * 6],
    ...                   schema)
    >>> X.shape, X[0, :4].tolist()
    ((1, 17), [3.0, 0.0, 1.0, 1.0])
    """
    extra = schema.extra_names
    width = 3 + N_CARD + N_TERMINAL + len(extra)
    if width != schema.n_features:
        raise ValueError(f"assembled {width} features, the model takes {schema.n_features}")
    n = len(txs)
    X = np.empty((n, width), dtype=np.float32)
    if not n:
        return X
    X[:, 0] = np.fromiter([tx.amount for tx in txs], dtype=np.float64, count=n)
    X[:, 1] = (days + 3) % 7 >= 5  # weekend: Monday = 0, day 0 was a Thursday
    X[:, 2] = ts - days * DAY_SECONDS < NIGHT_END_SECONDS
    card = np.array(card_rows, dtype=np.float64).reshape(n, N_CARD)
    X[:, 3 : 3 + N_CARD_WINDOW] = card[:, :N_CARD_WINDOW]
    at = 3 + N_CARD_WINDOW
    X[:, at : at + N_TERMINAL] = np.array(terminal_rows, dtype=np.float64).reshape(n, N_TERMINAL)
    at += N_TERMINAL
    X[:, at : at + 2] = card[:, N_CARD_WINDOW:]
    if extra:
        X[:, at + 2 :] = [free_feature_values(tx.features, extra) for tx in txs]
    return X


def feature_row(
    card: Sequence[float],
    terminal: Sequence[float],
    time_feats: Sequence[float],
    free: dict[str, float] | None,
    extra_names: Sequence[str],
) -> list[float]:
    """One feature vector in :func:`models.features.assemble_vector`'s layout, as a list.

    The batch's rows become one array at once instead of one array per transaction; a
    unit test holds this equal to ``assemble_vector``.

    >>> feature_row([1.0] * 8, [2.0] * 6, (3.0, 0.0, 1.0), {"v": 5.0}, ["v"])[:4]
    [3.0, 0.0, 1.0, 1.0]
    """
    row = [*time_feats, *card[:N_CARD_WINDOW], *terminal, *card[N_CARD_WINDOW:]]
    if extra_names:
        row += free_feature_values(free, extra_names)
    return row
