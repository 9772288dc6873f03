"""A Redis lock with expiry: one holder among the workers of a consumer group.

The holder stores a random token under the key with ``PX`` expiry and renews it while
alive; renewal and release are Lua scripts that act only if the token is still ours, so
a worker that paused past the expiry never deletes its successor's lock. When the holder
dies, another worker takes the lock within ``ttl_s``.

Examples
--------
>>> lock = RedisLock(None, "app:adapt:lock", ttl_s=10)
>>> lock.ttl_ms, lock.held, len(lock.token)
(10000, False, 16)
"""

from __future__ import annotations

import secrets
from typing import Any

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLock:
    """A lock with expiry, held by the worker whose random token it stores.

    Parameters
    ----------
    redis
        asyncio Redis client.
    key
        The lock's key (one per consumer group: ``{app_id}:...``).
    ttl_s
        Expiry; renew more often than this.
    """

    def __init__(self, redis: Any, key: str, ttl_s: float) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = int(ttl_s * 1000)
        self.token = secrets.token_hex(8)
        self.held = False

    async def acquire(self) -> bool:
        """Take the lock if free, or renew it if already ours; True while we hold it."""
        if self.held:
            self.held = bool(await self.redis.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))
        if not self.held:
            self.held = bool(await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))
        return self.held

    async def release(self) -> None:
        """Give the lock up (only if it is still ours)."""
        if self.held:
            self.held = False
            await self.redis.eval(_RELEASE, 1, self.key, self.token)
