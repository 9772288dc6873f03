"""A per-pattern linear score, combined with the matching network through recent traffic.

Why: with ten labelled cases of a new pattern the matching network's kernel score (the
cases as a new support group) finds the cases' close neighbours (card-testing probes) but
not the pattern's other members (cash-outs, first probes): 0.70 recall at 1 % FPR on card
testing. A logistic regression of the same cases against *recent unlabelled traffic*
(about 99 % legit, so a fine stand-in for negatives) generalizes along a direction instead
(amount high for the card, many transactions today, ...) and catches most of what the
kernel misses, while the kernel keeps what the line misses.

The two scores live on different scales, so each is turned into its upper-tail
probability on the same recent traffic (``P(traffic score >= s)``, a false-positive-rate
estimate) and they are combined as in Fisher's method, ``-log t_base - w log t_pattern``;
the sum is mapped back through its own tail on the traffic onto the base score's scale, so
an ordinary transaction keeps the alert rate the stream's thresholds were set for.

Everything here is numpy arrays (:meth:`PatternHead.to_arrays`), so a head can travel in a
safetensors file next to the unchanged network weights.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> traffic = rng.normal(size=(2000, 3))
>>> cases = rng.normal(loc=(3.0, 0.0, 0.0), size=(10, 3))
>>> base = lambda z: 1 / (1 + np.exp(-z[:, 1]))  # a base model that looks elsewhere
>>> head = fit_pattern_head(cases, traffic, base(traffic), seed=0)
>>> q = np.array([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
>>> s = head.score(q, base(q))
>>> bool(s[0] > s[1])
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

_P_EPS = 1e-7
#: At most one pseudo-case per this many traffic rows (see :func:`fit_pattern_head`).
PSEUDO_CASE_RATIO = 400


def _logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of scores, clipped: a base score of exactly 1.0 stays finite."""
    q = np.clip(np.asarray(p, np.float64), _P_EPS, 1.0 - _P_EPS)
    return np.log(q) - np.log1p(-q)


@dataclass(frozen=True)
class TailTable:
    """``log P(S >= s)`` of a reference sample, as an increasing piecewise-linear table.

    Knots sit at log-spaced tail levels, so the far tail (where a 1 % FPR threshold lives)
    is as finely resolved as the sample allows. Beyond the knots the table extends linearly,
    so the map stays strictly monotone and never ties two different scores.

    >>> t = TailTable.fit(np.arange(1000.0))
    >>> round(float(np.exp(t.log_tail(np.array([989.0]))[0])), 3)
    0.011
    >>> bool(t.log_tail(np.array([2000.0]))[0] < t.log_tail(np.array([999.0]))[0])
    True
    >>> float(t.value_at(t.log_tail(np.array([500.0])))[0])
    500.0
    """

    values: np.ndarray  # strictly increasing scores
    log_tails: np.ndarray  # strictly decreasing log tail probabilities at ``values``

    @classmethod
    def fit(cls, reference: np.ndarray, n_knots: int = 256) -> TailTable:
        """The table of ``reference`` scores (at least two distinct values)."""
        ref = np.sort(np.asarray(reference, np.float64).ravel())
        n = ref.size
        levels = np.geomspace(1.0 / n, 1.0, n_knots)  # tail probabilities
        values = ref[np.clip(np.ceil(n * (1.0 - levels)).astype(np.int64), 0, n - 1)]
        # the empirical tail at each knot: share of the sample at or above it
        log_tails = np.log((n - np.searchsorted(ref, values, side="left")) / n)
        values, first = np.unique(values, return_index=True)
        log_tails = log_tails[first]
        if values.size < 2:
            raise ValueError("a tail table needs at least two distinct reference scores")
        return cls(values, log_tails)

    def _slopes(self) -> tuple[float, float]:
        v, t = self.values, self.log_tails
        return (t[1] - t[0]) / (v[1] - v[0]), (t[-1] - t[-2]) / (v[-1] - v[-2])

    def log_tail(self, scores: np.ndarray) -> np.ndarray:
        """``log P(S >= s)`` for each score (linear extension outside the table)."""
        s = np.asarray(scores, np.float64)
        v, t = self.values, self.log_tails
        low, high = self._slopes()
        out = np.interp(s, v, t)
        out = np.where(s < v[0], t[0] + low * (s - v[0]), out)
        return np.where(s > v[-1], t[-1] + high * (s - v[-1]), out)

    def value_at(self, log_tails: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`log_tail`: the score whose tail is ``exp(log_tails)``."""
        lt = np.asarray(log_tails, np.float64)
        v, t = self.values, self.log_tails
        low, high = self._slopes()
        out = np.interp(-lt, -t, v)
        out = np.where(lt > t[0], v[0] + (lt - t[0]) / low, out)
        return np.where(lt < t[-1], v[-1] + (lt - t[-1]) / high, out)

    def to_array(self) -> np.ndarray:
        """``[2, K]`` float64 (monotone tables need the precision): values, then log tails."""
        return np.stack([self.values, self.log_tails]).astype(np.float64)

    @classmethod
    def from_array(cls, a: np.ndarray) -> TailTable:
        """Inverse of :meth:`to_array`."""
        return cls(np.asarray(a[0], np.float64), np.asarray(a[1], np.float64))


@dataclass(frozen=True)
class PatternHead:
    """The linear pattern score and the three tail tables that combine it with the base.

    ``weight``/``bias`` act on standardized features; ``pattern_weight`` is ``w`` above.
    """

    weight: np.ndarray
    bias: float
    base_tail: TailTable  # of the base score's log-odds on the traffic
    pattern_tail: TailTable  # of the pattern logit on the traffic
    combined_tail: TailTable  # of the combined statistic on the traffic
    pattern_weight: float = 1.0

    def pattern_logit(self, z: np.ndarray) -> np.ndarray:
        """The linear score of standardized rows ``z[N, F]``."""
        return np.asarray(z, np.float64) @ self.weight + self.bias

    def statistic(self, z: np.ndarray, base_p: np.ndarray) -> np.ndarray:
        """``-log t_base - w log t_pattern``: higher = rarer on recent traffic."""
        tb = self.base_tail.log_tail(_logit(base_p))
        tp = self.pattern_tail.log_tail(self.pattern_logit(z))
        return -tb - self.pattern_weight * tp

    def score(self, z: np.ndarray, base_p: np.ndarray) -> np.ndarray:
        """Combined ``p(fraud)`` of standardized rows ``z`` whose base scores are ``base_p``,
        on the base score's scale (strictly increasing in the statistic)."""
        tail = self.combined_tail.log_tail(self.statistic(z, base_p))
        return 0.5 * (1.0 + np.tanh(0.5 * self.base_tail.value_at(tail)))  # sigmoid

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays (safetensors-ready) describing the head."""
        return {
            "pattern.weight": self.weight.astype(np.float64),
            "pattern.bias_w": np.array([self.bias, self.pattern_weight], np.float64),
            "pattern.base_tail": self.base_tail.to_array(),
            "pattern.pattern_tail": self.pattern_tail.to_array(),
            "pattern.combined_tail": self.combined_tail.to_array(),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> PatternHead:
        """Inverse of :meth:`to_arrays`.

        >>> rng = np.random.default_rng(1)
        >>> t = rng.normal(size=(500, 2))
        >>> h = fit_pattern_head(t[:5] + 3, t, 1 / (1 + np.exp(-t[:, 0])))
        >>> g = PatternHead.from_arrays(h.to_arrays())
        >>> bool(np.allclose(g.score(t[:9], t[:9, 0]), h.score(t[:9], t[:9, 0])))
        True
        """
        bias, w = (float(v) for v in arrays["pattern.bias_w"])
        return cls(
            np.asarray(arrays["pattern.weight"], np.float64),
            bias,
            TailTable.from_array(arrays["pattern.base_tail"]),
            TailTable.from_array(arrays["pattern.pattern_tail"]),
            TailTable.from_array(arrays["pattern.combined_tail"]),
            w,
        )


def _linear(
    pos: np.ndarray, neg: np.ndarray, c: float, seed: int, keep: np.ndarray
) -> tuple[np.ndarray, float]:
    """Class-balanced logistic regression of ``pos`` against ``neg`` (standardized rows) on
    the columns ``keep`` (boolean); the other columns get weight 0."""
    x = np.concatenate([pos, neg])[:, keep]
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=seed)
    lr.fit(x, y)
    weight = np.zeros(len(keep), np.float64)
    weight[keep] = lr.coef_[0]
    return weight, float(lr.intercept_[0])


def fit_pattern_head(
    cases: np.ndarray,
    traffic: np.ndarray,
    traffic_base: np.ndarray,
    *,
    c: float = 1.0,
    pattern_weight: float = 1.0,
    pseudo_cases: int = 0,
    ignore: Sequence[int] = (),
    seed: int = 0,
) -> PatternHead:
    """Fit the head: ``cases`` (standardized labelled frauds of the new pattern) against
    ``traffic`` (standardized recent unlabelled transactions, ``traffic_base`` their base
    scores).

    The traffic is split in two halves: the line is fitted on one and every tail table
    on the other, so the tails are those of transactions the line has not seen. With
    ``pseudo_cases`` > 0 the line is fitted once more with the traffic rows the combined
    score ranks highest added to the cases (self-training: recent traffic also holds
    unlabelled members of the new pattern, which is how its rarer variants get in). It is
    capped at one traffic row in 400 (50 of 20,000): the new pattern is a small share of
    any traffic, so more pseudo-cases from a small sample would be mostly legit.

    ``ignore`` lists feature columns the line must not use (weight 0): features the cases
    cannot speak for, such as a calendar flag all of them share only because they were
    labelled within a few hours or days (see
    :func:`streams.adaptation_support.undetermined_flags`).
    """
    cases = np.asarray(cases, np.float64)
    traffic = np.asarray(traffic, np.float64)
    traffic_base = np.asarray(traffic_base, np.float64).ravel()
    if len(cases) == 0 or len(traffic) < 20 or len(traffic_base) != len(traffic):
        raise ValueError(
            "a pattern head needs labelled cases and at least 20 traffic rows with base scores"
        )
    keep = np.ones(traffic.shape[1], dtype=bool)
    keep[list(ignore)] = False
    order = np.random.default_rng(seed).permutation(len(traffic))
    fit_idx, cal_idx = order[::2], order[1::2]
    cal_rows = traffic[cal_idx]
    base_cal = _logit(traffic_base[cal_idx])
    base_tail = TailTable.fit(base_cal)

    def head_for(positives: np.ndarray, negatives: np.ndarray) -> PatternHead:
        weight, bias = _linear(positives, negatives, c, seed, keep)
        pattern_cal = cal_rows @ weight + bias
        pattern_tail = TailTable.fit(pattern_cal)
        stat = -base_tail.log_tail(base_cal) - pattern_weight * pattern_tail.log_tail(pattern_cal)
        return PatternHead(
            weight, bias, base_tail, pattern_tail, TailTable.fit(stat), pattern_weight
        )

    head = head_for(cases, traffic[fit_idx])
    pseudo_cases = min(pseudo_cases, len(traffic) // PSEUDO_CASE_RATIO)
    if pseudo_cases > 0:
        top = np.argsort(-head.statistic(traffic, traffic_base))[:pseudo_cases]
        negatives = traffic[np.setdiff1d(fit_idx, top)]
        head = head_for(np.concatenate([cases, traffic[top]]), negatives)
    return head
