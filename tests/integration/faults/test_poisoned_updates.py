"""Poisoned model updates through a real worker: all rejected, counted, old model scores on.

The worker first goes live on a good, signed update (``good-v2``). Then come a forged
signature, a wrong sha256, a truncated blob, NaN weights, the wrong shape, an update whose
weights key holds nothing, and two replays (the bootstrap version and ``good-v2`` itself).
Each must be refused with its reason on ``riskstream_model_updates_rejected_total``, and
every transaction scored afterwards must still carry ``good-v2``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from adaptation_helpers import _signed, _variant, labelled_metric, publish_bad_updates
from aiokafka import AIOKafkaProducer
from fault_helpers import wait_all_scored, wait_until
from pipeline_helpers import pipeline_settings, wire_source, workers

from models.artifacts import load_artifact
from streams.adaptation import registry_of
from streams.model_registry import ModelRegistry
from streams.producer import kafka_client_kwargs, produce_transactions
from streams.records import ModelUpdate
from streams.redis_conn import connect_redis
from streams.settings import Settings

pytestmark = [pytest.mark.faults, pytest.mark.integration]

KEY = "faults-signing-key"
Send = Callable[[str, bytes, bytes], Awaitable[None]]
REJECTED = "riskstream_model_updates_rejected_total"


async def with_registry(s: Settings, act: Callable[[ModelRegistry, Send], Awaitable[Any]]) -> Any:
    """Run ``act(registry, send)`` with a Redis client and a producer, then close both."""
    client = connect_redis(s)
    producer = AIOKafkaProducer(**kafka_client_kwargs(s))
    await producer.start()

    async def send(topic: str, key: bytes, value: bytes) -> None:
        await producer.send_and_wait(topic, value, key=key)

    try:
        return await act(registry_of(s, client), send)
    finally:
        await producer.stop()
        await client.aclose()


def score_versions(s: Settings, seed: int, workers_: list[Any]) -> Counter[str]:
    """Produce 1,000 fresh transactions; the model versions their scores carry."""
    source = wire_source(1_000, seed=seed)
    asyncio.run(produce_transactions(s, source))
    wanted = {tx["tx_id"] for tx, _ in source}
    scores = wait_all_scored(s, wanted, workers_, timeout=60)
    return Counter(v["model_version"] for v in scores if v["tx_id"] in wanted)


def test_poisoned_model_updates_are_rejected_and_the_old_model_keeps_scoring(
    settings: Any, tiny_model: Path, tmp_path: Path
) -> None:
    s = pipeline_settings(settings, tiny_model, model_signing_key=KEY)
    base = load_artifact(tiny_model)

    async def current(registry: ModelRegistry, send: Send) -> ModelUpdate | None:
        return await registry.current()

    async def publish_good(registry: ModelRegistry, send: Send) -> ModelUpdate:
        blob = _variant(base, "good-v2")
        update = _signed(registry, "good-v2", blob)
        return await registry.publish_blob(update, blob, send)

    with workers(s, tmp_path, 1, RISKSTREAM_MODEL_SIGNING_KEY=KEY) as (worker,):
        worker.wait_ready()
        assert wait_until(lambda: asyncio.run(with_registry(s, current)) is not None, 30)
        first: ModelUpdate = asyncio.run(with_registry(s, current))
        assert score_versions(s, 51, [worker]) == Counter({first.version: 1_000})

        good = asyncio.run(with_registry(s, publish_good))
        went_live = wait_until(lambda: score_versions(s, 53, [worker]).keys() == {"good-v2"}, 60)
        assert went_live, f"the good update never went live:\n{worker.tail()}"

        async def publish_poison(registry: ModelRegistry, send: Send) -> list[str]:
            reasons = await publish_bad_updates(registry, tiny_model, send)
            # a right signature over a sha256 that is not the stored blob's
            blob = _variant(base, "evil-sha")
            other = _variant(base, "evil-sha-other")
            wrong_sha = _signed(registry, "evil-sha", other)
            await registry.publish_blob(wrong_sha, blob, send, make_current=False)
            # signed and announced, but nothing stored at its weights key
            await registry.announce(_signed(registry, "evil-absent", blob), send)
            # replays of validly signed older records: the bootstrap one and good-v2 itself
            await registry.announce(first, send)
            await registry.announce(good, send)
            return reasons + ["bad_hash", "missing_weights", "stale_version", "stale_version"]

        started = time.monotonic()
        expected = Counter(asyncio.run(with_registry(s, publish_poison)))
        assert wait_until(
            lambda: sum(labelled_metric(worker, REJECTED).values()) >= sum(expected.values()), 30
        ), labelled_metric(worker, REJECTED)
        took = time.monotonic() - started
        after = score_versions(s, 57, [worker])
        rejected = labelled_metric(worker, REJECTED)
        received = worker.metric("riskstream_model_updates_received_total")
        still_current = asyncio.run(with_registry(s, current))
        assert worker.alive(), worker.tail()

    print(f"\nrejected in {took:.1f} s: {rejected}; received {received:.0f}; after: {after}")
    assert Counter({k: int(v) for k, v in rejected.items() if v}) == expected
    assert after == Counter({"good-v2": 1_000}), "a poisoned update reached the scores"
    assert still_current is not None and still_current.version == "good-v2"
    assert received == 1 + sum(expected.values())  # good-v2 and each poisoned one, once
