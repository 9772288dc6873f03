"""Faust's Kafka consumer, with the ``transactions`` topic handed over in whole batches.

Faust delivers each message on its own: a ``wait_first`` with several asyncio tasks,
the conductor's lock and queue, a stream iteration and an ack per message, 70–90 µs
of framework time per event (ANCHORS.md), which caps a worker near 12k events/s. This
consumer keeps everything else of Faust (group membership and the partition assignor,
table changelogs and recovery, offset commits, rebalancing, other agents' topics) and
changes two things. Records of the *batch topics* fetched by ``getmany`` go to a
:class:`~streams.runner.BatchRunner` in one call instead of one by one through the
conductor. Offsets are acknowledged in Faust's own bookkeeping when the runner says
they are settled, so Faust's commit logic (producer flush, then commit) is unchanged.
And aiokafka runs on the worker's event loop instead of in Faust's consumer thread
(:class:`InLoopConsumerThread`).

On revocation and shutdown the runner is drained first (batch finished, state flushed,
outputs delivered, offsets acknowledged) and the offsets committed while the partitions
are still ours, so a rebalance does not replay already scored transactions.

Built for faust-streaming 0.15.3 and mode-streaming 0.7.1 (pinned);
``tests/unit/test_score_agent.py`` and ``tests/unit/test_inloop_consumer.py`` check the
internals it relies on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaFaustConsumer
from faust.types import TP
from mode.threads import QueueServiceThread
from mode.utils.futures import maybe_async, notify

from streams.pipeline import InputRecord
from streams.runner import BatchRunner

log = logging.getLogger(__name__)


#: Longest time the broker holds a fetch request without data (Faust hard-codes 1,500 ms).
#: aiokafka keeps one fetch in flight per broker; a request that went out for partitions
#: without new data (other topics, or the stream's own right after a hand-over) made
#: records arriving meanwhile wait up to 1.5 s: the produce→score p99 at 5,000 tx/s.
FETCH_MAX_WAIT_MS = 20


class BatchConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, with a short fetch long-poll (:data:`FETCH_MAX_WAIT_MS`)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by start() for its Fetcher
        return consumer


class InLoopServiceThread(QueueServiceThread):
    """A mode ``QueueServiceThread`` that runs as a task on its parent's event loop.

    Put it first in the bases of a ``QueueServiceThread`` subclass. mode's life cycle
    keeps its order (``start`` returns once ``_serve`` runs the service; ``stop`` ends
    ``_serve``, which stops the children and sets the shutdown event), only without the
    thread: ``call_thread`` is a plain ``await``, and nothing the loop runs besides the
    service is cancelled when it stops.

    >>> import asyncio
    >>> class Echo(InLoopServiceThread):
    ...     async def echo(self, x): return await self.call_thread(lambda: x)
    >>> async def main():
    ...     echo = Echo(loop=asyncio.get_running_loop())
    ...     await echo.start()
    ...     try:
    ...         return await echo.echo(7), echo.thread_loop is asyncio.get_running_loop()
    ...     finally:
    ...         await echo.stop()
    >>> asyncio.run(main())
    (7, True)
    """

    _serving: asyncio.Future[None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        loop = kwargs.get("loop") or asyncio.get_event_loop()
        kwargs["loop"] = loop
        kwargs["thread_loop"] = loop  # one loop: the parent's
        super().__init__(*args, **kwargs)

    async def start(self) -> None:
        """Start the service on this loop; returns once it runs (as the thread's does)."""
        if self._thread_started.is_set():
            raise RuntimeError(f"{self.label} started twice")
        self._thread_started.set()
        self._thread_running = self.parent_loop.create_future()
        self._serving = asyncio.ensure_future(self._serve())
        try:
            if not self.should_stop:
                await self._thread_running  # set by _serve, or failed by crash()
        finally:
            self._thread_running = None

    async def call_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fun`` "in the service's thread", which is this loop: just run it (callers
        pass coroutine functions and plain ones, as mode's method queue allows)."""
        return await maybe_async(fun(*args, **kwargs))

    async def _gather_remaining_tasks(self) -> None:
        """mode cancels every task left on the thread's loop when the thread ends; that
        loop is the parent's here, and its tasks are not this service's to cancel."""


class InLoopConsumerThread(InLoopServiceThread, BatchConsumerThread):
    """The worker's Kafka consumer on the worker's own event loop (no consumer thread).

    Faust runs aiokafka in a second thread with its own event loop, and every call
    (``getmany`` once per fetch, commits, seeks) crosses over through a method queue
    and a future. Both threads run Python: the consumer's fetch and record decoding
    compete with the score path for the GIL, a thread that wants the GIL back waits up
    to the interpreter's switch interval (5 ms), and two event loops wake for the same
    work. On one loop a fetch is handed over by a plain ``await``.
    """


class BatchConsumer(AIOKafkaFaustConsumer):
    """Faust's aiokafka consumer with a batch path for some topics (see module doc)."""

    batch_topics: frozenset[str] = frozenset()
    runner: BatchRunner | None = None

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return InLoopConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # per partition: highest offset handed to the runner since it was assigned here
        self._taken_upto: dict[TP, int] = {}

    def attach(self, runner: BatchRunner, topics: Iterable[str]) -> None:
        """Send the records of ``topics`` to ``runner`` from now on."""
        self.runner = runner
        self.batch_topics = frozenset(topics)

    async def _wait_next_records(
        self, timeout: float
    ) -> tuple[Mapping[TP, list[Any]] | None, set[TP] | None]:
        records, active = await super()._wait_next_records(timeout)
        runner = self.runner
        if not records or runner is None or not self.flow_active or self.should_stop:
            return records, active  # Faust's own path (it seeks back when flow stopped)
        topics = self.batch_topics
        if not any(tp.topic in topics for tp in records):
            return records, active
        rest = {tp: recs for tp, recs in records.items() if tp.topic not in topics}
        batch: list[Any] = []
        for tp, recs in records.items():
            if tp.topic in topics and (
                active is None or tp in active or tp in self._buffered_partitions
            ):
                batch += await self._accept(tp, recs)
        if batch:
            timing = getattr(getattr(runner, "pipeline", None), "timing", None)
            if timing is not None:  # the latency breakdown's "fetched" moment
                timing.fetched()
            # a rebalance may start while the runner is busy: then these records are not ours
            await runner.handle(batch, wanted=lambda: self.flow_active and not self.should_stop)
        return rest, active

    async def _accept(self, tp: TP, records: list[Any]) -> list[Any]:
        """Faust's read-offset filter and gap bookkeeping for ``records`` of ``tp``.

        Also drops records this worker already took since it was assigned ``tp``: after
        a rebalance the fetch position can jump back to the committed offset a second
        time (measured under load: Faust's recovery seeks while the new assignment's
        committed offsets are still being applied), and those records are processed
        and waiting for their acknowledgement, not lost.
        """
        read = self._read_offset[tp]
        start = read if read is not None else -1
        taken = self._taken_upto.get(tp)
        if taken is not None:
            start = max(start, taken + 1)
        if records and records[0].offset < start:
            records = [r for r in records if r.offset >= start]
        if not records:
            return records
        previous = start - 1 if start >= 0 else None  # the last offset already seen
        for record in records:
            if previous is not None and record.offset - previous > 1:
                # offsets skipped (control records, compaction): committable as acked
                await self._add_gap(tp, previous + 1, record.offset - 1)
            previous = record.offset
        self._read_offset[tp] = records[-1].offset
        self._taken_upto[tp] = records[-1].offset
        return records

    def ack_records(self, records: Sequence[InputRecord]) -> None:
        """Acknowledge processed records, as ``Consumer.ack`` does per message."""
        by_tp: defaultdict[TP, list[int]] = defaultdict(list)
        for record in records:
            by_tp[TP(record.topic, record.partition)].append(record.offset)
        n = 0
        assigned = self.assignment()
        for tp, offsets in by_tp.items():
            if tp not in assigned:
                continue  # revoked meanwhile: the new owner processes it again
            committed = self._committed_offset[tp]
            index = self._acked_index[tp]
            acked = self._acked[tp]
            for offset in offsets:
                if (committed is None or offset >= committed) and offset not in index:
                    index.add(offset)
                    acked.append(offset)
                    n += 1
        self._n_acked += n
        notify(self._waiting_for_ack)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Settle and commit while the partitions are still ours, then let Faust revoke."""
        # Stop taking new batches first (Faust would do it a step later): records fetched
        # from now on are left for whoever owns the partitions after the rebalance.
        self.stop_flow()
        await self._settle_and_commit()
        for tp in revoked:  # whatever we get back later starts from its committed offset
            self._taken_upto.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def wait_empty(self) -> None:
        """Faust's wait for in-flight work, extended to the batch runner's."""
        await self._settle_and_commit()
        await super().wait_empty()

    async def _settle_and_commit(self) -> None:
        if self.runner is None:
            return
        try:
            await self.runner.drain()
            # commit() returns without committing when another commit is in flight; wait
            # for that one, then commit what the drain just acknowledged.
            await self.maybe_wait_for_commit_to_finish()
            await self.force_commit()
            log.info(
                "settled and committed before a rebalance: %s",
                {f"{tp.topic}[{tp.partition}]": o for tp, o in self._committed_offset.items()},
            )
        except Exception:  # a failed commit only means more replay after the rebalance
            log.exception("could not settle the batch runner before a rebalance")
