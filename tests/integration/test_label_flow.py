"""The labels agent with few-shot adaptation: a worker subprocess on real Kafka and Valkey.

* Labels of scored transactions become labelled cases (deduplicated, a changed label
  moves the case); a label that arrives before its transaction waits and is applied once
  the transaction is scored; one whose transaction never comes is dead-lettered as
  ``unknown_tx_id`` after ``pending_label_ttl_s``; a malformed one at once.
* Redis outage: the worker keeps scoring, reports ``riskstream_degraded{component="redis"}``,
  and every label sent during the outage is written once Redis is back.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from adaptation_helpers import labelled_metric, send_labels, wait_scored
from aiokafka import AIOKafkaProducer
from pipeline_helpers import (  # noqa: F401 - tiny_model is a fixture
    pipeline_settings,
    read_topic,
    tiny_model_fixture,
    values,
    wire_source,
    workers,
)

from streams.case_store import CaseStore
from streams.producer import kafka_client_kwargs, produce_transactions
from streams.services.valkey import EmbeddedValkey
from streams.settings import Settings

pytestmark = pytest.mark.integration


async def _cases(s: Settings) -> tuple[dict[str, int], int, dict[str, int]]:
    client = aioredis.Redis.from_url(s.redis_url)
    try:
        store = CaseStore(client, prefix=f"{s.app_id}:", cap=s.case_cap_per_class)
        labels = {c.tx_id: c.label for label in (0, 1) for c in await store.recent(label)}
        return await store.counts(), await store.sequence(), labels
    finally:
        await client.aclose()


async def _case_cards(s: Settings) -> dict[str, str]:
    client = aioredis.Redis.from_url(s.redis_url)
    try:
        store = CaseStore(client, prefix=f"{s.app_id}:", cap=s.case_cap_per_class)
        return {c.tx_id: c.card_id for label in (0, 1) for c in await store.recent(label)}
    finally:
        await client.aclose()


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


async def _send_raw(s: Settings, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(**kafka_client_kwargs(s))
    await producer.start()
    try:
        await producer.send_and_wait(s.topic_labels, value, key=key)
    finally:
        await producer.stop()


def test_labels_become_cases_pending_and_dead_letters(
    settings: Any, tiny_model: Path, tmp_path: Path
) -> None:
    s = pipeline_settings(settings, tiny_model, pending_label_ttl_s=3.0, adapt_min_new_cases=10_000)
    source = wire_source(600, seed=21)
    early, late = source[:500], source[500:]
    ids = [tx["tx_id"] for tx, _ in early]
    with workers(s, tmp_path, 1) as (worker,):
        worker.wait_ready()
        asyncio.run(produce_transactions(s, early))
        wait_scored([worker], len(early))
        asyncio.run(send_labels(s, ids[:5], label=1))
        asyncio.run(send_labels(s, ids[5:8], label=0))
        asyncio.run(send_labels(s, ids[:2], label=1))  # replayed: nothing changes
        asyncio.run(send_labels(s, [late[0][0]["tx_id"], "ghost-tx"], label=1))  # not scored yet
        asyncio.run(_send_raw(s, b"x", b"{not json"))
        _wait(lambda: asyncio.run(_cases(s))[0] == {"fraud": 5, "legit": 3}, 20, "8 cases")
        asyncio.run(send_labels(s, [ids[6]], label=1))  # an analyst corrects a label
        asyncio.run(produce_transactions(s, late))  # the pending label's transaction
        _wait(lambda: asyncio.run(_cases(s))[0] == {"fraud": 7, "legit": 2}, 20, "10 cases")
        dlq = values(asyncio.run(read_topic(s, s.topic_dlq, until=2, idle_s=6.0)))
        consumed = worker.metric("riskstream_labels_consumed_total")
        pending = worker.metric("riskstream_labels_pending")
        cases_gauge = labelled_metric(worker, "riskstream_redis_cases")
    counts, seq, labels = asyncio.run(_cases(s))
    assert labels[ids[6]] == 1 and labels[late[0][0]["tx_id"]] == 1
    # each case knows its card (the pattern head counts incidents by card)
    card_of = {tx["tx_id"]: tx["card_id"] for tx, _ in source}
    assert asyncio.run(_case_cards(s)) == {t: card_of[t] for t in labels}
    assert seq == 10  # 8 new, 1 changed, 1 pending applied; the replays wrote nothing
    reasons = sorted(d["error"] for d in dlq)
    assert reasons == ["not_json", "unknown_tx_id"]
    ghost = next(d for d in dlq if d["error"] == "unknown_tx_id")
    assert "ghost-tx" in ghost["detail"] and ghost["topic"] == s.topic_labels
    assert orjson.loads(base64.b64decode(ghost["payload_b64"]))["tx_id"] == "ghost-tx"
    assert consumed == 14 and pending == 0
    assert cases_gauge == {"fraud": 7.0, "legit": 2.0}


def test_redis_outage_scoring_continues_and_no_label_is_lost(
    settings: Any, tiny_model: Path, tmp_path: Path
) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey", persist=True).start()
    try:
        s = pipeline_settings(
            settings, tiny_model, redis_url=valkey.url, adapt_min_new_cases=10_000
        )
        source = wire_source(3000, seed=23)
        first, during = source[:1500], source[1500:]
        labelled = [tx["tx_id"] for tx, _ in first[:20]]
        with workers(s, tmp_path, 1) as (worker,):
            worker.wait_ready()
            asyncio.run(produce_transactions(s, first))
            wait_scored([worker], len(first))
            time.sleep(1.0)  # the scored vectors reach Redis after each batch
            valkey.stop()  # SIGTERM: saves its data set, like a restart would keep it
            asyncio.run(send_labels(s, labelled, label=1))
            asyncio.run(produce_transactions(s, during))
            wait_scored([worker], len(source), timeout=60)  # scoring goes on without Redis
            degraded = labelled_metric(worker, "riskstream_degraded").get("redis")
            assert asyncio.run(_cases_or_none(s)) is None  # Redis really is down
            valkey.start()
            _wait(lambda: asyncio.run(_cases(s))[0]["fraud"] == 20, 40, "the 20 labels")
            _wait(
                lambda: labelled_metric(worker, "riskstream_degraded").get("redis") == 0.0,
                20,
                "the degraded flag to clear",
            )
            assert worker.alive(), worker.tail()
        assert degraded == 1.0
        counts, _, labels = asyncio.run(_cases(s))
        assert counts == {"fraud": 20, "legit": 0} and set(labels) == set(labelled)
    finally:
        valkey.stop()


async def _cases_or_none(s: Settings) -> Any:
    try:
        return await asyncio.wait_for(_cases(s), 2.0)
    except (OSError, TimeoutError, aioredis.ConnectionError):
        return None
