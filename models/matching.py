"""Matching Network head (Vinyals et al. 2016): cosine attention over a labelled support set.

``p(fraud | x) = Σ_i a_i(x) · y_i`` with ``a(x) = softmax_i(cos(f(x), g(x_i)) / τ + b_i)``.
With ``class_balance`` the bias ``b_i = -log n_{y_i}`` gives each class the same total prior
weight, so a support set with many more legit than fraud cases behaves like a balanced one
(more legit examples then sharpen the legit side without drowning the frauds).

Optional full-context embeddings (FCE): a bidirectional LSTM over the support embeddings
and an attention LSTM for the query, as in the paper.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from models.encoder import Encoder

LOG_EPS = math.log(1e-7)


class FewShotModel(nn.Module):
    """Base of every head: ``forward(query_x, support_x, support_y) -> p(fraud)``.

    Subclasses implement :meth:`log_proba`; ``exclude[Q, S]`` (bool) hides support items
    from a query (leave-one-out when the query is the support set itself).
    """

    kind = "base"
    encoder: Encoder

    def log_proba(
        self, query_x: Tensor, support_x: Tensor, support_y: Tensor, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(log p(fraud), log p(legit))`` of every query, each ``[Q]``."""
        raise NotImplementedError

    def forward(
        self, query_x: Tensor, support_x: Tensor, support_y: Tensor, exclude: Tensor | None = None
    ) -> Tensor:
        """``p(fraud)`` of every query, ``[Q]``."""
        return self.log_proba(query_x, support_x, support_y, exclude)[0].exp()

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (see ``models.heads.model_from_config``)."""
        raise NotImplementedError


def class_log_prior(support_y: Tensor) -> Tensor:
    """``-log n_c`` for each support item's class (items weighted so classes tie).

    >>> [round(v, 4) for v in class_log_prior(torch.tensor([1.0, 0.0, 0.0, 0.0])).exp().tolist()]
    [1.0, 0.3333, 0.3333, 0.3333]
    """
    y = support_y.float()
    n1 = y.sum().clamp_min(1.0)
    n0 = (1.0 - y).sum().clamp_min(1.0)
    return -(y * n1.log() + (1.0 - y) * n0.log())


def attention_log_proba(logits: Tensor, support_y: Tensor) -> tuple[Tensor, Tensor]:
    """Log of ``Σ softmax(logits)_i y_i`` and of its complement, stably, per row."""
    y = support_y.float().clamp(0.0, 1.0)
    norm = torch.logsumexp(logits, dim=1)
    lp1 = torch.logsumexp(logits + torch.log(y.clamp_min(1e-30))[None, :], dim=1) - norm
    lp0 = torch.logsumexp(logits + torch.log((1.0 - y).clamp_min(1e-30))[None, :], dim=1) - norm
    return lp1.clamp_min(LOG_EPS), lp0.clamp_min(LOG_EPS)


class MatchingNetwork(FewShotModel):
    """Cosine attention over the support set, temperature ``τ`` (learnable or fixed).

    >>> torch.manual_seed(0) and None
    >>> net = MatchingNetwork(Encoder(6, hidden=(8,), emb_dim=4), temperature=0.1)
    >>> sx, sy = torch.randn(5, 6), torch.tensor([1.0, 0, 0, 1, 0])
    >>> p = net(torch.randn(3, 6), sx, sy)
    >>> tuple(p.shape), bool(((p > 0) & (p < 1)).all())
    ((3,), True)
    >>> a = net.attention(torch.randn(3, 6), sx, sy)
    >>> bool(torch.allclose(a.sum(dim=1), torch.ones(3)))
    True
    """

    kind = "matching"

    def __init__(
        self,
        encoder: Encoder,
        temperature: float = 0.05,
        learn_temperature: bool = True,
        fce: bool = False,
        class_balance: bool = True,
        fce_steps: int = 2,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.learn_temperature = bool(learn_temperature)
        self.class_balance = bool(class_balance)
        self.fce = bool(fce)
        self.fce_steps = int(fce_steps)
        log_tau = torch.tensor(math.log(temperature), dtype=torch.float32)
        if self.learn_temperature:
            self.log_tau = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_tau", log_tau)
        d = encoder.emb_dim
        if self.fce:
            self.support_lstm = nn.LSTM(d, d, batch_first=True, bidirectional=True)
            self.query_cell = nn.LSTMCell(d, d)

    @property
    def temperature(self) -> Tensor:
        """``τ``, kept within [0.005, 2] so the softmax never degenerates."""
        return self.log_tau.exp().clamp(0.005, 2.0)

    def embed_support(self, support_x: Tensor) -> Tensor:
        """``g(x_i)``: unit-length support embeddings ``[S, D]`` (context-aware with FCE)."""
        g = self.encoder(support_x)
        if not self.fce:
            return g
        out, _ = self.support_lstm(g.unsqueeze(0))
        d = g.shape[1]
        return F.normalize(g + out[0, :, :d] + out[0, :, d:], dim=-1, eps=1e-8)

    def embed_query(self, query_x: Tensor, g: Tensor) -> Tensor:
        """``f(x)``: unit-length query embeddings ``[Q, D]`` (FCE: attention LSTM over ``g``)."""
        f = self.encoder(query_x)
        if not self.fce:
            return f
        h, c = f, torch.zeros_like(f)
        r = torch.zeros_like(f)
        for _ in range(self.fce_steps):
            h, c = self.query_cell(f, (h + r, c))
            h = h + f
            r = torch.softmax(h @ g.T, dim=1) @ g
        return F.normalize(h, dim=-1, eps=1e-8)

    def logits_from_embeddings(self, f: Tensor, g: Tensor, support_y: Tensor) -> Tensor:
        """Attention logits ``[Q, S]``: ``cos / τ`` plus the class-balance bias."""
        logits = (f @ g.T) / self.temperature
        if self.class_balance:
            logits = logits + class_log_prior(support_y)[None, :]
        return logits

    def logits(
        self, query_x: Tensor, support_x: Tensor, support_y: Tensor, exclude: Tensor | None = None
    ) -> Tensor:
        """Attention logits ``[Q, S]``; excluded pairs get ``-inf``."""
        g = self.embed_support(support_x)
        out = self.logits_from_embeddings(self.embed_query(query_x, g), g, support_y)
        if exclude is not None:
            out = out.masked_fill(exclude, float("-inf"))
        return out

    def attention(
        self, query_x: Tensor, support_x: Tensor, support_y: Tensor, exclude: Tensor | None = None
    ) -> Tensor:
        """Attention weights ``[Q, S]``; each row sums to 1 (the explanation of a score)."""
        return torch.softmax(self.logits(query_x, support_x, support_y, exclude), dim=1)

    def log_proba(
        self, query_x: Tensor, support_x: Tensor, support_y: Tensor, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(log p(fraud), log p(legit))``, each ``[Q]``."""
        return attention_log_proba(self.logits(query_x, support_x, support_y, exclude), support_y)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (temperature as its current value)."""
        return {
            "kind": self.kind,
            "encoder": self.encoder.config(),
            "temperature": float(self.temperature.detach()),
            "learn_temperature": self.learn_temperature,
            "fce": self.fce,
            "class_balance": self.class_balance,
            "fce_steps": self.fce_steps,
        }
