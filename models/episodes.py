"""Episodic tasks and the one function that runs an episode, :func:`fast_adapt`.

A task is a fraud scenario × a time window × a customer/terminal segment. Its episode is
a support set and a disjoint query set, each with a chosen number of frauds and legit
transactions (class balance is a choice, not the data's 1 % prior).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call

from models.matching import FewShotModel

MIXED = -1  # "scenario" of a task drawing frauds of every training scenario
SYNTHETIC = -2  # "scenario" of a synthetic task cut from legit data


@dataclass(frozen=True)
class Episode:
    """One task's support and query sets (standardized features, labels 1 = fraud)."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_numpy(
        cls,
        support_x: np.ndarray,
        support_y: np.ndarray,
        query_x: np.ndarray,
        query_y: np.ndarray,
        info: dict[str, Any] | None = None,
    ) -> Episode:
        """Build from arrays (copied to float32 tensors)."""

        def t(a: np.ndarray) -> Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float32))

        return cls(t(support_x), t(support_y), t(query_x), t(query_y), dict(info or {}))


@dataclass(frozen=True)
class TaskData:
    """Standardized features plus what tasks are cut along.

    ``scenario``: 0 legit, 1.. fraud scenario; ``day``: integer day; ``segment``: a
    customer or terminal segment id (e.g. grid region), or None.
    """

    x: np.ndarray
    y: np.ndarray
    scenario: np.ndarray
    day: np.ndarray
    segment: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.y)
        for name in ("x", "scenario", "day"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"TaskData.{name} has a different length than y")


@dataclass(frozen=True)
class EpisodeConfig:
    """Sizes and task shape of sampled episodes."""

    support_fraud: int = 32
    support_legit: int = 96
    query_fraud: int = 32
    query_legit: int = 32
    window_days: int = 28
    mixed_share: float = 0.5  # share of tasks drawing frauds from every training scenario
    segment_share: float = 0.25  # share of tasks restricted to one segment
    scenarios: Sequence[int] | None = None  # training scenarios; None = every one present
    hard_share: float = 0.0  # share of legit cases drawn from the hard-negative pool, if set
    synthetic_share: float = 0.0  # share of synthetic tasks (see EpisodeSampler.synthetic)


class EpisodeSampler:
    """Draws episodes from :class:`TaskData`; widens a task that has too few frauds.

    >>> rng = np.random.default_rng(0)
    >>> n = 400
    >>> y = (rng.random(n) < 0.2).astype(np.int8)
    >>> data = TaskData(rng.normal(size=(n, 3)).astype(np.float32), y,
    ...                 np.where(y == 1, 1 + rng.integers(0, 2, n), 0), rng.integers(0, 60, n))
    >>> ep = EpisodeSampler(data, EpisodeConfig(4, 8, 4, 4)).sample(rng)
    >>> tuple(ep.support_x.shape), float(ep.support_y.sum()), float(ep.query_y.sum())
    ((12, 3), 4.0, 4.0)
    """

    def __init__(self, data: TaskData, config: EpisodeConfig) -> None:
        self.data = data
        self.config = config
        y = np.asarray(data.y)
        scen = np.asarray(data.scenario)
        present = sorted(int(s) for s in np.unique(scen[y == 1]))
        wanted = present if config.scenarios is None else [int(s) for s in config.scenarios]
        self.scenarios = [s for s in wanted if s in present]
        fraud = np.flatnonzero((y == 1) & np.isin(scen, self.scenarios))
        if fraud.size == 0:
            raise ValueError("no fraud of the training scenarios in the task data")
        self.fraud = fraud[np.argsort(data.day[fraud], kind="stable")]
        legit = np.flatnonzero(y == 0)
        self.legit = legit[np.argsort(data.day[legit], kind="stable")]
        self.days = (int(np.min(data.day)), int(np.max(data.day)))
        self.hard_legit: np.ndarray = np.zeros(0, dtype=np.int64)

    def set_hard_legit(self, indices: np.ndarray) -> None:
        """Legit rows the current model finds most fraud-like (hard negatives)."""
        self.hard_legit = np.asarray(indices, dtype=np.int64)

    def _pick(self, rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
        return pool[rng.choice(pool.size, size=n, replace=pool.size < n)]

    def sample(self, rng: np.random.Generator) -> Episode:
        """One episode: pick a task, then disjoint support and query sets."""
        cfg, d = self.config, self.data
        if cfg.synthetic_share > 0 and rng.random() < cfg.synthetic_share:
            return self.synthetic(rng)
        scenario = MIXED if rng.random() < cfg.mixed_share else int(rng.choice(self.scenarios))
        lo = int(rng.integers(self.days[0], max(self.days[0] + 1, self.days[1] - cfg.window_days)))
        hi = lo + cfg.window_days
        segment = None
        if d.segment is not None and rng.random() < cfg.segment_share:
            segment = int(rng.choice(d.segment[self.fraud]))
        need = cfg.support_fraud + cfg.query_fraud
        fraud = self.fraud
        if scenario != MIXED:
            fraud = fraud[d.scenario[fraud] == scenario]
        narrow = fraud[(d.day[fraud] >= lo) & (d.day[fraud] < hi)]
        if segment is not None and d.segment is not None:
            seg = narrow[d.segment[narrow] == segment]
            narrow = seg if seg.size >= need // 2 else narrow
            segment = segment if seg.size >= need // 2 else None
        if narrow.size >= need // 2:
            fraud = narrow
        else:
            lo, hi = self.days[0], self.days[1] + 1
        a, b = np.searchsorted(d.day[self.legit], [lo, hi])
        legit = self.legit[a:b] if b - a >= 2 else self.legit
        if segment is not None and d.segment is not None:
            seg_legit = legit[d.segment[legit] == segment]
            legit = seg_legit if seg_legit.size >= 4 else legit
        fraud_idx = self._split(rng, fraud, cfg.support_fraud, cfg.query_fraud)
        legit_idx = self._split(rng, legit, cfg.support_legit, cfg.query_legit)
        if cfg.hard_share > 0 and self.hard_legit.size >= 2:
            legit_idx = self._with_hard(rng, legit_idx)
        s_idx = np.concatenate([fraud_idx[0], legit_idx[0]])
        q_idx = np.concatenate([fraud_idx[1], legit_idx[1]])
        info = {"scenario": scenario, "days": (lo, hi), "segment": segment}
        return Episode.from_numpy(d.x[s_idx], d.y[s_idx], d.x[q_idx], d.y[q_idx], info)

    def synthetic(self, rng: np.random.Generator, pool_size: int = 4000) -> Episode:
        """A made-up pattern: among random legit rows, the few most extreme along a random
        sparse direction of the feature space are the "fraud" class.

        Training on these as well keeps every feature direction distinguishable in the
        embedding, so a fraud pattern unlike the training scenarios (few-shot) is not
        folded onto ordinary traffic.
        """
        cfg, d = self.config, self.data
        pool = self.legit[
            rng.choice(self.legit.size, min(pool_size, self.legit.size), replace=False)
        ]
        cols = rng.choice(d.x.shape[1], size=int(rng.integers(1, 4)), replace=False)
        proj = d.x[pool][:, cols] @ rng.normal(size=cols.size).astype(np.float32)
        order = np.argsort(-proj, kind="stable")
        n_pos = cfg.support_fraud + cfg.query_fraud
        positive, negative = pool[order[:n_pos]], pool[order[n_pos:]]
        pos = self._split(rng, positive, cfg.support_fraud, cfg.query_fraud)
        neg = self._split(rng, negative, cfg.support_legit, cfg.query_legit)
        ones = np.ones(cfg.support_fraud + cfg.query_fraud, dtype=np.float32)
        sy = np.r_[ones[: cfg.support_fraud], np.zeros(cfg.support_legit, np.float32)]
        qy = np.r_[ones[: cfg.query_fraud], np.zeros(cfg.query_legit, np.float32)]
        sx = d.x[np.concatenate([pos[0], neg[0]])]
        qx = d.x[np.concatenate([pos[1], neg[1]])]
        info = {"scenario": SYNTHETIC, "columns": cols.tolist()}
        return Episode.from_numpy(sx, sy, qx, qy, info)

    def _with_hard(
        self, rng: np.random.Generator, legit_idx: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Replace a ``hard_share`` of the legit draws with hard negatives (disjoint halves)."""
        pool = self.hard_legit[rng.permutation(self.hard_legit.size)]
        halves = (pool[: pool.size // 2], pool[pool.size // 2 :])
        out = []
        for drawn, hard in zip(legit_idx, halves, strict=True):
            n_hard = min(int(round(self.config.hard_share * drawn.size)), hard.size)
            out.append(np.concatenate([hard[:n_hard], drawn[n_hard:]]))
        return out[0], out[1]

    def _split(
        self, rng: np.random.Generator, pool: np.ndarray, n_s: int, n_q: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Disjoint support and query draws; a small pool is cut in two parts first and
        each part is drawn from with replacement (a 1-item pool is shared)."""
        if pool.size >= n_s + n_q:
            chosen = pool[rng.choice(pool.size, size=n_s + n_q, replace=False)]
            return chosen[:n_s], chosen[n_s:]
        if pool.size < 2:
            return self._pick(rng, pool, n_s), self._pick(rng, pool, n_q)
        shuffled = pool[rng.permutation(pool.size)]
        cut = min(pool.size - 1, max(1, round(pool.size * n_s / (n_s + n_q))))
        return self._pick(rng, shuffled[:cut], n_s), self._pick(rng, shuffled[cut:], n_q)


def balanced_loss(logp_fraud: Tensor, logp_legit: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy averaged within each class, then across the classes present.

    >>> lp = torch.log(torch.tensor([0.9, 0.2]))
    >>> round(float(balanced_loss(lp, torch.log(1 - lp.exp()), torch.tensor([1.0, 0.0]))), 4)
    0.1643
    """
    y = y.float()
    losses = []
    if bool((y > 0.5).any()):
        losses.append(-(logp_fraud * y).sum() / y.sum())
    if bool((y <= 0.5).any()):
        losses.append(-(logp_legit * (1 - y)).sum() / (1 - y).sum())
    return torch.stack(losses).mean()


def support_loss(
    model: FewShotModel, params: dict[str, Tensor], support_x: Tensor, support_y: Tensor
) -> Tensor:
    """Leave-one-out loss of the support set on itself, at parameters ``params``."""
    exclude = torch.eye(support_x.shape[0], dtype=torch.bool)
    lp1, lp0 = _functional_log_proba(model, params, support_x, support_x, support_y, exclude)
    return balanced_loss(lp1, lp0, support_y)


class _LogProba(torch.nn.Module):
    """Routes ``functional_call`` to ``log_proba`` instead of ``forward``."""

    def __init__(self, model: FewShotModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, q: Tensor, sx: Tensor, sy: Tensor, exclude: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        return self.model.log_proba(q, sx, sy, exclude)


def _functional_log_proba(
    model: FewShotModel,
    params: dict[str, Tensor],
    query_x: Tensor,
    support_x: Tensor,
    support_y: Tensor,
    exclude: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    wrapped = {f"model.{k}": v for k, v in params.items()}
    out: tuple[Tensor, Tensor] = functional_call(
        _LogProba(model), wrapped, (query_x, support_x, support_y, exclude), strict=False
    )
    return out


def inner_loop(
    model: FewShotModel,
    support_x: Tensor,
    support_y: Tensor,
    *,
    steps: int,
    lr: float,
    first_order: bool = True,
) -> tuple[dict[str, Tensor], list[float]]:
    """``steps`` SGD steps on the support set's leave-one-out loss, functionally.

    Returns the adapted parameters (connected to ``model``'s for the outer gradient; with
    ``first_order`` the inner gradients are treated as constants) and the loss before
    each step and after the last.
    """
    params: dict[str, Tensor] = {k: v for k, v in model.named_parameters() if v.requires_grad}
    losses: list[float] = []
    for _ in range(steps):
        loss = support_loss(model, params, support_x, support_y)
        losses.append(float(loss.detach()))
        grads = torch.autograd.grad(
            loss, list(params.values()), create_graph=not first_order, allow_unused=True
        )
        params = {
            k: v if g is None else v - lr * (g.detach() if first_order else g)
            for (k, v), g in zip(params.items(), grads, strict=True)
        }
    if steps:
        with torch.no_grad():
            losses.append(float(support_loss(model, params, support_x, support_y)))
    return params, losses


def fast_adapt(
    model: FewShotModel,
    episode: Episode,
    *,
    inner_steps: int = 0,
    inner_lr: float = 0.05,
    first_order: bool = True,
    adapted_out: dict[str, Tensor] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Run one episode: optional inner adaptation on the support, then the query loss.

    With ``inner_steps=0`` this is plain matching-network episodic training; with
    ``inner_steps>0`` it is (first-order) MAML: the query loss is taken at the adapted
    parameters, and its gradient flows back to the model's parameters.

    Returns the query loss (a tensor to back-propagate) and float metrics. When
    ``adapted_out`` is a dict it receives the adapted parameters (Reptile's meta-step).

    >>> from models.encoder import Encoder
    >>> from models.matching import MatchingNetwork
    >>> torch.manual_seed(0) and None
    >>> net = MatchingNetwork(Encoder(3, hidden=(8,), emb_dim=4))
    >>> ep = Episode(torch.randn(6, 3), torch.tensor([1.0, 1, 0, 0, 0, 0]),
    ...              torch.randn(4, 3), torch.tensor([1.0, 0, 0, 1]))
    >>> loss, m = fast_adapt(net, ep, inner_steps=1)
    >>> loss.requires_grad, sorted(m)
    (True, ['query_accuracy', 'query_loss', 'support_loss_after', 'support_loss_before'])
    """
    params: dict[str, Tensor] = {k: v for k, v in model.named_parameters() if v.requires_grad}
    metrics: dict[str, float] = {}
    if inner_steps > 0:
        params, losses = inner_loop(
            model,
            episode.support_x,
            episode.support_y,
            steps=inner_steps,
            lr=inner_lr,
            first_order=first_order,
        )
        metrics["support_loss_before"] = losses[0]
        metrics["support_loss_after"] = losses[-1]
    if adapted_out is not None:
        adapted_out.update(params)
    lp1, lp0 = _functional_log_proba(
        model, params, episode.query_x, episode.support_x, episode.support_y
    )
    loss = balanced_loss(lp1, lp0, episode.query_y)
    pred = (lp1 > lp0).float()
    metrics["query_loss"] = float(loss.detach())
    metrics["query_accuracy"] = float((pred == (episode.query_y > 0.5).float()).float().mean())
    return loss, metrics
