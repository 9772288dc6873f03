"""After a micro-batch is scored: its one Redis round trip and its alerts, off the hot path.

Score records go out as soon as a batch is scored. The rest of the batch's side
effects, one Redis round trip (terminal counts, scored vectors, alert claims; see
:mod:`streams.resp`) and then the alerts that were claimed, run in a background task
while the next batch is already being featurized and scored. The task is returned to
the caller with the batch's delivery futures, so the batch's offsets are acknowledged
only once it finished and its alerts were delivered (:mod:`streams.runner`).

The tasks are chained: each waits for the previous one, so buffered writes go to Redis
in order and a failed round trip puts its writes back for the next one (Redis down:
scoring continues, alerts are sent unclaimed, consumers deduplicate by ``tx_id``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import NoScriptError

from streams.alert_dedupe import AlertClaims
from streams.emitter import Message
from streams.metrics import RiskstreamMetrics
from streams.outputs import alert_reason, alert_value, dumps
from streams.redis_conn import RedisGuard
from streams.resp import CommandBatch, command_batch
from streams.scored_store import ScoredStore
from streams.terminal_store import TerminalStore

log = logging.getLogger(__name__)

# (partition, tx_id, amount, the score record as a dict, its (case_id, label, weight)s):
# the record's explanation may be JSON already written, so the reason reads the tuples
AlertCandidate = tuple[int, str, float, dict[str, Any], list[tuple[str, int, float]]]
Send = Callable[[str, list[Message]], Awaitable[list[asyncio.Future[Any]]]]


class BatchWriter:
    """Chained background tasks: Redis writes and claims, then alerts, per batch."""

    def __init__(
        self,
        *,
        redis: Any,
        guard: RedisGuard,
        terminals: TerminalStore,
        scored: ScoredStore,
        claims: AlertClaims,
        send: Send,
        alerts_topic: str,
        alert_threshold: float,
        metrics: RiskstreamMetrics,
    ) -> None:
        self.redis = redis
        self.guard = guard
        self.terminals = terminals
        self.scored = scored
        self.claims = claims
        self._send = send
        self.alerts_topic = alerts_topic
        self.alert_threshold = alert_threshold
        self.metrics = metrics
        self._last: asyncio.Future[None] | None = None

    def submit(self, alerts: list[AlertCandidate]) -> asyncio.Future[None]:
        """Start this batch's writes and alerts after the previous batch's; returns the task."""
        task = asyncio.ensure_future(self._run(self._last, alerts))
        self._last = task
        return task

    async def idle(self) -> None:
        """Wait until every submitted batch finished (errors are the tasks' own)."""
        if self._last is not None:
            await asyncio.wait([self._last])

    async def _run(
        self, previous: asyncio.Future[None] | None, alerts: list[AlertCandidate]
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its failure is reported with its own batch
        to_send = await self._write_and_claim(alerts)
        if not to_send:
            return
        messages: list[Message] = []
        counts: dict[str, int] = {}
        for partition, tx_id, amount, value, why in to_send:
            reason = alert_reason(value["score"], self.alert_threshold, why)
            alert = alert_value(value, amount=amount, reason=reason)
            messages.append((partition, tx_id.encode(), dumps(alert)))
            counts[value["decision"]] = counts.get(value["decision"], 0) + 1
        futures = await self._send(self.alerts_topic, messages)
        await asyncio.gather(*futures)  # done = delivered: the runner acks after this
        for decision, n in counts.items():
            self.metrics.alerts.labels(decision).inc(n)

    async def _write_and_claim(self, alerts: list[AlertCandidate]) -> list[AlertCandidate]:
        ids = [alert[1] for alert in alerts]
        restores: list[Callable[[], None]] = []
        claims_at: list[int | None] = [None]

        def queue() -> CommandBatch:
            batch = command_batch(self.redis)
            _, restore_terminals = self.terminals.queue_writes(batch)
            restores[:] = [restore_terminals, self.scored.queue_writes(batch)]
            claims_at[0] = self.claims.queue_claims(batch, ids)
            return batch

        async def write() -> list[Any]:
            replies = await queue().execute()
            if any(isinstance(r, NoScriptError) for r in replies):
                # Redis restarted or was flushed: load the scripts and write everything
                # again (the scripts failed as a whole; the rest is idempotent)
                for restore in restores:
                    restore()
                await self.terminals.load_scripts()
                await self.claims.load_scripts(self.redis)
                replies = await queue().execute()
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies

        replies = await self.guard.attempt(write)
        if replies is None:
            for restore in restores:  # keep the writes for the next round trip
                restore()
            return alerts  # Redis down: send unclaimed; consumers deduplicate by tx_id
        index = claims_at[0]
        previous: list[Any] = list(replies[index]) if index is not None else []
        fresh = [a for a, prev in zip(alerts, previous, strict=True) if prev is None]
        replayed = [
            (tx_id, partition, self.claims.parse_claim(prev))
            for (partition, tx_id, *_), prev in zip(alerts, previous, strict=True)
            if prev is not None
        ]
        if replayed:
            try:
                unpublished = await self.claims.unpublished(replayed)
            except Exception:  # cannot tell: better a duplicate alert than a lost one
                log.exception("could not check replayed alerts in Kafka; sending them")
                unpublished = {tx_id for tx_id, _, _ in replayed}
            fresh += [a for a in alerts if a[1] in unpublished]
        return fresh
