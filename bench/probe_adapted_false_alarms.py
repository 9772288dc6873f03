"""What a support-refresh candidate does to legit traffic, and what validation sees of it.

An offline probe, not part of ``make bench``. It uses the label→live benchmark's world
(``simulate_stream(n_customers=400, n_days=105, start_day=45, seed=5)``) and its base
model (``train_base_model``). Cases are featurized offline from day 0, without label
history; the stream computes the same vectors (``tests/integration/test_stream_offline_parity.py``).
It prints two tables:

1. **Validation rounds as the benchmark sends them with ``--legit 5``**: each round labels
   the first 5 legit rows after the previous round's last fraud, then the next 5 frauds.
   For each round it shows :func:`~streams.adaptation_support.validate`'s held-out AP
   (candidate / current) three ways: with the stream's grouped policy, without the new
   fraud group, and for the frauds alone.
2. **Alert share at the 0.8 threshold**, current model against candidate, on cold legit
   rows (days 0–1: cards and terminals without history) and warm ones, for the first
   round's 5 frauds and for 10 frauds of the held-out pattern (card testing, day 45 on).

    .venv/bin/python -m bench.probe_adapted_false_alarms [--model DIR]

``--model DIR`` keeps the base model in ``DIR``: trained there the first time (~25 s),
loaded from there afterwards.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from adaptation_helpers import (  # noqa: E402
    features_without_labels,
    simulate_stream,
    train_base_model,
)

from models.artifacts import load_artifact  # noqa: E402
from models.scorer import Scorer  # noqa: E402
from streams.adaptation_support import SupportPolicy, adapt, validate  # noqa: E402
from streams.case_store import Case  # noqa: E402
from streams.settings import Settings  # noqa: E402

#: the product's alert threshold (the setting's default), not a copy of its value
ALERT_AT: float = Settings.model_fields["alert_threshold"].default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="base model folder to keep")
    args = parser.parse_args(argv)
    df, stream = simulate_stream(n_customers=400, n_days=105, start_day=45, seed=5)
    with tempfile.TemporaryDirectory(prefix="probe-") as tmp:
        model = args.model or Path(tmp) / "model"
        if not (model.is_dir() and any(model.iterdir())):
            train_base_model(df, stream.start_day, model)
        base = load_artifact(model)
        current = Scorer.from_artifact(model, top_k=0).score_only
    x = features_without_labels(df).values
    rows = stream.rows
    y, day, scenario = rows.is_fraud.to_numpy(), rows.day.to_numpy(), rows.scenario.to_numpy()
    fraud, legit = np.flatnonzero(y == 1), np.flatnonzero(y == 0)

    def case(i: int, label: int, seq: int) -> Case:
        vector = tuple(float(v) for v in x[i])
        return Case(rows.tx_id.iloc[i], label, vector, float(rows.ts.iloc[i]), 0.0, 0.0,
                    "probe", "base", 0.0, seq)  # fmt: skip

    grouped = SupportPolicy.grouped()
    print("validation rounds (5 legit + 5 frauds each): AP candidate / current")
    cases: list[Case] = []
    start = 0
    for r in range(4):
        picked = [(int(i), 0) for i in legit[legit >= start][:5]]
        picked += [(int(i), 1) for i in fraud[5 * r : 5 * r + 5]]
        start = picked[-1][0] + 1
        cases += [case(i, label, len(cases) + k) for k, (i, label) in enumerate(picked)]
        frauds = [c for c in cases if c.label == 1]
        cells = []
        for name, subset, policy in (
            ("grouped", cases, grouped),
            ("no new group", cases, replace(grouped, group_new=False)),
            ("frauds only", frauds, grouped),
        ):
            v = validate(base, base, subset, strategy="refresh", policy=policy)
            cells.append(f"{name} {v.ap_candidate:.3f} / {v.ap_current:.3f}")
        print(f"  round {r + 1}: " + "; ".join(cells))

    cold = legit[100:1100]
    warm = legit[(day[legit] >= 40) & (day[legit] < 45)]
    after = legit[(day[legit] >= 46) & (day[legit] < 50)]
    new_pattern = np.flatnonzero(scenario == scenario.max())
    # what the traffic sample of the alert-share check sees: every row, frauds included
    traffic_early = np.flatnonzero(day < 2)
    traffic_late = np.flatnonzero((day >= 46) & (day < 50))
    print(f"alert share at score >= {ALERT_AT}: current / candidate")
    for name, labelled in (
        ("first 5 frauds (days 1-2)", fraud[:5]),
        ("10 card-testing frauds (day 45+)", new_pattern[:10]),
    ):
        chosen = [case(int(i), 1, k) for k, i in enumerate(labelled)]
        candidate = adapt(base, chosen, strategy="refresh", policy=grouped)
        score = candidate.scorer(base.schema).score_only
        cells = []
        for part, idx in (
            ("cold legit d0-1", cold),
            ("warm legit d40-44", warm),
            ("legit d46-49", after),
            ("all d0-1", traffic_early),
            ("all d46-49", traffic_late),
        ):
            cells.append(
                f"{part} {np.mean(current(x[idx]) >= ALERT_AT):.4f} / "
                f"{np.mean(score(x[idx]) >= ALERT_AT):.4f}"
            )
        print(f"  {name}: " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
