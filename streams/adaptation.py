"""The adaptation agent: labelled cases in, a validated, signed model version out.

Every worker runs an :class:`AdaptationService`, and one of them is active per consumer
group: the holder of a Redis lock with expiry (``{prefix}adapt:lock``; it renews it while
alive, another worker takes over within ``lock_ttl_s`` when it dies). The leader polls a
few Redis counters and runs when one trigger fires:

* ``new_cases``: ``adapt_min_new_cases`` cases written since the last run (the case
  store's write sequence moved that far);
* ``timer``: ``adapt_interval_s`` since the last run, with at least one new case;
* ``drift``: a drift detector on any worker raised an alarm (:meth:`request`); the
  agent then adapts as soon as one new case is there (adapting needs new labels: without
  them the candidate would be the current model again).

A run (:meth:`AdaptationService.run_once`) adapts the *base* (meta-learned) model to the
stored cases with the ``adapt_strategy`` setting and ``adapt_inner_steps`` (the stored
frauds form a new fraud group on top of the base support's groups, see
:meth:`SupportPolicy.grouped`; the published artifact carries ``support.group``), validates the
candidate against the current model on held-out recent cases
(:func:`streams.adaptation_support.validate`), and publishes it only if average
precision does not drop (``ap_drop``) and it does not alert on more than
``adapt_max_alert_growth`` times the current model's share of a sample of recent scored
traffic (``alert_rate``, :class:`streams.adaptation_support.AlertShares`); a rejection is
logged and counted by reason. A refused ``pattern`` candidate is followed by the plain
support refresh (:data:`FALLBACK`): when analysts label several known patterns at once,
one line through all of them can lose held-out AP where the refresh alone does not. The
heavy part runs in a thread, so the worker keeps scoring meanwhile, and the log line says
where a run's time went (``steps_s``: cases, traffic, candidate, publish).

Examples
--------
>>> r = AdaptationResult(trigger="new_cases", published=False, version=None, parent="v1",
...                      reason="ap_drop", ap_candidate=0.4, ap_current=0.5)
>>> r.summary()
'adaptation (new_cases) rejected: ap_drop (held-out AP 0.400 vs 0.500)'
>>> replace(r, reason="alert_rate", ap_candidate=0.6, alert_share_candidate=0.4951,
...         alert_share_current=0.0083).summary()  # doctest: +NORMALIZE_WHITESPACE
'adaptation (new_cases) rejected: alert_rate (held-out AP 0.600 vs 0.500,
 alerts on 49.51% of recent traffic vs 0.83%)'
>>> replace(r, duration_s=0.5, steps_s={"traffic": 0.2, "candidate": 0.3}).summary()
...     # doctest: +NORMALIZE_WHITESPACE
'adaptation (new_cases) rejected: ap_drop (held-out AP 0.400 vs 0.500)
 in 0.50 s (traffic 0.20, candidate 0.30)'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from models.artifacts import Artifact
from streams.adaptation_support import (
    ALERT_CHECK_ROWS,
    AlertShares,
    Candidate,
    SupportPolicy,
    Validation,
    adapt,
    alert_shares,
    head_possible,
    validate,
    warm_up,
)
from streams.case_store import Case, CaseStore
from streams.hot_swap import LABEL_TIME_METRIC
from streams.metrics import METRICS, RiskstreamMetrics
from streams.model_registry import ModelRegistry, Send
from streams.model_verification import verify_update
from streams.records import ModelUpdate
from streams.redis_conn import REDIS_ERRORS
from streams.redis_lock import RedisLock
from streams.scored_store import ScoredStore
from streams.settings import Settings, safe_url
from streams.traffic_sample import recent_traffic

log = logging.getLogger(__name__)


#: A strategy whose refused candidate is followed by this one's (:meth:`AdaptationService._run`).
FALLBACK = {"pattern": "refresh"}


@dataclass(frozen=True)
class _Attempt:
    """One strategy's validation, candidate and alert shares; ``reason`` when refused."""

    check: Validation
    candidate: Candidate | None = None
    shares: AlertShares | None = None
    reason: str | None = None


@dataclass(frozen=True)
class AdaptationResult:
    """What one adaptation run did."""

    trigger: str
    published: bool
    version: str | None
    parent: str | None
    reason: str | None = None
    ap_candidate: float = math.nan
    ap_current: float = math.nan
    n_cases: dict[str, int] = field(default_factory=dict)
    new_cases: int = 0
    duration_s: float = 0.0
    label_time: float | None = None
    strategy: str = "refresh"
    info: dict[str, Any] = field(default_factory=dict)
    alert_share_candidate: float = math.nan
    alert_share_current: float = math.nan
    steps_s: dict[str, float] = field(default_factory=dict)  # wall time of each step

    def summary(self) -> str:
        """One log line."""
        what = f"published {self.version}" if self.published else f"rejected: {self.reason}"
        shares = ""
        if not math.isnan(self.alert_share_candidate):
            shares = (
                f", alerts on {self.alert_share_candidate:.2%} of recent traffic"
                f" vs {self.alert_share_current:.2%}"
            )
        steps = ""
        if self.steps_s:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in self.steps_s.items())
            steps = f" in {self.duration_s:.2f} s ({parts})"
        return (
            f"adaptation ({self.trigger}) {what} "
            f"(held-out AP {self.ap_candidate:.3f} vs {self.ap_current:.3f}{shares}){steps}"
        )


class AdaptationService:
    """Triggers, runs and publishes adaptations (active on the lock holder only)."""

    def __init__(
        self,
        settings: Settings,
        redis: Any,
        registry: ModelRegistry,
        cases: CaseStore,
        send: Send,
        *,
        metrics: RiskstreamMetrics = METRICS,
        policy: SupportPolicy | None = None,
        poll_s: float = 0.05,
        lock_ttl_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.registry = registry
        self.cases = cases
        self.send = send
        self.metrics = metrics
        self.policy = policy or SupportPolicy.grouped()
        self.poll_s = poll_s
        prefix = f"{settings.app_id}:"
        self.lock = RedisLock(redis, f"{prefix}adapt:lock", lock_ttl_s)
        self.seq_key = f"{prefix}adapt:seq"
        self.last_run_key = f"{prefix}adapt:last_run"
        self.drift_key = f"{prefix}adapt:drift"
        self.results: list[AdaptationResult] = []
        self._artifacts: dict[str, Artifact] = {}
        self._key = settings.model_signing_key.get_secret_value()

    # --- triggers --------------------------------------------------------------------
    async def request(self, reason: str = "drift") -> None:
        """Ask the leader (any worker may call this) to adapt at its next poll."""
        await self.redis.set(
            self.drift_key, reason, ex=max(60, int(self.settings.adapt_interval_s))
        )

    async def due(self, now: float | None = None) -> str | None:
        """The trigger that fires now, if any."""
        now = time.time() if now is None else now
        pipe = self.redis.pipeline(transaction=False)
        for key in (self.cases.seq_key, self.seq_key, self.last_run_key, self.drift_key):
            pipe.get(key)
        written, done, last_run, drift = await pipe.execute()
        if last_run is None:  # the period starts with the first agent, not at epoch 0
            await self.redis.set(self.last_run_key, now, nx=True)
            last_run = now
        new = int(written or 0) - int(done or 0)
        if new >= self.settings.adapt_min_new_cases:
            return "new_cases"
        if drift is not None and new > 0:  # drift: adapt on any new case, not after N
            return "drift"
        if new > 0 and now - float(last_run or 0) >= self.settings.adapt_interval_s:
            return "timer"
        return None

    # --- one run ---------------------------------------------------------------------
    async def run_once(self, trigger: str = "manual") -> AdaptationResult:
        """Adapt, validate and (if AP does not drop) publish; records the metrics."""
        started = time.perf_counter()
        seq = await self.cases.sequence()
        done = int(await self.redis.get(self.seq_key) or 0)
        await self.redis.delete(self.drift_key)
        try:
            result = await self._run(trigger, done)
        except Exception as exc:  # never lose the worker to an adaptation bug
            log.exception("adaptation failed")
            result = AdaptationResult(
                trigger, False, None, None, reason="error", info={"error": repr(exc)}
            )
        result = replace(result, duration_s=time.perf_counter() - started)
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.seq_key, seq)
        pipe.set(self.last_run_key, time.time())
        await pipe.execute()
        self.metrics.record_adaptation(
            trigger, result.duration_s, result.ap_candidate, result.ap_current, result.reason
        )
        (log.info if result.published else log.warning)("%s", result.summary())
        self.results.append(result)
        del self.results[:-100]
        return result

    async def _run(self, trigger: str, done_seq: int) -> AdaptationResult:
        steps: dict[str, float] = {}
        mark = time.perf_counter()

        def step(name: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            steps[name] = now - mark
            mark = now

        result = await self._adapt(trigger, done_seq, step)
        return replace(result, steps_s=steps)

    async def _adapt(
        self, trigger: str, done_seq: int, step: Callable[[str], None]
    ) -> AdaptationResult:
        current = await self.registry.current()
        if current is None:
            return AdaptationResult(trigger, False, None, None, "error", info={"error": "no model"})
        cases = await self.cases.recent(1, self.policy.max_fraud)
        cases += await self.cases.recent(0, self.policy.max_legit)
        fresh = [c for c in cases if c.seq > done_seq]
        result = AdaptationResult(
            trigger,
            False,
            None,
            current.version,
            "too_few_cases",
            n_cases={
                "fraud": sum(c.label for c in cases),
                "legit": sum(1 - c.label for c in cases),
            },
            new_cases=len(fresh),
            label_time=max((c.label_time for c in fresh), default=None),
            strategy=self.settings.adapt_strategy,
        )
        if not cases:
            return result
        current_art = await self._artifact(current)
        base_version = (await self.registry.notes(current.version)).get("base", current.version)
        base_art = current_art
        if base_version != current.version:
            base_update = await self.registry.get_update(base_version)
            base_art = await self._artifact(base_update) if base_update else current_art
        strategy, inner_steps = self.settings.adapt_strategy, self.settings.adapt_inner_steps
        step("cases")
        # Recent scored traffic: the pattern head's reference, and the alert-share check's
        # sample for every strategy (which needs far fewer rows).
        store = ScoredStore(
            self.redis, prefix=f"{self.settings.app_id}:", ttl_s=self.settings.feature_ttl_s
        )
        rows = self.settings.adapt_traffic_rows
        traffic = await recent_traffic(
            store,
            rows if strategy == "pattern" else min(rows, ALERT_CHECK_ROWS),
            base_art.schema.n_features,
            max_age_s=self.settings.adapt_traffic_days * 86_400,
        )
        step("traffic")
        attempt = await self._attempt(base_art, current_art, cases, strategy, inner_steps, traffic)
        refused: dict[str, Any] = {}
        if (
            attempt.reason in ("ap_drop", "alert_rate")
            and strategy in FALLBACK
            and head_possible(cases, len(traffic))  # without a head it *was* the refresh
        ):
            # the pattern head is refused (its line can mix known patterns the analysts
            # also label): the plain support refresh may still be an improvement
            refused = {"refused": {"strategy": strategy, "reason": attempt.reason}}
            attempt = await self._attempt(
                base_art, current_art, cases, FALLBACK[strategy], 0, traffic
            )
            result = replace(result, strategy=FALLBACK[strategy])
        step("candidate")
        check, candidate, shares = attempt.check, attempt.candidate, attempt.shares
        info = (candidate.info if candidate is not None else {}) | refused
        result = replace(result, ap_candidate=check.ap_candidate, ap_current=check.ap_current)
        if shares is not None:
            result = replace(
                result,
                alert_share_candidate=shares.candidate,
                alert_share_current=shares.current,
            )
        if attempt.reason is not None or candidate is None:
            return replace(result, reason=attempt.reason, info=info)
        version = await self.registry.next_version()
        meta = {
            "version": version,
            "parent": current.version,
            "feature_schema": base_art.schema,
            "training_config": {"adaptation": candidate.info, "base": base_art.version},
        }
        artifact = Artifact.build(
            candidate.model, candidate.transform, candidate.support, meta, candidate.pattern_head
        )
        metrics = {
            "validation_ap": check.ap_candidate,
            "parent_validation_ap": check.ap_current,
            "validation_fraud": float(check.n_fraud),
            "validation_legit": float(check.n_legit),
            "cases_fraud": float(result.n_cases["fraud"]),
            "cases_legit": float(result.n_cases["legit"]),
        }
        if shares is not None:
            metrics["traffic_alert_share"] = shares.candidate
            metrics["parent_traffic_alert_share"] = shares.current
            metrics["traffic_rows"] = float(shares.n_rows)
        if result.label_time is not None:
            metrics[LABEL_TIME_METRIC] = result.label_time
        notes = {"kind": "adaptation", "base": base_art.version, "trigger": trigger}
        await self.registry.publish(artifact, self.send, metrics=metrics, notes=notes | info)
        self._artifacts[version] = artifact
        step("publish")
        return replace(result, published=True, version=version, reason=None, info=info)

    async def _attempt(
        self,
        base_art: Artifact,
        current_art: Artifact,
        cases: list[Case],
        strategy: str,
        steps: int,
        traffic: np.ndarray,
    ) -> _Attempt:
        """Validate, adapt and check the alert share of one strategy (off the event loop)."""
        check = await asyncio.to_thread(
            validate,
            base_art,
            current_art,
            cases,
            strategy=strategy,
            steps=steps,
            policy=self.policy,
            traffic=traffic,
        )
        if not check.usable:
            return _Attempt(check, reason="too_few_cases")
        if not check.accepts():
            return _Attempt(check, reason="ap_drop")
        candidate = await asyncio.to_thread(
            adapt,
            base_art,
            cases,
            strategy=strategy,
            steps=steps,
            policy=self.policy,
            traffic=traffic,
        )
        shares = await asyncio.to_thread(
            alert_shares, candidate, current_art, traffic, self.settings.alert_threshold
        )
        if shares is not None and not shares.accepts(self.settings.adapt_max_alert_growth):
            return _Attempt(check, candidate, shares, "alert_rate")
        return _Attempt(check, candidate, shares)

    async def _artifact(self, update: ModelUpdate) -> Artifact:
        """The verified artifact of a registry version (cached: versions never change)."""
        cached = self._artifacts.get(update.version)
        if cached is not None:
            return cached
        blob = await self.registry.fetch_weights(update.location)
        artifact = await asyncio.to_thread(verify_update, update, blob, self._key)
        if len(self._artifacts) >= 8:
            self._artifacts.pop(next(iter(self._artifacts)))
        self._artifacts[update.version] = artifact
        return artifact

    # --- the loop --------------------------------------------------------------------
    async def run(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Poll the triggers while holding the lock, until ``stopping()``; never raises."""
        renew_every = self.lock.ttl_ms / 3000.0
        renewed = 0.0
        await asyncio.to_thread(warm_up, self.settings.adapt_strategy)
        try:
            while not stopping():
                try:
                    if time.monotonic() - renewed >= renew_every or not self.lock.held:
                        await self.lock.acquire()
                        renewed = time.monotonic()
                    trigger = await self.due() if self.lock.held else None
                    if trigger is not None:
                        await self.run_once(trigger)
                        await self.lock.acquire()  # a long run must not lose the lock unseen
                        renewed = time.monotonic()
                except asyncio.CancelledError:
                    raise
                except REDIS_ERRORS as exc:
                    log.warning("adaptation agent waits for Redis: %r", exc)
                    self.lock.held = False
                    await asyncio.sleep(1.0)
                await asyncio.sleep(self.poll_s if self.lock.held else min(1.0, renew_every))
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await self.lock.release()


async def run_once(
    settings: Settings, trigger: str = "manual", *, wait_lock_s: float = 15.0
) -> AdaptationResult:
    """One adaptation from outside the workers (the demo, an operator), then publish.

    Takes the agent's lock first, so no worker adapts at the same time; the workers then
    verify and swap the published version as usual.

    Raises
    ------
    RiskstreamError
        The lock stayed taken for ``wait_lock_s`` (a worker is adapting), or Kafka/Redis
        are unreachable.
    """
    from streams.errors import RiskstreamError
    from streams.producer import start_producer
    from streams.redis_conn import connect_redis

    redis = connect_redis(settings)
    producer = await start_producer(settings)

    async def send(topic: str, key: bytes, value: bytes) -> None:
        await producer.send_and_wait(topic, value, key=key)

    prefix = f"{settings.app_id}:"
    service = AdaptationService(
        settings,
        redis,
        registry_of(settings, redis),
        CaseStore(redis, prefix=prefix, cap=settings.case_cap_per_class),
        send,
    )
    try:
        deadline = time.monotonic() + wait_lock_s
        while not await service.lock.acquire():
            if time.monotonic() > deadline:
                raise RiskstreamError("another worker holds the adaptation lock; try again")
            await asyncio.sleep(0.1)
        try:
            return await service.run_once(trigger)
        finally:
            await service.lock.release()
    except REDIS_ERRORS as exc:
        raise RiskstreamError(
            f"Redis is not reachable at {safe_url(settings.redis_url)}: {exc}"
        ) from None
    finally:
        await producer.stop()
        await redis.aclose()


def registry_of(settings: Settings, redis: Any) -> ModelRegistry:
    """The model registry of ``settings`` (prefix, signing key, topic) on ``redis``.

    >>> registry_of(Settings(app_id="demo"), None).current_key
    'demo:model:current'
    """
    return ModelRegistry(
        redis,
        prefix=f"{settings.app_id}:",
        signing_key=settings.model_signing_key.get_secret_value(),
        topic=settings.topic_model_updates,
        keep_versions=settings.model_keep_versions,
    )
