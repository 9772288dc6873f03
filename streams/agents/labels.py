"""The labels agent: analysts' and chargebacks' verdicts feed the terminal fraud counts.

For each ``labels`` record it finds what the transaction was scored with (its terminal
and time, kept by the score agent in :class:`~streams.scored_store.ScoredStore`) and
moves that terminal's known-fraud count for the transaction's day, atomically and
idempotently (a replayed label changes nothing; a corrected one moves the count back).
Terminal risk features read those counts 8+ days later: the label-delayed features.

Invalid label messages go to the DLQ with a reason. A label whose transaction is not
known (never scored, or older than ``feature_ttl_s``) is dead-lettered as
``unknown_tx_id``; the adaptation issue extends this agent (labelled cases, a pending
wait for labels that arrive before their transaction).

While Redis is down the batch is retried and not acknowledged, so no label is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import NoScriptError

from models.features import day_index
from streams.agents.score import record_of
from streams.emitter import Message
from streams.pipeline import InputRecord, RawRecord
from streams.records import Label, RecordError, dead_letter, encode, parse_label
from streams.redis_conn import REDIS_ERRORS

if TYPE_CHECKING:  # pragma: no cover
    from streams.app import Riskstream

log = logging.getLogger(__name__)
LABEL_BATCH = 500
LABEL_WAIT_S = 0.05


async def apply_labels(rs: Riskstream, records: Sequence[InputRecord]) -> dict[str, int]:
    """Apply one batch of raw ``labels`` messages; returns counts by outcome.

    Raises on Redis or Kafka errors (nothing is acknowledged then).
    """
    labels: list[tuple[InputRecord, Label]] = []
    dead: list[tuple[InputRecord, RecordError]] = []
    for record in records:
        try:
            raw = cast(bytes, record.value)  # None (tombstone) is the parser's to reject
            labels.append((record, parse_label(raw, max_bytes=rs.settings.max_message_bytes)))
        except RecordError as err:
            dead.append((record, err))
    found = await rs.scored.get_many(list(dict.fromkeys(label.tx_id for _, label in labels)))
    applied = 0
    if labels:
        for attempt in (0, 1):
            pipe = rs.redis.pipeline(transaction=False)
            for _, label in labels:
                entry = found.get(label.tx_id)
                if entry is None:
                    continue
                rs.terminals.queue_label(
                    pipe,
                    tx_id=label.tx_id,
                    label=label.label,
                    terminal_id=str(entry["terminal_id"]),
                    day=day_index(float(entry["ts"])),
                    ttl_s=rs.settings.feature_ttl_s,
                )
            try:
                applied = len(await pipe.execute())
                break
            except NoScriptError:
                if attempt:
                    raise
                await rs.terminals.load_scripts()
    for record, label in labels:
        if label.tx_id not in found:
            detail = f"no scored transaction {label.tx_id[:80]!r} within the feature TTL"
            dead.append((record, RecordError("unknown_tx_id", detail)))
    if dead:
        messages: list[Message] = []
        for record, reason in dead:
            letter = dead_letter(
                record.value or b"",
                reason,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            messages.append((None, record.key, encode(letter)))
            rs.metrics.record_dead_letter(reason.reason)
        futures = await rs.emitter.send_many(rs.settings.topic_dlq, messages)
        await asyncio.gather(*futures)
    rs.metrics.record_labels(len(records))
    return {"applied": applied, "dead": len(dead)}


async def apply_with_retry(rs: Riskstream, records: Sequence[RawRecord]) -> None:
    """:func:`apply_labels`, retried with back-off until it succeeds or the worker stops."""
    delay = 0.5
    while True:
        try:
            if rs.label_handler is not None:  # few-shot adaptation: cases, pending labels
                await rs.label_handler(records)
            else:
                await apply_labels(rs, records)
            rs.guard.ok()
            return
        except REDIS_ERRORS as exc:
            rs.guard.failed(exc)
            error: BaseException = exc
        except Exception as exc:  # Kafka: same treatment, never ack what was not applied
            error = exc
        if rs.app.should_stop:
            raise error
        log.warning("labels not applied (%r); retrying in %.1f s", error, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


def register(rs: Riskstream) -> Any:
    """Add the labels agent to ``rs.app``; returns the agent."""

    @rs.app.agent(rs.topics.labels, name="labels", concurrency=1)
    async def labels(stream: Any) -> None:
        async for events in stream.take_events(LABEL_BATCH, within=LABEL_WAIT_S):
            await apply_with_retry(rs, [record_of(event.message) for event in events])

    return labels
