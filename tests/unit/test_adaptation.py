"""Adaptation strategies: one interface, the input model untouched, seeded."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from models.adaptation import (
    AdaptedModel,
    FirstOrderMAML,
    RefreshSupport,
    Reptile,
    TransferFineTune,
    strategy_from_name,
)
from models.encoder import Encoder
from models.episodes import support_loss
from models.heads import ClassifierHead
from models.matching import MatchingNetwork


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def new_pattern(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Support (10 frauds of a new pattern + 40 legit) and a query set of the same kinds."""
    rng = np.random.default_rng(seed)

    def draw(n_f: int, n_l: int) -> tuple[np.ndarray, np.ndarray]:
        fraud = rng.normal(size=(n_f, 6)) + np.array([0, 0, 0, 3.0, -3.0, 0])
        legit = rng.normal(size=(n_l, 6))
        x = np.concatenate([fraud, legit]).astype(np.float32)
        return x, np.r_[np.ones(n_f), np.zeros(n_l)].astype(np.float32)

    sx, sy = draw(10, 40)
    qx, qy = draw(50, 200)
    return sx, sy, qx, qy


def model() -> MatchingNetwork:
    torch.manual_seed(0)
    return MatchingNetwork(Encoder(6, hidden=(16,), emb_dim=8), temperature=0.2)


def _snapshot(m: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.state_dict().values()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    "strategy",
    [
        RefreshSupport(),
        FirstOrderMAML(inner_lr=0.3),
        Reptile(inner_lr=0.3),
        TransferFineTune(lr=1e-2),
    ],
)
def test_every_strategy_shares_the_interface_and_leaves_the_model_alone(strategy: object) -> None:
    net = model()
    before = _snapshot(net)
    sx, sy, qx, _ = new_pattern()
    adapted = strategy.adapt(net, sx, sy, steps=5, seed=1)  # type: ignore[attr-defined]
    assert isinstance(adapted, AdaptedModel)
    assert _same(before, _snapshot(net))
    p = adapted.predict_proba(qx)
    assert p.shape == (len(qx),) and np.all((p >= 0) & (p <= 1))
    again = strategy.adapt(net, sx, sy, steps=5, seed=1)  # type: ignore[attr-defined]
    assert np.allclose(again.predict_proba(qx), p)


@pytest.mark.parametrize(
    "strategy",
    [FirstOrderMAML(inner_lr=0.3), Reptile(inner_lr=0.3, batch_size=50), TransferFineTune(lr=1e-2)],
)
def test_gradient_strategies_fit_the_support(strategy: object) -> None:
    net = model()
    sx, sy, _, _ = new_pattern()
    tx, ty = torch.from_numpy(sx), torch.from_numpy(sy)
    start = float(support_loss(net, dict(net.named_parameters()), tx, ty).detach())
    adapted = strategy.adapt(net, sx, sy, steps=20, seed=0)  # type: ignore[attr-defined]
    end = float(
        support_loss(adapted.model, dict(adapted.model.named_parameters()), tx, ty).detach()
    )
    assert end < start


def test_refresh_support_uses_the_new_cases() -> None:
    net = model()
    sx, sy, qx, qy = new_pattern()
    adapted = RefreshSupport().adapt(net, sx, sy, steps=0, seed=0)
    assert adapted.model is net
    p = adapted.predict_proba(qx)
    assert p[qy == 1].mean() > p[qy == 0].mean()


def test_transfer_finetunes_a_classifier_head() -> None:
    torch.manual_seed(0)
    head = ClassifierHead(Encoder(6, hidden=(16,), emb_dim=8))
    sx, sy, qx, qy = new_pattern()
    adapted = TransferFineTune(lr=1e-2).adapt(head, sx, sy, steps=60, seed=0)
    p = adapted.predict_proba(qx)
    assert p[qy == 1].mean() > p[qy == 0].mean() + 0.3


def test_strategy_from_name() -> None:
    assert isinstance(strategy_from_name("reptile", epsilon=0.5), Reptile)
    with pytest.raises(ValueError, match="unknown"):
        strategy_from_name("nope")
