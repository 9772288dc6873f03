"""What each transaction was scored with, kept in Redis for the labels agent.

When a label arrives (often days later) the labels agent needs the transaction's feature
vector (a new labelled case), its terminal and time (the terminal's fraud count). The
score agent stores them per transaction for ``feature_ttl_s``.

One ``SET … EX`` per transaction costs ~20 µs of client time in redis-py, more than the
whole per-transaction budget, so entries go into time-bucketed hashes instead: one
``HSET`` per micro-batch with every transaction of the batch (~2 µs per entry), and the
bucket expires ``ttl`` after it closes. An entry is a small JSON header (terminal, time,
card, model version, score) and the float32 vector in binary. A lookup probes the ~9 live
buckets, newest first, in one pipelined round trip. Entries live between ``ttl`` and
``ttl + bucket`` seconds.

Examples
--------
>>> store = ScoredStore(None, prefix="rs:", ttl_s=8 * 86_400)
>>> store.bucket_s, store.key_at(86_400.0 * 3)
(86400, 'rs:scored:86400:3')
>>> len(store.live_keys(now=86_400.0 * 30))
10
>>> entry = encode_entry([1.0, 0.5], terminal_id="m1", ts=1.5e9, card_id="c1",
...                      model_version="v1", score=0.25)
>>> decode_entry(entry)["x"], decode_entry(entry)["terminal_id"]
([1.0, 0.5], 'm1')
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson

from streams import native
from streams.resp import CommandBatch

log = logging.getLogger(__name__)

MAX_BUFFERED = 200_000  # entries kept for a later write while Redis is down


def encode_entry(
    x: Sequence[float] | np.ndarray | bytes,
    *,
    terminal_id: str,
    ts: float,
    card_id: str,
    model_version: str,
    score: float,
) -> bytes:
    """One stored entry: a JSON header line, then the raw float32 feature vector.

    The vector goes in binary (exact, and ~5x cheaper to write than JSON numbers);
    ``x`` may already be those bytes (a row of a float32 batch).
    """
    header = orjson.dumps([terminal_id, ts, card_id, model_version, score])
    vector = x if isinstance(x, bytes) else np.asarray(x, dtype=np.float32).tobytes()
    return header + b"\n" + vector


def encode_entries(
    vectors: np.ndarray,
    *,
    terminal_ids: Sequence[str],
    ts: Sequence[float] | np.ndarray,
    card_ids: Sequence[str],
    model_version: str,
    scores: Sequence[float] | np.ndarray,
) -> list[bytes]:
    """:func:`encode_entry` of each row of the float32 matrix ``vectors``, for a batch.

    >>> X = np.array([[1.0, 0.5], [2.0, 0.0]], dtype=np.float32)
    >>> out = encode_entries(X, terminal_ids=["m1", "m2"], ts=[1.0, 2.0],
    ...                      card_ids=["c1", "c2"], model_version="v1", scores=[0.1, 0.2])
    >>> out[1] == encode_entry(X[1], terminal_id="m2", ts=2.0, card_id="c2",
    ...                        model_version="v1", score=0.2)
    True
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    width = vectors.shape[1] * 4 if vectors.ndim == 2 else 0
    if isinstance(ts, np.ndarray):  # numpy scalars are not JSON: floats, as a list
        ts = ts.tolist()
    if isinstance(scores, np.ndarray):
        scores = scores.tolist()
    blob = vectors.tobytes()  # one copy; each entry takes its row as a bytes slice
    dumps = orjson.dumps
    return [
        dumps([terminal_id, t, card_id, model_version, score])
        + b"\n"
        + blob[i * width : (i + 1) * width]
        for i, (terminal_id, t, card_id, score) in enumerate(
            zip(terminal_ids, ts, card_ids, scores, strict=True)
        )
    ]


def encode_entries_native(
    vectors: np.ndarray,
    *,
    terminal_ids: list[str],
    ts: Sequence[float] | np.ndarray,
    card_ids: list[str],
    model_version: str,
    scores: Sequence[float] | np.ndarray,
) -> list[bytes]:
    """:func:`encode_entries` by the compiled writer (the same bytes)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        vectors = vectors.reshape(len(terminal_ids), -1)
    numbers = orjson.OPT_SERIALIZE_NUMPY
    entries: list[bytes] = native.kernel("_records").scored_entries(
        vectors.view(np.uint8).reshape(vectors.shape[0], vectors.shape[1] * 4),
        terminal_ids,
        orjson.dumps(np.ascontiguousarray(ts, dtype=np.float64), option=numbers),
        card_ids,
        orjson.dumps(model_version),
        orjson.dumps(np.ascontiguousarray(scores, dtype=np.float64), option=numbers),
    )
    return entries


def decode_entry(raw: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_entry`: ``x`` (floats), ``terminal_id``, ``ts``, ...

    Entries written as one JSON object (earlier versions) are read too.
    """
    if raw[:1] == b"{":
        entry: dict[str, Any] = orjson.loads(raw)
        return entry
    header, _, vector = raw.partition(b"\n")
    terminal_id, ts, card_id, model_version, score = orjson.loads(header)
    return {
        "x": np.frombuffer(vector, dtype=np.float32).tolist(),
        "terminal_id": terminal_id,
        "ts": ts,
        "card_id": card_id,
        "model_version": model_version,
        "score": score,
    }


class ScoredStore:
    """Scored feature vectors by ``tx_id`` in time-bucketed Redis hashes.

    Parameters
    ----------
    redis
        asyncio Redis client (``None`` in unit tests that only queue writes).
    prefix
        Key namespace (``"{app_id}:"``).
    ttl_s
        How long an entry is kept at least (``RISKSTREAM_FEATURE_TTL_S``).
    """

    def __init__(self, redis: Any, *, prefix: str, ttl_s: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = int(ttl_s)
        self.bucket_s = int(min(86_400, max(60, self.ttl_s // 8)))
        self._pending: deque[tuple[float, dict[str, bytes]]] = deque()
        self._pending_n = 0
        self.dropped = 0

    def key_at(self, now: float) -> str:
        """The bucket key entries written at ``now`` go to."""
        return f"{self.prefix}scored:{self.bucket_s}:{math.floor(now / self.bucket_s)}"

    def live_keys(self, now: float | None = None) -> list[str]:
        """Every bucket that may still hold entries, newest first."""
        now = time.time() if now is None else now
        newest = math.floor(now / self.bucket_s)
        oldest = math.floor((now - self.ttl_s) / self.bucket_s) - 1
        return [f"{self.prefix}scored:{self.bucket_s}:{b}" for b in range(newest, oldest - 1, -1)]

    # --- writes (score agent) ------------------------------------------------------------
    def add(self, entries: dict[str, bytes], now: float | None = None) -> None:
        """Buffer ``{tx_id: encode_entry(...)}`` of one batch for the next write pipeline."""
        if not entries:
            return
        self._pending.append((time.time() if now is None else now, entries))
        self._pending_n += len(entries)
        while self._pending_n > MAX_BUFFERED and len(self._pending) > 1:
            _, gone = self._pending.popleft()
            self._pending_n -= len(gone)
            self.dropped += len(gone)
            log.warning("Redis unavailable too long: %d scored vectors not stored", len(gone))

    @property
    def pending(self) -> int:
        """Entries buffered and not yet written."""
        return self._pending_n

    def queue_writes(self, batch: CommandBatch) -> Callable[[], None]:
        """Move the buffered entries into ``batch`` (one HSET per bucket).

        Returns a function that puts them back in the buffer, for when the batch fails.
        """
        taken, self._pending = self._pending, deque()
        self._pending_n = 0
        by_key: dict[str, dict[str, bytes]] = {}
        for stamp, entries in taken:
            key = self.key_at(stamp)
            bucket = by_key.get(key)
            if bucket is None:
                by_key[key] = dict(entries)
            else:
                bucket.update(entries)
        for key, mapping in by_key.items():
            bucket_no = int(key.rsplit(":", 1)[1])
            batch.add("HSET", key, *[part for item in mapping.items() for part in item])
            batch.add("EXPIREAT", key, (bucket_no + 1) * self.bucket_s + self.ttl_s)

        def restore() -> None:
            self._pending.extendleft(reversed(taken))
            self._pending_n += sum(len(entries) for _, entries in taken)

        return restore

    # --- reads (labels agent) ------------------------------------------------------------
    async def get_many(self, tx_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored entries of ``tx_ids`` (absent ids are left out); one round trip."""
        if not tx_ids:
            return {}
        keys = self.live_keys()
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, list(tx_ids))
        replies = await pipe.execute()
        out: dict[str, dict[str, Any]] = {}
        for reply in replies:  # newest bucket first: the first hit is the latest score
            for tx_id, raw in zip(tx_ids, reply, strict=True):
                if raw is not None and tx_id not in out:
                    out[tx_id] = decode_entry(raw)
        return out

    async def get(self, tx_id: str) -> dict[str, Any] | None:
        """The stored entry of one transaction, or ``None``."""
        return (await self.get_many([tx_id])).get(tx_id)
