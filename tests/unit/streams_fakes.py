"""In-memory stand-ins for Redis and the Kafka producer, for the score pipeline's unit tests.

Only what the pipeline calls is implemented, with Redis' semantics for it (the two Lua
scripts are executed by their Python equivalents, looked up by SHA-1 like EVALSHA).
Integration tests run the same code against real Kafka and Valkey.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import numpy as np

from models.artifacts import SupportSet
from models.encoder import Encoder
from models.features import FEATURE_NAMES
from models.features.transform import FeatureTransform
from models.matching import MatchingNetwork
from models.scorer import Scorer
from streams import alert_dedupe, terminal_store


class FakeRedis:
    """Strings and hashes in dicts; ``down=True`` makes every call fail like a lost server."""

    def __init__(self) -> None:
        self.strings: dict[str, bytes] = {}
        self.hashes: defaultdict[str, dict[bytes, bytes]] = defaultdict(dict)
        self.down = False
        self.executed = 0
        self.scripts_loaded = True

    def pipeline(self, transaction: bool = False) -> FakePipeline:
        return FakePipeline(self)

    def command_batch(self) -> FakeBatch:
        return FakeBatch(self)

    async def script_load(self, script: str) -> str:
        self.scripts_loaded = True
        if script == alert_dedupe._CLAIM:
            return alert_dedupe.CLAIM_SHA
        return terminal_store._SHAS[script]

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        return dict(self.hashes.get(key, {}))

    async def aclose(self) -> None:
        return None

    # --- command semantics --------------------------------------------------------------
    def _hincrby(self, key: str, field: str, inc: int) -> int:
        h = self.hashes[key]
        value = int(h.get(field.encode(), b"0")) + int(inc)
        h[field.encode()] = str(value).encode()
        return value

    def _evalsha(self, sha: str, numkeys: int, *args: Any) -> Any:
        from redis.exceptions import NoScriptError

        if not self.scripts_loaded:
            raise NoScriptError("NOSCRIPT")
        keys, argv = list(args[:numkeys]), list(args[numkeys:])
        if sha == terminal_store._SHAS[terminal_store._INCREMENTS]:
            for i, key in enumerate(keys):
                self._hincrby(key, argv[1 + 2 * i], argv[2 + 2 * i])
            return len(keys)
        if sha == terminal_store._SHAS[terminal_store._APPLY_LABEL]:
            label_key, term_key = keys
            previous = int(self.strings.get(label_key, b"0"))
            self.strings[label_key] = str(argv[0]).encode()
            delta = int(argv[0]) - previous
            if delta:
                self._hincrby(term_key, argv[2], delta)
            return delta
        if sha == alert_dedupe.CLAIM_SHA:
            stamp, _ttl = argv
            return [self._set(key, stamp, nx=True, get=True) for key in keys]
        if sha == terminal_store._SHAS[terminal_store._DAY_COUNTS]:
            out: list[int] = []
            for i, key in enumerate(keys):
                h = self.hashes.get(key, {})
                for day in range(int(argv[2 * i]), int(argv[2 * i + 1]) + 1):
                    out += [int(h.get(f"{k}{day}".encode(), b"0")) for k in "tf"]
            return out
        raise AssertionError(f"unknown script {sha}")

    def _set(self, key: str, value: Any, nx: bool, get: bool) -> Any:
        old = self.strings.get(key)
        if not (nx and old is not None):
            self.strings[key] = str(value).encode()
        return old if get else True

    def _hset(self, key: str, mapping: dict[str, bytes]) -> int:
        h = self.hashes[key]
        for field, value in mapping.items():
            h[field.encode()] = value
        return len(mapping)

    def _hmget(self, key: str, fields: list[str]) -> list[bytes | None]:
        h = self.hashes.get(key, {})
        return [h.get(f.encode()) for f in fields]


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def queue(*args: Any, **kwargs: Any) -> FakePipeline:
            self.calls.append((name, args, kwargs))
            return self

        return queue

    async def execute(self) -> list[Any]:
        r = self.redis
        if r.down:
            raise ConnectionError("Redis is down")
        out: list[Any] = []
        for name, args, kw in self.calls:
            if name == "hgetall":
                out.append(dict(r.hashes.get(args[0], {})))
            elif name == "evalsha":
                out.append(r._evalsha(*args))
            elif name == "set":
                out.append(r._set(args[0], args[1], kw.get("nx", False), kw.get("get", False)))
            elif name == "hset":
                out.append(r._hset(args[0], kw["mapping"]))
            elif name == "hmget":
                out.append(r._hmget(args[0], args[1]))
            elif name in ("expire", "expireat", "hdel"):
                out.append(1)
            else:
                raise AssertionError(f"unexpected pipelined command {name}")
        r.executed += 1
        return out


class FakeBatch:
    """``streams.resp.CommandBatch`` on the fake: raw commands, raw replies, errors in place."""

    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.commands: list[tuple[Any, ...]] = []

    def add(self, *args: Any) -> int:
        self.commands.append(args)
        return len(self.commands) - 1

    def __len__(self) -> int:
        return len(self.commands)

    async def execute(self) -> list[Any]:
        from redis.exceptions import ResponseError

        r = self.redis
        if r.down:
            raise ConnectionError("Redis is down")
        out: list[Any] = []
        for name, *args in self.commands:
            key = args[0] if args else None
            try:
                if name == "HGETALL":
                    flat: list[bytes] = []
                    for field, value in r.hashes.get(key, {}).items():
                        flat += [field, value]
                    out.append(flat)
                elif name == "EVALSHA":
                    out.append(r._evalsha(*args))
                elif name == "SET":
                    options = {str(a).upper() for a in args[2:]}
                    out.append(r._set(key, args[1], "NX" in options, "GET" in options))
                elif name == "HSET":
                    mapping = {
                        f.decode() if isinstance(f, bytes) else f: v
                        for f, v in zip(args[1::2], args[2::2], strict=True)
                    }
                    out.append(r._hset(key, mapping))
                elif name in ("EXPIRE", "EXPIREAT", "HDEL"):
                    out.append(1)
                else:
                    raise AssertionError(f"unexpected command {name}")
            except ResponseError as err:
                out.append(err)
        r.executed += 1
        return out


class FakeEmitter:
    """Records what would be sent; delivery futures resolve at once (or fail on demand)."""

    def __init__(self) -> None:
        self.sent: defaultdict[str, list[tuple[int | None, bytes | None, bytes]]] = defaultdict(
            list
        )
        self.fail_topics: set[str] = set()  # deliveries to these topics fail

    async def send_many(self, topic: str, messages: Any, timestamp_ms: int | None = None) -> Any:
        messages = list(messages)
        self.sent[topic].extend(messages)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if topic in self.fail_topics:
            future.set_exception(RuntimeError("delivery failed"))
        else:
            future.set_result(None)
        return [future]


def small_scorer(version: str = "v1", seed: int = 0) -> Scorer:
    """A real :class:`Scorer` over an untrained tiny matching network (fast, deterministic)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = len(FEATURE_NAMES)
    x = np.abs(rng.normal(size=(20, n))).astype(np.float32) * 10
    y = np.array([1, 0] * 10)
    transform = FeatureTransform.fit(x, names=FEATURE_NAMES, log_features=())
    net = MatchingNetwork(Encoder(n, hidden=(8,), emb_dim=4))
    support = SupportSet.build(x, y, [f"case{i}" for i in range(20)])
    return Scorer(net, transform, support, version=version, top_k=2)
