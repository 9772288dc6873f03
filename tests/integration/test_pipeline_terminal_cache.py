"""The terminal-count cache against a real Valkey: its event-day refetch script and writes.

A replay of many event days within a second must read, for every transaction, the
features of the counts Redis holds at that moment (``streams.terminal_store``).
"""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from models.features import terminal_features
from streams.resp import command_batch
from streams.terminal_store import TerminalStore, parse_counts

pytestmark = pytest.mark.integration


async def test_event_day_refetch_matches_redis(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    prefix = f"tc-{uuid.uuid4().hex[:8]}:"
    store = TerminalStore(client, prefix=prefix, cache_ttl_s=30.0)
    try:
        await store.load_scripts()
        await client.hset(store.key("m1"), "f17002", 1)  # a label on an early day
        first = 17_000
        for day in range(first, first + 45):
            for _ in range(2):  # two micro-batches per event day
                batch = [("m1", day), ("m2", day), ("m1", day)]
                await store.fetch(store.missing(batch))
                got = store.features(batch)
                for terminal, d in batch:
                    truth = parse_counts(await client.hgetall(store.key(terminal)))
                    assert got[(terminal, d)] == terminal_features(*truth, d), (terminal, d)
                store.add_transactions(batch)
                writes = command_batch(client)
                store.queue_writes(writes)
                assert not any(isinstance(r, Exception) for r in await writes.execute())
        # one HGETALL round trip on the first day, then one script call per new day
        assert store.fetches == 45
        assert (
            store.features([("m1", first + 44)])[("m1", first + 44)][4] == 4 * 30.0
        )  # 4 a day over 30 days
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
