"""Batch scorer for the stream: the matching network's forward pass in numpy.

Scoring a batch is: standardize, run the exported MLP, one matrix product against the
cached support embeddings, a softmax and its weighted label sum. The top-weighted support
cases are the explanation. Support embeddings are computed once per support change.

An adapted artifact may carry a pattern head (:mod:`models.pattern_head`); its combined
score then replaces the network's score, and explanations stay the network's attention.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.artifacts import Artifact, ArtifactError, SupportSet, load_artifact
from models.encoder import numpy_embed
from models.features.definitions import FeatureSchema
from models.features.transform import FeatureTransform
from models.matching import MatchingNetwork, class_log_prior
from models.pattern_head import PatternHead

Explanation = list[tuple[str, int, float]]

# A batch is scored in blocks whose [rows, support] attention matrix fits in half of a
# core's L2 cache (1 MiB): the ~8 passes after the matrix product (bias, max, exp, class
# mass, top-k) then read cache instead of memory. Measured 5.4-6.3 -> 4.9 µs per
# transaction at batch 1,000 with a 2,000-case support set.
_BLOCK_BYTES = 1 << 20


class Scorer:
    """Scores raw feature vectors ``[B, F]`` (in the artifact's schema order).

    >>> from models.encoder import Encoder
    >>> rng = np.random.default_rng(0)
    >>> net = MatchingNetwork(Encoder(17, hidden=(8,), emb_dim=4))
    >>> X = rng.normal(size=(6, 17)).astype(np.float32)
    >>> tr = FeatureTransform.fit(X, log_features=())
    >>> sup = SupportSet.build(X, [1, 0, 0, 1, 0, 0], list("abcdef"))
    >>> sc = Scorer(net, tr, sup, version="v1", top_k=2)
    >>> scores, why = sc.score_batch(X[:3])
    >>> scores.shape, len(why), len(why[0]), why[0][0][0] in "abcdef"
    ((3,), 3, 2, True)
    """

    def __init__(
        self,
        model: MatchingNetwork,
        transform: FeatureTransform,
        support: SupportSet,
        *,
        version: str = "unversioned",
        top_k: int = 3,
        schema: FeatureSchema | None = None,
        pattern_head: PatternHead | None = None,
    ) -> None:
        if not isinstance(model, MatchingNetwork):
            raise ArtifactError(f"the stream scorer needs a matching network, got {model.kind}")
        if len(support) == 0:
            raise ArtifactError("the support set is empty")
        self.model = model.eval()
        self.transform = transform
        self.support = support
        self.version = version
        self.top_k = max(0, min(int(top_k), len(support)))
        self.schema = schema or FeatureSchema.with_extras(
            transform.names[len(FeatureSchema().names) :]
        )
        self._layers = model.encoder.numpy_layers()
        self._fce = model.fce
        self._log_mask, self._mean, self._std = transform.arrays()
        self._y = support.y.astype(np.float32)
        self._ids = support.case_ids
        self._labels = support.y.astype(int).tolist()
        self.pattern_head = pattern_head
        self._embed_support()

    @classmethod
    def from_artifact(
        cls,
        source: Artifact | str | Path | bytes,
        *,
        top_k: int = 3,
        expected_sha256: str | None = None,
    ) -> Scorer:
        """Scorer of an :class:`Artifact`, an artifact directory, or a safetensors blob."""
        art = source if isinstance(source, Artifact) else load_artifact(source, expected_sha256)
        if not isinstance(art.model, MatchingNetwork):
            raise ArtifactError(f"the stream scorer needs a matching network, got {art.model.kind}")
        return cls(
            art.model,
            art.transform,
            art.support,
            version=art.version,
            top_k=top_k,
            schema=art.schema,
            pattern_head=art.pattern_head,
        )

    def _embed_support(self) -> None:
        """Cache ``g(x_i) / τ`` and the class-balance bias: the only per-support work."""
        z = self.transform.transform(self.support.x)
        tau = float(self.model.temperature.detach())
        if self._fce:
            with torch.no_grad():
                g = self.model.embed_support(torch.from_numpy(z)).numpy()
            self._g_raw = torch.from_numpy(g)
        else:
            g = numpy_embed(self._layers, z)
        self._g_over_tau = np.ascontiguousarray((g / tau).T.astype(np.float32))  # [D, S]
        group = torch.from_numpy(self.support.group) if self.support.n_groups > 1 else None
        self._bias: np.ndarray | None = None
        # columns: legit mass, then one column per fraud group (one group: just the fraud mass)
        fraud = self._y > 0.5
        self._mass = np.stack([~fraud, fraud], axis=1).astype(np.float32)
        if self.model.class_balance:
            prior = class_log_prior(torch.from_numpy(self._y), group)
            self._bias = prior.numpy().astype(np.float32)
            if group is not None:
                groups = np.unique(self.support.group[fraud])
                cols = [fraud & (self.support.group == g) for g in groups]
                self._mass = np.stack([~fraud, *cols], axis=1).astype(np.float32)
        self._shifted = _bound_shifted(self._g_over_tau, self._bias, tau)

    def with_support(
        self,
        x: np.ndarray,
        y: Sequence[int] | np.ndarray,
        case_ids: Sequence[Any],
        group: Sequence[int] | np.ndarray | None = None,
    ) -> Scorer:
        """A new scorer with the same weights and a new support set (embedded once).

        ``group`` tags fraud patterns (e.g. 0 = base support, 1 = newly labelled cases):
        each fraud group then counts as its own class and the score is the highest
        group's, so a few new cases are not outweighed by many older ones. A pattern head
        is not carried over: it was calibrated on the old support's scores.
        """
        support = SupportSet.build(x, y, case_ids, group)
        return Scorer(
            self.model,
            self.transform,
            support,
            version=self.version,
            top_k=self.top_k,
            schema=self.schema,
        )

    def _query_embeddings(self, features: np.ndarray) -> np.ndarray:
        return self._embed_standardized(self.transform.transform(features))

    def _embed_standardized(self, z: np.ndarray) -> np.ndarray:
        if not self._fce:
            return numpy_embed(self._layers, z)
        with torch.no_grad():
            return self.model.embed_query(torch.from_numpy(z), self._g_raw).numpy()

    def _weights(self, q: np.ndarray) -> np.ndarray:
        """Unnormalized attention ``exp(logit - shift)`` of query embeddings ``q`` [B, D].

        Scores and explanation weights are ratios of these, so any per-row shift at or
        above the row's largest logit gives the same results. With :attr:`_shifted` the
        shift is the bound of every logit, folded into one matrix product (see
        :func:`_bound_shifted`); otherwise it is each row's maximum (two more passes over
        the ``[B, S]`` block, plus one for the bias).
        """
        if self._shifted is not None:
            q1 = np.empty((q.shape[0], q.shape[1] + 1), dtype=np.float32)
            q1[:, :-1] = q
            q1[:, -1] = 1.0
            logits = q1 @ self._shifted
        else:
            logits = q @ self._g_over_tau
            if self._bias is not None:
                logits += self._bias
            logits -= logits.max(axis=1, keepdims=True)
        return _exp_(logits)

    def score_only(self, features: np.ndarray) -> np.ndarray:
        """``p(fraud)`` of each row, without explanations."""
        weights = self._weights(self._query_embeddings(features))
        return self._with_head(features, self._probability(weights)[0])

    def score_standardized(self, z: np.ndarray) -> np.ndarray:
        """The network's ``p(fraud)`` of already standardized rows, never a pattern head's
        (what a head is fitted and calibrated on)."""
        z = np.asarray(z, dtype=np.float32)
        block = max(32, _BLOCK_BYTES // (4 * len(self._ids)))
        if z.shape[0] > block:  # see _BLOCK_BYTES
            return np.concatenate(
                [self.score_standardized(z[i : i + block]) for i in range(0, z.shape[0], block)]
            )
        return self._probability(self._weights(self._embed_standardized(z)))[0]

    def _with_head(self, features: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The pattern head's combined score when the artifact has one, else ``scores``."""
        if self.pattern_head is None or len(scores) == 0:
            return scores
        z = self.transform.transform(np.asarray(features, dtype=np.float32))
        return self.pattern_head.score(z, scores).astype(scores.dtype)

    def _probability(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores from unnormalized attention ``weights`` (and the row totals)."""
        mass = weights @ self._mass  # [B, 1 + groups]: legit, then each fraud group
        legit, fraud = mass[:, 0], mass[:, 1:].max(axis=1)
        total = mass.sum(axis=1)
        return fraud / np.maximum(fraud + legit, 1e-30), total

    @property
    def case_ids(self) -> Sequence[Any]:
        """Case ids of the support set, by support index (what explanations name)."""
        return self._ids

    @property
    def case_labels(self) -> list[int]:
        """Labels of the support set (1 fraud, 0 legit), by support index."""
        return self._labels

    def score_batch_top(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(scores[B], top[B, k], weights[B, k])``: the explanations as arrays.

        ``top`` holds the support indices of the ``top_k`` heaviest attention weights,
        heaviest first (see :attr:`case_ids`, :attr:`case_labels`), ``weights`` their
        normalized weights (float64 of the float32 values). The stream serializes them
        in bulk instead of building tuples per transaction.

        >>> from models.encoder import Encoder
        >>> X = np.random.default_rng(0).normal(size=(4, 17)).astype(np.float32)
        >>> sup = SupportSet.build(X, [1, 0, 0, 1], list("abcd"))
        >>> sc = Scorer(MatchingNetwork(Encoder(17, hidden=(8,), emb_dim=4)),
        ...             FeatureTransform.fit(X, log_features=()), sup, top_k=2)
        >>> scores, top, w = sc.score_batch_top(X[:3])
        >>> top.shape, w.dtype.name, bool((w[:, 0] >= w[:, 1]).all())
        ((3, 2), 'float64', True)
        """
        features = np.asarray(features, dtype=np.float32)
        if features.ndim == 1:
            features = features[None, :]
        block = max(32, _BLOCK_BYTES // (4 * len(self._ids)))
        if features.shape[0] > block:
            parts = [
                self.score_batch_top(features[i : i + block])
                for i in range(0, features.shape[0], block)
            ]
            return (
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]),
            )
        k = self.top_k if features.shape[0] else 0
        if features.shape[0] == 0:
            empty = np.zeros((0, k))
            return np.zeros(0, dtype=np.float32), empty.astype(np.intp), empty
        weights = self._weights(self._query_embeddings(features))
        scores, total = self._probability(weights)
        scores = self._with_head(features, scores)
        if k == 0:
            empty = np.zeros((len(scores), 0))
            return scores, empty.astype(np.intp), empty
        top, top_w = _top_k(weights, k)
        return scores, top, (top_w / total[:, None]).astype(np.float64)

    def score_batch(self, features: np.ndarray) -> tuple[np.ndarray, list[Explanation]]:
        """``(scores[B], explanations)``: each explanation lists the ``top_k`` support cases
        with the highest attention as ``(case_id, label, weight)``, heaviest first."""
        scores, top, weights = self.score_batch_top(features)
        ids, labels = self._ids, self._labels
        explanations = [
            [(ids[j], labels[j], w) for j, w in zip(row, wrow, strict=True)]
            for row, wrow in zip(top.tolist(), weights.tolist(), strict=True)
        ]
        return scores, explanations


#: The widest logit range shifted by a bound instead of each row's max: every attention
#: weight stays >= exp(-60) ~ 9e-27, so a row's total never nears ``_probability``'s 1e-30
#: floor and no weight is lost to float32 underflow (the default model spans ~23).
_MAX_SHIFTED_SPAN = 60.0


def _bound_shifted(
    g_over_tau: np.ndarray, bias: np.ndarray | None, tau: float
) -> np.ndarray | None:
    """``[D + 1, S]``: ``g / τ`` with a last row ``bias - (1/τ + max bias)``, or None.

    Query and support embeddings are unit vectors (or zero), so every logit ``q·g/τ + b``
    lies within ``±1/τ`` of the bias; ``1/τ + max(b)`` is at or above any row's largest
    logit. A query with a last column of ones times this matrix is the shifted logits in
    one product. None when the logits span more than :data:`_MAX_SHIFTED_SPAN`: then the
    row maximum is subtracted as usual.

    >>> g = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32) / 0.1  # [D, S], τ = 0.1
    >>> m = _bound_shifted(g, np.array([-1.0, -2.0], dtype=np.float32), 0.1)
    >>> m[-1].tolist()  # bias - (10 + (-1))
    [-10.0, -11.0]
    >>> _bound_shifted(g, None, 0.01) is None  # spans 200
    True
    """
    b = np.zeros(g_over_tau.shape[1], dtype=np.float32) if bias is None else bias
    if 2.0 / tau + float(b.max() - b.min()) > _MAX_SHIFTED_SPAN:
        return None
    last = (b - (1.0 / tau + float(b.max()))).astype(np.float32)
    return np.ascontiguousarray(np.vstack([g_over_tau, last[None, :]]), dtype=np.float32)


_TORCH_EXP_MIN = 16_384  # elements: 8 rows of a 2,000-case support set
_exp_backend: str | None = None  # "numpy" or "torch", whichever is faster here


def pick_exp_backend(size: int = 4 * _TORCH_EXP_MIN, repeats: int = 5) -> str:
    """Time numpy's and torch's in-place float32 ``exp`` on a block like the attention's
    and return the faster one (``"numpy"`` or ``"torch"``).

    Which is faster depends on the CPU: on an AVX2 machine numpy 2.4's float32 exp took
    3.7 ns per element and torch's 1.2-1.4 (session 5); on an AVX-512 machine numpy's
    took 0.55 and torch's 0.9 (session 10). Both agree to a few float32 ulps.

    >>> pick_exp_backend(size=1024, repeats=1) in ("numpy", "torch")
    True
    """
    base = np.linspace(-20.0, 0.0, size, dtype=np.float32)
    work = base.copy()
    best = {"numpy": float("inf"), "torch": float("inf")}
    for _ in range(repeats):
        for name in best:
            np.copyto(work, base)
            started = time.perf_counter()
            if name == "numpy":
                np.exp(work, out=work)
            else:
                torch.from_numpy(work).exp_()
            best[name] = min(best[name], time.perf_counter() - started)
    return min(best, key=best.__getitem__)


def _exp_(a: np.ndarray) -> np.ndarray:
    """``exp`` of a float32 array, in place (the attention weights of a block).

    Through numpy's or torch's vectorized kernel, whichever :func:`pick_exp_backend`
    measured faster on this CPU the first time a block was large enough (~4.5 µs per
    scored transaction against a 2,000-case support set when the slower one ran). Below
    :data:`_TORCH_EXP_MIN` elements (a few rows) torch's per-call cost outweighs any
    gain, and numpy does it.

    >>> a = np.array([[0.0, -1.0, -20.0]], dtype=np.float32)
    >>> big = np.linspace(-20.0, 0.0, 2 * _TORCH_EXP_MIN, dtype=np.float32).reshape(2, -1)
    >>> bool(np.array_equal(_exp_(a.copy()), np.exp(a)))
    True
    >>> bool(np.allclose(_exp_(big.copy()), np.exp(big), rtol=1e-6, atol=0))
    True
    """
    global _exp_backend
    if a.size < _TORCH_EXP_MIN:
        np.exp(a, out=a)
        return a
    if _exp_backend is None:
        _exp_backend = pick_exp_backend()
    if _exp_backend == "torch":
        torch.from_numpy(a).exp_()
    else:
        np.exp(a, out=a)
    return a


def _top_k(weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest entries of each row, largest first.

    For the small ``k`` of explanations, ``k`` row-wise ``argmax`` passes are several
    times faster than ``argpartition``; the masked entries are restored afterwards.

    >>> w = np.array([[1.0, 5.0, 2.0, 9.0], [3.0, 1.0, 2.0, 0.0]], dtype=np.float32)
    >>> idx, val = _top_k(w, 2)
    >>> idx.tolist(), val.tolist(), w[0].tolist()
    ([[3, 1], [0, 2]], [[9.0, 5.0], [3.0, 2.0]], [1.0, 5.0, 2.0, 9.0])
    """
    k = min(k, weights.shape[1])
    rows = np.arange(weights.shape[0])
    idx = np.empty((weights.shape[0], k), dtype=np.intp)
    val = np.empty((weights.shape[0], k), dtype=weights.dtype)
    for j in range(k):
        col = weights.argmax(axis=1)
        idx[:, j] = col
        val[:, j] = weights[rows, col]
        weights[rows, col] = -np.inf
    for j in range(k):
        weights[rows, idx[:, j]] = val[:, j]
    return idx, val
