"""Verifying and hot-swapping model updates, without services (registry faked in memory).

Every rejection reason on real safetensors blobs; the swap is staged and goes live at the
next batch; stale replays are refused; label→live is observed when the version goes live.
The same against real Kafka and Redis: ``tests/integration/test_model_registry.py``.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from models.artifacts import Artifact, SupportSet, sha256_hex
from models.encoder import Encoder
from models.features.definitions import FeatureSchema
from models.features.transform import FeatureTransform
from models.matching import MatchingNetwork
from models.scorer import Scorer
from streams.hot_swap import HotSwap, artifact_of_scorer
from streams.metrics import RiskstreamMetrics
from streams.model_verification import Reference, UpdateRejected, declared_size, verify_update
from streams.records import ModelUpdate, sign_model_update
from streams.runtime import ScorerRuntime
from streams.settings import Settings

KEY = "unit-key"


def _artifact(version: str, *, hidden: int = 8, seed: int = 0) -> Artifact:
    torch.manual_seed(seed)
    schema = FeatureSchema()
    x = np.random.default_rng(seed).normal(size=(30, schema.n_features)).astype(np.float32)
    net = MatchingNetwork(Encoder(schema.n_features, hidden=(hidden,), emb_dim=4))
    transform = FeatureTransform.fit(x, names=schema.names, log_features=())
    support = SupportSet.build(x[:12], [1] * 4 + [0] * 8, [f"s{i}" for i in range(12)])
    return Artifact.build(net, transform, support, {"version": version, "feature_schema": schema})


def _update(
    version: str, blob: bytes, key: str = KEY, created_at: float | None = None
) -> ModelUpdate:
    update = ModelUpdate(
        version=version,
        parent="base",
        created_at=time.time() if created_at is None else created_at,
        sha256=sha256_hex(blob),
        signature="",
        metrics={"label_time": time.time() - 0.25},
        location=f"w:{version}",
    )
    return sign_model_update(update, key)


def _nan_blob(version: str) -> bytes:
    art = _artifact(version)
    model = copy.deepcopy(art.model)
    with torch.no_grad():
        next(p for p in model.parameters() if p.dim() == 2)[0, 0] = float("nan")
    return Artifact.build(model, art.transform, art.support, art.meta).to_bytes()


def _signed_as_stored(blob: bytes) -> tuple[ModelUpdate, bytes]:
    return _update("v2", blob), blob


REFERENCE = Reference.of_scorer(Scorer.from_artifact(_artifact("base")))


def test_a_good_update_loads() -> None:
    blob = _artifact("v2", seed=3).to_bytes()
    artifact = verify_update(_update("v2", blob), blob, KEY, REFERENCE)
    assert artifact.version == "v2" and declared_size(blob) == len(blob)


@pytest.mark.parametrize(
    ("reason", "make"),
    [
        ("bad_signature", lambda b: (_update("v2", b, key="other"), b)),
        ("missing_weights", lambda b: (_update("v2", b), None)),
        ("truncated", lambda b: (_update("v2", b[:-40]), b[:-40])),
        ("truncated", lambda b: (_update("v2", b[:6]), b[:6])),
        ("bad_hash", lambda b: (_update("v2", b), _artifact("v2", seed=9).to_bytes())),
        ("non_finite", lambda b: _signed_as_stored(_nan_blob("v2"))),
        ("wrong_shape", lambda b: _signed_as_stored(_artifact("v2", hidden=5).to_bytes())),
        ("error", lambda b: (_update("v3", b), b)),  # the blob says v2, the record v3
    ],
)
def test_each_bad_update_is_refused_with_its_reason(reason: str, make: Any) -> None:
    update, blob = make(_artifact("v2", seed=3).to_bytes())
    with pytest.raises(UpdateRejected) as caught:
        verify_update(update, blob, KEY, REFERENCE)
    assert caught.value.reason == reason, caught.value.detail


class MemoryRegistry:
    """The two registry calls HotSwap makes."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.live: dict[str, dict[str, Any]] = {}

    async def fetch_weights(self, location: str) -> bytes | None:
        return self.blobs.get(location)

    async def mark_live(self, worker_id: str, version: str, **info: float) -> None:
        self.live[worker_id] = {"version": version, **info}


def _swap() -> tuple[HotSwap, ScorerRuntime[Any], MemoryRegistry, RiskstreamMetrics]:
    runtime: ScorerRuntime[Any] = ScorerRuntime(Scorer.from_artifact(_artifact("base")))
    registry = MemoryRegistry()
    metrics = RiskstreamMetrics(CollectorRegistry(), process=False)
    swap = HotSwap(
        Settings(model_signing_key=KEY),
        runtime,
        registry,
        metrics=metrics,
        worker_id="w1",  # type: ignore[arg-type]
    )
    return swap, runtime, registry, metrics


def test_swap_is_staged_then_live_at_the_next_batch() -> None:
    swap, runtime, registry, metrics = _swap()

    async def scenario() -> None:
        blob = _artifact("v2", seed=3).to_bytes()
        registry.blobs["w:v2"] = blob
        assert await swap.apply(_update("v2", blob))
        assert runtime.version == "base" and runtime.staged is not None  # in-flight batch: old
        await asyncio.sleep(0.01)
        assert runtime.for_batch().version == "v2"  # the next batch: new
        for _ in range(100):
            if "w1" in registry.live:
                break
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert registry.live["w1"]["version"] == "v2"
    assert 0.25 <= registry.live["w1"]["label_to_live_s"] < 5
    assert metrics.registry.get_sample_value("riskstream_label_to_live_seconds_count") == 1
    assert metrics.registry.get_sample_value("riskstream_model_updates_received_total") == 1


def test_refused_and_stale_updates_leave_the_model_alone() -> None:
    swap, runtime, registry, metrics = _swap()

    async def scenario() -> list[bool]:
        good = _artifact("v2", seed=3).to_bytes()
        registry.blobs["w:v2"] = good
        registry.blobs["w:nan"] = _nan_blob("nan")
        first = _update("v2", good)
        return [
            await swap.apply(_update("nan", registry.blobs["w:nan"])),
            await swap.apply(first),
            await swap.apply(first),  # replayed
            await swap.apply(_update("v2", good, created_at=first.created_at - 60)),  # older
            await swap.handle_raw(b"not json"),
        ]

    assert asyncio.run(scenario()) == [False, True, False, False, False]
    assert [r[1] for r in swap.rejected] == [
        "non_finite",
        "stale_version",
        "stale_version",
        "error",
    ]
    assert runtime.for_batch().version == "v2"
    rejected = metrics.registry.get_sample_value(
        "riskstream_model_updates_rejected_total", {"reason": "stale_version"}
    )
    assert rejected == 2


def test_artifact_of_scorer_round_trips() -> None:
    scorer = Scorer.from_artifact(_artifact("base"))
    again = Scorer.from_artifact(artifact_of_scorer(scorer).to_bytes())
    x = np.random.default_rng(1).normal(size=(5, FeatureSchema().n_features)).astype(np.float32)
    assert again.version == "base"
    np.testing.assert_allclose(again.score_only(x), scorer.score_only(x), rtol=1e-6)
