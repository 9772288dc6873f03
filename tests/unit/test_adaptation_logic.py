"""The adaptation agent's decisions on tiny synthetic data: adapt, validate, trigger.

A toy world where a new fraud pattern sits far from everything the base support knows:
a candidate that has seen a few cases of it must beat the current model on held-out
cases of it, and a broken candidate must be refused.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import numpy as np
import torch

from models.artifacts import Artifact, SupportSet
from models.encoder import Encoder
from models.features.definitions import FeatureSchema
from models.features.transform import FeatureTransform
from models.matching import MatchingNetwork
from streams.adaptation import AdaptationService
from streams.adaptation_support import (
    ALERT_CHECK_ROWS,
    SupportPolicy,
    adapt,
    alert_shares,
    validate,
)
from streams.case_store import Case
from streams.settings import Settings

N = FeatureSchema().n_features


def _world(seed: int = 0) -> tuple[Artifact, list[Case], np.ndarray]:
    """A base artifact (identity-like encoder), and cases of a new pattern."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    legit = rng.normal(0.0, 1.0, size=(300, N))
    old = rng.normal(0.0, 1.0, size=(40, N)) + np.r_[4.0, np.zeros(N - 1)]
    new_center = np.r_[0.0, -4.0, 4.0, np.zeros(N - 3)]
    new = rng.normal(0.0, 0.3, size=(30, N)) + new_center
    x = np.vstack([old, legit]).astype(np.float32)
    y = [1] * 40 + [0] * 300
    transform = FeatureTransform.fit(np.vstack([legit, old]), log_features=())
    support = SupportSet.build(x, y, [f"b{i}" for i in range(len(y))])
    net = MatchingNetwork(Encoder(N, hidden=(32,), emb_dim=16), temperature=0.1)
    base = Artifact.build(net, transform, support, {"version": "base"})
    cases = [
        Case(f"new{i}", 1, tuple(map(float, row)), 0.0, 0.0, 0.0, "analyst", "base", 0.1, seq=i + 1)
        for i, row in enumerate(new[:12])
    ]
    return base, cases, new[12:].astype(np.float32)


def test_refresh_candidate_scores_the_new_pattern_higher() -> None:
    base, cases, held_out = _world()
    candidate = adapt(base, cases, strategy="refresh")
    new_scores = candidate.scorer(base.schema).score_only(held_out)
    from streams.adaptation_support import _scorer

    old_scores = _scorer(base.model, base.transform, base.support, base.schema).score_only(held_out)
    assert new_scores.mean() > old_scores.mean() + 0.2
    assert candidate.model is base.model and candidate.info["support_fraud"] == 24


def test_gradient_strategies_change_the_weights_but_not_the_base() -> None:
    base, cases, _ = _world()
    start = {k: v.clone() for k, v in base.model.state_dict().items()}
    small = SupportPolicy(step_old_fraud=8, step_legit=32)  # the inner steps' support
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a thread pool only adds contention
    try:
        candidates = {
            strategy: adapt(base, cases, strategy=strategy, steps=3, policy=small)
            for strategy in ("maml", "reptile")
        }
    finally:
        torch.set_num_threads(threads)
    for candidate in candidates.values():
        moved = [
            not torch.equal(candidate.model.state_dict()[k], v)
            for k, v in start.items()
            if k != "log_tau"
        ]
        assert any(moved) and candidate.info["steps"] == 3
        assert candidate.info["step_support"] == 12 + 8 + 32
    assert all(torch.equal(base.model.state_dict()[k], v) for k, v in start.items())


def test_validation_accepts_a_useful_candidate() -> None:
    base, cases, _ = _world()
    check = validate(base, base, cases, strategy="refresh")
    assert check.usable and check.n_fraud == 12 and check.n_legit == 200
    assert check.ap_candidate > check.ap_current and check.accepts()


def test_validation_refuses_a_candidate_worse_than_the_current_model() -> None:
    base, cases, _ = _world()
    # The current model already knows the pattern (its support holds the cases); the
    # candidate comes from a broken base whose encoder maps everything to one point.
    current = Artifact.build(
        base.model,
        base.transform,
        SupportSet.build(
            np.vstack([base.support.x, np.asarray([c.x for c in cases], dtype=np.float32)]),
            np.r_[base.support.y, np.ones(len(cases))],
            list(base.support.case_ids) + [c.tx_id for c in cases],
        ),
        {"version": "current"},
    )
    collapsed = copy.deepcopy(base.model)
    with torch.no_grad():
        for p in collapsed.encoder.parameters():
            p.zero_()
    broken = Artifact.build(collapsed, base.transform, base.support, {"version": "broken"})
    check = validate(broken, current, cases, strategy="refresh")
    assert check.usable and check.ap_candidate < check.ap_current and not check.accepts()


class _FakeRedis:
    """get/set/delete and a pipeline of gets: what the trigger logic uses."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = {k: str(v).encode() for k, v in values.items()}

    async def get(self, key: str) -> bytes | None:
        return self.values.get(key)

    async def set(self, key: str, value: Any, nx: bool = False, **_: Any) -> bool:
        if nx and key in self.values:
            return False
        self.values[key] = str(value).encode()
        return True

    def pipeline(self, transaction: bool = False) -> Any:
        redis = self

        class Pipe:
            keys: list[str] = []

            def get(self, key: str) -> None:
                self.keys = [*self.keys, key]

            async def execute(self) -> list[Any]:
                return [redis.values.get(k) for k in self.keys]

        return Pipe()


def _service(values: dict[str, Any], **settings: Any) -> AdaptationService:
    from streams.case_store import CaseStore

    s = Settings(app_id="t", **settings)
    redis = _FakeRedis(values)
    cases = CaseStore(redis, prefix="t:", cap=10)

    async def send(topic: str, key: bytes, value: bytes) -> None:
        raise AssertionError("nothing is published here")

    return AdaptationService(s, redis, registry=None, cases=cases, send=send)  # type: ignore[arg-type]


def test_triggers() -> None:
    now = 1000.0
    due = lambda values, **kw: asyncio.run(_service(values, **kw).due(now))  # noqa: E731
    assert due({"t:cases:seq": 9}, adapt_min_new_cases=10) is None  # starts the timer
    assert due({"t:cases:seq": 10}, adapt_min_new_cases=10) == "new_cases"
    assert due({"t:cases:seq": 14, "t:adapt:seq": 10}, adapt_min_new_cases=10) is None
    timer = {"t:cases:seq": 14, "t:adapt:seq": 10, "t:adapt:last_run": now - 301}
    assert due(timer, adapt_interval_s=300) == "timer"
    idle = {"t:cases:seq": 10, "t:adapt:seq": 10, "t:adapt:last_run": now - 301}
    assert due(idle, adapt_interval_s=300) is None  # nothing new: no periodic run
    drift = {**idle, "t:adapt:drift": "prequential_error"}
    assert due(drift) is None  # nothing new to adapt to yet
    assert due({**drift, "t:cases:seq": 11}) == "drift"  # one new case is enough then


def _traffic(seed: int = 1, n: int = 2_000) -> np.ndarray:
    """Ordinary transactions of the toy world: the legit cloud."""
    return np.random.default_rng(seed).normal(0.0, 1.0, size=(n, N)).astype(np.float32)


def test_alert_share_check_passes_a_candidate_for_a_distinct_new_pattern() -> None:
    base, cases, held_out = _world()
    candidate = adapt(base, cases, strategy="refresh", policy=SupportPolicy.grouped())
    traffic = np.vstack([held_out, _traffic(n=1_500)])  # the new pattern runs in it too
    shares = alert_shares(candidate, base, traffic, Settings().alert_threshold)
    assert shares is not None and shares.n_rows == len(traffic)
    assert shares.candidate > shares.current  # it does catch the pattern's transactions
    assert shares.accepts(growth=Settings().adapt_max_alert_growth)


def test_alert_share_check_refuses_a_candidate_that_alerts_on_ordinary_traffic() -> None:
    base, _, _ = _world()
    # "frauds" labelled at the centre of the legit cloud: the candidate flags their whole
    # neighbourhood of ordinary transactions
    rng = np.random.default_rng(7)
    lookalikes = rng.normal(0.0, 0.2, size=(10, N))
    cases = [
        Case(f"odd{i}", 1, tuple(map(float, r)), 0.0, 0.0, 0.0, "analyst", "base", 0.1, seq=i + 1)
        for i, r in enumerate(lookalikes)
    ]
    candidate = adapt(base, cases, strategy="refresh", policy=SupportPolicy.grouped())
    shares = alert_shares(candidate, base, _traffic(), Settings().alert_threshold)
    assert shares is not None
    assert shares.candidate > shares.cap(Settings().adapt_max_alert_growth)
    assert not shares.accepts(growth=Settings().adapt_max_alert_growth)


def test_alert_share_check_needs_enough_traffic_to_judge() -> None:
    base, cases, _ = _world()
    candidate = adapt(base, cases, strategy="refresh")
    assert alert_shares(candidate, base, _traffic(n=199), 0.8) is None
    shares = alert_shares(candidate, base, _traffic(n=20_000), 0.8)
    assert shares is not None and shares.n_rows == ALERT_CHECK_ROWS
