"""The worker's Redis connection, and the guard that keeps scoring alive when Redis is not.

Terminal counts, scored feature vectors and alert claims live in Redis, but a Redis
outage must never stop the stream: callers wrap each round trip in
:meth:`RedisGuard.attempt`, which times it out, flags the ``riskstream_degraded``
gauge, and backs off so a down Redis costs one failed attempt per ``retry_s``, not one
per micro-batch.

>>> guard = RedisGuard(retry_s=5.0, on_change=None)
>>> guard.available(now=0.0), guard.degraded
(True, False)
>>> guard.failed(ConnectionError("down"), now=10.0); guard.available(now=12.0)
False
>>> guard.available(now=15.5)
True
>>> guard.ok(); guard.degraded
False
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from streams.errors import RiskstreamError
from streams.settings import Settings, safe_url

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Errors that mean "Redis is unavailable or misbehaving", not a bug in our code.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)


def check_redis_credentials(settings: Settings, timeout_s: float = 2.0) -> None:
    """Fail fast on a Redis that refuses our credentials; let an unreachable one pass.

    A wrong ``RISKSTREAM_REDIS_PASSWORD`` is a configuration mistake that no waiting
    fixes, so the worker stops with one line; a Redis that is merely down is an outage
    the worker rides out in degraded mode.

    >>> check_redis_credentials(Settings(redis_url="redis://127.0.0.1:1/0"), timeout_s=0.2)

    Raises
    ------
    RiskstreamError
        Redis answered and refused the password (or wants one and got none).
    """
    import redis

    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    client = redis.Redis.from_url(
        settings.redis_url,
        password=password,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
    )
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise RiskstreamError(
            f"Redis at {safe_url(settings.redis_url)} refused the credentials"
            f" ({type(exc).__name__}):"
            " check RISKSTREAM_REDIS_PASSWORD"
        ) from None
    except redis.ResponseError as exc:
        if "AUTH" not in str(exc).upper():
            return
        raise RiskstreamError(
            f"Redis at {safe_url(settings.redis_url)} refused the credentials (ResponseError):"
            " check RISKSTREAM_REDIS_PASSWORD"
        ) from None
    except (redis.RedisError, OSError):
        return  # unreachable: the worker starts degraded and reconnects later
    finally:
        client.close()


def connect_redis(settings: Settings) -> aioredis.Redis:
    """A lazily connecting asyncio Redis client for ``settings.redis_url``.

    Bytes in, bytes out (``decode_responses=False``); short timeouts so an outage is
    noticed within a second. A connection error is retried once at once on a fresh
    connection: after Redis restarts, every pooled connection is dead, and without the
    retry each one's first use would flip the worker into degraded mode again.

    >>> client = connect_redis(Settings(redis_url="redis://127.0.0.1:1/0"))
    >>> type(client).__name__
    'Redis'
    """
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return aioredis.Redis.from_url(
        settings.redis_url,
        password=password,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        health_check_interval=30,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
        decode_responses=False,
    )


class RedisGuard:
    """Tracks whether Redis is usable and how long to wait before trying it again.

    Parameters
    ----------
    retry_s
        After a failure, :meth:`available` says no for this long.
    on_change
        Called with ``True`` when Redis becomes degraded and ``False`` when it is back.
    timeout_s
        Upper bound on one guarded round trip.
    """

    def __init__(
        self,
        retry_s: float = 1.0,
        on_change: Callable[[bool], None] | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self.degraded = False
        self.failures = 0
        self._retry_at = 0.0
        self._on_change = on_change

    def available(self, now: float | None = None) -> bool:
        """Whether to try Redis now (always when healthy; after the back-off when not)."""
        if not self.degraded:
            return True
        return (time.monotonic() if now is None else now) >= self._retry_at

    def ok(self) -> None:
        """A round trip succeeded."""
        if self.degraded:
            log.warning("Redis is reachable again; leaving degraded mode")
            self.degraded = False
            self._notify(False)

    def failed(self, exc: BaseException, now: float | None = None) -> None:
        """A round trip failed with ``exc``."""
        self.failures += 1
        self._retry_at = (time.monotonic() if now is None else now) + self.retry_s
        if not self.degraded:
            log.warning("Redis unavailable (%r); scoring continues degraded", exc)
            self.degraded = True
            self._notify(True)

    async def attempt(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """Run ``call()`` if Redis is available; ``None`` when skipped or failed."""
        if not self.available():
            return None
        try:
            result = await asyncio.wait_for(call(), self.timeout_s)
        except REDIS_ERRORS as exc:
            self.failed(exc)
            return None
        self.ok()
        return result

    async def probe(self, client: aioredis.Redis) -> None:
        """While degraded, PING ``client`` (after the back-off) to notice Redis is back.

        Without traffic no guarded call would run, and the degraded gauge (and the
        ``RiskstreamRedisDown`` alert) would stay up long after Redis returned.
        """
        if self.degraded:
            await self.attempt(client.ping)

    def _notify(self, degraded: bool) -> None:
        if self._on_change is not None:
            try:
                self._on_change(degraded)
            except Exception:
                log.exception("degraded-state callback failed")
