"""Episodic meta-training: loops that wrap :func:`models.episodes.fast_adapt`.

``algorithm`` picks the outer loop:

* ``"episodic"``: matching-network training (query loss on each episode, no inner steps);
* ``"fomaml"``: first-order MAML (``inner_steps`` on the support, query loss at the
  adapted weights);
* ``"reptile"``: ``inner_steps`` on the episode, then move the weights toward the result;
* ``"supervised"``: the same episodes for a :class:`~models.heads.ClassifierHead`
  (support ignored): the source pretraining of transfer learning.

Seeded and deterministic: the same config and data give identical weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from models.encoder import Encoder
from models.episodes import EpisodeConfig, EpisodeSampler, TaskData, fast_adapt
from models.heads import model_from_config
from models.matching import FewShotModel

ProgressFn = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class MetaTrainConfig:
    """Model shape, episodes and optimizer of a meta-training run."""

    seed: int = 0
    n_episodes: int = 4000
    lr: float = 1e-3
    weight_decay: float = 1e-5
    head: str = "matching"
    hidden: tuple[int, ...] = (64, 64)
    emb_dim: int = 32
    dropout: float = 0.0
    temperature: float = 0.1
    learn_temperature: bool = True
    fce: bool = False
    class_balance: bool = True
    algorithm: str = "episodic"
    inner_steps: int = 0
    inner_lr: float = 0.05
    reptile_step: float = 0.5
    grad_clip: float = 5.0
    ema_decay: float = 0.998  # >0: return an exponential moving average of the weights
    hard_every: int = 0  # refresh the hard-negative pool every N episodes (0 = never)
    hard_pool: int = 2000
    hard_candidates: int = 40_000
    threads: int = 1  # small nets: a 2nd thread only adds contention
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the artifact's ``training_config``)."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        ep = d["episode"]
        ep["scenarios"] = None if self.episode.scenarios is None else list(self.episode.scenarios)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetaTrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in data.items() if k in known and k != "episode"}
        if "hidden" in kw:
            kw["hidden"] = tuple(kw["hidden"])
        ep = dict(data.get("episode") or {})
        ep_known = set(EpisodeConfig.__dataclass_fields__)
        episode = EpisodeConfig(**{k: v for k, v in ep.items() if k in ep_known})
        return cls(episode=episode, **kw)

    def with_(self, **changes: Any) -> MetaTrainConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)


def build_model(config: MetaTrainConfig, in_dim: int) -> FewShotModel:
    """A freshly initialized model of ``config``'s head (uses the torch RNG).

    >>> m = build_model(MetaTrainConfig(hidden=(8,), emb_dim=4), 17)
    >>> m.kind, m.encoder.in_dim
    ('matching', 17)
    """
    enc = Encoder(in_dim, hidden=config.hidden, emb_dim=config.emb_dim, dropout=config.dropout)
    cfg: dict[str, Any] = {
        "kind": "classifier" if config.algorithm == "supervised" else config.head,
        "encoder": enc.config(),
        "temperature": config.temperature,
        "learn_temperature": config.learn_temperature,
        "fce": config.fce,
        "class_balance": config.class_balance,
    }
    return model_from_config(cfg)


def _reptile_step(model: FewShotModel, adapted: dict[str, torch.Tensor], step: float) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in adapted:
                p.add_(step * (adapted[name].detach() - p))


class _Ema:
    """Bias-corrected exponential moving average of a model's state (as Adam's moments),
    so a short run averages all its iterates instead of leaning on the initialization."""

    def __init__(self, model: FewShotModel, decay: float) -> None:
        self.decay = decay
        self.steps = 0
        self.shadow = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}

    def update(self, model: FewShotModel) -> None:
        self.steps += 1
        with torch.no_grad():
            for k, v in model.state_dict().items():
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)

    def copy_to(self, model: FewShotModel) -> None:
        if self.steps:
            scale = 1.0 / (1.0 - self.decay**self.steps)
            model.load_state_dict({k: v * scale for k, v in self.shadow.items()})


def _hard_negatives(
    model: FewShotModel, sampler: EpisodeSampler, config: MetaTrainConfig, rng: np.random.Generator
) -> np.ndarray:
    """The legit rows, among a random sample, that the current model scores highest."""
    data = sampler.data
    legit = sampler.legit
    cand = legit[
        rng.choice(legit.size, size=min(config.hard_candidates, legit.size), replace=False)
    ]
    fraud = sampler.fraud[rng.choice(sampler.fraud.size, size=min(256, sampler.fraud.size))]
    ref = legit[rng.choice(legit.size, size=min(1024, legit.size), replace=False)]
    sx = torch.from_numpy(data.x[np.concatenate([fraud, ref])])
    sy = torch.from_numpy(np.r_[np.ones(fraud.size), np.zeros(ref.size)].astype(np.float32))
    model.eval()
    with torch.no_grad():
        p = torch.cat(
            [
                model(torch.from_numpy(data.x[cand[j : j + 8192]]), sx, sy)
                for j in range(0, cand.size, 8192)
            ]
        ).numpy()
    return cand[np.argsort(-p, kind="stable")[: config.hard_pool]]


def meta_train(
    config: MetaTrainConfig,
    data: TaskData,
    progress: ProgressFn | None = None,
    init: FewShotModel | None = None,
) -> FewShotModel:
    """Train a model on episodes drawn from ``data``; returns it in eval mode.

    ``init`` continues from existing weights (e.g. a source-pretrained model).
    ``progress(i, metrics)`` is called after every episode.

    >>> rng = np.random.default_rng(0)
    >>> y = (rng.random(300) < 0.3).astype(np.int8)
    >>> x = (rng.normal(size=(300, 4)) + y[:, None]).astype(np.float32)
    >>> data = TaskData(x, y, y.astype(np.int8), rng.integers(0, 30, 300))
    >>> cfg = MetaTrainConfig(n_episodes=3, hidden=(8,), emb_dim=4,
    ...                       episode=EpisodeConfig(4, 8, 4, 4))
    >>> meta_train(cfg, data).kind
    'matching'
    """
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(config.threads, 2)))
    try:
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        model = init if init is not None else build_model(config, data.x.shape[1])
        sampler = EpisodeSampler(data, config.episode)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        ema = _Ema(model, config.ema_decay) if config.ema_decay > 0 else None
        model.train()
        for i in range(config.n_episodes):
            if config.hard_every and i and i % config.hard_every == 0:
                sampler.set_hard_legit(_hard_negatives(model, sampler, config, rng))
                model.train()
            episode = sampler.sample(rng)
            if config.algorithm == "reptile":
                adapted: dict[str, torch.Tensor] = {}
                _, metrics = fast_adapt(
                    model,
                    episode,
                    inner_steps=max(1, config.inner_steps),
                    inner_lr=config.inner_lr,
                    adapted_out=adapted,
                )
                _reptile_step(model, adapted, config.reptile_step)
            else:
                steps = config.inner_steps if config.algorithm == "fomaml" else 0
                loss, metrics = fast_adapt(
                    model, episode, inner_steps=steps, inner_lr=config.inner_lr
                )
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                opt.step()
            if ema is not None:
                ema.update(model)
            if progress is not None:
                progress(i, metrics)
        if ema is not None:
            ema.copy_to(model)
        model.eval()
        return model
    finally:
        torch.set_num_threads(threads_before)


def pretrain_source(
    config: MetaTrainConfig, source: TaskData, progress: ProgressFn | None = None
) -> FewShotModel:
    """Transfer learning's first half: a supervised classifier trained on a source domain.

    Fine-tune it on the target with :class:`models.adaptation.TransferFineTune`.
    """
    return meta_train(config.with_(algorithm="supervised"), source, progress)
