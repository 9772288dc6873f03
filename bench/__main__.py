"""``make bench``: run every benchmark, print one table, write ``bench/results/summary.json``.

Each ``bench/bench_*.py`` module has a ``main()`` that prints its own table and writes
``bench/results/<name>.json``. They run one after another in their own processes (so one
benchmark's threads, memory or event loop never leak into the next); then the figures
named by the project's summary keys are gathered from those files. Nothing here asserts
on time: a benchmark measures.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# The summary keys of issue 7, in the order they are printed.
SUMMARY_KEYS = (
    "scored_tx_per_s_1_worker",
    "scored_tx_per_s_2_workers",
    "raw_consume_tx_per_s",
    "ratio_to_raw",
    "latency_ms_at_1k",
    "latency_ms_at_5k",
    "score_us_per_tx",
    "label_to_live_s",
    "simulator_tx_per_s",
    "worker_rss_mb_after_1m_tx",
)


def _modules(only: list[str]) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    return [n for n in names if not only or any(o in n for o in only)]


def _run(module: str) -> tuple[int, float]:
    started = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    proc = subprocess.run([sys.executable, "-m", f"bench.{module}"], env=env, check=False)  # noqa: S603
    return proc.returncode, time.perf_counter() - started


def _gather() -> dict[str, Any]:
    """The summary keys found at the top level (or under ``summary``) of any result file."""
    found: dict[str, Any] = {}
    for path in sorted(RESULTS.glob("*.json")):
        if path.name == "summary.json":
            continue
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        for scope in (data, data.get("summary", {})):
            if isinstance(scope, dict):
                for key in SUMMARY_KEYS:
                    if key in scope:
                        found[key] = {"value": scope[key], "source": path.name}
    return found


def main(argv: list[str]) -> int:
    console = Console()
    RESULTS.mkdir(exist_ok=True)
    runs: dict[str, dict[str, Any]] = {}
    for module in _modules(argv):
        console.rule(f"[bold]{module}")
        code, seconds = _run(module)
        runs[module] = {"exit_code": code, "seconds": round(seconds, 1)}
    figures = _gather()
    summary = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "runs": runs,
        **{key: figures[key]["value"] for key in SUMMARY_KEYS if key in figures},
        "missing": [key for key in SUMMARY_KEYS if key not in figures],
    }
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = Table(title="riskstream benchmarks (bench/results/summary.json)")
    table.add_column("figure")
    table.add_column("value")
    table.add_column("from")
    for key in SUMMARY_KEYS:
        if key in figures:
            value = figures[key]["value"]
            text = json.dumps(value) if isinstance(value, dict | list) else str(value)
            table.add_row(key, text, figures[key]["source"])
        else:
            table.add_row(key, "[yellow]not measured[/]", "")
    console.print(table)
    failed = [m for m, r in runs.items() if r["exit_code"] != 0]
    if failed:
        console.print(f"[red]benchmarks that failed:[/] {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
