"""One alert per ``tx_id`` across workers and restarts, without losing any.

Before an alert is sent, its ``tx_id`` is claimed in Redis with
``SET {prefix}alert:{tx_id} <claim ms> NX GET EX ttl`` (all of a batch's claims in one
Lua call, in the batch's Redis round trip). No previous value: this is the first time, send it. A
previous value means the transaction was scored before, normally by a worker that
crashed after claiming: whether that worker's alert reached Kafka is then read from
Kafka itself. Alerts are written to the same partition number as their transaction, so
the new owner scans that ``alerts`` partition from just before the old claim time and
sends only the alerts it does not find. Claims are rare (only replays), so this
costs nothing in steady state, and it keeps both promises: unique alerts, none lost.
A claim older than ``REPLAY_WINDOW_S`` is taken as published (a duplicate ``tx_id``
long after the first one, not a crash replay), so no long scan is ever needed.

With Redis down, alerts are sent unclaimed (the ``riskstream alerts`` consumer also
deduplicates by ``tx_id``).

>>> AlertClaims.parse_claim(b"1700000000123")
1700000000123
>>> AlertClaims.parse_claim(b"junk") is None
True
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.producer import kafka_client_kwargs
from streams.resp import CommandBatch
from streams.settings import Settings

log = logging.getLogger(__name__)

# KEYS: claim keys; ARGV: claim time (ms), TTL. One SET NX GET per key, server side.
_CLAIM = """
local previous = {}
for i, key in ipairs(KEYS) do
  previous[i] = redis.call('SET', key, ARGV[1], 'NX', 'GET', 'EX', ARGV[2])
end
return previous
"""
CLAIM_SHA = hashlib.sha1(_CLAIM.encode(), usedforsecurity=False).hexdigest()

SCAN_MARGIN_MS = 2_000  # start the scan this long before the old claim
SCAN_TIMEOUT_S = 10.0
REPLAY_WINDOW_S = 600.0  # replays after a crash come within minutes of the first claim


class AlertClaims:
    """Claims alerts in Redis and checks replayed claims against the ``alerts`` topic."""

    def __init__(self, settings: Settings, *, prefix: str) -> None:
        self.settings = settings
        self.prefix = prefix
        self.ttl_s = settings.alert_dedupe_ttl_s
        self.verified = 0  # replayed claims checked against Kafka

    def key(self, tx_id: str) -> str:
        """Redis key of one claim."""
        return f"{self.prefix}alert:{tx_id}"

    def queue_claims(
        self, batch: CommandBatch, tx_ids: Sequence[str], now: float | None = None
    ) -> int | None:
        """Claim every ``tx_id`` in one command added to ``batch``; returns its reply index.

        The reply is a list: per ``tx_id``, ``None`` (claimed now) or the previous claim.
        """
        if not tx_ids:
            return None
        stamp = int((time.time() if now is None else now) * 1000)
        keys = [self.key(tx_id) for tx_id in tx_ids]
        return batch.add("EVALSHA", CLAIM_SHA, len(keys), *keys, stamp, self.ttl_s)

    @staticmethod
    async def load_scripts(redis: Any) -> None:
        """Register the claim script with Redis."""
        await redis.script_load(_CLAIM)

    @staticmethod
    def parse_claim(value: Any) -> int | None:
        """Claim time (ms) stored in a previous claim, or ``None`` if unreadable."""
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    async def unpublished(self, replayed: Sequence[tuple[str, int, int | None]]) -> set[str]:
        """Which of ``(tx_id, partition, old claim ms)`` have no alert in Kafka yet.

        Raises on Kafka errors: the caller then keeps the batch unacknowledged.
        """
        horizon = (time.time() - REPLAY_WINDOW_S) * 1000
        # A claim older than the replay window is a duplicate tx_id arriving long after
        # its first alert, which was delivered then: nothing to send, nothing to scan.
        replayed = [r for r in replayed if r[2] is not None and r[2] >= horizon]
        if not replayed:
            return set()
        by_partition: defaultdict[int, dict[str, int]] = defaultdict(dict)
        for tx_id, partition, claim_ms in replayed:
            by_partition[partition][tx_id] = max(0, int(claim_ms or 0) - SCAN_MARGIN_MS)
        found = await asyncio.wait_for(self._scan(by_partition), SCAN_TIMEOUT_S)
        self.verified += len(replayed)
        missing = {tx for tx, _, _ in replayed if tx not in found}
        log.info(
            "replayed alert claims: %d checked in Kafka, %d already published, %d to send",
            len(replayed),
            len(replayed) - len(missing),
            len(missing),
        )
        return missing

    async def _scan(self, by_partition: dict[int, dict[str, int]]) -> set[str]:
        topic = self.settings.topic_alerts
        consumer = AIOKafkaConsumer(
            **kafka_client_kwargs(self.settings),
            group_id=None,
            enable_auto_commit=False,
            client_id=f"{self.settings.app_id}-alert-check",
        )
        await consumer.start()
        try:
            tps = {p: TopicPartition(topic, p) for p in by_partition}
            consumer.assign(list(tps.values()))
            starts = await consumer.offsets_for_times(
                {tps[p]: min(ids.values()) for p, ids in by_partition.items()}
            )
            ends = await consumer.end_offsets(list(tps.values()))
            wanted = {tx for ids in by_partition.values() for tx in ids}
            found: set[str] = set()
            todo = {}
            for tp in tps.values():
                start = starts.get(tp)
                if start is not None and start.offset < ends[tp]:
                    consumer.seek(tp, start.offset)
                    todo[tp] = ends[tp]
            while todo:
                batch = await consumer.getmany(*todo, timeout_ms=500, max_records=5000)
                for records in batch.values():
                    for record in records:
                        tx_id = _tx_id_of(record.value)
                        if tx_id in wanted:
                            found.add(tx_id)
                for tp in list(todo):  # position, not the last record: skips control records
                    if await consumer.position(tp) >= todo[tp]:
                        del todo[tp]
            return found
        finally:
            await consumer.stop()


def _tx_id_of(value: bytes | None) -> str | None:
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    tx_id = obj.get("tx_id") if isinstance(obj, dict) else None
    return tx_id if isinstance(tx_id, str) else None
