"""The labels side of few-shot adaptation: a label becomes a labelled case.

:meth:`LabelFlow.apply` handles one batch of raw ``labels`` messages (the labels agent
calls it). For each valid label, the last one per ``tx_id`` in the batch:

1. the feature vector the transaction was scored with is looked up (the score agent's
   :class:`~streams.scored_store.ScoredStore`);
2. found: one Redis pipeline moves the terminal's fraud count (label-delayed terminal
   risk), writes the case to the :class:`~streams.case_store.CaseStore`, and feeds the
   prequential window and the drift detector with the score the transaction had;
3. not found: the label waits in Redis (``{prefix}labels:pending``) for
   ``pending_label_ttl_s`` (the transaction may not be scored yet); :meth:`sweep_pending`
   retries waiting labels and dead-letters expired ones as ``unknown_tx_id``.

Invalid messages go to the DLQ with their reason. Nothing is acknowledged before Redis
holds the result: on a Redis error :meth:`apply` raises, the agent retries the batch
with back-off and its offsets stay uncommitted (scoring goes on meanwhile), so no label
is lost in an outage and the ``riskstream_degraded`` gauge shows it.

Examples
--------
>>> entry = PendingLabel(raw=b'{"tx_id": "t1"}', topic="labels", partition=0, offset=7,
...                      label_time=1.0, deadline=61.0)
>>> PendingLabel.from_json(entry.to_json()) == entry
True
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import NoScriptError

from models.features import day_index
from streams.case_store import Case, CaseStore
from streams.drift import DriftMonitor, PrequentialWindow
from streams.emitter import Message
from streams.pipeline import InputRecord
from streams.records import Label, RecordError, dead_letter, encode, parse_label

log = logging.getLogger(__name__)
SWEEP_LIMIT = 5000  # pending labels looked at per sweep


@dataclass(frozen=True)
class PendingLabel:
    """A label waiting for its transaction, with where it came from (for the DLQ)."""

    raw: bytes
    topic: str
    partition: int
    offset: int
    label_time: float
    deadline: float

    def to_json(self) -> bytes:
        """Stored form (raw bytes in base64)."""
        values = self.__dict__ | {"raw": base64.b64encode(self.raw).decode()}
        return orjson.dumps(values)

    @classmethod
    def from_json(cls, data: bytes) -> PendingLabel:
        """Inverse of :meth:`to_json`."""
        values = orjson.loads(data)
        values["raw"] = base64.b64decode(values["raw"])
        return cls(**values)


@dataclass(frozen=True)
class _Item:
    record: InputRecord
    label: Label
    label_time: float


def _label_time(record: InputRecord) -> float:
    stamp = record.timestamp
    return stamp / 1000.0 if stamp else time.time()


class LabelFlow:
    """Labels → cases, terminal counts, pending labels, prequential metrics.

    Parameters
    ----------
    rs
        The worker's :class:`~streams.app.Riskstream` (settings, Redis, scored store,
        terminal store, emitter, metrics).
    cases
        The labelled-case store.
    drift
        Fed with the prequential error of each applied label.
    window
        Prequential precision/recall/AP.
    """

    def __init__(
        self, rs: Any, cases: CaseStore, *, drift: DriftMonitor, window: PrequentialWindow
    ) -> None:
        self.rs = rs
        self.settings = rs.settings
        self.cases = cases
        self.drift = drift
        self.window = window
        prefix = f"{self.settings.app_id}:"
        self.pending_key = f"{prefix}labels:pending"
        self.pending_data_key = f"{prefix}labels:pending:data"

    # --- the labels agent's batch -------------------------------------------------------
    async def apply(self, records: Sequence[InputRecord]) -> dict[str, int]:
        """Handle one batch; returns counts by outcome. Raises on Redis or Kafka errors."""
        items: dict[str, _Item] = {}
        dead: list[tuple[InputRecord, RecordError]] = []
        max_bytes = self.settings.max_message_bytes
        for record in records:
            try:
                label = parse_label(record.value or b"", max_bytes=max_bytes)
            except RecordError as err:
                dead.append((record, err))
                continue
            items.pop(label.tx_id, None)  # the latest label of a tx in the batch wins
            items[label.tx_id] = _Item(record, label, _label_time(record))
        found = await self.rs.scored.get_many(list(items)) if items else {}
        unknown = [item for tx_id, item in items.items() if tx_id not in found]
        known = [(item, found[tx_id]) for tx_id, item in items.items() if tx_id in found]
        ttl = float(self.settings.pending_label_ttl_s)
        waiting = unknown if ttl > 0 else []
        if ttl <= 0:
            dead += [(i.record, self._unknown_error(i.label.tx_id)) for i in unknown]
        counts = await self._write(known, waiting)
        if dead:
            await self._dead_letter(dead)
        self.rs.metrics.record_labels(len(records), pending=counts.get("pending"))
        return {"applied": len(known), "pending": len(waiting), "dead": len(dead)}

    async def _write(
        self, known: list[tuple[_Item, dict[str, Any]]], waiting: list[_Item]
    ) -> dict[str, int]:
        """One pipeline: terminal counts, cases, pending labels, then the gauges' counts."""
        now = time.time()
        cases = [self._case(item, entry) for item, entry in known]
        for attempt in (0, 1):
            pipe = self.rs.redis.pipeline(transaction=False)
            for (_, entry), case in zip(known, cases, strict=True):
                self.rs.terminals.queue_label(
                    pipe,
                    tx_id=case.tx_id,
                    label=case.label,
                    terminal_id=str(entry["terminal_id"]),
                    day=day_index(float(entry["ts"])),
                    ttl_s=self.settings.feature_ttl_s,
                )
                self.cases.queue_put(pipe, case)
            for item in waiting:
                pending = PendingLabel(
                    raw=item.record.value or b"",
                    topic=item.record.topic,
                    partition=item.record.partition,
                    offset=item.record.offset,
                    label_time=item.label_time,
                    deadline=now + float(self.settings.pending_label_ttl_s),
                )
                pipe.zadd(self.pending_key, {item.label.tx_id: pending.deadline})
                pipe.hset(self.pending_data_key, item.label.tx_id, pending.to_json())
            pipe.zcard(self.cases.class_key(1))
            pipe.zcard(self.cases.class_key(0))
            pipe.zcard(self.pending_key)
            try:
                replies = await pipe.execute()
                break
            except NoScriptError:
                if attempt:
                    raise
                # Redis lost its scripts (restart); every write here is idempotent: redo all
                await self.rs.terminals.load_scripts()
                await self.cases.load_scripts()
        fraud, legit, pending_n = (int(v) for v in replies[-3:])
        self.rs.metrics.set_case_counts({"fraud": fraud, "legit": legit})
        self._learn(cases)
        return {"fraud": fraud, "legit": legit, "pending": pending_n}

    def _case(self, item: _Item, entry: dict[str, Any]) -> Case:
        return Case(
            tx_id=item.label.tx_id,
            label=int(item.label.label),
            x=tuple(float(v) for v in entry["x"]),
            ts=float(entry["ts"]),
            labelled_at=float(item.label.labelled_at),
            label_time=item.label_time,
            source=item.label.source,
            model_version=str(entry.get("model_version", "")),
            score=float(entry.get("score", float("nan"))),
            card_id=str(entry.get("card_id", "")),
        )

    def _learn(self, cases: Sequence[Case]) -> None:
        for case in cases:
            self.window.learn_one(case.label, case.score)
            self.drift.learn_one(case.label, case.score)
        if cases:
            self.window.export(self.rs.metrics)

    def _unknown_error(self, tx_id: str) -> RecordError:
        detail = (
            f"no scored transaction {tx_id[:80]!r} within the feature TTL "
            f"(waited {self.settings.pending_label_ttl_s:g} s)"
        )
        return RecordError("unknown_tx_id", detail)

    async def _dead_letter(self, dead: Sequence[tuple[InputRecord, RecordError]]) -> None:
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
            self.rs.metrics.record_dead_letter(err.reason)
        futures = await self.rs.emitter.send_many(self.settings.topic_dlq, messages)
        await asyncio.gather(*futures)

    # --- labels that wait for their transaction -----------------------------------------
    async def sweep_pending(self, now: float | None = None) -> dict[str, int]:
        """Apply waiting labels whose transaction is now known; dead-letter expired ones."""
        now = time.time() if now is None else now
        redis = self.rs.redis
        ids = [m.decode() for m in await redis.zrange(self.pending_key, 0, SWEEP_LIMIT - 1)]
        if not ids:
            return {"applied": 0, "expired": 0, "pending": 0}
        found = await self.rs.scored.get_many(ids)
        payloads = await redis.hmget(self.pending_data_key, ids)
        ready: list[tuple[_Item, dict[str, Any]]] = []
        expired: list[tuple[str, PendingLabel]] = []
        for tx_id, raw in zip(ids, payloads, strict=True):
            if raw is None:
                continue
            pending = PendingLabel.from_json(raw)
            if tx_id in found:
                record = _PendingRecord(pending)
                label = parse_label(pending.raw, max_bytes=self.settings.max_message_bytes)
                ready.append((_Item(record, label, pending.label_time), found[tx_id]))
            elif pending.deadline <= now:
                expired.append((tx_id, pending))
        if ready:
            await self._write(ready, [])
            await self._forget([item.label.tx_id for item, _ in ready])
        claimed = await self._forget([tx_id for tx_id, _ in expired])
        late = [(_PendingRecord(p), self._unknown_error(t)) for t, p in expired if t in claimed]
        if late:
            await self._dead_letter(late)
        remaining = int(await redis.zcard(self.pending_key))
        self.rs.metrics.labels_pending.set(remaining)
        return {"applied": len(ready), "expired": len(late), "pending": remaining}

    async def _forget(self, tx_ids: Sequence[str]) -> set[str]:
        """Remove pending labels; returns the ids this call removed (a claim)."""
        if not tx_ids:
            return set()
        pipe = self.rs.redis.pipeline(transaction=False)
        for tx_id in tx_ids:
            pipe.zrem(self.pending_key, tx_id)
        pipe.hdel(self.pending_data_key, *tx_ids)
        replies = await pipe.execute()
        return {t for t, removed in zip(tx_ids, replies, strict=False) if removed}


@dataclass(frozen=True)
class _PendingRecord:
    """A stored pending label seen as the Kafka message it came from."""

    pending: PendingLabel

    @property
    def topic(self) -> str:
        return self.pending.topic

    @property
    def partition(self) -> int:
        return self.pending.partition

    @property
    def offset(self) -> int:
        return self.pending.offset

    @property
    def timestamp(self) -> int | None:
        return int(self.pending.label_time * 1000)

    @property
    def key(self) -> bytes | None:
        return None

    @property
    def value(self) -> bytes | None:
        return self.pending.raw
