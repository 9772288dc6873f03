"""Set/get, hashes and expiry through the project-managed Valkey (or RISKSTREAM_REDIS_URL)."""

from __future__ import annotations

import time

import pytest
import redis

from streams.settings import env_field_names

pytestmark = pytest.mark.integration


def test_set_get_roundtrip_bytes(redis_client: redis.Redis) -> None:
    payload = bytes(range(256)) * 4  # binary-safe: model weights are stored as raw bytes
    assert redis_client.set("rs:test:blob", payload)
    assert redis_client.get("rs:test:blob") == payload
    assert redis_client.get("rs:test:missing") is None
    assert redis_client.incrby("rs:test:counter", 5) == 5
    assert redis_client.incrby("rs:test:counter", 2) == 7


def test_hash_fields(redis_client: redis.Redis) -> None:
    case = {"label": "1", "amount": "220.50", "terminal_id": "T-17"}
    assert redis_client.hset("rs:test:case:tx-1", mapping=case) == 3
    stored = redis_client.hgetall("rs:test:case:tx-1")
    assert {k.decode(): v.decode() for k, v in stored.items()} == case
    assert redis_client.hincrbyfloat("rs:test:case:tx-1", "amount", 0.5) == pytest.approx(221.0)
    assert redis_client.hdel("rs:test:case:tx-1", "terminal_id") == 1
    assert redis_client.hexists("rs:test:case:tx-1", "terminal_id") is False


def test_expiry_removes_keys(redis_client: redis.Redis) -> None:
    redis_client.set("rs:test:short", b"x", px=300)
    redis_client.set("rs:test:long", b"y", ex=60)
    assert 0 < redis_client.pttl("rs:test:short") <= 300
    assert 55 < redis_client.ttl("rs:test:long") <= 60
    deadline = time.monotonic() + 5
    while redis_client.exists("rs:test:short") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_client.get("rs:test:short") is None
    assert redis_client.get("rs:test:long") == b"y"


def test_embedded_server_is_valkey_run_by_the_project(
    redis_client: redis.Redis, redis_url: str
) -> None:
    if "redis_url" in env_field_names():
        pytest.skip("RISKSTREAM_REDIS_URL points at an external server")
    info = redis_client.info("server")
    assert "valkey_version" in info or info.get("server_name") == "valkey"
    assert redis_url.startswith("redis://127.0.0.1:")
    assert int(info["tcp_port"]) == int(redis_url.rsplit(":", 1)[1].split("/")[0])
