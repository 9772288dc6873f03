"""After Redis restarts, the worker's client and guard recover without a false alarm.

Every pooled connection dies with the server; the first command on each would fail
unless the client retries once on a fresh connection (``connect_redis``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streams.redis_conn import RedisGuard, connect_redis
from streams.services.valkey import EmbeddedValkey
from streams.settings import Settings

pytestmark = pytest.mark.integration


def test_pooled_connections_survive_a_redis_restart(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path / "valkey").start()
    changes: list[bool] = []
    try:

        async def scenario() -> list[object]:
            client = connect_redis(Settings(redis_url=server.url))
            guard = RedisGuard(on_change=changes.append)
            # Several connections in the pool, all alive.
            first = await asyncio.gather(*(guard.attempt(client.ping) for _ in range(4)))
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            # Each pooled connection is now dead: the next commands must still succeed.
            after = await asyncio.gather(*(guard.attempt(client.ping) for _ in range(4)))
            await client.aclose()
            return [*first, *after]

        results = asyncio.run(scenario())
    finally:
        server.stop()
    assert results == [True] * 8
    assert changes == []  # never flagged degraded


def test_probe_leaves_degraded_mode_without_traffic(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path / "valkey").start()
    changes: list[bool] = []
    try:

        async def scenario() -> None:
            client = connect_redis(Settings(redis_url=server.url))
            guard = RedisGuard(retry_s=0.2, on_change=changes.append)
            await guard.probe(client)  # healthy: a probe does nothing
            await asyncio.to_thread(server.stop)
            assert await guard.attempt(client.ping) is None
            await asyncio.to_thread(server.start)
            await asyncio.sleep(0.3)  # past the back-off
            await guard.probe(client)  # no other traffic: only the probe notices
            await client.aclose()

        asyncio.run(scenario())
    finally:
        server.stop()
    assert changes == [True, False]
