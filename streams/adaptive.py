"""Few-shot adaptation inside a worker: the pieces of issue 5, wired onto the Faust app.

:func:`install` is called once by :func:`streams.app.create_app`. It adds to the app:

* the label handler (:class:`~streams.label_flow.LabelFlow`) the labels agent calls
  for each batch (``rs.label_handler``);
* a timer that retries labels waiting for their transaction (``pending-labels``);
* the model-updates consumer of :class:`~streams.hot_swap.HotSwap` (``model-updates``):
  every worker verifies and swaps every update, and loads the current version at start;
* the adaptation agent (``adaptation``), active on the holder of the Redis lock only;
* a timer feeding the score-distribution drift detector (``score-drift``); drift alarms
  ask the adaptation agent to run.

Examples
--------
>>> from streams.app import create_app
>>> from streams.settings import Settings
>>> class Stub:
...     version = "doc"
>>> app = create_app(Settings(app_id="doc-adaptive"), scorer=Stub())
>>> parts = app.rs.adaptive
>>> parts.label_flow.apply == app.rs.label_handler, parts.hot_swap.worker_id != ""
(True, True)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streams.adaptation import AdaptationService, registry_of
from streams.case_store import CaseStore
from streams.drift import DriftMonitor, PrequentialWindow
from streams.hot_swap import HotSwap
from streams.label_flow import LabelFlow
from streams.model_registry import ModelRegistry
from streams.redis_conn import REDIS_ERRORS

if TYPE_CHECKING:  # pragma: no cover
    from streams.app import Riskstream

log = logging.getLogger(__name__)


@dataclass
class Adaptive:
    """The adaptation pieces of one worker."""

    cases: CaseStore
    registry: ModelRegistry
    label_flow: LabelFlow
    drift: DriftMonitor
    window: PrequentialWindow
    hot_swap: HotSwap
    adaptation: AdaptationService


def install(rs: Riskstream) -> Adaptive:
    """Build the adaptation pieces on ``rs`` and register their tasks and timers."""
    settings, app = rs.settings, rs.app
    prefix = f"{settings.app_id}:"
    cases = CaseStore(rs.redis, prefix=prefix, cap=settings.case_cap_per_class)
    registry = registry_of(settings, rs.redis)

    async def send(topic: str, key: bytes, value: bytes) -> None:
        futures = await rs.emitter.send_many(topic, [(0, key, value)])
        await asyncio.gather(*futures)

    adaptation = AdaptationService(settings, rs.redis, registry, cases, send, metrics=rs.metrics)
    requests: set[asyncio.Future[Any]] = set()

    def on_alarm(detector: str) -> None:
        request = asyncio.ensure_future(_quietly(adaptation.request(detector)))
        requests.add(request)
        request.add_done_callback(requests.discard)

    drift = DriftMonitor(rs.metrics, on_alarm=on_alarm)
    window = PrequentialWindow(threshold=settings.alert_threshold)
    flow = LabelFlow(rs, cases, drift=drift, window=window)
    swap = HotSwap(settings, rs.runtime, registry, metrics=rs.metrics)
    parts = Adaptive(cases, registry, flow, drift, window, swap, adaptation)
    rs.label_handler = flow.apply
    rs.adaptive = parts

    def stopping() -> bool:
        return bool(app.should_stop)

    @app.task
    async def model_updates() -> None:
        await swap.run(stopping)

    @app.task
    async def adaptation_agent() -> None:
        await adaptation.run(stopping)

    sweep_s = min(1.0, max(0.05, settings.pending_label_ttl_s / 4))

    @app.timer(sweep_s, name="pending-labels")  # type: ignore[misc]
    async def pending_labels() -> None:
        try:
            await flow.sweep_pending()
        except REDIS_ERRORS as exc:  # the labels stay in Redis; next sweep retries
            log.debug("pending labels not swept: %r", exc)
        except Exception:
            log.exception("pending-label sweep failed")

    @app.timer(1.0, name="score-drift")  # type: ignore[misc]
    async def score_drift() -> None:
        drift.poll_scores()

    return parts


async def _quietly(call: Any) -> None:
    try:
        await call
    except REDIS_ERRORS as exc:
        log.warning("could not request an adaptation: %r", exc)
