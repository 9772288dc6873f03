"""Model versions in Redis, and their signed announcements on ``model-updates``.

Keys under the worker's prefix (``"{app_id}:"``):

* ``model:weights:{version}``: the safetensors blob (:func:`models.artifacts.weights_to_bytes`);
* ``model:updates``: hash ``version`` → the signed :class:`~streams.records.ModelUpdate`
  that first announced it;
* ``model:versions``: sorted set of versions by creation time (``riskstream model list``);
* ``model:notes``: hash ``version`` → JSON of how it was made (strategy, trigger, cases);
* ``model:current``: the signed record that made the current version current (a
  publication or a rollback), so a worker that starts late verifies exactly what the
  others received;
* ``model:live``: hash ``worker id`` → JSON of the version each worker scores with;
* ``model:seq``: counter behind adaptation version names (``adapt-0001``...).

Publication order is weights, record, pointer, then the Kafka announcement: a worker that
starts between two steps either reads the new pointer or receives the announcement.

Examples
--------
>>> from streams.records import verify_model_update
>>> reg = ModelRegistry(None, prefix="rs:", signing_key="k")
>>> reg.weights_key("adapt-0003")
'rs:model:weights:adapt-0003'
>>> update = reg.sign(ModelUpdate(version="v2", parent="v1", created_at=1.0, sha256="0" * 64,
...                               signature="", metrics={}, location=reg.weights_key("v2")))
>>> verify_model_update(update, "k")
True
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from models.artifacts import Artifact, sha256_hex
from streams.records import (
    ModelUpdate,
    encode,
    parse_model_update,
    sign_model_update,
)

log = logging.getLogger(__name__)

Send = Callable[[str, bytes, bytes], Awaitable[None]]
"""Publishes one record: ``send(topic, key, value)``, returning once Kafka has it."""

# KEYS: current, weights, updates, versions; ARGV: record, blob, version, created_at
_BOOTSTRAP = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


class RegistryError(Exception):
    """A registry operation that cannot be done (unknown version, missing weights)."""


@dataclass(frozen=True)
class VersionInfo:
    """One row of ``riskstream model list``."""

    version: str
    parent: str | None
    created_at: float
    sha256: str
    metrics: dict[str, float]
    notes: dict[str, Any]
    current: bool
    has_weights: bool
    workers: tuple[str, ...]


class ModelRegistry:
    """Versioned weights in Redis, signing, publication and rollback.

    Parameters
    ----------
    redis
        asyncio Redis client (bytes responses).
    prefix
        Key namespace (``"{app_id}:"``).
    signing_key
        HMAC-SHA256 key (``settings.model_signing_key.get_secret_value()``).
    topic
        The model-updates topic.
    keep_versions
        Versions kept in Redis; older ones (never the current one) are deleted.
    """

    def __init__(
        self,
        redis: Any,
        *,
        prefix: str,
        signing_key: str,
        topic: str = "model-updates",
        keep_versions: int = 50,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.topic = topic
        self.keep_versions = keep_versions
        self._key = signing_key
        self.current_key = f"{prefix}model:current"
        self.updates_key = f"{prefix}model:updates"
        self.versions_key = f"{prefix}model:versions"
        self.notes_key = f"{prefix}model:notes"
        self.live_key = f"{prefix}model:live"
        self.seq_key = f"{prefix}model:seq"
        self._bootstrap = redis.register_script(_BOOTSTRAP) if redis is not None else None

    def weights_key(self, version: str) -> str:
        """Where the weights of ``version`` live."""
        return f"{self.prefix}model:weights:{version}"

    def sign(self, update: ModelUpdate) -> ModelUpdate:
        """``update`` with its HMAC-SHA256 signature."""
        return sign_model_update(update, self._key)

    # --- reads ---------------------------------------------------------------------------
    async def current(self) -> ModelUpdate | None:
        """The record that made the current version current (``None``: empty registry)."""
        raw = await self.redis.get(self.current_key)
        return parse_model_update(raw) if raw is not None else None

    async def get_update(self, version: str) -> ModelUpdate | None:
        """The record that first announced ``version``."""
        raw = await self.redis.hget(self.updates_key, version)
        return parse_model_update(raw) if raw is not None else None

    async def notes(self, version: str) -> dict[str, Any]:
        """How ``version`` was made (``{}`` when unknown)."""
        raw = await self.redis.hget(self.notes_key, version)
        return dict(orjson.loads(raw)) if raw else {}

    async def fetch_weights(self, location: str) -> bytes | None:
        """The blob at ``location`` (``None`` when absent)."""
        blob = await self.redis.get(location)
        return bytes(blob) if blob is not None else None

    async def next_version(self) -> str:
        """A new unique version name for an adaptation result."""
        return f"adapt-{int(await self.redis.incr(self.seq_key)):04d}"

    async def list_versions(self) -> list[VersionInfo]:
        """Every stored version, oldest first, with the workers running each."""
        versions = await self.redis.zrange(self.versions_key, 0, -1, withscores=True)
        current = await self.current()
        live = await self.live_workers()
        rows: list[VersionInfo] = []
        for raw_version, created in versions:
            version = raw_version.decode()
            update = await self.get_update(version)
            notes_raw = await self.redis.hget(self.notes_key, version)
            rows.append(
                VersionInfo(
                    version=version,
                    parent=update.parent if update else None,
                    created_at=float(created),
                    sha256=update.sha256 if update else "",
                    metrics=dict(update.metrics) if update else {},
                    notes=orjson.loads(notes_raw) if notes_raw else {},
                    current=current is not None and current.version == version,
                    has_weights=bool(await self.redis.exists(self.weights_key(version))),
                    workers=tuple(w for w, info in live.items() if info.get("version") == version),
                )
            )
        return rows

    # --- writes --------------------------------------------------------------------------
    async def bootstrap(self, artifact: Artifact) -> ModelUpdate:
        """Register ``artifact`` as the first version unless there is one; return current.

        Atomic: when several workers start at once, one artifact wins and the others
        load it (their own startup model becomes irrelevant).
        """
        if self._bootstrap is None:
            raise RuntimeError("ModelRegistry was built without a Redis client")
        blob = artifact.to_bytes()
        update = self._new_record(artifact.version, artifact.meta.get("parent"), blob, {})
        keys = [self.current_key, self.weights_key(update.version), self.updates_key]
        keys.append(self.versions_key)
        args = [encode(update), blob, update.version, update.created_at]
        return parse_model_update(await self._bootstrap(keys=keys, args=args))

    async def publish(
        self,
        artifact: Artifact,
        send: Send,
        *,
        metrics: dict[str, float] | None = None,
        notes: dict[str, Any] | None = None,
    ) -> ModelUpdate:
        """Store ``artifact`` (its ``meta['version']`` names it), make it current, announce it."""
        blob = artifact.to_bytes()
        update = self._new_record(artifact.version, artifact.meta.get("parent"), blob, metrics)
        return await self.publish_blob(update, blob, send, notes=notes)

    async def publish_blob(
        self,
        update: ModelUpdate,
        blob: bytes,
        send: Send,
        *,
        notes: dict[str, Any] | None = None,
        make_current: bool = True,
    ) -> ModelUpdate:
        """Store ``blob`` at ``update.location``, record ``update`` and announce it as is.

        No check is made here (workers verify every update); tests use it to publish
        updates that must be refused.
        """
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(update.location, blob)
        pipe.hset(self.updates_key, update.version, encode(update))
        pipe.zadd(self.versions_key, {update.version: update.created_at}, nx=True)
        pipe.hset(self.notes_key, update.version, orjson.dumps(notes or {}))
        if make_current:
            pipe.set(self.current_key, encode(update))
        await pipe.execute()
        await self.announce(update, send)
        await self.prune()
        return update

    async def announce(self, update: ModelUpdate, send: Send) -> None:
        """Put ``update`` on the model-updates topic (key: the version)."""
        await send(self.topic, update.version.encode(), encode(update))

    async def rollback(self, version: str, send: Send) -> ModelUpdate:
        """Make ``version`` current again and announce it to every worker.

        Raises
        ------
        RegistryError
            Unknown version, or its weights were pruned.
        """
        original = await self.get_update(version)
        if original is None:
            raise RegistryError(f"no model version {version!r} in the registry")
        if not await self.redis.exists(original.location):
            raise RegistryError(f"the weights of {version!r} are no longer stored")
        # A fresh announcement: workers refuse records older than the one they run.
        values = original.asdict() | {"created_at": time.time(), "signature": ""}
        values["metrics"] = dict(original.metrics)
        values.pop("schema_version", None)
        update = self.sign(ModelUpdate(**values))
        await self.redis.set(self.current_key, encode(update))
        await self.announce(update, send)
        return update

    async def mark_live(self, worker_id: str, version: str, **info: float) -> None:
        """Record that ``worker_id`` now scores with ``version`` (and when)."""
        payload = {"version": version, "live_at": time.time(), **info}
        await self.redis.hset(self.live_key, worker_id, orjson.dumps(payload))

    async def live_workers(self) -> dict[str, dict[str, Any]]:
        """``worker id`` → ``{"version", "live_at", ...}`` as last reported."""
        raw = await self.redis.hgetall(self.live_key)
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def prune(self) -> list[str]:
        """Delete versions beyond the newest ``keep_versions`` (never the current one)."""
        total = int(await self.redis.zcard(self.versions_key))
        excess = total - self.keep_versions
        if excess <= 0:
            return []
        oldest = [v.decode() for v in await self.redis.zrange(self.versions_key, 0, excess - 1)]
        current = await self.current()
        doomed = [v for v in oldest if current is None or v != current.version]
        if doomed:
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(*(self.weights_key(v) for v in doomed))
            pipe.hdel(self.updates_key, *doomed)
            pipe.hdel(self.notes_key, *doomed)
            pipe.zrem(self.versions_key, *doomed)
            await pipe.execute()
            log.info("pruned model versions %s", ", ".join(doomed))
        return doomed

    def _new_record(
        self, version: str, parent: Any, blob: bytes, metrics: dict[str, float] | None
    ) -> ModelUpdate:
        return self.sign(
            ModelUpdate(
                version=version,
                parent=None if parent is None else str(parent),
                created_at=time.time(),
                sha256=sha256_hex(blob),
                signature="",
                metrics={k: float(v) for k, v in (metrics or {}).items()},
                location=self.weights_key(version),
            )
        )
