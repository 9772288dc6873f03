"""The numerical half of the adaptation agent: support sets, candidates, validation.

Pure functions on arrays, labelled cases and artifacts (no Redis, no Kafka), so they are
unit-tested and timed on their own. :mod:`streams.adaptation` runs them off the event loop.

* :func:`support_from`: the support set of a candidate. Class-balanced by construction
  (the matching network gives each class the same prior mass). Every labelled fraud from
  the stream is kept (newest first, up to the class budget) as a *new fraud group*, one
  id above the base support's groups, which keep theirs: the matching network scores
  each fraud group against the legit cases on its own, so ten fresh cases of a new
  pattern are not swamped by hundreds of old ones. With ``keep_base_fraud`` every base
  fraud stays (the stream's policy); without it, the older recency weighting also cuts
  the base frauds to ``(1 - recent_share) / recent_share`` times the recent ones (at
  least ``min_old_fraud``). Stream legit cases join the base's legit sample, which is
  what tells normal behaviour apart.
* :func:`adapt`: the candidate, from the *base* (meta-learned) model: a support refresh,
  or ``steps`` inner gradient steps of a :mod:`models.adaptation` strategy on a small
  support (given the groups, the steps fit the newest group and the legit cases), then
  the full support. With the ``pattern`` strategy, a support refresh plus a pattern head
  (:mod:`models.pattern_head`): a linear score of the stream's frauds against a sample of
  recent scored traffic, combined with the network's score through their tails on that
  traffic, so ordinary transactions keep the network's alert rate. No head is fitted from
  frauds of fewer than :data:`MIN_PATTERN_CARDS` cards, and calendar flags the labels
  cannot judge get no weight in it (:func:`undetermined_flags`).
* :func:`alert_shares`: the share of recent scored traffic each model would alert on
  (:class:`AlertShares`), so that a candidate with a better AP on labelled cases but an
  alert flood on ordinary transactions is not published.
* :func:`validate`: average precision of candidate and current model on held-out recent
  labelled cases (a class with too few of them is filled in from the base support), by
  ``folds``-fold cross-validation: each fold is scored by a candidate adapted without it
  and by the current model with that fold removed from its support. Analysts label known
  patterns too, so a candidate that loses them shows as an AP drop.

Examples
--------
>>> from models.artifacts import SupportSet
>>> base = SupportSet.build(np.zeros((6, 2)), [1, 1, 1, 0, 0, 0], list("abcdef"))
>>> cases = [Case(f"n{i}", 1, (1.0, 1.0), 0.0, 0.0, 0.0, "s", "v", 0.1) for i in range(2)]
>>> s = support_from(cases, base, SupportPolicy(min_old_fraud=1))
>>> s.case_ids, s.group.tolist()
(('n0', 'n1', 'a', 'b', 'd', 'e', 'f'), [1, 1, 0, 0, 0, 0, 0])
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.adaptation import strategy_from_name
from models.artifacts import Artifact, SupportSet
from models.evaluation.metrics import average_precision
from models.features.transform import FeatureTransform
from models.matching import FewShotModel, MatchingNetwork
from models.pattern_head import PatternHead, fit_pattern_head
from models.scorer import Scorer
from streams.case_store import Case, cases_arrays

#: Setting value (``RISKSTREAM_ADAPT_STRATEGY``) → strategy of :mod:`models.adaptation`.
STRATEGY_NAMES = {"refresh": "refresh_support", "maml": "fomaml", "reptile": "reptile"}
#: Fewer scored transactions than this in Redis: no pattern head (the tails would be noise).
MIN_TRAFFIC_ROWS = 200
#: Traffic rows each validation fold's pattern head is fitted on (the published head gets
#: all of them): three folds on the whole sample tripled the time from label to live.
VALIDATION_TRAFFIC_ROWS = 5_000
#: Recent scored transactions the alert-share check scores: a share of ~1 % to ±0.45
#: points (two standard errors), against a growth cap of 4x; 5,000 rows cost ~0.45 s more
#: from label to live (bench_label_to_live, session 7), which was half of it.
ALERT_CHECK_ROWS = 2_000
#: The alert share a candidate may always reach: the current model's plus this, whatever
#: the growth factor (a model that alerts on 0.1 % of traffic may still go to 1.1 %).
ALERT_SHARE_MIN_RISE = 0.01
#: Fewer cards than this among the labelled frauds: no pattern head. A line fitted on one
#: card's burst describes that card (its history, its terminal, the hour): in ``make
#: demo``'s world 10 cases from one card took recall at 1 % FPR from 0.62 (support refresh
#: alone) to 0.22 (``bench/probe_fewshot_worlds.py``); cases from 7-9 cards raised it.
MIN_PATTERN_CARDS = 3
#: Calendar flags and their cycle in seconds: labels spread over less than a cycle cannot
#: tell whether a pattern keeps to one side of the flag (see :func:`undetermined_flags`).
CALENDAR_CYCLES_S: dict[str, float] = {"is_weekend": 7 * 86_400.0, "is_night": 86_400.0}
#: How the stream fits pattern heads (see :func:`models.pattern_head.fit_pattern_head`).
PATTERN_HEAD_OPTIONS: dict[str, Any] = {"c": 1.0, "pattern_weight": 1.0, "pseudo_cases": 50}


@dataclass(frozen=True)
class SupportPolicy:
    """Sizes of a candidate's support set (see the module docstring).

    ``group_new`` tags the stream's frauds as a new fraud group; ``keep_base_fraud`` keeps
    every base fraud instead of cutting them by ``recent_share`` (sensible with groups,
    which already keep a few new cases from being outweighed).
    """

    max_fraud: int = 400
    max_legit: int = 1600
    recent_share: float = 0.5
    min_old_fraud: int = 10
    step_old_fraud: int = 64  # support of the inner gradient steps: small, so steps are fast
    step_legit: int = 256
    group_new: bool = True
    keep_base_fraud: bool = False

    @classmethod
    def grouped(cls) -> SupportPolicy:
        """The stream's policy: new frauds as their own group on the whole base support.

        >>> SupportPolicy.grouped().keep_base_fraud
        True
        """
        return cls(group_new=True, keep_base_fraud=True)


@dataclass(frozen=True)
class Candidate:
    """An adapted model ready to be saved as an artifact."""

    model: FewShotModel
    transform: FeatureTransform
    support: SupportSet
    info: dict[str, Any] = field(default_factory=dict)
    pattern_head: PatternHead | None = None

    def scorer(self, schema: Any = None) -> Scorer:
        """A numpy scorer of this candidate."""
        return _scorer(self.model, self.transform, self.support, schema, self.pattern_head)


def _scorer(
    model: FewShotModel,
    transform: FeatureTransform,
    support: SupportSet,
    schema: Any,
    pattern_head: PatternHead | None = None,
) -> Scorer:
    if not isinstance(model, MatchingNetwork):  # the stream scores with matching networks
        raise TypeError(f"adaptation needs a matching network, got {model.kind}")
    return Scorer(
        model,
        transform,
        support,
        version="candidate",
        top_k=0,
        schema=schema,
        pattern_head=pattern_head,
    )


@dataclass(frozen=True)
class Validation:
    """Held-out average precision of the candidate and of the current model."""

    ap_candidate: float
    ap_current: float
    n_fraud: int
    n_legit: int

    @property
    def usable(self) -> bool:
        """Both classes present, so average precision means something."""
        return self.n_fraud > 0 and self.n_legit > 0

    def accepts(self, tolerance: float = 1e-9) -> bool:
        """Publish only if average precision does not drop."""
        return self.usable and self.ap_candidate + tolerance >= self.ap_current


@dataclass(frozen=True)
class AlertShares:
    """Share of recent traffic at or above the alert threshold, candidate against current.

    Held-out AP only sees labelled cases, and a class short of them is filled in from the
    base support's (warm) cases, so it misses a candidate that alerts on ordinary traffic:
    five frauds labelled in a deployment's first days made a candidate that flagged 49 %
    of those days' transactions, against 0.8 % for the current model, with a *higher* AP
    (``bench/probe_adapted_false_alarms.py``). The sample is unlabelled and holds the new
    pattern's own transactions too, so a useful candidate does raise the share (10
    card-testing labels: 3.8 % → 7.5 % while that pattern runs); what is refused is
    growth beyond ``growth`` times the current share (and :data:`ALERT_SHARE_MIN_RISE`).

    >>> AlertShares(candidate=0.075, current=0.038, n_rows=5000).accepts(growth=4)
    True
    >>> AlertShares(candidate=0.495, current=0.008, n_rows=5000).accepts(growth=4)
    False
    >>> AlertShares(candidate=0.010, current=0.001, n_rows=5000).cap(growth=4)  # the floor
    0.011
    """

    candidate: float
    current: float
    n_rows: int

    def cap(self, growth: float) -> float:
        """The highest share a candidate may reach."""
        return max(growth * self.current, self.current + ALERT_SHARE_MIN_RISE)

    def accepts(self, growth: float) -> bool:
        """Publish only if the candidate's share stays within :meth:`cap`."""
        return self.candidate <= self.cap(growth)


def alert_shares(
    candidate: Candidate, current: Artifact, traffic: np.ndarray, threshold: float
) -> AlertShares | None:
    """:class:`AlertShares` on the first :data:`ALERT_CHECK_ROWS` rows of ``traffic`` (raw
    feature vectors); ``None`` below :data:`MIN_TRAFFIC_ROWS` rows (too few to judge)."""
    rows = np.asarray(traffic[:ALERT_CHECK_ROWS], dtype=np.float32)
    if len(rows) < MIN_TRAFFIC_ROWS:
        return None
    new = candidate.scorer(current.schema).score_only(rows)
    old = _scorer(
        current.model, current.transform, current.support, current.schema, current.pattern_head
    ).score_only(rows)
    return AlertShares(
        candidate=float(np.mean(new >= threshold)),
        current=float(np.mean(old >= threshold)),
        n_rows=len(rows),
    )


def fold_of(tx_id: str, folds: int) -> int:
    """Stable fold of a case (CRC32 of its id).

    >>> fold_of("tx-1", 3) == fold_of("tx-1", 3), 0 <= fold_of("tx-2", 3) < 3
    (True, True)
    """
    return zlib.crc32(tx_id.encode()) % folds


def _rows(support: SupportSet, label: int, exclude: Collection[str]) -> list[int]:
    return [
        i
        for i, (y, c) in enumerate(zip(support.y, support.case_ids, strict=True))
        if int(y) == label and c not in exclude
    ]


def support_from(
    cases: Sequence[Case],
    base: SupportSet,
    policy: SupportPolicy,
    exclude: Collection[str] = (),
    *,
    n_old_fraud: int | None = None,
    n_legit: int | None = None,
) -> SupportSet:
    """The recency-weighted support of stream ``cases`` on top of ``base`` (raw features).

    ``exclude`` leaves cases out (validation folds); ``n_old_fraud``/``n_legit`` override
    the budgets (the small support of gradient steps).
    """
    seen = set(exclude)
    fresh = sorted((c for c in cases if c.tx_id not in seen), key=lambda c: -c.seq)
    fraud = [c for c in fresh if c.label == 1][: policy.max_fraud]
    legit = [c for c in fresh if c.label == 0][: policy.max_legit]
    seen |= {c.tx_id for c in fresh}
    old_fraud = _rows(base, 1, seen)  # the base keeps its most recent frauds first
    if n_old_fraud is None:
        n_old_fraud = len(old_fraud)
        if fraud and not policy.keep_base_fraud:
            share = policy.recent_share
            wanted = round(len(fraud) * (1.0 - share) / share)
            n_old_fraud = min(n_old_fraud, max(policy.min_old_fraud, wanted))
    n_old_fraud = min(n_old_fraud, max(0, policy.max_fraud - len(fraud)))
    old_legit = _rows(base, 0, seen)
    budget = policy.max_legit if n_legit is None else n_legit
    old_legit = old_legit[: max(0, budget - len(legit))]
    rows = old_fraud[:n_old_fraud] + old_legit
    x_new, y_new, ids_new = cases_arrays(fraud + legit)
    x = np.concatenate([x_new.reshape(-1, base.x.shape[1]), base.x[rows]])
    y = np.concatenate([y_new.astype(np.float32), base.y[rows]])
    # the stream's frauds: one group above every base group; legit cases ignore groups
    new_group = int(base.group.max()) + 1 if policy.group_new and len(base) else 0
    g_new = np.where(y_new == 1, new_group, 0).astype(np.int64)
    group = np.concatenate([g_new, base.group[rows]])
    return SupportSet.build(x, y, ids_new + [base.case_ids[i] for i in rows], group)


def adapt(
    base: Artifact,
    cases: Sequence[Case],
    *,
    strategy: str = "refresh",
    steps: int = 0,
    policy: SupportPolicy | None = None,
    exclude: Collection[str] = (),
    seed: int = 0,
    traffic: np.ndarray | None = None,
) -> Candidate:
    """A candidate adapted from ``base`` to the labelled ``cases``.

    ``traffic`` (raw feature vectors of recent scored transactions) is what the
    ``pattern`` strategy fits its head against; the other strategies ignore it.
    """
    policy = policy or SupportPolicy()
    support = support_from(cases, base.support, policy, exclude)
    info: dict[str, Any] = {"strategy": strategy, "steps": 0}
    model = base.model
    if strategy == "pattern":
        head, head_info = _fit_head(base, support, cases, exclude, traffic, seed)
        info |= head_info
        info |= {
            "support_fraud": support.n_fraud,
            "support_legit": len(support) - support.n_fraud,
            "support_groups": support.n_groups,
        }
        return Candidate(model, base.transform, support, info, head)
    if strategy != "refresh" and steps > 0:
        small = support_from(
            cases,
            base.support,
            policy,
            exclude,
            n_old_fraud=policy.step_old_fraud,
            n_legit=policy.step_legit,
        )
        chosen = strategy_from_name(STRATEGY_NAMES[strategy])
        adapted = chosen.adapt(
            model,
            base.transform.transform(small.x),
            small.y,
            steps=steps,
            seed=seed,
            support_group=small.group,
        )
        model = adapted.model
        info = {"strategy": strategy, "steps": steps, "step_support": len(small)}
    info |= {
        "support_fraud": support.n_fraud,
        "support_legit": len(support) - support.n_fraud,
        "support_groups": support.n_groups,
    }
    return Candidate(model, base.transform, support, info)


def undetermined_flags(cases: Sequence[Case], names: Sequence[str]) -> list[int]:
    """Columns of calendar flags that ``cases`` share only because of when they were labelled.

    A flag counts as undetermined when every case has the same value and the cases' event
    times span less than the flag's cycle (:data:`CALENDAR_CYCLES_S`). Ten cases of a new
    pattern from its first three days (a Wednesday to a Friday) are all weekday cases, and a
    line fitted on them reads "weekday" as part of the pattern: it then missed the weekend's
    cases (recall 0.46 on them against 0.80 on weekdays, ``bench/probe_fewshot_worlds.py``).
    The same cases over three weekends would be evidence, and are kept.

    >>> c = [Case(f"t{i}", 1, (1.0, 0.0, float(i % 2)), 3600.0 * i, 0, 0, "a", "v", 0.0)
    ...      for i in range(4)]
    >>> undetermined_flags(c, ["amount", "is_weekend", "is_night"])  # night varies
    [1]
    >>> undetermined_flags(c[:1], ["amount", "is_weekend", "is_night"])
    [1, 2]
    """
    if not cases:
        return []
    times = [c.ts for c in cases]
    span = max(times) - min(times)
    out = []
    for column, name in enumerate(names):
        cycle = CALENDAR_CYCLES_S.get(name)
        if cycle is not None and span < cycle and len({c.x[column] for c in cases}) == 1:
            out.append(column)
    return out


def head_possible(cases: Sequence[Case], n_traffic: int) -> bool:
    """Whether the ``pattern`` strategy fits a head for ``cases`` with that much traffic:
    frauds from :data:`MIN_PATTERN_CARDS` cards and :data:`MIN_TRAFFIC_ROWS` rows.

    >>> f = [Case(f"t{i}", 1, (1.0,), 0.0, 0, 0, "a", "v", 0.0, card_id=f"c{i}") for i in range(3)]
    >>> head_possible(f, 5_000), head_possible(f[:2], 5_000), head_possible(f, 10)
    (True, False, False)
    """
    cards = {c.incident for c in cases if c.label == 1}
    return len(cards) >= MIN_PATTERN_CARDS and n_traffic >= MIN_TRAFFIC_ROWS


def _fit_head(
    base: Artifact,
    support: SupportSet,
    cases: Sequence[Case],
    exclude: Collection[str],
    traffic: np.ndarray | None,
    seed: int,
) -> tuple[PatternHead | None, dict[str, Any]]:
    """The pattern head of the stream's frauds against ``traffic``, or why there is none."""
    left_out = set(exclude)
    frauds = [c for c in cases if c.label == 1 and c.tx_id not in left_out]
    n_traffic = 0 if traffic is None else len(traffic)
    n_cards = len({c.incident for c in frauds})
    if traffic is None or not head_possible(frauds, n_traffic):
        why = f"{len(frauds)} frauds from {n_cards} cards, {n_traffic} traffic rows"
        return None, {"pattern_head": f"none ({why})"}
    x_cases = cases_arrays(frauds)[0].reshape(-1, support.x.shape[1])
    network = _scorer(base.model, base.transform, support, None)
    z_traffic = base.transform.transform(np.asarray(traffic, dtype=np.float32))
    ignored = undetermined_flags(frauds, base.schema.names)
    head = fit_pattern_head(
        base.transform.transform(x_cases),
        z_traffic,
        network.score_standardized(z_traffic),
        seed=seed,
        ignore=ignored,
        **PATTERN_HEAD_OPTIONS,
    )
    info = {
        "cases": len(frauds),
        "cards": n_cards,
        "traffic_rows": n_traffic,
        "ignored": [base.schema.names[i] for i in ignored],
    }
    return head, {"pattern_head": info}


def warm_up(strategy: str) -> None:
    """Run ``strategy`` once on a toy model, so the first real adaptation does not pay for
    torch's lazy imports of the autograd paths (seconds, once per process).

    >>> warm_up("refresh")  # nothing to load for a support refresh
    """
    if strategy == "refresh":
        return
    if strategy == "pattern":
        rng = np.random.default_rng(0)
        traffic = rng.normal(size=(64, 3))
        fit_pattern_head(traffic[:4] + 2.0, traffic, 1 / (1 + np.exp(-traffic[:, 0])))
        return
    from models.encoder import Encoder

    net = MatchingNetwork(Encoder(4, hidden=(4,), emb_dim=2))
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    chosen = strategy_from_name(STRATEGY_NAMES[strategy])
    chosen.adapt(net, x, np.array([1, 1, 1, 0, 0, 0], dtype=np.float32), steps=1, seed=0)


def validation_ids(
    cases: Sequence[Case],
    base: SupportSet,
    *,
    max_recent: int = 300,
    min_recent: int = 5,
    n_old_fraud: int = 50,
    n_old_legit: int = 200,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Held-out pool: the newest labelled cases of each class (up to ``max_recent``).

    A class with fewer than ``min_recent`` stream cases cannot be measured on them alone
    (ten fresh frauds and no legit label is the usual start), so that class is filled in
    with a seeded sample of the base support's cases (``n_old_fraud`` / ``n_old_legit``).
    """
    newest = sorted(cases, key=lambda c: -c.seq)
    chosen: list[Case] = []
    rows: list[int] = []
    rng = np.random.default_rng(seed)
    for label, n_old in ((1, n_old_fraud), (0, n_old_legit)):
        recent = [c for c in newest if c.label == label][:max_recent]
        chosen += recent
        if len(recent) < min_recent:
            pool = _rows(base, label, {c.tx_id for c in cases})
            rows += sorted(rng.choice(pool, size=min(n_old, len(pool)), replace=False).tolist())
    x_new, y_new, ids_new = cases_arrays(chosen)
    x = np.concatenate([x_new.reshape(-1, base.x.shape[1]), base.x[rows]])
    y = np.concatenate([y_new, base.y[rows].astype(np.int64)])
    return x, y, ids_new + [base.case_ids[i] for i in rows]


def _without(support: SupportSet, exclude: Collection[str]) -> SupportSet:
    keep = [i for i, c in enumerate(support.case_ids) if c not in exclude]
    ids = [support.case_ids[i] for i in keep]
    return SupportSet.build(support.x[keep], support.y[keep], ids, support.group[keep])


def validate(
    base: Artifact,
    current: Artifact,
    cases: Sequence[Case],
    *,
    strategy: str = "refresh",
    steps: int = 0,
    policy: SupportPolicy | None = None,
    folds: int = 3,
    seed: int = 0,
    traffic: np.ndarray | None = None,
) -> Validation:
    """Cross-validated held-out AP of the candidate procedure and of the current model."""
    x, y, ids = validation_ids(cases, base.support, seed=seed)
    n_fraud, n_legit = int(y.sum()), int(len(y) - y.sum())
    if n_fraud == 0 or n_legit == 0:
        return Validation(float("nan"), float("nan"), n_fraud, n_legit)
    fold = np.array([fold_of(i, folds) for i in ids])
    cand = np.zeros(len(y))
    cur = np.zeros(len(y))
    for f in range(folds):
        rows = np.flatnonzero(fold == f)
        if rows.size == 0:
            continue
        held = {ids[i] for i in rows}
        candidate = adapt(
            base,
            cases,
            strategy=strategy,
            steps=steps,
            policy=policy,
            exclude=held,
            seed=seed,
            traffic=None if traffic is None else traffic[:VALIDATION_TRAFFIC_ROWS],
        )
        cand[rows] = candidate.scorer(base.schema).score_only(x[rows])
        kept = _without(current.support, held)
        scorer = _scorer(
            current.model, current.transform, kept, current.schema, current.pattern_head
        )
        cur[rows] = scorer.score_only(x[rows])
    return Validation(
        float(average_precision(y, cand)), float(average_precision(y, cur)), n_fraud, n_legit
    )
