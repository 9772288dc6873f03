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
    ``support_group[S]`` (ints) splits the fraud cases into patterns, each weighed as a
    class of its own (see :class:`MatchingNetwork`); heads without that notion ignore it.
    """

    kind = "base"
    encoder: Encoder

    def log_proba(
        self,
        query_x: Tensor,
        support_x: Tensor,
        support_y: Tensor,
        exclude: Tensor | None = None,
        support_group: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(log p(fraud), log p(legit))`` of every query, each ``[Q]``."""
        raise NotImplementedError

    def forward(
        self,
        query_x: Tensor,
        support_x: Tensor,
        support_y: Tensor,
        exclude: Tensor | None = None,
        support_group: Tensor | None = None,
    ) -> Tensor:
        """``p(fraud)`` of every query, ``[Q]``."""
        return self.log_proba(query_x, support_x, support_y, exclude, support_group)[0].exp()

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (see ``models.heads.model_from_config``)."""
        raise NotImplementedError


def class_log_prior(support_y: Tensor, support_group: Tensor | None = None) -> Tensor:
    """``-log n`` for each support item, ``n`` the size of its class (legit) or, with
    ``support_group``, of its fraud group: every class / fraud pattern weighs the same.

    >>> [round(v, 4) for v in class_log_prior(torch.tensor([1.0, 0.0, 0.0, 0.0])).exp().tolist()]
    [1.0, 0.3333, 0.3333, 0.3333]
    >>> y, grp = torch.tensor([1.0, 1, 1, 0]), torch.tensor([0, 0, 1, 0])
    >>> [round(v, 4) for v in class_log_prior(y, grp).exp().tolist()]
    [0.5, 0.5, 1.0, 1.0]
    """
    y = support_y.float()
    n0 = (1.0 - y).sum().clamp_min(1.0)
    if support_group is None:
        n1 = y.sum().clamp_min(1.0)
        return -(y * n1.log() + (1.0 - y) * n0.log())
    fraud = y > 0.5
    _, inverse, counts = torch.unique(support_group, return_inverse=True, return_counts=True)
    fraud_counts = torch.zeros_like(counts, dtype=torch.float32).index_add_(
        0, inverse, fraud.float()
    )
    n_item = torch.where(fraud, fraud_counts[inverse].clamp_min(1.0), n0)
    return -n_item.log()


def grouped_log_proba(
    logits: Tensor, support_y: Tensor, support_group: Tensor
) -> tuple[Tensor, Tensor]:
    """``p(fraud) = max_g F_g / (F_g + L)``: each fraud group against the legit cases.

    ``logits`` must already carry :func:`class_log_prior` (with the groups), so ``F_g``
    and ``L`` are the mean attention mass of group ``g`` and of the legit cases. With
    one group this is exactly :func:`attention_log_proba`.
    """
    fraud = support_y > 0.5
    neg_inf = torch.tensor(float("-inf"), dtype=logits.dtype)
    lse_legit = torch.logsumexp(logits.masked_fill(fraud[None, :], neg_inf), dim=1)
    per_group = [
        torch.logsumexp(
            logits.masked_fill(~(fraud & (support_group == g))[None, :], neg_inf), dim=1
        )
        for g in torch.unique(support_group[fraud]).tolist()
    ]
    if not per_group:
        return torch.full_like(lse_legit, LOG_EPS), torch.zeros_like(lse_legit)
    best = torch.stack(per_group, dim=1).max(dim=1).values
    norm = torch.logaddexp(best, lse_legit)
    return (best - norm).clamp_min(LOG_EPS), (lse_legit - norm).clamp_min(LOG_EPS)


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

    def logits_from_embeddings(
        self, f: Tensor, g: Tensor, support_y: Tensor, support_group: Tensor | None = None
    ) -> Tensor:
        """Attention logits ``[Q, S]``: ``cos / τ`` plus the class-balance bias."""
        logits = (f @ g.T) / self.temperature
        if self.class_balance:
            logits = logits + class_log_prior(support_y, support_group)[None, :]
        return logits

    def logits(
        self,
        query_x: Tensor,
        support_x: Tensor,
        support_y: Tensor,
        exclude: Tensor | None = None,
        support_group: Tensor | None = None,
    ) -> Tensor:
        """Attention logits ``[Q, S]``; excluded pairs get ``-inf``."""
        g = self.embed_support(support_x)
        out = self.logits_from_embeddings(self.embed_query(query_x, g), g, support_y, support_group)
        if exclude is not None:
            out = out.masked_fill(exclude, float("-inf"))
        return out

    def attention(
        self,
        query_x: Tensor,
        support_x: Tensor,
        support_y: Tensor,
        exclude: Tensor | None = None,
        support_group: Tensor | None = None,
    ) -> Tensor:
        """Attention weights ``[Q, S]``; each row sums to 1 (the explanation of a score)."""
        logits = self.logits(query_x, support_x, support_y, exclude, support_group)
        return torch.softmax(logits, dim=1)

    def log_proba(
        self,
        query_x: Tensor,
        support_x: Tensor,
        support_y: Tensor,
        exclude: Tensor | None = None,
        support_group: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(log p(fraud), log p(legit))``, each ``[Q]``.

        Without groups (or one fraud group) ``p = Σ_i a_i y_i``; with several fraud
        groups and ``class_balance``, ``p = max_g`` over the groups, so a new pattern
        with 10 labelled cases is not diluted by hundreds of cases of older patterns.
        """
        logits = self.logits(query_x, support_x, support_y, exclude, support_group)
        if support_group is not None and self.class_balance:
            return grouped_log_proba(logits, support_y, support_group)
        return attention_log_proba(logits, support_y)

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
