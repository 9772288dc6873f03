"""Runs micro-batches through the score pipeline and decides when their offsets are done.

An input offset is acknowledged to Faust (and so becomes committable) only when

1. its micro-batch was processed (scored or dead-lettered),
2. every output of that batch was *delivered* (its producer future succeeded), and
3. the card state it changed was flushed to the table's changelog, and delivered.

So a committed offset never has a lost output or unsaved state behind it, while the
changelog is written once per ``state_flush_interval_s`` per changed card, not per
transaction. A flush *round* starts every interval and is spread over the following
micro-batches (oldest change first), twice as many cards per batch as it had records
and at least ``FLUSH_CHUNK``: a round keeps up however many distinct cards a stream has
(a batch changes at most one card per record), and serializing thousands of cards never
stalls one batch (it was a 10–100 ms latency spike per second at 5,000 tx/s). When the
stream is idle between batches, the timer (:meth:`BatchRunner.tick`) carries the round
on in chunks of ``FLUSH_CHUNK``, yielding the event loop between them: flushing every
dirty card at once there was the same spike (25–40 ms every second at 5,000 tx/s, when
the worker waits for records most of the time). A batch whose outputs fail is processed
again (safe: cards do not re-learn an offset); a failing changelog write crashes the
worker, which then resumes from the last commit.

Both consume modes use this: the batch consumer hook (:meth:`BatchRunner.handle`) and
the Faust agent's ``take_events`` loop (:meth:`BatchRunner.run_and_settle`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.pipeline import EmitError, Futures, InputRecord, ScorePipeline
from streams.tables import CardStates

log = logging.getLogger(__name__)

Ack = Callable[[Sequence[InputRecord]], None]
MAX_RETRY_SLEEP_S = 10.0
FLUSH_CHUNK = 200  # cards serialized per step of a flush round (~1 ms)


@dataclass
class _Pending:
    records: Sequence[InputRecord]
    futures: Futures
    batch: int  # CardStates batch number of its changes
    flushed: bool = False
    state_futures: Futures = field(default_factory=list)


class BatchRunner:
    """Processes batches, flushes card state, acknowledges settled offsets.

    Parameters
    ----------
    pipeline
        The score pipeline.
    cards
        Its card-state working copy (flushed here).
    ack
        Marks records as done with Faust (makes their offsets committable).
    max_batch
        Records per pipeline call.
    flush_interval_s
        Card-state changelog flush interval.
    stopping
        Returns True when the worker is shutting down (stop retrying then).
    crash
        Called with the error when the worker cannot continue safely.
    """

    def __init__(
        self,
        pipeline: ScorePipeline,
        cards: CardStates,
        *,
        ack: Ack,
        max_batch: int,
        flush_interval_s: float,
        stopping: Callable[[], bool] = lambda: False,
        crash: Callable[[BaseException], Awaitable[Any]] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.cards = cards
        self._ack = ack
        self.max_batch = max_batch
        self.flush_interval_s = flush_interval_s
        self._stopping = stopping
        self._crash = crash
        self._lock = asyncio.Lock()
        self._pending: deque[_Pending] = deque()
        self._state_futures: Futures = []  # changelog deliveries not yet known done
        self._round: int | None = None  # batch number a flush round must reach
        self.batches = 0
        self.acked = 0

    @property
    def unsettled(self) -> int:
        """Records processed but not yet acknowledged."""
        return sum(len(p.records) for p in self._pending)

    # --- batch mode ------------------------------------------------------------------
    async def handle(
        self, records: Sequence[InputRecord], wanted: Callable[[], bool] | None = None
    ) -> None:
        """Process ``records`` in micro-batches of ``max_batch``; ack what has settled.

        ``wanted()`` is asked once the runner is free: False (a rebalance started while
        these records waited for the lock) drops them unprocessed, for whoever owns
        their partitions next (they were not acknowledged, so they are fetched again).
        """
        async with self._lock:
            if wanted is not None and not wanted():
                return
            for start in range(0, len(records), self.max_batch):
                chunk = records[start : start + self.max_batch]
                batch = self.cards.next_batch()
                futures = await self._run(chunk)
                if futures is None:  # stopping: leave the rest for the next owner
                    return
                self._pending.append(_Pending(chunk, futures, batch))
                self.batches += 1
                await self._flush_step(max(FLUSH_CHUNK, 2 * len(chunk)))
            await self._ack_settled()

    async def tick(self) -> None:
        """Timer: flush and ack when the stream is idle (a busy stream does it itself).

        A round (everything changed up to the latest batch, so that batch's offsets can
        be committed) is flushed ``FLUSH_CHUNK`` cards at a time, and the event loop
        runs between chunks: records that arrive meanwhile are scored between them
        (each batch continues the round itself, see :meth:`handle`).
        """
        while not self._lock.locked():
            async with self._lock:
                # pending batches wait for their state: a round now, due or not
                await self._flush_step(FLUSH_CHUNK, start_now=bool(self._pending))
                await self._ack_settled()
                if self._round is None:
                    return
            await asyncio.sleep(0)  # fetches and batches between two chunks

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Settle everything now (before a commit on revoke/stop); forget the working copy."""
        async with self._lock:
            await self._flush(limit=None)
            futures = [f for p in self._pending for f in (*p.futures, *p.state_futures)]
            if futures:
                await asyncio.wait(futures, timeout=timeout_s)
            await self._ack_settled()
            if self._pending:
                log.warning("%d records left unacknowledged at drain", self.unsettled)
                self._pending.clear()
            self.cards.forget()

    # --- stream mode -----------------------------------------------------------------
    async def run_and_settle(self, records: Sequence[InputRecord]) -> None:
        """Process, flush, and wait for delivery before returning (Faust acks after)."""
        async with self._lock:
            batch = self.cards.next_batch()
            futures = await self._run(records)
            if futures is None:
                return
            self._pending.append(_Pending(records, futures, batch))
            await self._flush(limit=None)
            while self._pending:
                waiting = [f for p in self._pending for f in (*p.futures, *p.state_futures)]
                if waiting:
                    await asyncio.wait(waiting)
                await self._ack_settled()

    # --- internals -------------------------------------------------------------------
    async def _run(self, records: Sequence[InputRecord]) -> Futures | None:
        for attempt in itertools.count():
            try:
                return await self.pipeline.process(records)
            except EmitError as exc:
                if self._stopping():
                    return None
                delay = min(0.5 * 2**attempt, MAX_RETRY_SLEEP_S)
                log.warning("outputs not accepted (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _flush_step(self, limit: int = FLUSH_CHUNK, *, start_now: bool = False) -> None:
        """One chunk (``limit`` cards) of the current flush round; starts a round (up to
        the latest batch) when one is due, or with ``start_now`` when any card changed."""
        if self._round is None and (
            self.cards.due(self.flush_interval_s) or (start_now and self.cards.dirty)
        ):
            self._round = self.cards.batch
            self.cards.flushed_at = time.monotonic()
        if self._round is not None:
            await self._flush(limit=limit, through=self._round)
            if self.cards.flushed_through >= self._round:
                self._round = None
        else:
            self._mark_flushed()

    async def _flush(self, limit: int | None, through: int | None = None) -> None:
        try:
            n = await self.cards.flush(limit=limit, through=through)
        except Exception as exc:  # Kafka refused the changelog: state could be lost
            await self._fail(exc)
            return
        if n:
            self._state_futures += self.cards.last_futures
        if limit is None:
            self._round = None
        self._mark_flushed()

    def _mark_flushed(self) -> None:
        """Batches whose changes are all flushed wait for every changelog delivery so far."""
        self._state_futures = [f for f in self._state_futures if not f.done() or _failed(f)]
        through = self.cards.flushed_through
        for pending in self._pending:
            if not pending.flushed and pending.batch <= through:
                pending.flushed = True
                pending.state_futures = list(self._state_futures)

    async def _ack_settled(self) -> None:
        while self._pending:
            head = self._pending[0]
            if not head.flushed:
                return
            if not all(f.done() for f in head.futures) or not all(
                f.done() for f in head.state_futures
            ):
                return
            if any(_failed(f) for f in head.state_futures):
                await self._fail(RuntimeError("card-state changelog was not delivered"))
                return
            if any(_failed(f) for f in head.futures):
                log.warning("outputs of %d records not delivered; reprocessing", len(head.records))
                futures = await self._run(head.records)
                if futures is None:
                    return
                head.futures = futures
                return  # checked again at the next batch or tick, not in a tight loop
            self._ack(head.records)
            self.acked += len(head.records)
            self._pending.popleft()

    async def _fail(self, exc: BaseException) -> None:
        log.error("cannot continue safely: %s", exc)
        if self._crash is not None:
            await self._crash(exc)
        else:
            raise exc


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.cancelled() or future.exception() is not None
