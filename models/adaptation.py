"""Adaptation strategies with one interface: ``adapt(model, support_x, support_y, *, steps, seed)``.

* :class:`RefreshSupport`: new support set, same weights (the matching network's free
  adaptation).
* :class:`FirstOrderMAML`: ``steps`` SGD steps on the support's leave-one-out loss, from
  the meta-learned initialization (the inner loop of :func:`models.episodes.fast_adapt`).
* :class:`Reptile`: ``steps`` SGD steps on class-balanced mini-batches of the support,
  then ``θ + ε(θ' − θ)``.
* :class:`TransferFineTune`: Adam fine-tuning of a model pretrained on a source domain
  (see :func:`models.meta_train.pretrain_source`) on the target's few labels.
* :class:`PatternHeadStrategy`: support refresh, plus a linear score of the newest fraud
  group against recent *unlabelled* traffic, combined with the network's score through
  their tails on that traffic (:mod:`models.pattern_head`); same weights.

Inputs are standardized features (``FeatureTransform.transform``); the model passed in is
never modified.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.episodes import inner_loop, support_loss
from models.matching import FewShotModel
from models.pattern_head import PSEUDO_CASE_RATIO, PatternHead, fit_pattern_head


def _tensor(a: np.ndarray | Tensor) -> Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32)) if not isinstance(a, Tensor) else a


def _group(group: np.ndarray | Tensor | None) -> Tensor | None:
    if group is None:
        return None
    return group if isinstance(group, Tensor) else torch.as_tensor(np.asarray(group, np.int64))


def _newest_frauds(sy: Tensor, group: Tensor | None) -> Tensor:
    """Mask of the fraud cases of the newest group (every fraud without groups)."""
    fraud = sy > 0.5
    if group is None or not bool(fraud.any()):
        return fraud
    return fraud & (group == group[fraud].max())


def _task(sx: Tensor, sy: Tensor, group: Tensor | None) -> tuple[Tensor, Tensor]:
    """The rows the gradient steps fit: with several fraud groups, the legit cases and the
    newest group (highest id) only, so the steps learn the new pattern."""
    if group is None:
        return sx, sy
    fraud_groups = group[sy > 0.5]
    if fraud_groups.numel() == 0 or bool((fraud_groups == fraud_groups[0]).all()):
        return sx, sy
    keep = (sy <= 0.5) | (group == fraud_groups.max())
    return sx[keep], sy[keep]


@dataclass
class AdaptedModel:
    """A model with the support set it scores against.

    >>> from models.encoder import Encoder
    >>> from models.matching import MatchingNetwork
    >>> net = MatchingNetwork(Encoder(3, hidden=(4,), emb_dim=2))
    >>> am = RefreshSupport().adapt(net, np.eye(3), np.array([1, 0, 0]), steps=0, seed=0)
    >>> am.predict_proba(np.zeros((2, 3), dtype=np.float32)).shape
    (2,)
    """

    model: FewShotModel
    support_x: Tensor
    support_y: Tensor
    info: dict[str, Any] = field(default_factory=dict)
    support_group: Tensor | None = None

    def predict_proba(self, x: np.ndarray | Tensor, batch_size: int = 8192) -> np.ndarray:
        """``p(fraud)`` of standardized features ``x[N, F]``."""
        xt = _tensor(x)
        self.model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, xt.shape[0], batch_size):
                q = xt[i : i + batch_size]
                out.append(
                    self.model(q, self.support_x, self.support_y, support_group=self.support_group)
                )
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


class AdaptationStrategy(ABC):
    """Turns a model and a few labelled cases into an :class:`AdaptedModel`."""

    name = "base"

    @abstractmethod
    def adapt(
        self,
        model: FewShotModel,
        support_x: np.ndarray | Tensor,
        support_y: np.ndarray | Tensor,
        *,
        steps: int,
        seed: int,
        support_group: np.ndarray | Tensor | None = None,
    ) -> AdaptedModel:
        """Adapt ``model`` (left untouched) to the support set.

        ``support_group`` tags fraud patterns for scoring (see ``MatchingNetwork``); the
        gradient steps use the support as one task.
        """


class RefreshSupport(AdaptationStrategy):
    """Swap in the new support set; no gradient step (``steps`` is ignored)."""

    name = "refresh_support"

    def adapt(
        self,
        model: FewShotModel,
        support_x: np.ndarray | Tensor,
        support_y: np.ndarray | Tensor,
        *,
        steps: int = 0,
        seed: int = 0,
        support_group: np.ndarray | Tensor | None = None,
    ) -> AdaptedModel:
        """Same weights, new support."""
        return AdaptedModel(
            model,
            _tensor(support_x),
            _tensor(support_y),
            {"strategy": self.name},
            _group(support_group),
        )


def _load_params(model: FewShotModel, params: dict[str, Tensor]) -> FewShotModel:
    adapted = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if name in params:
                p.copy_(params[name].detach())
    adapted.eval()
    return adapted


@dataclass
class FirstOrderMAML(AdaptationStrategy):
    """``steps`` first-order MAML inner steps (SGD, ``inner_lr``) on the support."""

    inner_lr: float = 0.05
    name = "fomaml"

    def adapt(
        self,
        model: FewShotModel,
        support_x: np.ndarray | Tensor,
        support_y: np.ndarray | Tensor,
        *,
        steps: int = 5,
        seed: int = 0,
        support_group: np.ndarray | Tensor | None = None,
    ) -> AdaptedModel:
        """Inner loop from the meta-learned weights."""
        torch.manual_seed(seed)
        sx, sy = _tensor(support_x), _tensor(support_y)
        tx, ty = _task(sx, sy, _group(support_group))
        model.train()
        params, losses = inner_loop(model, tx, ty, steps=steps, lr=self.inner_lr)
        model.eval()
        info = {"strategy": self.name, "support_losses": losses}
        return AdaptedModel(_load_params(model, params), sx, sy, info, _group(support_group))


def _balanced_batch(y: Tensor, size: int, gen: torch.Generator) -> Tensor:
    fraud = torch.nonzero(y > 0.5).flatten()
    legit = torch.nonzero(y <= 0.5).flatten()
    half = max(1, size // 2)
    parts = []
    for pool in (fraud, legit):
        if len(pool):
            pick = torch.randperm(len(pool), generator=gen)[: max(half, 2)]
            parts.append(pool[pick])
    return torch.cat(parts)


def _optimize(
    work: FewShotModel,
    opt: torch.optim.Optimizer,
    tx: Tensor,
    ty: Tensor,
    steps: int,
    batch: Callable[[], Tensor] | None = None,
) -> list[float]:
    """``steps`` optimizer steps of ``work`` on the support loss (full batch, or the rows
    ``batch()`` picks each step); returns the losses."""
    losses = []
    for _ in range(steps):
        idx = batch() if batch is not None else slice(None)
        loss = support_loss(work, dict(work.named_parameters()), tx[idx], ty[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@dataclass
class Reptile(AdaptationStrategy):
    """SGD on class-balanced support mini-batches, then interpolate toward the result."""

    inner_lr: float = 0.05
    batch_size: int = 64
    epsilon: float = 1.0
    name = "reptile"

    def adapt(
        self,
        model: FewShotModel,
        support_x: np.ndarray | Tensor,
        support_y: np.ndarray | Tensor,
        *,
        steps: int = 5,
        seed: int = 0,
        support_group: np.ndarray | Tensor | None = None,
    ) -> AdaptedModel:
        """``θ + ε(θ' − θ)`` after ``steps`` mini-batch steps."""
        gen = torch.Generator().manual_seed(seed)
        sx, sy = _tensor(support_x), _tensor(support_y)
        tx, ty = _task(sx, sy, _group(support_group))
        start = {k: v.detach().clone() for k, v in model.named_parameters()}
        work = copy.deepcopy(model)
        work.train()
        opt = torch.optim.SGD(work.parameters(), lr=self.inner_lr)

        def batch() -> Tensor:
            return _balanced_batch(ty, self.batch_size, gen)

        losses = _optimize(work, opt, tx, ty, steps, batch)
        with torch.no_grad():
            for k, p in work.named_parameters():
                p.copy_(start[k] + self.epsilon * (p - start[k]))
        work.eval()
        info = {"strategy": self.name, "support_losses": losses}
        return AdaptedModel(work, sx, sy, info, _group(support_group))


@dataclass
class TransferFineTune(AdaptationStrategy):
    """Adam fine-tuning (``lr``) of a source-pretrained model on the target's labels."""

    lr: float = 1e-3
    name = "transfer_finetune"

    def adapt(
        self,
        model: FewShotModel,
        support_x: np.ndarray | Tensor,
        support_y: np.ndarray | Tensor,
        *,
        steps: int = 50,
        seed: int = 0,
        support_group: np.ndarray | Tensor | None = None,
    ) -> AdaptedModel:
        """Fine-tune every weight for ``steps`` full-batch Adam steps."""
        torch.manual_seed(seed)
        sx, sy = _tensor(support_x), _tensor(support_y)
        tx, ty = _task(sx, sy, _group(support_group))
        work = copy.deepcopy(model)
        work.train()
        opt = torch.optim.Adam(work.parameters(), lr=self.lr)
        losses = _optimize(work, opt, tx, ty, steps)
        work.eval()
        info = {"strategy": self.name, "support_losses": losses}
        return AdaptedModel(work, sx, sy, info, _group(support_group))


@dataclass
class PatternAdaptedModel(AdaptedModel):
    """An :class:`AdaptedModel` whose scores go through a :class:`PatternHead`."""

    head: PatternHead | None = None

    def predict_proba(self, x: np.ndarray | Tensor, batch_size: int = 8192) -> np.ndarray:
        """The head's combined ``p(fraud)`` (the network's alone without a head)."""
        base = super().predict_proba(x, batch_size)
        if self.head is None:
            return base
        z = x.numpy() if isinstance(x, Tensor) else np.asarray(x)
        return self.head.score(z, base).astype(np.float32)


@dataclass
class PatternHeadStrategy(AdaptationStrategy):
    """Support refresh plus a pattern head fitted against recent unlabelled ``traffic``.

    ``traffic`` (standardized, ``[T, F]``, T >= 20) is what the stream scored lately: about
    99 % legit, so it stands in for the negatives ten labelled cases lack. The newest fraud
    group of the support is the new pattern. ``pseudo_cases`` is capped at one traffic row
    in ``PSEUDO_CASE_RATIO`` (50 of 20,000), so a small sample does not turn into legit
    pseudo-cases.
    ``steps`` is ignored: no weight changes.

    >>> from models.encoder import Encoder
    >>> from models.matching import MatchingNetwork
    >>> rng = np.random.default_rng(0)
    >>> net = MatchingNetwork(Encoder(3, hidden=(4,), emb_dim=2))
    >>> traffic = rng.normal(size=(400, 3)).astype(np.float32)
    >>> sx = np.concatenate([traffic[:20], rng.normal(3.0, 1.0, size=(5, 3))])
    >>> sy = np.r_[np.zeros(20), np.ones(5)]
    >>> am = PatternHeadStrategy(traffic=traffic).adapt(net, sx, sy, steps=0, seed=0)
    >>> am.predict_proba(traffic[:4]).shape, am.info["pattern_cases"]
    ((4,), 5)
    """

    traffic: np.ndarray | None = None
    c: float = 1.0
    pattern_weight: float = 1.0
    pseudo_cases: int = 50
    name = "pattern_head"

    def adapt(
        self,
        model: FewShotModel,
        support_x: np.ndarray | Tensor,
        support_y: np.ndarray | Tensor,
        *,
        steps: int = 0,
        seed: int = 0,
        support_group: np.ndarray | Tensor | None = None,
    ) -> AdaptedModel:
        """Refresh the support, then fit the head on the newest group vs the traffic."""
        if self.traffic is None or len(self.traffic) < 20:
            raise ValueError("pattern_head needs at least 20 rows of recent traffic")
        refreshed = RefreshSupport().adapt(model, support_x, support_y, support_group=support_group)
        sx, sy, group = refreshed.support_x, refreshed.support_y, refreshed.support_group
        cases = sx[_newest_frauds(sy, group)].numpy()
        traffic = np.asarray(self.traffic, dtype=np.float32)
        pseudo = min(self.pseudo_cases, len(traffic) // PSEUDO_CASE_RATIO)
        head = fit_pattern_head(
            cases,
            traffic,
            refreshed.predict_proba(traffic),
            c=self.c,
            pattern_weight=self.pattern_weight,
            pseudo_cases=pseudo,
            seed=seed,
        )
        info = {
            "strategy": self.name,
            "pattern_cases": len(cases),
            "traffic_rows": len(traffic),
            "pseudo_cases": pseudo,
        }
        return PatternAdaptedModel(model, sx, sy, info, group, head=head)


STRATEGIES: dict[str, type[AdaptationStrategy]] = {
    "refresh_support": RefreshSupport,
    "fomaml": FirstOrderMAML,
    "reptile": Reptile,
    "transfer_finetune": TransferFineTune,
    "pattern_head": PatternHeadStrategy,
}


def strategy_from_name(name: str, **kwargs: Any) -> AdaptationStrategy:
    """A strategy by its setting name.

    >>> strategy_from_name("fomaml", inner_lr=0.1).inner_lr
    0.1
    """
    try:
        return STRATEGIES[name](**kwargs)
    except KeyError:
        raise ValueError(
            f"unknown adaptation strategy {name!r}; one of {sorted(STRATEGIES)}"
        ) from None
