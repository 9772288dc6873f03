"""The pattern head's reference traffic, sampled from the scored store on a real Valkey."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
import redis.asyncio as aioredis

from streams.scored_store import ScoredStore, encode_entry
from streams.traffic_sample import recent_traffic

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _entry(x: np.ndarray) -> bytes:
    return encode_entry(x, terminal_id="m", ts=1.7e9, card_id="c", model_version="v", score=0.1)


async def test_samples_distinct_recent_vectors_newest_bucket_first(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = ScoredStore(client, prefix=f"test-{uuid.uuid4().hex[:8]}:", ttl_s=8 * 86_400)
    now = time.time()
    rng = np.random.default_rng(0)
    today = rng.normal(size=(300, 4)).astype(np.float32)
    yesterday = rng.normal(size=(300, 4)).astype(np.float32) + 100.0
    keys = [store.key_at(now), store.key_at(now - store.bucket_s)]
    try:
        for key, rows in zip(keys, (today, yesterday), strict=True):
            await client.hset(key, mapping={f"t{i}": _entry(r) for i, r in enumerate(rows)})
        await client.hset(keys[1], "other-schema", _entry(np.zeros(3, np.float32)))

        small = await recent_traffic(store, 200, 4, now=now)
        assert small.shape == (200, 4) and small.dtype == np.float32
        assert (np.abs(small) < 50).all()  # all from today's bucket: the newest first
        assert len({r.tobytes() for r in small}) == 200  # distinct rows

        both = await recent_traffic(store, 1_000, 4, now=now)
        assert both.shape == (600, 4)  # every 4-feature vector, the 3-feature one skipped
        assert {r.tobytes() for r in both} == {r.tobytes() for r in np.vstack([today, yesterday])}
    finally:
        await client.delete(*keys)
        await client.aclose()


async def test_no_scored_traffic_gives_an_empty_sample(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = ScoredStore(client, prefix=f"test-{uuid.uuid4().hex[:8]}:", ttl_s=86_400)
    try:
        assert (await recent_traffic(store, 100, 4)).shape == (0, 4)
    finally:
        await client.aclose()


async def test_keeps_only_the_last_days_of_event_time(redis_url: str) -> None:
    # a replay writes weeks of history into one wall-clock bucket: the sample must still
    # be recent behaviour
    client = aioredis.Redis.from_url(redis_url)
    store = ScoredStore(client, prefix=f"test-{uuid.uuid4().hex[:8]}:", ttl_s=8 * 86_400)
    day = 86_400.0
    entries = {
        f"t{i}": encode_entry(
            np.full(2, float(i), np.float32),
            terminal_id="m",
            ts=1.7e9 + i * day / 10,  # ten transactions a day over 30 days
            card_id="c",
            model_version="v",
            score=0.1,
        )
        for i in range(300)
    }
    key = store.key_at(time.time())
    try:
        await client.hset(key, mapping=entries)
        sample = await recent_traffic(store, 1_000, 2, max_age_s=7 * day)
        assert sample.shape == (71, 2)  # days 22.9 .. 29.9: i = 229 .. 299
        assert sample[:, 0].min() == 229.0
    finally:
        await client.delete(key)
        await client.aclose()
