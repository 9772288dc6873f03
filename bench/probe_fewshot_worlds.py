"""Few-shot adaptation across simulated worlds, offline: the stream's stories without Kafka.

An offline probe, not part of ``make bench``. Two kinds of world, each replayed as the
adaptation agent sees it, through the functions the agent runs
(:func:`~streams.adaptation_support.validate`, :func:`~streams.adaptation_support.adapt`,
:func:`~streams.adaptation_support.alert_shares`) against a sample of the last week of
traffic before the labels:

* ``e2e:SEED`` is the world of ``tests/integration/test_adaptation_e2e.py`` (1,000 cards,
  card testing from day 38, 3 cards a day) with its base model, meta-trained here on the
  days before the pattern (kept in ``--cache``); the analysts label 10 cases spread over
  the pattern's first three days, and everything after those days is scored;
* ``demo:SEED`` is ``make demo``'s world (``streams.demo.run.DemoConfig``: the shipped
  model, card testing from day 36, 8 cards a day); the analyst labels the first 10 cases
  of the pattern (they are one card's burst) and 10 legit ones, once 20 were scored; the
  transactions from 300 after that point on are scored (the swap takes ~0.3 s at 1,000/s).

The stream scores as the model scores offline (the e2e test's
``test_the_stream_scores_as_the_model_scores_offline``), so these are the stream's figures
up to the traffic sample. For each world and variant it prints recall on the new pattern
at 1 % FPR (legit = every genuine transaction scored), and at the alert threshold with the
FPR there. A variant is a strategy, optionally with pattern-head options:
``pattern:pattern_weight=0.5,c=0.1`` (see ``PATTERN_HEAD_OPTIONS``), and ``+nocal`` turns
the calendar rule (:func:`~streams.adaptation_support.undetermined_flags`) off.

    .venv/bin/python -m bench.probe_fewshot_worlds [--worlds e2e:11 demo:7 ...]
        [--variants refresh pattern pattern:c=0.1 ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from adaptation_helpers import (  # noqa: E402
    features_without_labels,
    simulate_stream,
    train_base_model,
)

import streams.adaptation_support as support  # noqa: E402
from models.artifacts import Artifact, load_artifact  # noqa: E402
from models.datasets import SimulatorConfig, simulate  # noqa: E402
from models.datasets.handbook import HANDBOOK_SCENARIOS  # noqa: E402
from models.datasets.scenarios import CardTesting  # noqa: E402
from models.evaluation.metrics import recall_at_fpr  # noqa: E402
from streams.case_store import Case  # noqa: E402
from streams.demo.run import NEW_SCENARIO, DemoConfig  # noqa: E402
from streams.runtime import DEFAULT_ARTIFACT_DIR  # noqa: E402
from streams.settings import Settings  # noqa: E402

N_LABELS = 10
E2E_CARDS = 1000  # the e2e test's world
SWAP_AFTER = 300  # transactions scored by the old model after the labels, in the demo
FIELDS = Settings.model_fields
ALERT_AT: float = FIELDS["alert_threshold"].default
TRAFFIC_ROWS: int = FIELDS["adapt_traffic_rows"].default
TRAFFIC_DAYS: float = FIELDS["adapt_traffic_days"].default
GROWTH: float = FIELDS["adapt_max_alert_growth"].default


@dataclass(frozen=True)
class World:
    """A world at the moment of the labels, and what is scored after them."""

    name: str
    base: Artifact
    cases: list[Case]
    traffic: np.ndarray  # raw vectors of the last week before the labels
    x_new: np.ndarray  # the new pattern's transactions after the labels (not labelled)
    x_legit: np.ndarray  # genuine transactions after the labels


def _case(tx_id: str, label: int, x: np.ndarray, ts: float, seq: int, card: str) -> Case:
    vector = tuple(float(v) for v in x)
    return Case(tx_id, label, vector, ts, 0.0, 0.0, "probe", "base", 0.0, seq, card)


def _traffic(x: np.ndarray, ts: np.ndarray, until: int, seed: int) -> np.ndarray:
    """A random sample of the rows before ``until`` within the last week of event time."""
    recent = np.flatnonzero(ts[:until] > ts[until - 1] - TRAFFIC_DAYS * 86_400)
    rows = np.random.default_rng(seed).permutation(recent)[:TRAFFIC_ROWS]
    return x[rows].astype(np.float32)


def e2e_world(seed: int, cache: Path) -> World:
    """The e2e test's world of ``seed`` (its base model trained in ``cache`` once)."""
    df, stream = simulate_stream(n_customers=E2E_CARDS, seed=seed)
    model = cache / f"e2e-seed{seed}"
    if not (model.is_dir() and any(model.iterdir())):
        train_base_model(df, stream.start_day, model)
    rows = stream.rows
    x = features_without_labels(df).values.astype(np.float32)
    ts = rows.ts.to_numpy()
    phase1 = (rows.day < stream.start_day + 3).to_numpy()
    seen_new = np.flatnonzero(phase1 & (rows.scenario.to_numpy() == NEW_SCENARIO))
    labelled = seen_new[np.linspace(0, len(seen_new) - 1, N_LABELS).round().astype(int)]
    cards = rows.card_id.to_numpy()
    cases = [
        _case(rows.tx_id.iloc[i], 1, x[i], ts[i], k + 1, cards[i]) for k, i in enumerate(labelled)
    ]
    new = ~phase1 & (rows.scenario.to_numpy() == NEW_SCENARIO)
    new[labelled] = False
    legit = ~phase1 & (rows.is_fraud.to_numpy() == 0)
    traffic = _traffic(x, ts, int(phase1.sum()), seed)
    return World(f"e2e:{seed}", load_artifact(model), cases, traffic, x[new], x[legit])


def demo_world(seed: int) -> World:
    """``make demo``'s world with simulation seed ``seed`` (7 is the demo's)."""
    c = DemoConfig(seed=seed)
    pattern = CardTesting(start_day=c.new_pattern_day, cards_per_day=c.new_pattern_cards_per_day)
    frame = simulate(
        SimulatorConfig(
            n_customers=c.customers,
            n_terminals=c.terminals,
            n_days=c.warmup_days + c.days,
            seed=seed,
            scenarios=(*HANDBOOK_SCENARIOS, pattern),
        )
    )
    x = features_without_labels(frame).values.astype(np.float32)
    scenario, fraud = frame.scenario.to_numpy(), frame.is_fraud.to_numpy()
    ts = frame.ts.astype("int64").to_numpy() / 1e9
    ids = frame.tx_id.astype(str).to_numpy()
    new_rows = np.flatnonzero(scenario == NEW_SCENARIO)
    at = int(new_rows[2 * c.labels - 1]) + 1  # the demo labels once 20 were scored
    recent = np.arange(max(0, at - 5000), at)
    labelled = [(int(i), 1) for i in new_rows[: c.labels]]
    labelled += [(int(i), 0) for i in recent[scenario[recent] == 0][: c.labels]]
    cards = frame.card_id.astype(str).to_numpy()
    cases = [_case(ids[i], y, x[i], ts[i], k + 1, cards[i]) for k, (i, y) in enumerate(labelled)]
    after = np.arange(len(x)) >= at + SWAP_AFTER
    new = after & (scenario == NEW_SCENARIO)
    legit = after & (fraud == 0)
    base = load_artifact(REPO / DEFAULT_ARTIFACT_DIR)
    return World(f"demo:{seed}", base, cases, _traffic(x, ts, at, seed), x[new], x[legit])


@contextmanager
def variant_options(variant: str) -> Iterator[str]:
    """The strategy of ``variant``, with its pattern-head options set while inside."""
    name, _, opts = variant.partition(":")
    saved = dict(support.PATTERN_HEAD_OPTIONS), dict(support.CALENDAR_CYCLES_S)
    try:
        for item in filter(None, opts.split(",")):
            if item == "+nocal":
                support.CALENDAR_CYCLES_S.clear()
                continue
            key, _, value = item.partition("=")
            support.PATTERN_HEAD_OPTIONS[key] = type(saved[0][key])(float(value))
        yield name
    finally:
        support.PATTERN_HEAD_OPTIONS.clear()
        support.PATTERN_HEAD_OPTIONS.update(saved[0])
        support.CALENDAR_CYCLES_S.clear()
        support.CALENDAR_CYCLES_S.update(saved[1])


def evaluate(w: World, variant: str) -> dict[str, object]:
    """Adapt ``w``'s base model as the agent would with ``variant``; recall after the swap."""
    policy = support.SupportPolicy.grouped()
    with variant_options(variant) as strategy:
        kw = {"strategy": strategy, "policy": policy, "traffic": w.traffic}
        check = support.validate(w.base, w.base, w.cases, **kw)  # type: ignore[arg-type]
        cand = support.adapt(w.base, w.cases, **kw)  # type: ignore[arg-type]
    shares = support.alert_shares(cand, w.base, w.traffic, ALERT_AT)
    scorer = cand.scorer(w.base.schema)
    s_new, s_legit = scorer.score_only(w.x_new), scorer.score_only(w.x_legit)
    y = np.r_[np.ones(len(s_new)), np.zeros(len(s_legit))]
    return {
        "recall_at_1pct_fpr": round(recall_at_fpr(y, np.r_[s_new, s_legit]), 3),
        "recall_at_threshold": round(float(np.mean(s_new >= ALERT_AT)), 3),
        "fpr_at_threshold": round(float(np.mean(s_legit >= ALERT_AT)), 4),
        "published": bool(check.accepts() and (shares is None or shares.accepts(GROWTH))),
        "n_new": len(s_new),
        "fraud_cards": len({c.card_id for c in w.cases if c.label == 1}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    worlds = [f"e2e:{s}" for s in range(11, 17)] + [f"demo:{s}" for s in (7, 8, 9)]
    parser.add_argument("--worlds", nargs="+", default=worlds)
    parser.add_argument("--variants", nargs="+", default=["refresh", "pattern"])
    cache = Path(tempfile.gettempdir()) / "riskstream-fewshot-probe"
    parser.add_argument("--cache", type=Path, default=cache, help="base models of e2e worlds")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, dict[str, object]]] = {}
    for name in args.worlds:
        kind, _, seed = name.partition(":")
        w = e2e_world(int(seed), args.cache) if kind == "e2e" else demo_world(int(seed))
        results[name] = {v: evaluate(w, v) for v in args.variants}
        cells = [
            f"{v} {r['recall_at_1pct_fpr']:.2f} ({r['recall_at_threshold']:.2f} at "
            f"FPR {r['fpr_at_threshold']:.3f}{'' if r['published'] else ', refused'})"
            for v, r in results[name].items()
        ]
        cards = next(iter(results[name].values()))["fraud_cards"]
        print(f"{name:>8} ({cards} cards): " + "; ".join(cells), flush=True)
    print("recall at 1 % FPR (mean over worlds; worlds >= 0.8)")
    for kind in sorted({n.partition(":")[0] for n in args.worlds}):
        names = [n for n in args.worlds if n.startswith(kind + ":")]
        for v in args.variants:
            r = [float(results[n][v]["recall_at_1pct_fpr"]) for n in names]  # type: ignore[arg-type]
            print(f"  {kind:>4} {v:<40} " + " ".join(f"{a:.2f}" for a in r)
                  + f"  mean {np.mean(r):.3f}  {sum(a >= 0.8 for a in r)}/{len(r)}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
