"""A pattern head in the stream: the artifact carries it, every check covers it, the scorer
applies it, and the ``pattern`` adaptation strategy fits it against recent traffic."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from models.artifacts import (
    PATTERN_KEYS,
    Artifact,
    ArtifactError,
    SupportSet,
    load_artifact,
    sha256_hex,
    weights_from_bytes,
)
from models.encoder import Encoder
from models.features.definitions import FeatureSchema
from models.features.transform import FeatureTransform
from models.matching import MatchingNetwork
from models.pattern_head import fit_pattern_head
from models.scorer import Scorer
from streams.adaptation_support import MIN_PATTERN_CARDS, MIN_TRAFFIC_ROWS, adapt, validate
from streams.case_store import Case
from streams.model_verification import Reference, UpdateRejected, verify_update
from streams.records import ModelUpdate, sign_model_update

N = FeatureSchema().n_features
KEY = "unit-key"


def _world(seed: int = 0) -> tuple[Artifact, list[Case], np.ndarray, np.ndarray]:
    """A base artifact, ten cases of a new pattern, held-out members, and recent traffic."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    legit = rng.normal(0.0, 1.0, size=(300, N))
    old = rng.normal(0.0, 1.0, size=(40, N)) + np.r_[4.0, np.zeros(N - 1)]
    new = rng.normal(0.0, 0.5, size=(40, N)) + np.r_[0.0, -3.0, 3.0, np.zeros(N - 3)]
    transform = FeatureTransform.fit(np.vstack([legit, old]), log_features=())
    support = SupportSet.build(
        np.vstack([old, legit]), [1] * 40 + [0] * 300, [f"b{i}" for i in range(340)]
    )
    net = MatchingNetwork(Encoder(N, hidden=(32,), emb_dim=16), temperature=0.1)
    base = Artifact.build(net, transform, support, {"version": "base", "feature_schema": None})
    cases = [
        Case(f"new{i}", 1, tuple(map(float, row)), 0.0, 0.0, 0.0, "analyst", "base", 0.1, seq=i + 1)
        for i, row in enumerate(new[:10])
    ]
    traffic = np.vstack([rng.normal(0.0, 1.0, size=(2_000, N)), new[10:20]]).astype(np.float32)
    return base, cases, new[20:].astype(np.float32), traffic


def _with_head(seed: int = 0) -> Artifact:
    base, cases, _, traffic = _world(seed)
    candidate = adapt(base, cases, strategy="pattern", traffic=traffic)
    assert candidate.pattern_head is not None
    meta = {"version": "adapt-0001", "feature_schema": base.schema}
    return Artifact.build(
        candidate.model, candidate.transform, candidate.support, meta, candidate.pattern_head
    )


def test_pattern_candidate_catches_the_new_pattern_at_the_old_alert_rate() -> None:
    base, cases, held_out, traffic = _world()
    refresh = adapt(base, cases, strategy="refresh").scorer(base.schema)
    pattern = adapt(base, cases, strategy="pattern", traffic=traffic)
    assert pattern.info["pattern_head"] == {
        "cases": 10,
        "cards": 10,  # no card ids: each case counts as its own incident
        "traffic_rows": len(traffic),
        "ignored": [],  # the cases' calendar flags differ
    }
    scorer = pattern.scorer(base.schema)
    ordinary = np.random.default_rng(9).normal(size=(4_000, N)).astype(np.float32)
    # the head ranks the held-out members above almost all ordinary transactions ...
    threshold = np.quantile(scorer.score_only(ordinary), 0.99)
    assert (scorer.score_only(held_out) >= threshold).mean() >= 0.9
    # ... and, mapped back onto the network's scale, keeps the network's alert rate there
    for cut in (0.5, 0.8):
        before = (refresh.score_only(ordinary) >= cut).mean()
        after = (scorer.score_only(ordinary) >= cut).mean()
        assert abs(after - before) <= 0.01 + 0.5 * before


def test_pattern_strategy_without_enough_traffic_is_a_plain_refresh() -> None:
    base, cases, _, traffic = _world()
    for sample in (None, traffic[: MIN_TRAFFIC_ROWS - 1]):
        candidate = adapt(base, cases, strategy="pattern", traffic=sample)
        assert candidate.pattern_head is None
        assert str(candidate.info["pattern_head"]).startswith("none (10 frauds")


def _on_cards(cases: list[Case], cards: list[str]) -> list[Case]:
    return [replace(c, card_id=cards[i % len(cards)]) for i, c in enumerate(cases)]


def test_cases_from_too_few_cards_get_no_pattern_head() -> None:
    """One card's burst is one incident: a line through it would describe that card."""
    base, cases, _, traffic = _world()
    for cards in (["c1"], ["c1", "c2"]):
        candidate = adapt(base, _on_cards(cases, cards), strategy="pattern", traffic=traffic)
        assert len(cards) < MIN_PATTERN_CARDS
        assert candidate.pattern_head is None
        assert f"from {len(cards)} cards" in str(candidate.info["pattern_head"])
        # the candidate is then exactly the support refresh
        refresh = adapt(base, _on_cards(cases, cards), strategy="refresh")
        x = traffic[:100]
        np.testing.assert_array_equal(
            candidate.scorer(base.schema).score_only(x), refresh.scorer(base.schema).score_only(x)
        )
    spread = _on_cards(cases, [f"c{i}" for i in range(MIN_PATTERN_CARDS)])
    candidate = adapt(base, spread, strategy="pattern", traffic=traffic)
    assert candidate.pattern_head is not None
    assert candidate.info["pattern_head"]["cards"] == MIN_PATTERN_CARDS  # type: ignore[index]


def test_a_calendar_flag_the_cases_share_by_timing_gets_no_weight() -> None:
    """Ten weekday cases from three days say nothing about weekends: the line ignores it."""
    base, cases, held_out, traffic = _world()
    weekend = FeatureSchema().index("is_weekend")
    rng = np.random.default_rng(3)
    traffic = traffic.copy()
    traffic[:, weekend] = rng.random(len(traffic)) < 2 / 7
    weekdays = [
        replace(c, x=c.x[:weekend] + (0.0,) + c.x[weekend + 1 :], ts=86_400.0 * (i % 3))
        for i, c in enumerate(cases)
    ]
    head = adapt(base, weekdays, strategy="pattern", traffic=traffic).pattern_head
    assert head is not None and head.weight[weekend] == 0.0
    # the same cases spread over three weeks are evidence, and the flag is used
    weeks = [replace(c, ts=7 * 86_400.0 * (i % 3)) for i, c in enumerate(weekdays)]
    head = adapt(base, weeks, strategy="pattern", traffic=traffic).pattern_head
    assert head is not None and head.weight[weekend] != 0.0


def test_validation_measures_the_pattern_procedure() -> None:
    base, cases, _, traffic = _world()
    legit_cases = [
        Case(f"ok{i}", 0, tuple(map(float, row)), 0.0, 0.0, 0.0, "analyst", "base", 0.1, seq=20 + i)
        for i, row in enumerate(traffic[:10])
    ]
    check = validate(base, base, cases + legit_cases, strategy="pattern", traffic=traffic)
    assert check.usable and check.accepts()
    assert check.ap_candidate > check.ap_current


def test_artifact_round_trip_keeps_the_head(tmp_path: Path) -> None:
    art = _with_head()
    again = weights_from_bytes(art.to_bytes())
    assert again.pattern_head is not None and art.pattern_head is not None
    for name, value in art.pattern_head.to_arrays().items():
        np.testing.assert_array_equal(again.pattern_head.to_arrays()[name], value)
    loaded = load_artifact(art.save(tmp_path / "a"))
    x = np.random.default_rng(1).normal(size=(50, N)).astype(np.float32)
    with_head = Scorer.from_artifact(loaded, top_k=2)
    plain = Scorer(loaded.model, loaded.transform, loaded.support, schema=loaded.schema)
    z = loaded.transform.transform(x)
    expected = loaded.pattern_head.score(z, plain.score_only(x))  # type: ignore[union-attr]
    np.testing.assert_allclose(with_head.score_only(x), expected, rtol=1e-5)
    np.testing.assert_allclose(with_head.score_batch_top(x)[0], expected, rtol=1e-5)
    # a new support set invalidates the head's calibration: it is not carried over
    assert with_head.with_support(x[:4], [1, 0, 0, 0], list("abcd")).pattern_head is None


def _tampered(blob: bytes, change: dict[str, np.ndarray | None]) -> bytes:
    header_len = int.from_bytes(blob[:8], "little")
    metadata = json.loads(blob[8 : 8 + header_len])["__metadata__"]
    tensors = dict(st_load(blob))
    for name, value in change.items():
        if value is None:
            tensors.pop(name)
        else:
            tensors[name] = value
    return bytes(st_save(tensors, metadata=metadata))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pattern.combined_tail": None}, "incomplete pattern head"),
        ({"pattern.weight": np.zeros(3)}, "wrong shape"),
        ({"pattern.base_tail": np.array([[1.0, 0.5, 2.0], [-0.1, -1.0, -2.0]])}, "monotone"),
        ({"pattern.bias_w": np.array([np.nan, 1.0])}, "non-finite"),
        ({"pattern.bias_w": np.array([0.0, 1.0], np.float32)}, "dtype"),
    ],
)
def test_a_bad_head_is_refused(change: dict[str, np.ndarray | None], message: str) -> None:
    blob = _tampered(_with_head().to_bytes(), change)
    with pytest.raises(ArtifactError, match=message):
        weights_from_bytes(blob)


def test_signed_update_with_a_head_passes_verification_and_a_bad_one_does_not() -> None:
    art = _with_head()
    reference = Reference.of_scorer(Scorer.from_artifact(_world()[0]))

    def update(blob: bytes) -> ModelUpdate:
        unsigned = ModelUpdate(
            version="adapt-0001",
            parent="base",
            created_at=time.time(),
            sha256=sha256_hex(blob),
            signature="",
            metrics={},
            location="w:adapt-0001",
        )
        return sign_model_update(unsigned, KEY)

    blob = art.to_bytes()
    verified = verify_update(update(blob), blob, KEY, reference)
    assert verified.pattern_head is not None
    bad = _tampered(blob, {"pattern.weight": np.full(N, np.inf)})
    with pytest.raises(UpdateRejected) as refused:
        verify_update(update(bad), bad, KEY, reference)
    assert refused.value.reason == "non_finite"


def test_pattern_keys_are_the_heads_arrays() -> None:
    rng = np.random.default_rng(0)
    traffic = rng.normal(size=(100, 3))
    head = fit_pattern_head(traffic[:5] + 3.0, traffic, 1 / (1 + np.exp(-traffic[:, 0])))
    assert set(head.to_arrays()) == set(PATTERN_KEYS)
