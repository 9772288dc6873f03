"""Labelled cases in Redis: what the adaptation agent builds support sets from.

A case is a labelled transaction with the feature vector it was scored with. The store
keeps one sorted set per class (member ``tx_id``, score = write sequence number) and one
hash of case payloads, under the worker's key prefix:

* ``{prefix}cases:fraud`` / ``{prefix}cases:legit``: the ``tx_id`` of each class, oldest
  first; each class holds at most ``cap`` cases and evicts its oldest beyond that;
* ``{prefix}cases:data``: ``tx_id`` → JSON payload;
* ``{prefix}cases:seq``: the write sequence; every new or changed case takes the next
  number, so "cases written since sequence *n*" is a range query, and the adaptation
  agent counts new cases without a counter of its own.

One Lua script does each write atomically: a replayed label (same ``tx_id``, same
class) changes nothing, a changed label moves the case to the other class and
overwrites its payload, and eviction keeps both structures in step.

Examples
--------
>>> case = Case(tx_id="t1", label=1, x=(1.0, 2.5), ts=1.5e9, labelled_at=1.5e9 + 60,
...             label_time=1.5e9 + 61, source="analyst", model_version="v1", score=0.2)
>>> Case.from_json(case.to_json()) == case
True
>>> case.class_name, CaseStore(None, prefix="rs:", cap=10).class_key(0)
('fraud', 'rs:cases:legit')
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import orjson
from redis.exceptions import NoScriptError

CLASS_NAMES = {1: "fraud", 0: "legit"}

# KEYS: data hash, target class zset, other class zset, sequence
# ARGV: tx_id, payload, cap  ->  {status (0 duplicate, 1 new, 2 changed label), seq, evicted}
_PUT_CASE = """
local tx = ARGV[1]
if redis.call('ZSCORE', KEYS[2], tx) then
  return {0, 0, 0}
end
local status = 1
if redis.call('ZREM', KEYS[3], tx) == 1 then
  status = 2
end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], tx, ARGV[2])
redis.call('ZADD', KEYS[2], seq, tx)
local evicted = 0
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if extra > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[2], extra)
  for i = 1, #gone, 2 do
    redis.call('HDEL', KEYS[1], gone[i])
    evicted = evicted + 1
  end
end
return {status, seq, evicted}
"""

_PUT_CASE_SHA = hashlib.sha1(_PUT_CASE.encode()).hexdigest()  # noqa: S324 - Redis' script id
DUPLICATE, NEW, CHANGED = 0, 1, 2


@dataclass(frozen=True)
class Case:
    """One labelled transaction.

    Attributes
    ----------
    x
        The raw feature vector the transaction was scored with (the model's schema order).
    ts
        Transaction time (epoch seconds).
    labelled_at
        When the analyst or chargeback labelled it (the label record's field).
    label_time
        When the label reached Kafka (its record timestamp): the start of label→live.
    model_version, score
        The model that scored the transaction and its score then (prequential metrics).
    seq
        Write sequence number in the store (0 until stored).
    card_id
        The card of the transaction ("" in cases stored before it was kept): ten cases
        from one card are one incident, not ten views of a pattern.
    """

    tx_id: str
    label: int
    x: tuple[float, ...]
    ts: float
    labelled_at: float
    label_time: float
    source: str
    model_version: str
    score: float
    seq: int = 0
    card_id: str = ""

    @property
    def incident(self) -> str:
        """What makes cases independent: the card, or the transaction when it is unknown.

        >>> Case("a", 1, (1.0,), 0.0, 0.0, 0.0, "s", "v", 0.5).incident
        'tx:a'
        """
        return f"card:{self.card_id}" if self.card_id else f"tx:{self.tx_id}"

    @property
    def class_name(self) -> str:
        """``"fraud"`` or ``"legit"``."""
        return CLASS_NAMES[self.label]

    def to_json(self) -> bytes:
        """Payload stored in the data hash (``seq`` lives in the sorted set).

        >>> Case("a", 1, (1.0,), 0.0, 0.0, 0.0, "s", "v", 0.5, card_id="c9").to_json().endswith(
        ...     b'"card_id":"c9"}')
        True
        """
        values = asdict(self)
        del values["seq"]
        return orjson.dumps(values)

    @classmethod
    def from_json(cls, raw: bytes, seq: int = 0) -> Case:
        """Inverse of :meth:`to_json`."""
        values = orjson.loads(raw)
        values["x"] = tuple(float(v) for v in values["x"])
        return cls(**values, seq=seq)


@dataclass(frozen=True)
class PutResult:
    """What one write did: ``status`` is :data:`DUPLICATE`, :data:`NEW` or :data:`CHANGED`."""

    status: int
    seq: int
    evicted: int


def cases_arrays(cases: Sequence[Case]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features ``[N, F]`` (float32), labels ``[N]`` and ids of ``cases``.

    >>> c = Case("a", 1, (1.0, 2.0), 0.0, 0.0, 0.0, "s", "v", 0.5)
    >>> x, y, ids = cases_arrays([c, c])
    >>> x.shape, y.tolist(), ids
    ((2, 2), [1, 1], ['a', 'a'])
    """
    if not cases:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64), []
    x = np.asarray([c.x for c in cases], dtype=np.float32)
    y = np.asarray([c.label for c in cases], dtype=np.int64)
    return x, y, [c.tx_id for c in cases]


class CaseStore:
    """Per-class, capped, deduplicated labelled cases in Redis.

    Parameters
    ----------
    redis
        asyncio Redis client (bytes responses).
    prefix
        Key namespace (``"{app_id}:"``).
    cap
        Cases kept per class (``RISKSTREAM_CASE_CAP_PER_CLASS``); the oldest go first.
    """

    def __init__(self, redis: Any, *, prefix: str, cap: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.cap = int(cap)
        self.data_key = f"{prefix}cases:data"
        self.seq_key = f"{prefix}cases:seq"

    def class_key(self, label: int) -> str:
        """Sorted set of class ``label`` (1 fraud, 0 legit)."""
        return f"{self.prefix}cases:{CLASS_NAMES[int(label)]}"

    async def load_scripts(self) -> None:
        """Register the write script with Redis (after a restart or ``SCRIPT FLUSH``)."""
        await self.redis.script_load(_PUT_CASE)

    def queue_put(self, pipe: Any, case: Case) -> None:
        """Add the write of ``case`` to ``pipe``; its reply is ``[status, seq, evicted]``.

        The pipeline raises ``NoScriptError`` when Redis lost the script: call
        :meth:`load_scripts` and run it again (writes are idempotent).
        """
        label = int(case.label)
        keys = [self.data_key, self.class_key(label), self.class_key(1 - label), self.seq_key]
        pipe.evalsha(_PUT_CASE_SHA, len(keys), *keys, case.tx_id, case.to_json(), self.cap)

    async def put_many(self, cases: Sequence[Case]) -> list[PutResult]:
        """Write ``cases`` in one pipelined round trip, in order."""
        if not cases:
            return []
        for attempt in (0, 1):
            pipe = self.redis.pipeline(transaction=False)
            for case in cases:
                self.queue_put(pipe, case)
            try:
                replies = await pipe.execute()
                break
            except NoScriptError:
                if attempt:
                    raise
                await self.load_scripts()
        return [parse_put_reply(reply) for reply in replies]

    async def put(self, case: Case) -> PutResult:
        """Write one case."""
        return (await self.put_many([case]))[0]

    async def counts(self) -> dict[str, int]:
        """Cases per class, ``{"fraud": n, "legit": m}``."""
        pipe = self.redis.pipeline(transaction=False)
        for label in (1, 0):
            pipe.zcard(self.class_key(label))
        fraud, legit = await pipe.execute()
        return {"fraud": int(fraud), "legit": int(legit)}

    async def sequence(self) -> int:
        """The latest write sequence number (0 before the first write)."""
        raw = await self.redis.get(self.seq_key)
        return int(raw) if raw is not None else 0

    async def recent(self, label: int, n: int | None = None) -> list[Case]:
        """The newest ``n`` cases of class ``label`` (all when ``None``), newest first."""
        stop = -1 if n is None else max(0, n) - 1
        if stop < -1 or n == 0:
            return []
        members = await self.redis.zrevrange(self.class_key(label), 0, stop, withscores=True)
        return await self._load(members)

    async def since(self, seq: int) -> list[Case]:
        """Cases written after sequence ``seq`` (both classes), oldest first."""
        cases: list[Case] = []
        for label in (1, 0):
            members = await self.redis.zrangebyscore(
                self.class_key(label), f"({int(seq)}", "+inf", withscores=True
            )
            cases += await self._load(members)
        return sorted(cases, key=lambda c: c.seq)

    async def get(self, tx_id: str) -> Case | None:
        """The case of ``tx_id``, if stored."""
        raw = await self.redis.hget(self.data_key, tx_id)
        if raw is None:
            return None
        label = 1 if await self.redis.zscore(self.class_key(1), tx_id) is not None else 0
        seq = await self.redis.zscore(self.class_key(label), tx_id)
        return Case.from_json(raw, seq=int(seq or 0))

    async def _load(self, members: Sequence[tuple[bytes, float]]) -> list[Case]:
        if not members:
            return []
        ids = [m[0] for m in members]
        payloads = await self.redis.hmget(self.data_key, ids)
        return [
            Case.from_json(raw, seq=int(score))
            for (_, score), raw in zip(members, payloads, strict=True)
            if raw is not None
        ]

    async def clear(self) -> None:
        """Delete every case (tests and ``riskstream`` maintenance)."""
        await self.redis.delete(self.data_key, self.class_key(1), self.class_key(0), self.seq_key)


def parse_put_reply(reply: Sequence[Any]) -> PutResult:
    """A script reply as a :class:`PutResult`.

    >>> parse_put_reply([b"2", 7, 0])
    PutResult(status=2, seq=7, evicted=0)
    """
    status, seq, evicted = (int(v) for v in reply)
    return PutResult(status=status, seq=seq, evicted=evicted)
