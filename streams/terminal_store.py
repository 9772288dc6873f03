"""Per-terminal, per-day transaction and known-fraud counts in Redis, cached per worker.

The stream is partitioned by card, so a terminal's transactions arrive at every worker:
its counts live in Redis, one hash per terminal (``{prefix}term:{terminal_id}``, fields
``t{day}`` = transactions and ``f{day}`` = known frauds on UTC day ``day``). The score
agent adds transaction counts; the labels agent adds fraud counts.

Terminal features only read days at least 8 days old (the 7-day label delay), so a
worker caches each terminal's counts and computes the features of a ``(terminal, day)``
once per cached version. Only a terminal never seen makes a micro-batch wait (one
pipelined round trip for all of them); counts older than ``cache_ttl_s`` are refreshed in
the background while the stale ones keep serving (``cache_ttl_s = 0``: always fetched
first, for replays of history at full speed). Writes join the batch's one Redis round
trip (:meth:`TerminalStore.queue_writes`, :mod:`streams.batch_writer`).

Examples
--------
>>> parse_counts({b"t17000": b"4", b"f17000": b"1", b"t16990": b"2"})
({17000: 4, 16990: 2}, {17000: 1})
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from models.features import LABEL_DELAY_DAYS, terminal_window_days
from models.features.definitions import TERMINAL_WINDOWS_DAYS
from streams.redis_conn import RedisGuard
from streams.resp import CommandBatch, command_batch, pairs

Counts = tuple[dict[int, int], dict[int, int]]
TerminalDay = tuple[str, int]

#: Days of counts kept per terminal: the longest window ends 8 days back and spans 30.
RETENTION_DAYS = LABEL_DELAY_DAYS + 1 + 30 + 2


# KEYS: terminal hashes; ARGV[1]: TTL; then per key: field, increment.
_INCREMENTS = """
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, ARGV[2 * i], ARGV[2 * i + 1])
  redis.call('EXPIRE', key, ttl)
end
return #KEYS
"""

# KEYS: label key, terminal hash; ARGV: label, label TTL, fraud field, hash TTL.
_APPLY_LABEL = """
local previous = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local delta = tonumber(ARGV[1]) - previous
if delta ~= 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[3], delta)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return delta
"""

# Redis names scripts by their SHA-1 (an identifier here, not a security measure).
_SHAS = {
    script: hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
    for script in (_INCREMENTS, _APPLY_LABEL)
}


def parse_counts(raw: Mapping[bytes, bytes]) -> Counts:
    """``HGETALL`` of one terminal hash → ``(tx_by_day, fraud_by_day)``; junk fields skipped."""
    tx: dict[int, int] = {}
    fraud: dict[int, int] = {}
    for field, value in raw.items():
        try:
            day = int(field[1:])
            n = int(value)
        except ValueError:
            continue
        kind = field[:1]
        if kind == b"t":
            tx[day] = n
        elif kind == b"f":
            fraud[day] = n
    return tx, fraud


class _Cumulative:
    """Running totals of per-day counts, so any window's sum is two lookups."""

    __slots__ = ("first", "totals")

    def __init__(self, by_day: Mapping[int, int]) -> None:
        self.first = min(by_day) if by_day else 0
        last = max(by_day) if by_day else -1
        running, totals = 0, []
        for day in range(self.first, last + 1):
            running += int(by_day.get(day, 0))
            totals.append(running)
        self.totals = totals

    def through(self, day: int) -> int:
        """Sum of the counts of every day up to and including ``day``."""
        i = day - self.first
        if i < 0 or not self.totals:
            return 0
        return self.totals[min(i, len(self.totals) - 1)]


class TerminalCounts:
    """One terminal's per-day counts, with running totals for its window features.

    :meth:`features` is :func:`models.features.terminal_features` computed with the
    totals: the same windows (:func:`~models.features.terminal_window_days`), the same
    integer sums and the same division, so the same floats (a unit test holds the two
    equal), in two lookups per window instead of a loop over its days.

    >>> TerminalCounts({92: 4, 80: 6}, {92: 1}).features(100)
    (4.0, 0.25, 4.0, 0.25, 10.0, 0.1)
    """

    __slots__ = ("tx", "fraud", "_tx", "_fraud")

    def __init__(self, tx_by_day: Mapping[int, int], fraud_by_day: Mapping[int, int]) -> None:
        self.tx = dict(tx_by_day)
        self.fraud = dict(fraud_by_day)
        self._tx = _Cumulative(self.tx)
        self._fraud = _Cumulative(self.fraud)

    def features(self, day: int) -> tuple[float, ...]:
        """``(count_1d, risk_1d, count_7d, risk_7d, count_30d, risk_30d)`` on ``day``."""
        tx, fraud = self._tx, self._fraud
        out: list[float] = []
        for w in TERMINAL_WINDOWS_DAYS:
            days = terminal_window_days(day, w)
            n = tx.through(days.stop - 1) - tx.through(days.start - 1)
            f = fraud.through(days.stop - 1) - fraud.through(days.start - 1)
            out.append(float(n))
            out.append(f / n if n else 0.0)
        return tuple(out)


_NO_COUNTS = TerminalCounts({}, {})


class TerminalStore:
    """Terminal counts: Redis is the truth; this object caches, batches and buffers.

    Parameters
    ----------
    redis
        An asyncio Redis client (``redis.asyncio.Redis``); ``None`` only in unit tests
        that never touch Redis.
    prefix
        Key namespace, normally ``"{app_id}:"`` so groups sharing a Redis do not mix.
    cache_ttl_s
        How long fetched counts are trusted; 0 refetches on every micro-batch.
    """

    def __init__(self, redis: Any, *, prefix: str, cache_ttl_s: float = 30.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.cache_ttl_s = cache_ttl_s
        self._counts: dict[str, tuple[float, TerminalCounts]] = {}
        self._features: dict[TerminalDay, tuple[float, tuple[float, ...]]] = {}
        self._pending_tx: defaultdict[TerminalDay, int] = defaultdict(int)
        self._to_refresh: set[str] = set()
        self._refreshing: asyncio.Future[None] | None = None
        self._stale: dict[str, list[str]] = {}
        self._swept_at = time.monotonic()
        self.fetches = 0

    def key(self, terminal_id: str) -> str:
        """Redis key of a terminal's hash."""
        return f"{self.prefix}term:{terminal_id}"

    # --- reads -------------------------------------------------------------------------
    def missing(self, terminals: Iterable[str]) -> list[str]:
        """Terminals whose counts must be fetched before their features are made.

        Those never fetched (or swept); with ``cache_ttl_s == 0``, every one of them.
        Expired counts are only refreshed in the background (:meth:`refresh_soon`):
        the features read days at least 8 days old, so seconds-old counts are as good.
        """
        if self.cache_ttl_s <= 0:
            return sorted(set(terminals))
        counts = self._counts
        return sorted({terminal for terminal in terminals if terminal not in counts})

    def expired(self, terminals: Iterable[str], now: float | None = None) -> list[str]:
        """Terminals whose cached counts are older than ``cache_ttl_s``."""
        now = time.monotonic() if now is None else now
        limit, counts = now - self.cache_ttl_s, self._counts
        out = []
        for terminal in terminals:
            entry = counts.get(terminal)
            if entry is not None and entry[0] <= limit:
                out.append(terminal)
        return out

    def refresh_soon(self, terminals: Iterable[str], guard: RedisGuard) -> None:
        """Refetch ``terminals`` in the background (one refresh in flight at a time)."""
        self._to_refresh.update(terminals)
        if self._to_refresh and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.ensure_future(self._refresh(guard))

    async def _refresh(self, guard: RedisGuard) -> None:
        while self._to_refresh and guard.available():
            chunk = list(itertools.islice(self._to_refresh, 2000))
            self._to_refresh.difference_update(chunk)
            await guard.attempt(lambda chunk=chunk: self.fetch(chunk))  # type: ignore[misc]

    async def fetch(self, terminals: list[str]) -> None:
        """Load ``terminals``' counts from Redis in one pipelined round trip."""
        if not terminals:
            return
        batch = command_batch(self.redis)
        for terminal in terminals:
            batch.add("HGETALL", self.key(terminal))
        replies = await batch.execute()
        self.fetches += 1
        loaded = {}
        for terminal, reply in zip(terminals, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            loaded[terminal] = pairs(reply)
        self.load(loaded)

    def load(self, replies: Mapping[str, Mapping[bytes, bytes]], now: float | None = None) -> None:
        """Cache raw ``HGETALL`` replies per terminal (drops their cached features)."""
        now = time.monotonic() if now is None else now
        self._maybe_sweep(now)
        for terminal, raw in replies.items():
            tx, fraud = parse_counts(raw)
            self._counts[terminal] = (now, TerminalCounts(tx, fraud))
            if tx:  # days no window can read any more are deleted with the next writes
                oldest = max(tx) - RETENTION_DAYS
                stale = [f"{k}{d}" for k, m in (("t", tx), ("f", fraud)) for d in m if d < oldest]
                if stale:
                    self._stale[terminal] = stale

    def features(self, pairs: Iterable[TerminalDay]) -> dict[TerminalDay, tuple[float, ...]]:
        """Terminal features of each ``(terminal, day)`` from the cached counts.

        Call :meth:`missing` / :meth:`fetch` first; a terminal still without counts
        (Redis down) counts as zero, so scoring always proceeds. Features are computed
        once per ``(terminal, day)`` and cached count version.
        """
        out: dict[TerminalDay, tuple[float, ...]] = {}
        cache, counts_of = self._features, self._counts
        for pair in pairs:
            if pair in out:
                continue
            hit = cache.get(pair)
            entry = counts_of.get(pair[0])
            stamp = entry[0] if entry is not None else -1.0
            if hit is not None and hit[0] == stamp:
                out[pair] = hit[1]
                continue
            counts = entry[1] if entry is not None else _NO_COUNTS
            feats = counts.features(pair[1])
            cache[pair] = (stamp, feats)
            out[pair] = feats
        return out

    async def counts(self, terminal_id: str) -> Counts:
        """Current counts of one terminal, straight from Redis (tests, tools)."""
        return parse_counts(await self.redis.hgetall(self.key(terminal_id)))

    # --- writes ------------------------------------------------------------------------
    def add_transactions(self, pairs: Iterable[TerminalDay]) -> None:
        """Count one transaction per ``(terminal, day)`` (buffered until queued)."""
        pending = self._pending_tx
        for pair in pairs:
            pending[pair] += 1

    @property
    def pending_writes(self) -> int:
        """Buffered ``(terminal, day)`` increments not yet written."""
        return len(self._pending_tx)

    def queue_writes(self, batch: CommandBatch) -> tuple[int | None, Callable[[], None]]:
        """Move the buffered writes into ``batch``.

        Returns the index of the increments' ``EVALSHA`` in the batch (``None``: no
        increments) and a function that puts the writes back in the buffer, for when the
        batch fails. All increments are one ``EVALSHA`` (redis-py spends ~12 µs of Python
        per pipelined command; the server-side loop ~1 µs per increment).
        """
        taken, self._pending_tx = self._pending_tx, defaultdict(int)
        stale, self._stale = self._stale, {}
        index = None
        if taken:
            keys: list[str] = []
            args: list[Any] = [RETENTION_DAYS * 86_400]
            for (terminal, day), inc in taken.items():
                keys.append(self.key(terminal))
                args.append(f"t{day}")
                args.append(inc)
            index = batch.add("EVALSHA", self._sha(_INCREMENTS), len(keys), *keys, *args)
        for terminal, fields in stale.items():
            batch.add("HDEL", self.key(terminal), *fields)

        def restore() -> None:
            for pair, inc in taken.items():
                self._pending_tx[pair] += inc
            for terminal, fields in stale.items():
                self._stale.setdefault(terminal, fields)

        return index, restore

    def _sha(self, script: str) -> str:
        return _SHAS[script]

    async def load_scripts(self) -> None:
        """Register the Lua scripts with Redis (once per connection loss is enough)."""
        for script in (_INCREMENTS, _APPLY_LABEL):
            await self.redis.script_load(script)

    def queue_label(
        self, pipe: Any, *, tx_id: str, label: int, terminal_id: str, day: int, ttl_s: int
    ) -> None:
        """Record ``label`` of ``tx_id`` and move the terminal's fraud count on ``day``.

        Atomic and idempotent (a Lua script): the previous label of the transaction is
        read and replaced, and the count changes by the difference, so a replayed label
        changes nothing and a corrected one moves the count back. The reply is the delta.
        """
        pipe.evalsha(
            self._sha(_APPLY_LABEL),
            2,
            f"{self.prefix}label:{tx_id}",
            self.key(terminal_id),
            int(label),
            int(ttl_s),
            f"f{day}",
            RETENTION_DAYS * 86_400,
        )
        self._counts.pop(terminal_id, None)  # this worker sees its own label at once

    def _maybe_sweep(self, now: float) -> None:
        # Keeps the caches bounded by the terminals seen recently; runs before a load, so
        # it never drops counts the current batch is about to use.
        horizon = max(self.cache_ttl_s, 1.0) * 4
        if now - self._swept_at < horizon:
            return
        self._swept_at = now
        self._counts = {t: e for t, e in self._counts.items() if now - e[0] < horizon}
        self._features = {p: e for p, e in self._features.items() if now - e[0] < horizon}
