"""Faust's Kafka consumer, with the ``transactions`` topic handed over in whole batches.

Faust delivers each message on its own: a ``wait_first`` with several asyncio tasks,
the conductor's lock and queue, a stream iteration and an ack per message, 70–90 µs
of framework time per event (ANCHORS.md), which caps a worker near 12k events/s. This
consumer keeps everything else of Faust (group membership and the partition assignor,
table changelogs and recovery, offset commits, rebalancing, other agents' topics) and
changes one thing: records of the *batch topics* fetched by ``getmany`` go to a
:class:`~streams.runner.BatchRunner` in one call instead of one by one through the
conductor. Offsets are acknowledged in Faust's own bookkeeping when the runner says
they are settled, so Faust's commit logic (producer flush, then commit) is unchanged.

Reading and processing overlap: a task in the consumer thread reads the batch topics'
partitions as soon as records arrive (:class:`BatchConsumerThread`) and posts them to a
short queue on the main loop, from which one task (:meth:`BatchConsumer._feed`) hands
everything queued meanwhile to the runner in one call. Before, Faust's fetch loop read
and processed each fetch itself: aiokafka sends no new fetch request while fetched
records wait unread, so at 5,000 tx/s records were already 35–56 ms old (p50) when the
consumer thread handed them over, against a bare consumer's 11–15 ms; the hand-over to
the main loop itself took 2–7 ms. At most about one micro-batch (``max_batch``) waits
beyond the one in work; the thread stops reading while the queue is full, so a backlog
is not read into memory.

On revocation and shutdown the queue is dropped (those records are not acknowledged:
whoever owns their partitions next fetches them again) and the runner is drained
(batch finished, state flushed, outputs delivered, offsets acknowledged) and the offsets
committed while the partitions are still ours, so a rebalance does not replay already
scored transactions.

Built for faust-streaming 0.15.3 (pinned); ``tests/unit/test_score_agent.py`` checks
the internals it relies on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple, cast

from aiokafka.errors import ConsumerStoppedError, KafkaError
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaFaustConsumer
from faust.types import TP
from mode.utils.futures import notify

from streams.pipeline import InputRecord
from streams.runner import BatchRunner

log = logging.getLogger(__name__)


#: Longest time the broker holds a fetch request without data (Faust hard-codes 1,500 ms).
#: aiokafka keeps one fetch in flight per broker; a request that went out for partitions
#: without new data (other topics, or the stream's own right after a hand-over) made
#: records arriving meanwhile wait up to 1.5 s: the produce→score p99 at 5,000 tx/s.
FETCH_MAX_WAIT_MS = 20


#: How often the drain task looks again while the stream is paused (rebalance, start-up).
IDLE_POLL_S = 0.01
#: Longest wait for new fetched data before the drain task looks at its partitions again.
DATA_WAIT_S = 0.2


class _Fetched(NamedTuple):
    """Records of one fetch, waiting for the runner."""

    at: float  # when they left the consumer thread's fetcher (epoch s)
    generation: int  # the consumer's assignment generation when they were taken
    records: Mapping[TP, list[Any]]
    n: int
    from_thread: bool  # counted by the consumer thread's drain task until taken


class BatchConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread; drains the batch topics as soon as records arrive.

    aiokafka sends no new fetch request to a broker while records it fetched from it wait
    unread, so with one broker every fetch waited for the previous one to be read. Faust
    reads them only when its fetch loop, on the main event loop, asks the thread (one
    call per micro-batch at best). So a task in this thread reads the batch topics'
    partitions itself, whenever new data is there, and posts the records to the main
    loop (:meth:`BatchConsumer._on_prefetched`); the next fetch request goes out at once.
    Faust's own calls keep reading every other partition. The drain reads only while the
    consumer's flow is on: Faust stops it before a rebalance and resumes it after seeking
    to the committed offsets, so records read under an old assignment are either dropped
    by the consumer (their generation ended) or read again after the seek.
    """

    _prefetch_tps: frozenset[TP] = frozenset()
    _drain: asyncio.Future[Any] | None = None
    _in_main = 0  # records posted to the main loop and not yet taken by the runner
    _room: asyncio.Event

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by start() for its Fetcher
        return consumer

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: set[TP] | None,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        """Faust's fetch (in this thread), for every partition but the batch topics'."""
        owner = self.consumer
        topics: frozenset[str] = getattr(owner, "batch_topics", frozenset())
        if not topics or active_partitions is None or getattr(owner, "runner", None) is None:
            return await super()._fetch_records(
                consumer, cast(Any, active_partitions), timeout=timeout, max_records=max_records
            )
        mine = frozenset(tp for tp in active_partitions if tp.topic in topics)
        self._prefetch_tps = mine
        if mine and (self._drain is None or self._drain.done()):
            self._room = asyncio.Event()
            self._drain = self.add_future(self._drain_batch_topics(consumer))
        others = active_partitions - mine
        if others:
            return await super()._fetch_records(
                consumer, others, timeout=timeout, max_records=max_records
            )
        # nothing else to read (aiokafka reads every partition for an empty set)
        await asyncio.sleep(timeout or 0.0)
        return {}

    async def _drain_batch_topics(self, consumer: Any) -> None:
        owner: BatchConsumer = self.consumer  # type: ignore[assignment]
        fetcher = consumer._fetcher
        subscriptions = fetcher._subscriptions
        while not self.should_stop and not fetcher._closed:
            runner = owner.runner
            tps = self._prefetch_tps
            if runner is None or not tps:  # none of our partitions: Faust's next call says
                await asyncio.sleep(DATA_WAIT_S)
                continue
            if not owner.flow_active or subscriptions.reassignment_in_progress:
                await asyncio.sleep(IDLE_POLL_S)
                continue
            if self._in_main > runner.max_batch:  # the runner is behind: wait for it
                self._room.clear()
                await self._room.wait()
                continue
            generation = owner._generation
            try:
                with subscriptions.fetch_context():
                    # timeout 0: reads what is there without awaiting, so the flow and
                    # generation just read still hold
                    records = await fetcher.fetched_records(
                        tps, timeout=0, max_records=runner.max_batch
                    )
            except ConsumerStoppedError:
                return
            except KafkaError as exc:  # aiokafka drops the error; the partition is read again
                log.warning("reading %s failed: %r", sorted(tps), exc)
                await asyncio.sleep(0.5)
                continue
            if records:
                n = sum(len(recs) for recs in records.values())
                self._in_main += n
                fetched = _Fetched(time.time(), generation, records, n, True)
                try:
                    self.parent_loop.call_soon_threadsafe(owner._on_prefetched, fetched)
                except RuntimeError:  # the main loop closed: shutting down
                    return
                continue
            waiter = fetcher._create_fetch_waiter()  # set when any fetch brings new data
            await asyncio.wait([waiter], timeout=DATA_WAIT_S)
            if not waiter.done():
                waiter.cancel()
            elif not waiter.cancelled() and waiter.exception() is not None:
                log.warning("fetcher: %r", waiter.exception())
                await asyncio.sleep(0.5)

    def _taken(self, n: int) -> None:
        """The main loop took ``n`` posted records (runs in this thread's loop)."""
        self._in_main -= n
        self._room.set()


class BatchConsumer(AIOKafkaFaustConsumer):
    """Faust's aiokafka consumer with a batch path for some topics (see module doc)."""

    batch_topics: frozenset[str] = frozenset()
    runner: BatchRunner | None = None

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # per partition: highest offset handed to the runner since it was assigned here
        self._taken_upto: dict[TP, int] = {}
        self._init_queue()

    def _init_queue(self) -> None:
        self._queue: deque[_Fetched] = deque()
        self._queued = 0  # records in the queue
        self._generation = 0  # bumped on revocation: older queued records are not ours
        self._queue_changed = asyncio.Event()
        self._feeder: asyncio.Future[Any] | None = None

    def attach(self, runner: BatchRunner, topics: Iterable[str]) -> None:
        """Send the records of ``topics`` to ``runner`` from now on."""
        self.runner = runner
        self.batch_topics = frozenset(topics)

    async def _wait_next_records(
        self, timeout: float
    ) -> tuple[Mapping[TP, list[Any]] | None, set[TP] | None]:
        # The consumer thread keeps the batch topics out of Faust's fetches; this catches
        # any that still come this way (no record may take the agent's path).
        records, active = await super()._wait_next_records(timeout)
        runner = self.runner
        if not records or runner is None or not self.flow_active or self.should_stop:
            return records, active  # Faust's own path (it seeks back when flow stopped)
        topics = self.batch_topics
        if not any(tp.topic in topics for tp in records):
            return records, active
        rest = {tp: recs for tp, recs in records.items() if tp.topic not in topics}
        mine = {
            tp: recs
            for tp, recs in records.items()
            if tp.topic in topics
            and (active is None or tp in active or tp in self._buffered_partitions)
        }
        if mine:
            n = sum(len(recs) for recs in mine.values())
            self._on_prefetched(_Fetched(time.time(), self._generation, mine, n, False))
            while self._queued > runner.max_batch and self._wanted(self._generation):
                self._queue_changed.clear()
                await self._queue_changed.wait()
        return rest, active

    # --- the queue between the consumer thread and the runner -------------------------
    def _on_prefetched(self, fetched: _Fetched) -> None:
        """Queue fetched records for :meth:`_feed` (runs in the main loop)."""
        if fetched.generation != self._generation or self.runner is None:
            self._release([fetched])  # fetched under an assignment that has ended
            return
        self._queue.append(fetched)
        self._queued += fetched.n
        self._queue_changed.set()
        if self._feeder is None or self._feeder.done():
            self._feeder = self.add_future(self._feed(self.runner))

    async def _feed(self, runner: BatchRunner) -> None:
        """Hand everything queued to the runner, one call per assignment generation."""
        while not self.should_stop:
            if not self._queue:
                self._queue_changed.clear()
                await self._queue_changed.wait()
                continue
            first = self._queue[0]
            taken: list[_Fetched] = []
            while self._queue and self._queue[0].generation == first.generation:
                taken.append(self._queue.popleft())
            self._queued -= sum(f.n for f in taken)
            self._release(taken)
            self._queue_changed.set()  # room again for the fetch loop
            if first.generation != self._generation:
                continue
            records: list[Any] = []
            for fetched in taken:
                for tp, recs in fetched.records.items():
                    records += await self._accept(tp, recs)
            if not records:
                continue
            timing = getattr(getattr(runner, "pipeline", None), "timing", None)
            if timing is not None:  # the latency breakdown's "fetched" moment
                timing.fetched(first.at)
            # a rebalance may start while the runner is busy: then these records are not ours
            await runner.handle(records, wanted=partial(self._wanted, first.generation))

    def _wanted(self, generation: int) -> bool:
        return generation == self._generation and self.flow_active and not self.should_stop

    def _release(self, taken: Iterable[_Fetched]) -> None:
        """Tell the consumer thread's drain task that its posted records were taken."""
        n = sum(f.n for f in taken if f.from_thread)
        thread = getattr(self, "_thread", None)
        if n and isinstance(thread, BatchConsumerThread):
            thread.thread_loop.call_soon_threadsafe(thread._taken, n)

    def _drop_queue(self) -> None:
        """Forget queued records (not acknowledged: they are fetched again)."""
        self._generation += 1
        self._release(self._queue)
        self._queue.clear()
        self._queued = 0
        self._queue_changed.set()

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
        self._drop_queue()
        await self._settle_and_commit()
        for tp in revoked:  # whatever we get back later starts from its committed offset
            self._taken_upto.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def wait_empty(self) -> None:
        """Faust's wait for in-flight work, extended to the batch runner's."""
        if self.flow_active and not self.should_stop:
            # not a revocation or shutdown: queued records are still ours to process
            while self._queue:
                self._queue_changed.clear()
                await self._queue_changed.wait()
        else:
            self._drop_queue()
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
