"""Round trip through the project-managed Apache Kafka: keyed produce, group commit, resume."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streams.services.topics import topic_partitions

pytestmark = pytest.mark.integration

MESSAGES = 10_000
PARTITIONS = 4
FIRST_RUN = 3_700  # what the first consumer processes and commits before closing


async def _produce(bootstrap: str, topic: str) -> dict[tuple[int, int], dict[str, object]]:
    """Send MESSAGES keyed records; return {(partition, offset): record} as acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        records = [{"seq": i, "card_id": f"card-{i % 257}"} for i in range(MESSAGES)]
        futures = [
            await producer.send(topic, json.dumps(r).encode(), key=str(r["card_id"]).encode())
            for r in records
        ]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {(m.partition, m.offset): r for m, r in zip(metadata, records, strict=True)}


def _consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
    )


async def _consume(
    consumer: AIOKafkaConsumer, limit: int | None, end: dict[TopicPartition, int]
) -> list[tuple[int, int, dict[str, object]]]:
    """Read up to ``limit`` records (None: until every partition reaches ``end``)."""
    seen: list[tuple[int, int, dict[str, object]]] = []
    while True:
        batches = await consumer.getmany(timeout_ms=1_000)
        for messages in batches.values():
            for m in messages:
                if limit is not None and len(seen) >= limit:
                    return seen
                seen.append((m.partition, m.offset, json.loads(m.value)))
        if limit is not None and len(seen) >= limit:
            return seen
        if limit is None and consumer.assignment() == set(end):
            positions = [await consumer.position(tp) for tp in end]
            if all(pos >= off for pos, off in zip(positions, end.values(), strict=True)):
                return seen


async def _roundtrip(bootstrap: str, topic: str, group: str) -> None:
    produced = await _produce(bootstrap, topic)
    assert len(produced) == MESSAGES

    # Keys stick to one partition, and every partition got a share.
    partition_of_key: dict[object, set[int]] = defaultdict(set)
    for (partition, _), record in produced.items():
        partition_of_key[record["card_id"]].add(partition)
    assert all(len(p) == 1 for p in partition_of_key.values())
    assert {p for p, _ in produced} == set(range(PARTITIONS))

    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    end = {tp: max(o for p, o in produced if p == tp.partition) + 1 for tp in tps}

    # First consumer: process FIRST_RUN records, commit exactly those, close.
    first = _consumer(bootstrap, topic, group)
    await first.start()
    try:
        part_one = await asyncio.wait_for(_consume(first, FIRST_RUN, end), 60)
        committed: dict[TopicPartition, int] = {}
        for partition, offset, _ in part_one:
            tp = TopicPartition(topic, partition)
            committed[tp] = max(committed.get(tp, 0), offset + 1)
        await first.commit({tp: OffsetAndMetadata(o, "") for tp, o in committed.items()})
    finally:
        await first.stop()
    assert len(part_one) == FIRST_RUN

    # The group's committed offsets are what we committed (seen by a fresh member).
    second = _consumer(bootstrap, topic, group)
    await second.start()
    try:
        for tp in tps:
            assert await second.committed(tp) == committed.get(tp)
        part_two = await asyncio.wait_for(_consume(second, None, end), 60)
    finally:
        await second.stop()

    # Resumed exactly at the committed offsets: no gap, no re-read, nothing lost.
    for tp in tps:
        offsets = [o for p, o, _ in part_two if p == tp.partition]
        assert offsets == list(range(committed.get(tp, 0), end[tp]))
    one = {(p, o) for p, o, _ in part_one}
    two = {(p, o) for p, o, _ in part_two}
    assert not one & two
    assert one | two == set(produced)
    for partition, offset, record in part_one + part_two:
        assert produced[(partition, offset)] == record
    # Per key, records arrive in the order they were sent.
    last_seq: dict[object, int] = {}
    for _, _, record in sorted(part_one + part_two, key=lambda r: (r[0], r[1])):
        seq = int(str(record["seq"]))
        assert seq > last_seq.get(record["card_id"], -1)
        last_seq[record["card_id"]] = seq


async def test_roundtrip_commit_and_resume(kafka_bootstrap: str, make_topic) -> None:
    topic = make_topic(partitions=PARTITIONS)
    assert topic_partitions(kafka_bootstrap, [topic]) == {topic: PARTITIONS}
    await _roundtrip(kafka_bootstrap, topic, group=f"{topic}-group")
