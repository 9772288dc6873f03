"""The adaptation agent's alert-share check, on a real Valkey.

A run reads the recent scored traffic the score agent keeps in Redis, scores it with the
candidate and with the current model, and does not publish a candidate whose alert share
grows beyond ``adapt_max_alert_growth`` times the current one. Here the whole run goes
through :meth:`AdaptationService.run_once` on the real server: case store, traffic
sample, registry, rejection metric. The world is a toy one (a legit cloud, old frauds off
to one side, a new pattern off to another), so the run takes a second.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
import torch
from prometheus_client import CollectorRegistry

from models.artifacts import Artifact, SupportSet
from models.encoder import Encoder
from models.features.definitions import FeatureSchema
from models.features.transform import FeatureTransform
from models.matching import MatchingNetwork
from streams.adaptation import AdaptationService, registry_of
from streams.adaptation_support import Validation
from streams.case_store import Case, CaseStore
from streams.metrics import RiskstreamMetrics
from streams.records import parse_model_update
from streams.scored_store import ScoredStore, encode_entry
from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
SCHEMA = FeatureSchema()
N = SCHEMA.n_features


def base_artifact() -> Artifact:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    legit = rng.normal(0.0, 1.0, size=(300, N))
    old = rng.normal(0.0, 1.0, size=(40, N)) + np.r_[4.0, np.zeros(N - 1)]
    transform = FeatureTransform.fit(np.vstack([legit, old]), names=SCHEMA.names, log_features=())
    support = SupportSet.build(
        np.vstack([old, legit]).astype(np.float32), [1] * 40 + [0] * 300,
        [f"b{i}" for i in range(340)],
    )  # fmt: skip
    net = MatchingNetwork(Encoder(N, hidden=(32,), emb_dim=16), temperature=0.1)
    return Artifact.build(net, transform, support, {"version": "base", "feature_schema": SCHEMA})


def frauds(rows: np.ndarray, tag: str) -> list[Case]:
    return [
        Case(
            f"{tag}{i}",
            1,
            tuple(map(float, r)),
            time.time(),
            0.0,
            0.0,
            "analyst",
            "base",
            0.5,
            seq=0,
        )  # fmt: skip
        for i, r in enumerate(rows)
    ]


class Captured:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def __call__(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, key, value))


class World:
    def __init__(self, client: Any, settings: Settings) -> None:
        self.client, self.settings = client, settings
        self.metrics = RiskstreamMetrics(CollectorRegistry())
        self.registry = registry_of(settings, client)
        self.cases = CaseStore(client, prefix=f"{settings.app_id}:", cap=100)
        self.sent = Captured()
        self.service = AdaptationService(
            settings, client, self.registry, self.cases, self.sent, metrics=self.metrics
        )

    async def scored_traffic(self, vectors: np.ndarray) -> None:
        """What the score agent leaves in Redis: one entry per scored transaction."""
        store = ScoredStore(
            self.client, prefix=f"{self.settings.app_id}:", ttl_s=self.settings.feature_ttl_s
        )
        now = time.time()
        entries = {
            f"t{i}": encode_entry(
                v, terminal_id="T1", ts=now, card_id=f"c{i}", model_version="base", score=0.0
            )  # fmt: skip
            for i, v in enumerate(vectors)
        }
        await self.client.hset(store.key_at(now), mapping=entries)

    def rejections(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "riskstream_adaptation_rejections_total", {"reason": reason}
        )
        return float(value or 0.0)


@pytest.fixture
async def world(redis_url: str) -> AsyncIterator[World]:
    client = aioredis.Redis.from_url(redis_url)
    app_id = f"guard-{uuid.uuid4().hex[:8]}"
    settings = Settings(app_id=app_id, redis_url=redis_url)
    w = World(client, settings)
    await w.registry.bootstrap(base_artifact())
    # ordinary traffic: the legit cloud
    await w.scored_traffic(np.random.default_rng(1).normal(0.0, 1.0, size=(2_000, N)))
    try:
        yield w
    finally:
        keys = [k async for k in client.scan_iter(match=f"{app_id}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_a_candidate_that_alerts_on_ordinary_traffic_is_not_published(world: World) -> None:
    # ten "frauds" labelled at the centre of the legit cloud
    await world.cases.put_many(frauds(np.random.default_rng(7).normal(0, 0.2, (10, N)), "odd"))
    result = await world.service.run_once("manual")
    print(result.summary())
    assert not result.published and result.reason == "alert_rate", result.summary()
    growth = world.settings.adapt_max_alert_growth
    assert result.alert_share_candidate > growth * result.alert_share_current
    assert "alerts on" in result.summary()
    assert (await world.registry.current()).version == "base"  # type: ignore[union-attr]
    assert world.sent.sent == []
    assert world.rejections("alert_rate") == 1 and world.rejections("ap_drop") == 0


async def test_a_candidate_for_a_distinct_pattern_is_published_with_its_shares(
    world: World,
) -> None:
    rng = np.random.default_rng(3)
    centre = np.r_[0.0, -4.0, 4.0, np.zeros(N - 3)]
    await world.cases.put_many(frauds(rng.normal(0, 0.3, (12, N)) + centre, "new"))
    result = await world.service.run_once("manual")
    print(result.summary())
    assert result.published, result.summary()
    assert result.alert_share_candidate <= world.settings.adapt_max_alert_growth * max(
        result.alert_share_current, 0.01
    )
    update = parse_model_update(world.sent.sent[-1][2])
    assert update.metrics["traffic_rows"] == 2_000
    assert update.metrics["traffic_alert_share"] == pytest.approx(result.alert_share_candidate)
    assert update.metrics["parent_traffic_alert_share"] == pytest.approx(result.alert_share_current)
    assert world.rejections("alert_rate") == 0


async def test_a_refused_pattern_candidate_falls_back_to_the_support_refresh(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default ``pattern`` strategy: when its candidate loses held-out AP (forced here,
    as a line through several labelled patterns can), the plain refresh is validated and
    published instead, and the update's notes say what was refused."""
    import streams.adaptation as agent

    assert world.settings.adapt_strategy == "pattern"
    real_validate = agent.validate
    calls: list[str] = []

    def validate(*args: Any, **kwargs: Any) -> Validation:
        calls.append(kwargs["strategy"])
        check = real_validate(*args, **kwargs)
        if kwargs["strategy"] == "pattern":
            return replace(check, ap_candidate=check.ap_current - 0.1)
        return check

    monkeypatch.setattr(agent, "validate", validate)
    rng = np.random.default_rng(3)
    centre = np.r_[0.0, -4.0, 4.0, np.zeros(N - 3)]
    cases = frauds(rng.normal(0, 0.3, (12, N)) + centre, "new")
    await world.cases.put_many([replace(c, card_id=f"card{i}") for i, c in enumerate(cases)])
    result = await world.service.run_once("manual")
    assert calls == ["pattern", "refresh"]
    assert result.published and result.strategy == "refresh", result.summary()
    assert result.info["refused"] == {"strategy": "pattern", "reason": "ap_drop"}
    current = await world.registry.current()
    assert current is not None and current.version == result.version
    notes = await world.registry.notes(current.version)
    assert notes["refused"] == {"strategy": "pattern", "reason": "ap_drop"}
    assert notes["strategy"] == "refresh"
    assert world.rejections("ap_drop") == 0  # the run published: nothing was rejected


async def test_a_pattern_candidate_is_published_with_its_head(world: World) -> None:
    rng = np.random.default_rng(3)
    centre = np.r_[0.0, -4.0, 4.0, np.zeros(N - 3)]
    cases = frauds(rng.normal(0, 0.3, (12, N)) + centre, "new")
    await world.cases.put_many([replace(c, card_id=f"card{i % 4}") for i, c in enumerate(cases)])
    result = await world.service.run_once("manual")
    assert result.published and result.strategy == "pattern", result.summary()
    assert result.info["pattern_head"]["cards"] == 4
    # the log line says where the run's time went
    assert list(result.steps_s) == ["cases", "traffic", "candidate", "publish"]
    assert sum(result.steps_s.values()) <= result.duration_s
    assert " s (cases " in result.summary()
    artifact = await world.service._artifact(await world.registry.current())  # type: ignore[arg-type]
    assert artifact.pattern_head is not None
