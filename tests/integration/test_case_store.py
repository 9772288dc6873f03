"""The labelled-case store on the real Redis/Valkey: caps, eviction, dedup, label changes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from streams.case_store import CHANGED, DUPLICATE, NEW, Case, CaseStore

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _case(tx_id: str, label: int, x: float = 1.0, source: str = "analyst") -> Case:
    return Case(
        tx_id=tx_id,
        label=label,
        x=(x, 2.0, 3.0),
        ts=1.5e9,
        labelled_at=1.5e9 + 10,
        label_time=1.5e9 + 11,
        source=source,
        model_version="v1",
        score=0.25,
    )


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[CaseStore]:
    client = aioredis.Redis.from_url(redis_url)
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    cases = CaseStore(client, prefix=prefix, cap=3)
    try:
        yield cases
    finally:
        await cases.clear()
        await client.aclose()


async def test_put_and_read_back(store: CaseStore) -> None:
    results = await store.put_many([_case("a", 1), _case("b", 0), _case("c", 1)])
    assert [r.status for r in results] == [NEW, NEW, NEW]
    assert [r.seq for r in results] == [1, 2, 3]
    assert await store.counts() == {"fraud": 2, "legit": 1}
    fraud = await store.recent(1)
    assert [c.tx_id for c in fraud] == ["c", "a"]  # newest first
    assert fraud[0] == _case("c", 1).__class__(**{**_case("c", 1).__dict__, "seq": 3})
    assert await store.sequence() == 3


async def test_duplicate_label_is_ignored(store: CaseStore) -> None:
    await store.put(_case("a", 1, x=1.0))
    again = await store.put(_case("a", 1, x=9.0, source="replay"))
    assert again.status == DUPLICATE
    stored = await store.get("a")
    assert stored is not None and stored.x[0] == 1.0 and stored.source == "analyst"
    assert await store.sequence() == 1  # a duplicate does not count as a new case


async def test_changed_label_moves_the_case(store: CaseStore) -> None:
    await store.put(_case("a", 1))
    await store.put(_case("b", 1))
    moved = await store.put(_case("a", 0, x=5.0, source="chargeback-reversal"))
    assert moved.status == CHANGED
    assert await store.counts() == {"fraud": 1, "legit": 1}
    case = await store.get("a")
    assert case is not None and case.label == 0 and case.x[0] == 5.0
    assert [c.tx_id for c in await store.recent(1)] == ["b"]


async def test_cap_evicts_oldest_first_per_class(store: CaseStore) -> None:
    await store.put_many([_case(f"f{i}", 1) for i in range(5)])
    await store.put_many([_case(f"l{i}", 0) for i in range(2)])
    assert await store.counts() == {"fraud": 3, "legit": 2}
    assert [c.tx_id for c in await store.recent(1)] == ["f4", "f3", "f2"]
    assert await store.get("f0") is None  # payload evicted with its entry
    raw = await store.redis.hlen(store.data_key)
    assert raw == 5


async def test_since_returns_cases_written_after_a_sequence(store: CaseStore) -> None:
    await store.put_many([_case("a", 1), _case("b", 0)])
    mark = await store.sequence()
    await store.put_many([_case("c", 0), _case("a", 0)])  # a new case and a changed label
    later = await store.since(mark)
    assert [(c.tx_id, c.label) for c in later] == [("c", 0), ("a", 0)]


async def test_survives_script_flush(store: CaseStore) -> None:
    await store.put(_case("a", 1))
    await store.redis.script_flush()
    result = await store.put(_case("b", 1))
    assert result.status == NEW
    assert await store.counts() == {"fraud": 2, "legit": 0}
