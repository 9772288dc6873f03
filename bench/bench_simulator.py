"""Reference-scale simulator timing and counts next to the handbook's reference run.

Run: ``.venv/bin/python -m bench.bench_simulator [--repeats N]``. Prints a table and
writes ``bench/results/simulator.json``. Never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from bench.stats import spread
from models.datasets import (
    HANDBOOK_SCENARIOS,
    SCENARIO_NAMES,
    SimulatorConfig,
    new_scenarios,
    simulate,
)
from models.datasets.replay import from_simulation

RESULTS = Path(__file__).resolve().parent / "results" / "simulator.json"
# ANCHORS.md: 5,000 customers, 10,000 terminals, 183 days from 2018-04-01.
HANDBOOK = {"transactions": 1_754_155, "1": 978, "2": 9_099, "3": 4_604, "fraud_pct": 0.837}
GOAL_SECONDS = 60.0


def _timed(config: SimulatorConfig, repeats: int) -> tuple[pd.DataFrame, list[float]]:
    times = []
    frame = pd.DataFrame()
    for _ in range(repeats):
        started = time.perf_counter()
        frame = simulate(config)
        times.append(time.perf_counter() - started)
    return frame, times


def _counts(frame: pd.DataFrame) -> dict[str, Any]:
    per = frame.scenario.value_counts().sort_index()
    out: dict[str, Any] = {"transactions": len(frame)}
    out.update({str(code): int(n) for code, n in per.items() if code != 0})
    out["fraud_pct"] = round(100 * float(frame.is_fraud.mean()), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median is kept)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = SimulatorConfig(seed=args.seed)
    frame, times = _timed(config, args.repeats)
    seconds = sorted(times)[len(times) // 2]
    started = time.perf_counter()
    wire = from_simulation(frame)
    wire_seconds = time.perf_counter() - started
    counts = _counts(frame)

    extended = replace(config, scenarios=HANDBOOK_SCENARIOS + new_scenarios(start_day=0))
    ext_frame, ext_times = _timed(extended, 1)
    ext_counts = _counts(ext_frame)

    table = Table(title=f"simulator at reference scale (seed {args.seed})")
    table.add_column("", no_wrap=True)
    for column in ("handbook", "riskstream", "difference", "+ scenarios 4, 5"):
        table.add_column(column, justify="right", no_wrap=True)
    for key in ("transactions", "1", "2", "3", "4", "5", "fraud_pct"):
        label = key if not key.isdigit() else f"{key} {SCENARIO_NAMES[int(key)]}"
        ref, ours = HANDBOOK.get(key), counts.get(key)
        diff = f"{100 * (ours - ref) / ref:+.1f} %" if ref and ours is not None else ""
        table.add_row(label, f"{ref:,}" if ref else "-", f"{ours:,}" if ours else "-", diff,
                      f"{ext_counts.get(key, 0):,}")  # fmt: skip
    rate = len(frame) / seconds
    table.add_row("seconds (median)", "", f"{seconds:.2f}", f"goal < {GOAL_SECONDS:.0f}",
                  f"{ext_times[0]:.2f}")  # fmt: skip
    table.add_row("tx/s", "", f"{rate:,.0f}", "", "")
    table.add_row("to wire dicts (s)", "", f"{wire_seconds:.2f}", "", "")
    Console(width=max(Console().width, 110)).print(table)  # no truncated labels in logs

    result = {
        "simulator_seconds": round(seconds, 3),
        "simulator_seconds_all": [round(t, 3) for t in times],
        "simulator_tx_per_s": spread(
            [len(frame) / t for t in times],
            command=f"python -m bench.bench_simulator --repeats {args.repeats}",
            digits=0,
        ),
        "wire_table_seconds": round(wire_seconds, 3),
        "wire_rows": len(wire),
        "counts": counts,
        "handbook_counts": HANDBOOK,
        "relative_difference": {
            k: round((counts[k] - v) / v, 4) for k, v in HANDBOOK.items() if k in counts
        },
        "with_new_scenarios": {"counts": ext_counts, "seconds": round(ext_times[0], 3)},
        "config": {
            "n_customers": config.n_customers,
            "n_terminals": config.n_terminals,
            "n_days": config.n_days,
            "seed": config.seed,
        },  # fmt: skip
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
