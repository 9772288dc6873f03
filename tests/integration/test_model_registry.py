"""Model registry and hot swap on the real Kafka and Redis.

Versions in Redis (publish, list, rollback, bootstrap race, pruning); the verification of
every kind of bad update on blobs read back from Redis; and several hot-swap consumers
(one per simulated worker) that each receive every update from ``model-updates``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
import torch
from aiokafka import AIOKafkaProducer
from rich.console import Console

from models.artifacts import Artifact, SupportSet, sha256_hex
from models.encoder import Encoder
from models.features.definitions import FeatureSchema
from models.features.transform import FeatureTransform
from models.matching import MatchingNetwork
from models.scorer import Scorer
from streams.cli.registry import _versions_table
from streams.hot_swap import HotSwap
from streams.model_registry import ModelRegistry, RegistryError
from streams.model_verification import Reference, UpdateRejected, verify_update
from streams.records import ModelUpdate, parse_model_update
from streams.runtime import ScorerRuntime
from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
KEY = "test-signing-key"


def tiny_artifact(version: str, *, hidden: int = 8, seed: int = 0, nan: bool = False) -> Artifact:
    torch.manual_seed(seed)
    schema = FeatureSchema()
    n = schema.n_features
    net = MatchingNetwork(Encoder(n, hidden=(hidden,), emb_dim=4))
    if nan:
        with torch.no_grad():
            weight = next(p for p in net.parameters() if p.dim() == 2)
            weight[0, 0] = float("nan")
    x = np.random.default_rng(seed).normal(size=(40, n)).astype(np.float32)
    transform = FeatureTransform.fit(x, names=schema.names, log_features=())
    support = SupportSet.build(x[:20], [1] * 5 + [0] * 15, [f"s{i}" for i in range(20)])
    return Artifact.build(net, transform, support, {"version": version, "feature_schema": schema})


class Captured:
    """A ``send`` that keeps what would go to Kafka."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def __call__(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, key, value))


@pytest.fixture
async def registry(redis_url: str) -> AsyncIterator[ModelRegistry]:
    client = aioredis.Redis.from_url(redis_url)
    reg = ModelRegistry(client, prefix=f"t-{uuid.uuid4().hex[:8]}:", signing_key=KEY)
    try:
        yield reg
    finally:
        keys = [k async for k in client.scan_iter(match=reg.prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_publish_list_and_rollback(registry: ModelRegistry) -> None:
    send = Captured()
    base = await registry.bootstrap(tiny_artifact("base"))
    first = await registry.publish(tiny_artifact("adapt-0001", seed=1), send, metrics={"ap": 0.7})
    assert (await registry.current()) == first
    assert [s[1] for s in send.sent] == [b"adapt-0001"]
    assert parse_model_update(send.sent[0][2]) == first
    blob = await registry.fetch_weights(first.location)
    assert blob is not None and sha256_hex(blob) == first.sha256
    assert verify_update(first, blob, KEY).version == "adapt-0001"

    rows = await registry.list_versions()
    assert [(r.version, r.current, r.has_weights) for r in rows] == [
        ("base", False, True),
        ("adapt-0001", True, True),
    ]
    assert rows[1].parent is None and rows[1].metrics == {"ap": 0.7}

    again = await registry.rollback("base", send)
    assert (await registry.current()) == again
    assert again.version == "base" and again.sha256 == base.sha256
    assert again.created_at > first.created_at  # a fresh announcement, newly signed
    assert verify_update(again, await registry.fetch_weights(again.location), KEY)
    assert parse_model_update(send.sent[-1][2]) == again
    with pytest.raises(RegistryError, match="no model version"):
        await registry.rollback("nope", send)


async def test_bootstrap_race_has_one_winner(registry: ModelRegistry) -> None:
    a, b = tiny_artifact("boot", seed=1), tiny_artifact("boot", seed=2)
    first, second = await asyncio.gather(registry.bootstrap(a), registry.bootstrap(b))
    assert first == second
    blob = await registry.fetch_weights(first.location)
    assert blob is not None and sha256_hex(blob) == first.sha256  # the winner's own weights


async def test_prune_keeps_the_newest_and_the_current(registry: ModelRegistry) -> None:
    registry.keep_versions = 2
    send = Captured()
    for i in range(4):
        await registry.publish(tiny_artifact(f"v{i}", seed=i), send)
    await registry.rollback("v2", send)
    await registry.publish(tiny_artifact("v4", seed=4), send)
    await registry.rollback("v3", send)
    kept = [r.version for r in await registry.list_versions()]
    assert kept == ["v3", "v4"]
    assert await registry.fetch_weights(registry.weights_key("v0")) is None


async def _stored(
    registry: ModelRegistry, version: str, blob: bytes, **changes: Any
) -> ModelUpdate:
    update = ModelUpdate(
        version=version,
        parent="base",
        created_at=time.time(),
        sha256=sha256_hex(blob),
        signature="",
        metrics={},
        location=registry.weights_key(version),
    )
    signed = registry.sign(update)
    if changes:
        values = signed.asdict() | changes
        values.pop("schema_version", None)
        signed = ModelUpdate(**values)
    await registry.redis.set(signed.location, blob)
    return signed


async def test_verification_rejects_every_bad_update(registry: ModelRegistry) -> None:
    reference = Reference.of_scorer(Scorer.from_artifact(tiny_artifact("base")))
    good_blob = tiny_artifact("good").to_bytes()
    cases: dict[str, ModelUpdate] = {
        "bad_signature": await _stored(registry, "good", good_blob, signature="0" * 64),
        "truncated": await _stored(registry, "cut", tiny_artifact("cut").to_bytes()[:-100]),
        "non_finite": await _stored(registry, "nan", tiny_artifact("nan", nan=True).to_bytes()),
        "wrong_shape": await _stored(registry, "wide", tiny_artifact("wide", hidden=9).to_bytes()),
        "missing_weights": registry.sign(
            ModelUpdate(
                version="gone",
                parent=None,
                created_at=time.time(),
                sha256="0" * 64,
                signature="",
                metrics={},
                location=registry.weights_key("gone"),
            )
        ),
    }
    tampered = await _stored(registry, "tampered", good_blob)
    await registry.redis.set(tampered.location, tiny_artifact("tampered", seed=5).to_bytes())
    cases["bad_hash"] = tampered
    for reason, update in cases.items():
        blob = await registry.fetch_weights(update.location)
        with pytest.raises(UpdateRejected) as caught:
            verify_update(update, blob, KEY, reference)
        assert caught.value.reason == reason, caught.value.detail


def _runtime() -> ScorerRuntime[Any]:
    return ScorerRuntime(Scorer.from_artifact(tiny_artifact("base")))


async def _until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_every_worker_swaps_every_update(
    registry: ModelRegistry, settings: Callable[..., Settings], kafka_bootstrap: str
) -> None:
    config = settings(create_topics=True, model_signing_key=KEY, app_id=registry.prefix[:-1])
    registry.topic = config.topic_model_updates
    runtimes = [_runtime(), _runtime()]
    swaps = [HotSwap(config, rt, registry, worker_id=f"w{i}") for i, rt in enumerate(runtimes)]
    stop = False
    tasks = [asyncio.create_task(s.run(lambda: stop)) for s in swaps]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()

    async def send(topic: str, key: bytes, value: bytes) -> None:
        await producer.send_and_wait(topic, value, key=key)

    try:
        await _until(lambda: all(s.synced for s in swaps))
        assert (await registry.current()) is not None  # the first worker registered "base"
        update = await registry.publish(tiny_artifact("adapt-0001", seed=3), send)
        await _until(lambda: all(rt.staged is not None for rt in runtimes))
        assert [rt.for_batch().version for rt in runtimes] == ["adapt-0001", "adapt-0001"]

        # bad updates: each refused by each worker, the current model keeps scoring
        for bad in (
            await _stored(
                registry, "forged", tiny_artifact("forged").to_bytes(), signature="1" * 64
            ),
            await _stored(registry, "nan", tiny_artifact("nan", nan=True).to_bytes()),
        ):
            await registry.announce(bad, send)
        await registry.announce(update, send)  # a replay of an applied update
        await _until(lambda: all(len(s.rejected) >= 3 for s in swaps))
        for swap, rt in zip(swaps, runtimes, strict=True):
            assert [r[1] for r in swap.rejected] == ["bad_signature", "non_finite", "stale_version"]
            assert rt.staged is None and rt.for_batch().version == "adapt-0001"

        # a worker that starts late loads the current version from Redis
        late_runtime = _runtime()
        late = HotSwap(config, late_runtime, registry, worker_id="late")
        late_task = asyncio.create_task(late.run(lambda: stop))
        tasks.append(late_task)
        await _until(lambda: late_runtime.staged is not None)
        assert late_runtime.for_batch().version == "adapt-0001"
        for _ in range(100):  # each worker reports the version it scores with
            live = await registry.live_workers()
            if all(live.get(w, {}).get("version") == "adapt-0001" for w in ("w0", "w1", "late")):
                break
            await asyncio.sleep(0.05)
        assert {w: live[w]["version"] for w in ("w0", "w1", "late")} == dict.fromkeys(
            ("w0", "w1", "late"), "adapt-0001"
        )
    finally:
        stop = True
        await asyncio.gather(*tasks)
        await producer.stop()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("riskstream")), "model", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_lists_and_rolls_back(
    registry: ModelRegistry, settings: Callable[..., Settings], redis_url: str
) -> None:
    config = settings(create_topics=True, model_signing_key=KEY, app_id=registry.prefix[:-1])
    registry.topic = config.topic_model_updates
    send = Captured()
    await registry.bootstrap(tiny_artifact("base"))
    await registry.publish(
        tiny_artifact("adapt-0001", seed=1), send, metrics={"validation_ap": 0.5}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKSTREAM_")}
    env |= {
        "RISKSTREAM_STATE_DIR": str(config.state_dir),
        "RISKSTREAM_REDIS_URL": redis_url,
        "RISKSTREAM_APP_ID": config.app_id,
        "RISKSTREAM_KAFKA_BOOTSTRAP_SERVERS": config.kafka_bootstrap_servers,
        "RISKSTREAM_TOPIC_MODEL_UPDATES": config.topic_model_updates,
        "RISKSTREAM_MODEL_SIGNING_KEY": KEY,
    }
    listed = await asyncio.to_thread(_cli, env, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["version"], r["current"]) for r in rows] == [("base", False), ("adapt-0001", True)]
    console = Console(record=True, width=160)
    console.print(_versions_table(await registry.list_versions()))  # the non-JSON view
    shown = console.export_text()
    assert "adapt-0001" in shown and "0.500" in shown and "startup model" in shown

    rolled = await asyncio.to_thread(_cli, env, "rollback", "base")
    assert rolled.returncode == 0, rolled.stderr
    current = await registry.current()
    assert current is not None and current.version == "base"
    assert verify_update(current, await registry.fetch_weights(current.location), KEY)
    records = await read_updates(config)
    assert [r.version for r in records] == ["base"]  # the rollback was announced to workers

    unknown = await asyncio.to_thread(_cli, env, "rollback", "nope")
    assert unknown.returncode != 0 and "no model version 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


async def read_updates(config: Settings) -> list[ModelUpdate]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka_bootstrap_servers)
    await consumer.start()
    try:
        tp = TopicPartition(config.topic_model_updates, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        batch = await consumer.getmany(tp, timeout_ms=5000)
        return [parse_model_update(m.value) for m in batch.get(tp, [])]
    finally:
        await consumer.stop()
