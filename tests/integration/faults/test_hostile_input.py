"""100,000 hypothesis-generated hostile messages, mixed with valid ones, through a real worker.

Every hostile message must reach ``transactions.dlq`` with a reason code from ``REASONS``
(and the one its kind calls for, see ``hostile.py``), carrying its original bytes and
source offset; every valid one must be scored; and the worker must never crash.
Messages are matched to outcomes by their Kafka (partition, offset).
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from fault_helpers import all_records, wait_all_scored
from hostile import Message, giant_messages, hostile_messages
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from pipeline_helpers import MAX_FEATURES, pipeline_settings, wire_source, workers

from streams.producer import kafka_client_kwargs
from streams.records import REASONS, Transaction, encode
from streams.settings import Settings

pytestmark = [pytest.mark.faults, pytest.mark.integration]

N_HOSTILE = 100_000
N_GIANT = 100  # of the 100,000: 8 KiB to 512 KiB each
N_VALID = 20_000
BATCH = 100


def generate(strategy: st.SearchStrategy[Message], n: int) -> list[Message]:
    """``n`` messages drawn by hypothesis (generation only: nothing to shrink)."""
    out: list[Message] = []

    @hyp_settings(
        max_examples=n // BATCH,
        phases=[Phase.generate],
        deadline=None,
        database=None,
        derandomize=True,  # the same 100,000 each run: a failure can be replayed
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(strategy, min_size=BATCH, max_size=BATCH))
    def collect(batch: list[Message]) -> None:
        out.extend(batch)

    collect()
    return out[:n]


async def produce_mixed(s: Settings, messages: list[Message]) -> list[tuple[int, int]]:
    """Send every message as is; returns each one's (partition, offset)."""
    producer = AIOKafkaProducer(**kafka_client_kwargs(s), linger_ms=10, max_request_size=1 << 20)
    await producer.start()
    try:
        futures = [await producer.send(s.topic_transactions, m.value, key=m.key) for m in messages]
        results = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(r.partition, r.offset) for r in results]


def test_hostile_messages_are_dead_lettered_and_valid_ones_scored(
    settings: Any, tiny_model: Path, tmp_path: Path
) -> None:
    s = pipeline_settings(settings, tiny_model)
    source = [tx for tx, _ in wire_source(N_VALID, seed=41, n_customers=800)]
    valid = [
        Message(tx["card_id"].encode(), encode(Transaction(**tx)), frozenset(), "valid")
        for tx in source
    ]
    valid_ids = {tx["tx_id"] for tx in source}
    with workers(s, tmp_path, 1) as (worker,):
        started = time.monotonic()  # generation overlaps the worker's start
        hostile = generate(hostile_messages(MAX_FEATURES), N_HOSTILE - N_GIANT)
        hostile += generate(giant_messages(), N_GIANT)
        generated_s = time.monotonic() - started
        assert len(hostile) == N_HOSTILE
        mixed = hostile + valid
        random.Random(0).shuffle(mixed)
        worker.wait_ready()
        started = time.monotonic()
        positions = asyncio.run(produce_mixed(s, mixed))
        scores = wait_all_scored(s, valid_ids, [worker], timeout=180)
        dlq = all_records(s, s.topic_dlq, idle_s=3.0)
        took = time.monotonic() - started
        assert worker.alive(), worker.tail()

    by_position = dict(zip(positions, mixed, strict=True))
    letters: dict[tuple[int, int], dict[str, Any]] = {}
    for letter in dlq:
        assert letter["topic"] == s.topic_transactions
        assert letter["error"] in REASONS, letter
        letters[(letter["partition"], letter["offset"])] = letter
    hostile_at = {p for p, m in by_position.items() if m.kind != "valid"}
    reasons = Counter(letter["error"] for letter in dlq)
    print(
        f"\ngenerated {N_HOSTILE} hostile in {generated_s:.1f} s; {len(mixed)} messages"
        f" through the worker in {took:.1f} s; {len(dlq)} dead letters, {len(scores)} scores"
        f"\nreasons: {dict(reasons.most_common())}"
    )
    assert len(dlq) == len(letters), "a message was dead-lettered twice"
    missing = hostile_at - set(letters)
    assert not missing, f"{len(missing)} hostile messages not dead-lettered, e.g. " + repr(
        [by_position[p].kind for p in list(missing)[:3]]
    )
    assert set(letters) <= hostile_at, "a valid message was dead-lettered"
    wrong = []
    for position, letter in letters.items():
        message = by_position[position]
        if letter["error"] not in message.expected:
            wrong.append((message.kind, letter["error"], (message.value or b"")[:120]))
        payload = base64.b64decode(letter["payload_b64"])
        assert (message.value or b"").startswith(payload), "dead letter lost the original bytes"
        if "payload cut" not in letter["detail"]:
            assert payload == (message.value or b"")
    assert not wrong, f"{len(wrong)} with an unexpected reason, e.g. {wrong[:3]}"
    scored = Counter(v["tx_id"] for v in scores)
    assert set(scored) == valid_ids, "a hostile message was scored, or a valid one was not"
    assert max(scored.values()) == 1
