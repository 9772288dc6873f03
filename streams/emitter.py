"""Output records of a micro-batch, handed to the app's Kafka producer in bulk.

``app.producer.send()`` costs ~15–20 µs of Python per message (a signal, a coroutine, a
partitioner call). The score agent emits one record per transaction, so it fills one
aiokafka batch per ``(topic, partition)`` instead (``create_batch`` / ``append`` at ~1 µs
per message in aiokafka's C builder) and submits each with ``send_batch``: the same
producer, the same delivery futures, and the same ``producer.flush()`` that Faust runs
before every offset commit, so outputs are on the broker before the input offsets are
committed (at-least-once).

Outputs go to the input's partition number: scores and alerts of a card stay together
and in order, and an alert can be found again by partition (see ``alert_dedupe``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

Message = tuple[int | None, bytes | None, bytes]  # partition (None: by key), key, value


class Emitter:
    """Sends many messages per call through the Faust app's aiokafka producer.

    Parameters
    ----------
    app
        The Faust app; its producer must be started (it is, inside a running worker).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sent = 0

        self._partitions: dict[str, int] = {}

    def _producer(self) -> Any:
        # Faust's aiokafka transport keeps the started AIOKafkaProducer here.
        return self.app.producer._ensure_producer()

    async def partition_count(self, topic: str) -> int:
        """Partitions of ``topic`` (from the producer's metadata, cached)."""
        count = self._partitions.get(topic)
        if count is None:
            producer = self._producer()
            await producer.client._wait_on_metadata(topic)
            count = len(producer.client.cluster.partitions_for_topic(topic) or ()) or 1
            self._partitions[topic] = count
        return count

    async def send_many(
        self, topic: str, messages: Iterable[Message], timestamp_ms: int | None = None
    ) -> list[asyncio.Future[Any]]:
        """Queue ``messages`` on ``topic``; returns delivery futures (one per Kafka batch).

        Messages without a partition go through the producer's partitioner one by one.
        """
        producer = self._producer()
        count = await self.partition_count(topic)
        by_partition: defaultdict[int, list[tuple[bytes | None, bytes]]] = defaultdict(list)
        futures: list[asyncio.Future[Any]] = []
        n = 0
        for partition, key, value in messages:
            n += 1
            if partition is None:
                futures.append(await producer.send(topic, value, key=key))
            else:
                # the input's partition number; folded if this topic has fewer
                by_partition[partition % count].append((key, value))
        for partition, items in by_partition.items():
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=timestamp_ms) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=timestamp_ms) is None:
                        # larger than a whole batch: let the producer size a request for it
                        futures.append(
                            await producer.send(topic, value, key=key, partition=partition)
                        )
                        batch = producer.create_batch()
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        self.sent += n
        return futures
