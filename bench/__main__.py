"""``make bench``: run every benchmark, print one table, write ``bench/results/summary.json``.

Each ``bench/bench_*.py`` module has a ``main()`` that prints its own table and writes
``bench/results/<name>.json``. They run one after another in their own processes (so one
benchmark's threads, memory or event loop never leak into the next); then the figures
named by the project's summary keys are gathered from those files. Each figure is the
median of at least 3 repeats with its spread (``median``, ``min``, ``max``, ``iqr``,
``runs``; :mod:`bench.stats`) and the ``command`` that measures it. Nothing here asserts
on time: a benchmark measures.

    .venv/bin/python -m bench [name ...]   # e.g. ``python -m bench pipeline``
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

# The summary keys of issue 7, in the order they are printed (and the Python score path's
# rate, the before of streams/native, measured in the same run).
SUMMARY_KEYS = (
    "scored_tx_per_s_1_worker",
    "scored_tx_per_s_2_workers",
    "raw_consume_tx_per_s",
    "ratio_to_raw",
    "python_path_tx_per_s_1_worker",
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
    """The summary keys found at the top level (or under ``summary``) of any result file,
    each with the command that measured it."""
    found: dict[str, Any] = {}
    # only each module's own file: partial or before/after runs write other names
    for path in sorted(RESULTS / f"{m.removeprefix('bench_')}.json" for m in _modules([])):
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        command = data.get("command") or f"python -m bench.{path.stem}"
        for scope in (data, data.get("summary", {})):
            if isinstance(scope, dict):
                for key in SUMMARY_KEYS:
                    if key in scope:
                        value = scope[key]
                        if isinstance(value, dict):
                            value = {**value, "command": value.get("command", command)}
                        found[key] = {"value": value, "source": path.name}
    return found


def _num(x: float) -> str:
    """A figure with the digits that matter: 242,101 / 27.4 / 0.0741."""
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


def _text(value: Any) -> str:
    """``median [min-max]`` of a figure (of each sub-figure: latency percentiles, batches)."""
    if isinstance(value, dict) and "median" in value:
        return f"{_num(value['median'])} [{_num(value['min'])}-{_num(value['max'])}]"
    if isinstance(value, dict):
        parts = [f"{k} {_text(v)}" for k, v in value.items() if isinstance(v, dict)]
        if parts:
            return "; ".join(parts)
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def main(argv: list[str]) -> int:
    console = Console()
    RESULTS.mkdir(exist_ok=True)
    started, load_start = time.perf_counter(), os.getloadavg()
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
            # the build matters: a pyenv build without PGO/LTO ran the worker ~19 % slower
            "python_executable": os.path.realpath(sys.executable),
            "load_average_at_start": [round(x, 2) for x in load_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "command": "python -m bench " + " ".join(argv),
        "seconds": round(time.perf_counter() - started, 1),
        "runs": runs,
        **{key: figures[key]["value"] for key in SUMMARY_KEYS if key in figures},
        "missing": [key for key in SUMMARY_KEYS if key not in figures],
    }
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = Table(title="riskstream benchmarks (bench/results/summary.json)")
    table.add_column("figure")
    table.add_column("median [min-max] of the repeats")
    table.add_column("from")
    for key in SUMMARY_KEYS:
        if key in figures:
            table.add_row(key, _text(figures[key]["value"]), figures[key]["source"])
        else:
            table.add_row(key, "[yellow]not measured[/]", "")
    console.print(table)
    failed = [m for m, r in runs.items() if r["exit_code"] != 0]
    if failed:
        console.print(f"[red]benchmarks that failed:[/] {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
