"""Pattern head: tail tables, the combined score, and the ``pattern_head`` strategy."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from models.adaptation import (
    PatternAdaptedModel,
    PatternHeadStrategy,
    RefreshSupport,
    strategy_from_name,
)
from models.encoder import Encoder
from models.evaluation.metrics import recall_at_fpr
from models.matching import MatchingNetwork
from models.pattern_head import PatternHead, TailTable, fit_pattern_head

SHIFT_A = np.array([0.0, 4.0, 0.0, 0.0])  # the base model sees this pattern
SHIFT_B = np.array([4.0, 0.0, 0.0, 0.0])  # ... and is blind to this one


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def base_score(z: np.ndarray) -> np.ndarray:
    """A stand-in network that only looks at feature 1 (so it misses pattern B)."""
    return 1.0 / (1.0 + np.exp(-(z[:, 1] - 2.0)))


def world(seed: int, n_legit: int, n_a: int, n_b: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    legit = rng.normal(size=(n_legit, 4))
    frauds = np.concatenate(
        [rng.normal(size=(n_a, 4)) + SHIFT_A, rng.normal(size=(n_b, 4)) + SHIFT_B]
    )
    return np.concatenate([frauds, legit]), np.r_[np.ones(len(frauds)), np.zeros(n_legit)]


def test_tail_table_matches_the_empirical_tail_and_inverts() -> None:
    ref = np.random.default_rng(0).normal(size=5000)
    table = TailTable.fit(ref)
    for s in (-1.0, 0.0, 1.5, 2.3):
        assert np.exp(table.log_tail(np.array([s]))[0]) == pytest.approx(
            (ref >= s).mean(), abs=0.01
        )
    grid = np.linspace(-8, 8, 401)  # reaches far outside the sample on both sides
    tails = table.log_tail(grid)
    assert np.all(np.diff(tails) < 0)  # strictly decreasing: no ties, even when extrapolating
    assert np.allclose(table.value_at(tails), grid)


def test_tail_table_rejects_a_constant_sample() -> None:
    with pytest.raises(ValueError, match="two distinct"):
        TailTable.fit(np.ones(100))


def test_combined_score_beats_the_base_and_the_line_alone() -> None:
    traffic, _ = world(1, 6000, 0, 0)
    cases, _ = world(2, 0, 5, 5)  # ten labelled cases, both kinds
    head = fit_pattern_head(cases, traffic, base_score(traffic), seed=0)
    x, y = world(3, 20000, 100, 100)
    combined = head.score(x, base_score(x))
    base_recall = recall_at_fpr(y, base_score(x), 0.01)
    line_recall = recall_at_fpr(y, head.pattern_logit(x), 0.01)
    combined_recall = recall_at_fpr(y, combined, 0.01)
    assert base_recall < 0.6  # the base model alone misses pattern B (0.46)
    # the line catches B but loses some of A; combined beats both (0.63 vs 0.46 / 0.585)
    assert combined_recall > base_recall + 0.1
    assert combined_recall > line_recall + 0.02


def test_ordinary_traffic_keeps_the_base_alert_rate() -> None:
    traffic, _ = world(4, 8000, 0, 0)
    cases, _ = world(5, 0, 5, 5)
    head = fit_pattern_head(cases, traffic, base_score(traffic), seed=0)
    fresh, _ = world(6, 40000, 0, 0)
    threshold = np.quantile(base_score(fresh), 0.98)  # a 2 % alert rate before adaptation
    rate = (head.score(fresh, base_score(fresh)) >= threshold).mean()
    assert rate == pytest.approx(0.02, abs=0.006)


def test_score_is_strictly_increasing_in_the_statistic() -> None:
    traffic, _ = world(7, 3000, 0, 0)
    head = fit_pattern_head(world(8, 0, 4, 4)[0], traffic, base_score(traffic), seed=0)
    x, _ = world(9, 2000, 20, 20)
    stat = head.statistic(x, base_score(x))
    score = head.score(x, base_score(x))
    order = np.argsort(stat)
    assert np.all(np.diff(score[order]) > 0)
    assert np.all((score > 0) & (score < 1))


def test_arrays_round_trip() -> None:
    traffic, _ = world(10, 2000, 0, 0)
    head = fit_pattern_head(world(11, 0, 3, 3)[0], traffic, base_score(traffic), seed=0)
    arrays = head.to_arrays()
    assert all(a.dtype == np.float64 and np.isfinite(a).all() for a in arrays.values())
    again = PatternHead.from_arrays(arrays)
    x, _ = world(12, 500, 5, 5)
    assert np.array_equal(again.score(x, base_score(x)), head.score(x, base_score(x)))


def test_ignored_columns_get_no_weight() -> None:
    traffic, _ = world(15, 2000, 0, 0)
    cases = world(16, 0, 0, 10)[0]  # pattern B: column 0 is what sets it apart
    full = fit_pattern_head(cases, traffic, base_score(traffic), seed=0)
    assert full.weight[0] > 1.0
    head = fit_pattern_head(cases, traffic, base_score(traffic), ignore=[0], seed=0)
    assert head.weight[0] == 0.0 and np.all(np.isfinite(head.weight))


def test_fit_refuses_too_little_data() -> None:
    traffic, _ = world(13, 10, 0, 0)
    with pytest.raises(ValueError, match="traffic"):
        fit_pattern_head(world(14, 0, 2, 2)[0], traffic, base_score(traffic))
    with pytest.raises(ValueError):
        fit_pattern_head(np.zeros((0, 4)), traffic, base_score(traffic))


def _network() -> MatchingNetwork:
    torch.manual_seed(0)
    return MatchingNetwork(Encoder(4, hidden=(8,), emb_dim=4), temperature=0.2)


def _support(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """20 legit, 6 old frauds (group 0), 4 new frauds (group 1)."""
    legit = rng.normal(size=(20, 4))
    old = rng.normal(size=(6, 4)) + SHIFT_A
    new = rng.normal(size=(4, 4)) + SHIFT_B
    x = np.concatenate([legit, old, new]).astype(np.float32)
    y = np.r_[np.zeros(20), np.ones(10)].astype(np.float32)
    group = np.r_[np.zeros(26), np.ones(4)].astype(np.int64)
    return x, y, group


def test_strategy_fits_the_newest_group_and_leaves_the_model_alone() -> None:
    rng = np.random.default_rng(0)
    net = _network()
    before = [p.detach().clone() for p in net.state_dict().values()]
    traffic = rng.normal(size=(1200, 4)).astype(np.float32)
    sx, sy, group = _support(rng)
    strategy = strategy_from_name("pattern_head", traffic=traffic, pseudo_cases=50)
    adapted = strategy.adapt(net, sx, sy, steps=0, seed=0, support_group=group)
    assert isinstance(adapted, PatternAdaptedModel) and adapted.head is not None
    assert adapted.info["pattern_cases"] == 4  # the new group only, not the old frauds
    assert adapted.info["pseudo_cases"] == 3  # 1,200 rows of traffic: at most 3
    after = list(net.state_dict().values())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    q = rng.normal(size=(7, 4)).astype(np.float32)
    p = adapted.predict_proba(q)
    assert p.shape == (7,) and p.dtype == np.float32 and np.all((p >= 0) & (p <= 1))
    # The adapted score is the head applied to the support refresh's scores.
    plain = RefreshSupport().adapt(net, sx, sy, support_group=group).predict_proba(q)
    assert np.allclose(p, adapted.head.score(q, plain), atol=1e-6)
    assert not np.allclose(p, plain)


def test_strategy_needs_traffic() -> None:
    sx, sy, group = _support(np.random.default_rng(1))
    with pytest.raises(ValueError, match="traffic"):
        PatternHeadStrategy().adapt(_network(), sx, sy, support_group=group)


def test_strategy_is_deterministic_per_seed() -> None:
    rng = np.random.default_rng(2)
    traffic = rng.normal(size=(800, 4)).astype(np.float32)
    sx, sy, group = _support(rng)
    q = rng.normal(size=(20, 4)).astype(np.float32)
    runs = [
        PatternHeadStrategy(traffic=traffic)
        .adapt(_network(), sx, sy, seed=3, support_group=group)
        .predict_proba(q)
        for _ in range(2)
    ]
    assert np.array_equal(runs[0], runs[1])
