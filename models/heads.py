"""Rival heads on the same encoder: Prototypical (Snell 2017), Siamese (Koch 2015) and a plain
classifier (for transfer learning and from-scratch baselines), plus the config factory.

All share :class:`models.matching.FewShotModel`'s ``forward(query_x, support_x, support_y)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from models.encoder import Encoder
from models.matching import LOG_EPS, FewShotModel, MatchingNetwork


def _include_matrix(n_query: int, support_y: Tensor, exclude: Tensor | None) -> Tensor:
    ones = torch.ones(n_query, support_y.shape[0], device=support_y.device)
    return ones if exclude is None else ones.masked_fill(exclude, 0.0)


def _two_class_log_proba(logit_fraud: Tensor, logit_legit: Tensor) -> tuple[Tensor, Tensor]:
    both = torch.stack([logit_fraud, logit_legit], dim=1)
    lp = torch.log_softmax(both, dim=1).clamp_min(LOG_EPS)
    return lp[:, 0], lp[:, 1]


class PrototypicalHead(FewShotModel):
    """One prototype per class (mean support embedding); ``p = softmax_k(cos(f(x), c_k) / τ)``.

    >>> head = PrototypicalHead(Encoder(4, hidden=(8,), emb_dim=3))
    >>> p = head(torch.randn(2, 4), torch.randn(6, 4), torch.tensor([1.0, 0, 1, 0, 0, 0]))
    >>> tuple(p.shape)
    (2,)
    """

    kind = "prototypical"

    def __init__(self, encoder: Encoder, temperature: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.log_tau = nn.Parameter(torch.tensor(math.log(temperature), dtype=torch.float32))

    def log_proba(
        self,
        query_x: Tensor,
        support_x: Tensor,
        support_y: Tensor,
        exclude: Tensor | None = None,
        support_group: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Per-query prototypes (leave-one-out aware), then a two-way softmax."""
        f, g = self.encoder(query_x), self.encoder(support_x)
        y = support_y.float()
        keep = _include_matrix(f.shape[0], y, exclude)
        w1, w0 = keep * y[None, :], keep * (1.0 - y)[None, :]
        c1 = F.normalize((w1 @ g) / w1.sum(1, keepdim=True).clamp_min(1.0), dim=-1, eps=1e-8)
        c0 = F.normalize((w0 @ g) / w0.sum(1, keepdim=True).clamp_min(1.0), dim=-1, eps=1e-8)
        tau = self.log_tau.exp().clamp(0.005, 2.0)
        return _two_class_log_proba((f * c1).sum(1) / tau, (f * c0).sum(1) / tau)

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        tau = float(self.log_tau.exp().detach())
        return {"kind": self.kind, "encoder": self.encoder.config(), "temperature": tau}


class SiameseHead(FewShotModel):
    """A learned pair score ``s(x, x_i) = w·|f(x) − f(x_i)| + b`` ("same class" logit); a
    query's class logit is the mean pair score against that class's support items.

    >>> head = SiameseHead(Encoder(4, hidden=(8,), emb_dim=3))
    >>> p = head(torch.randn(2, 4), torch.randn(6, 4), torch.tensor([1.0, 0, 1, 0, 0, 0]))
    >>> bool(((p > 0) & (p < 1)).all())
    True
    """

    kind = "siamese"

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.pair = nn.Linear(encoder.emb_dim, 1)

    def pair_logits(self, f: Tensor, g: Tensor) -> Tensor:
        """``[Q, S]`` same-class logits."""
        diff = (f[:, None, :] - g[None, :, :]).abs()
        return self.pair(diff).squeeze(-1)

    def log_proba(
        self,
        query_x: Tensor,
        support_x: Tensor,
        support_y: Tensor,
        exclude: Tensor | None = None,
        support_group: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Mean pair logit per class, then a two-way softmax."""
        s = self.pair_logits(self.encoder(query_x), self.encoder(support_x))
        y = support_y.float()
        keep = _include_matrix(s.shape[0], y, exclude)
        w1, w0 = keep * y[None, :], keep * (1.0 - y)[None, :]
        m1 = (w1 * s).sum(1) / w1.sum(1).clamp_min(1.0)
        m0 = (w0 * s).sum(1) / w0.sum(1).clamp_min(1.0)
        return _two_class_log_proba(m1, m0)

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"kind": self.kind, "encoder": self.encoder.config()}


class ClassifierHead(FewShotModel):
    """A logistic layer on the embedding; ignores the support set (transfer / from scratch).

    >>> head = ClassifierHead(Encoder(4, hidden=(8,), emb_dim=3))
    >>> tuple(head(torch.randn(2, 4), torch.zeros(0, 4), torch.zeros(0)).shape)
    (2,)
    """

    kind = "classifier"

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.out = nn.Linear(encoder.emb_dim, 1)

    def log_proba(
        self,
        query_x: Tensor,
        support_x: Tensor,
        support_y: Tensor,
        exclude: Tensor | None = None,
        support_group: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``log σ(z)``, ``log σ(−z)`` of the logistic layer's output ``z``."""
        z = self.out(self.encoder(query_x)).squeeze(-1) * 10.0  # unit-norm inputs: widen range
        return F.logsigmoid(z).clamp_min(LOG_EPS), F.logsigmoid(-z).clamp_min(LOG_EPS)

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"kind": self.kind, "encoder": self.encoder.config()}


def model_from_config(config: dict[str, Any]) -> FewShotModel:
    """Rebuild an (untrained) model from ``model.config()``.

    >>> net = MatchingNetwork(Encoder(3, hidden=(4,), emb_dim=2), temperature=0.2)
    >>> again = model_from_config(net.config())
    >>> type(again).__name__, round(float(again.temperature.detach()), 4)
    ('MatchingNetwork', 0.2)
    """
    enc_cfg = dict(config["encoder"])
    encoder = Encoder(
        int(enc_cfg["in_dim"]),
        hidden=tuple(int(h) for h in enc_cfg.get("hidden", (64,))),
        emb_dim=int(enc_cfg.get("emb_dim", 32)),
        dropout=float(enc_cfg.get("dropout", 0.0)),
    )
    kind = config.get("kind", "matching")
    if kind == "matching":
        return MatchingNetwork(
            encoder,
            temperature=float(config.get("temperature", 0.05)),
            learn_temperature=bool(config.get("learn_temperature", True)),
            fce=bool(config.get("fce", False)),
            class_balance=bool(config.get("class_balance", True)),
            fce_steps=int(config.get("fce_steps", 2)),
        )
    if kind == "prototypical":
        return PrototypicalHead(encoder, temperature=float(config.get("temperature", 0.1)))
    if kind == "siamese":
        return SiameseHead(encoder)
    if kind == "classifier":
        return ClassifierHead(encoder)
    raise ValueError(f"unknown model kind {kind!r}")
