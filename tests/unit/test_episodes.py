"""Episode sampling, fast_adapt, and deterministic meta-training."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from models.encoder import Encoder
from models.episodes import MIXED, Episode, EpisodeConfig, EpisodeSampler, TaskData, fast_adapt
from models.matching import MatchingNetwork
from models.meta_train import MetaTrainConfig, meta_train, pretrain_source


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: a second thread only adds contention on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy_data(n: int = 3000, seed: int = 0, shift: float = 4.0) -> TaskData:
    """Three fraud scenarios, each displaced along its own axis: separable."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(np.int8)
    scenario = np.where(y == 1, rng.integers(1, 4, n), 0)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    for s in (1, 2, 3):
        x[scenario == s, s - 1] += shift
    return TaskData(x, y, scenario, rng.integers(0, 90, n), rng.integers(0, 4, n))


def test_episode_sizes_balance_and_disjointness() -> None:
    data = toy_data()
    cfg = EpisodeConfig(support_fraud=8, support_legit=24, query_fraud=8, query_legit=8)
    sampler = EpisodeSampler(data, cfg)
    rng = np.random.default_rng(1)
    for _ in range(20):
        ep = sampler.sample(rng)
        assert ep.support_x.shape == (32, 5) and ep.query_x.shape == (16, 5)
        assert float(ep.support_y.sum()) == 8 and float(ep.query_y.sum()) == 8
        support_rows = {tuple(r) for r in ep.support_x.numpy().round(6).tolist()}
        query_rows = {tuple(r) for r in ep.query_x.numpy().round(6).tolist()}
        assert not support_rows & query_rows


def test_scenario_tasks_draw_only_their_scenario() -> None:
    data = toy_data()
    sampler = EpisodeSampler(data, EpisodeConfig(4, 8, 4, 4, mixed_share=0.0, scenarios=[2]))
    ep = sampler.sample(np.random.default_rng(0))
    assert ep.info["scenario"] == 2
    fraud_x = ep.support_x[ep.support_y == 1].numpy()
    assert (fraud_x[:, 1] > fraud_x[:, 0]).mean() > 0.7  # scenario 2 lives on axis 1
    mixed = EpisodeSampler(data, EpisodeConfig(4, 8, 4, 4, mixed_share=1.0))
    assert mixed.sample(np.random.default_rng(0)).info["scenario"] == MIXED


def test_same_rng_same_episode() -> None:
    sampler = EpisodeSampler(toy_data(), EpisodeConfig(4, 8, 4, 4))
    a = sampler.sample(np.random.default_rng(7))
    b = sampler.sample(np.random.default_rng(7))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_y, b.query_y)


def test_fast_adapt_training_lowers_the_loss_on_a_separable_task() -> None:
    torch.manual_seed(0)
    data = toy_data()
    sampler = EpisodeSampler(data, EpisodeConfig(8, 24, 16, 16))
    rng = np.random.default_rng(0)
    fixed = [sampler.sample(rng) for _ in range(4)]
    net = MatchingNetwork(Encoder(5, hidden=(16,), emb_dim=8), temperature=0.2)

    def held_out() -> tuple[float, float]:
        with torch.no_grad():
            runs = [fast_adapt(net, ep) for ep in fixed]
        return (
            float(np.mean([loss.item() for loss, _ in runs])),
            float(np.mean([m["query_accuracy"] for _, m in runs])),
        )

    before, _ = held_out()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        loss, _ = fast_adapt(net, sampler.sample(rng))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after, accuracy = held_out()
    assert after < 0.6 * before
    assert accuracy >= 0.9


def test_inner_steps_lower_the_support_loss_and_connect_to_the_init() -> None:
    torch.manual_seed(0)
    net = MatchingNetwork(Encoder(5, hidden=(16,), emb_dim=8), temperature=0.2)
    ep = EpisodeSampler(toy_data(), EpisodeConfig(8, 24, 8, 8)).sample(np.random.default_rng(3))
    for first_order in (True, False):
        loss, m = fast_adapt(net, ep, inner_steps=5, inner_lr=0.5, first_order=first_order)
        assert m["support_loss_after"] < m["support_loss_before"]
        grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
        assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_episode_from_numpy_dtypes() -> None:
    ep = Episode.from_numpy(np.ones((2, 3)), np.array([1, 0]), np.ones((1, 3)), np.array([1]))
    assert ep.support_x.dtype == torch.float32 and ep.query_y.dtype == torch.float32


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


def test_meta_train_same_seed_same_weights() -> None:
    data = toy_data(n=1500)
    cfg = MetaTrainConfig(
        seed=5, n_episodes=15, hidden=(16,), emb_dim=8, episode=EpisodeConfig(8, 16, 8, 8)
    )
    variants = (("episodic", 0, 0.0), ("episodic", 0, 0.9), ("fomaml", 2, 0.0), ("reptile", 2, 0.0))
    for algorithm, steps, ema in variants:
        c = cfg.with_(algorithm=algorithm, inner_steps=steps, ema_decay=ema)
        c = c.with_(hard_every=5, hard_candidates=300, hard_pool=50)
        a, b = meta_train(c, data), meta_train(c, data)
        assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b), strict=True))
    other = meta_train(cfg.with_(seed=6), data)
    assert not all(
        torch.equal(x, y)
        for x, y in zip(_weights(other), _weights(meta_train(cfg, data)), strict=True)
    )


def test_meta_train_learns_and_config_roundtrips() -> None:
    data = toy_data()
    cfg = MetaTrainConfig(
        n_episodes=150,
        hidden=(16,),
        emb_dim=8,
        ema_decay=0.95,
        episode=EpisodeConfig(8, 24, 8, 8, synthetic_share=0.2),
    )
    assert MetaTrainConfig.from_dict(cfg.to_dict()) == cfg
    net = meta_train(cfg, data)
    fraud, legit = data.x[data.y == 1][:50], data.x[data.y == 0][:200]
    sx = torch.from_numpy(np.concatenate([fraud[:25], legit[:100]]))
    sy = torch.tensor([1.0] * 25 + [0.0] * 100)
    with torch.no_grad():
        p_fraud = net(torch.from_numpy(fraud[25:]), sx, sy).mean()
        p_legit = net(torch.from_numpy(legit[100:]), sx, sy).mean()
    assert p_fraud > 0.7 > 0.3 > p_legit
    source = pretrain_source(cfg.with_(n_episodes=10), data)
    assert source.kind == "classifier"


def test_synthetic_tasks_cut_extremes_of_a_random_direction_from_legit_rows() -> None:
    data = toy_data()
    sampler = EpisodeSampler(data, EpisodeConfig(8, 24, 8, 8, synthetic_share=1.0))
    ep = sampler.sample(np.random.default_rng(2))
    assert ep.info["scenario"] == -2 and ep.support_x.shape == (32, 5)
    assert float(ep.support_y.sum()) == 8 and float(ep.query_y.sum()) == 8
    legit_rows = {tuple(r) for r in data.x[data.y == 0].round(5).tolist()}
    assert all(tuple(r) in legit_rows for r in ep.support_x.numpy().round(5).tolist())
