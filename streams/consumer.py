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

On revocation and shutdown the runner is drained first (batch finished, state flushed,
outputs delivered, offsets acknowledged) and the offsets committed while the partitions
are still ours, so a rebalance does not replay already scored transactions.

Built for faust-streaming 0.15.3 (pinned); ``tests/unit/test_score_agent.py`` checks
the internals it relies on.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaFaustConsumer
from faust.types import TP
from mode.utils.futures import notify

from streams.pipeline import InputRecord
from streams.runner import BatchRunner

log = logging.getLogger(__name__)


class BatchConsumer(AIOKafkaFaustConsumer):
    """Faust's aiokafka consumer with a batch path for some topics (see module doc)."""

    batch_topics: frozenset[str] = frozenset()
    runner: BatchRunner | None = None

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
            await runner.handle(batch)
        return rest, active

    async def _accept(self, tp: TP, records: list[Any]) -> list[Any]:
        """Faust's read-offset filter and gap bookkeeping for ``records`` of ``tp``."""
        read = self._read_offset[tp]
        if read is not None and records and records[0].offset < read:
            records = [r for r in records if r.offset >= read]
        if not records:
            return records
        previous = read
        for record in records:
            if previous is not None and record.offset - previous > 1:
                # offsets skipped (control records, compaction): committable as acked
                await self._add_gap(tp, previous + 1, record.offset - 1)
            previous = record.offset
        self._read_offset[tp] = records[-1].offset
        return records

    def ack_records(self, records: Sequence[InputRecord]) -> None:
        """Acknowledge processed records, as ``Consumer.ack`` does per message."""
        by_tp: defaultdict[TP, list[int]] = defaultdict(list)
        for record in records:
            by_tp[TP(record.topic, record.partition)].append(record.offset)
        n = 0
        for tp, offsets in by_tp.items():
            if tp not in self._active_partitions and tp not in self._paused_partitions:
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
        await self._settle_and_commit()
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
            await self.commit()
        except Exception:  # a failed commit only means more replay after the rebalance
            log.exception("could not settle the batch runner before a rebalance")
