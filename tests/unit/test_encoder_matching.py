"""Encoder, matching network and rival heads on tiny synthetic tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.encoder import Encoder, numpy_embed
from models.heads import ClassifierHead, PrototypicalHead, SiameseHead, model_from_config
from models.matching import MatchingNetwork


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_encoder_shapes_and_unit_norm() -> None:
    enc = Encoder(17, hidden=(16, 8), emb_dim=5)
    z = enc(torch.randn(7, 17))
    assert z.shape == (7, 5)
    assert torch.allclose(z.norm(dim=1), torch.ones(7), atol=1e-6)
    x = np.random.default_rng(1).normal(size=(4, 17)).astype(np.float32)
    assert np.allclose(
        numpy_embed(enc.numpy_layers(), x), enc(torch.from_numpy(x)).detach(), atol=1e-6
    )


@pytest.mark.parametrize("fce", [False, True])
def test_attention_rows_sum_to_one_and_score_is_weighted_labels(fce: bool) -> None:
    net = MatchingNetwork(Encoder(6, hidden=(8,), emb_dim=4), temperature=0.2, fce=fce)
    sx, sy = torch.randn(9, 6), torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 1, 0])
    qx = torch.randn(5, 6)
    att = net.attention(qx, sx, sy)
    assert att.shape == (5, 9)
    assert torch.allclose(att.sum(dim=1), torch.ones(5), atol=1e-6)
    p = net(qx, sx, sy)
    assert p.shape == (5,)
    assert torch.allclose(p, att @ sy, atol=1e-6)


def test_excluded_support_gets_zero_weight() -> None:
    net = MatchingNetwork(Encoder(3, hidden=(4,), emb_dim=2))
    sx, sy = torch.randn(4, 3), torch.tensor([1.0, 0, 1, 0])
    att = net.attention(sx, sx, sy, exclude=torch.eye(4, dtype=torch.bool))
    assert torch.all(att.diagonal() == 0)
    assert torch.allclose(att.sum(dim=1), torch.ones(4))


def test_class_balance_makes_an_uninformative_support_score_one_half() -> None:
    enc = Encoder(3, hidden=(4,), emb_dim=2)
    sx = torch.zeros(10, 3)  # identical embeddings: only the class prior can matter
    sy = torch.tensor([1.0] + [0.0] * 9)
    balanced = MatchingNetwork(enc, class_balance=True)(torch.zeros(2, 3), sx, sy)
    raw = MatchingNetwork(enc, class_balance=False)(torch.zeros(2, 3), sx, sy)
    assert torch.allclose(balanced, torch.full((2,), 0.5), atol=1e-6)
    assert torch.allclose(raw, torch.full((2,), 0.1), atol=1e-6)


def test_temperature_learnable_or_fixed() -> None:
    learn = MatchingNetwork(Encoder(3, hidden=(4,), emb_dim=2), temperature=0.1)
    fixed = MatchingNetwork(
        Encoder(3, hidden=(4,), emb_dim=2), temperature=0.1, learn_temperature=False
    )
    assert "log_tau" in dict(learn.named_parameters())
    assert "log_tau" not in dict(fixed.named_parameters())
    assert float(fixed.temperature) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "head_cls", [PrototypicalHead, SiameseHead, ClassifierHead, MatchingNetwork]
)
def test_heads_share_the_interface_and_rebuild_from_config(head_cls: type) -> None:
    head = head_cls(Encoder(5, hidden=(8,), emb_dim=3))
    sx, sy = torch.randn(6, 5), torch.tensor([1.0, 0, 1, 0, 0, 0])
    p = head(torch.randn(4, 5), sx, sy)
    assert p.shape == (4,) and bool(((p >= 0) & (p <= 1)).all())
    lp1, lp0 = head.log_proba(sx, sx, sy, torch.eye(6, dtype=torch.bool))
    assert torch.allclose(lp1.exp() + lp0.exp(), torch.ones(6), atol=1e-5)
    again = model_from_config(head.config())
    again.load_state_dict(head.state_dict())
    q = torch.randn(3, 5)
    assert torch.allclose(again(q, sx, sy), head(q, sx, sy))


def test_prototypical_matches_nearest_prototype() -> None:
    head = PrototypicalHead(Encoder(2, hidden=(4,), emb_dim=2), temperature=0.05)
    first, last = (m for m in head.encoder.net if isinstance(m, torch.nn.Linear))
    with torch.no_grad():  # identity-like encoder: embeddings follow the inputs' direction
        first.weight.copy_(torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]]))
        first.bias.zero_()
        last.weight.copy_(torch.tensor([[1.0, 0, -1, 0], [0, 1, 0, -1]]))
        last.bias.zero_()
    sx = torch.tensor([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]])
    sy = torch.tensor([1.0, 1.0, 0.0, 0.0])
    p = head(torch.tensor([[2.0, 0.0], [-2.0, 0.0]]), sx, sy)
    assert p[0] > 0.99 and p[1] < 0.01


def test_fraud_groups_score_each_pattern_against_the_legit_cases() -> None:
    net = MatchingNetwork(Encoder(4, hidden=(8,), emb_dim=3), temperature=0.2)
    sx, q = torch.randn(12, 4), torch.randn(5, 4)
    sy = torch.tensor([1.0] * 6 + [0.0] * 6)
    one = torch.zeros(12, dtype=torch.long)
    assert torch.allclose(net(q, sx, sy, support_group=one), net(q, sx, sy), atol=1e-6)
    grp = torch.tensor([0, 0, 0, 0, 0, 1] + [0] * 6)
    p = net(q, sx, sy, support_group=grp)
    # by hand: mean attention mass of each fraud group against the legit mean
    with torch.no_grad():
        g = net.embed_support(sx)
        e = torch.exp(net.embed_query(q, g) @ g.T / net.temperature)
        p = p.detach()
    legit = e[:, 6:].mean(1)
    per_group = torch.stack([e[:, :5].mean(1), e[:, 5:6].mean(1)], dim=1).max(1).values
    assert torch.allclose(p, per_group / (per_group + legit), atol=1e-5)
    assert torch.allclose(net.attention(q, sx, sy, support_group=grp).sum(1), torch.ones(5))
