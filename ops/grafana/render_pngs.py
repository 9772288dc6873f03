"""Draws one PNG per Grafana dashboard from a real Prometheus's data (docs/monitoring/).

Each panel of ops/grafana/dashboards/<name>.json becomes a matplotlib axes placed as
Grafana places it (the 24-column ``gridPos`` grid), with the panel's title and unit;
its PromQL targets are run through ``/api/v1/query_range`` (``/api/v1/query`` for
table panels), with the dashboard variables resolved the way Grafana would.

Usage (a Prometheus that scraped a riskstream worker, e.g. kept by the live test)::

    python ops/grafana/render_pngs.py --url http://127.0.0.1:9090 --minutes 5

``tests/integration/test_monitoring_live.py`` calls :func:`render_all` at the end of its
run when ``MONITORING_PNG_DIR`` is set, which is how the committed PNGs were made.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "ops" / "grafana" / "dashboards"
OUT = ROOT / "docs" / "monitoring"
GRID_COLUMNS = 24
ROW_INCHES = 0.42  # one gridPos row unit (Grafana: 30 px), plus room for axis labels
WIDTH_INCHES = 16.0
DPI = 80


# --- queries ------------------------------------------------------------------------------
def grafana_variables(step_s: float, range_s: float, instance: str = ".*") -> dict[str, str]:
    """Grafana's built-in variables and the dashboards' own for one rendering.

    ``$__rate_interval`` is at least four scrape intervals (Grafana's rule), given here
    as four steps or 10 s, whichever is larger.

    >>> grafana_variables(1.0, 300.0)["$__rate_interval"]
    '10s'
    """
    return {
        "$__rate_interval": f"{max(10, int(4 * step_s))}s",
        "$__interval": f"{max(1, int(step_s))}s",
        "$__range": f"{max(1, int(range_s))}s",
        "$instance": instance,
    }


def resolve(expr: str, variables: dict[str, str]) -> str:
    """Replaces variables, longest names first (so ``$__range`` is not cut by ``$__r``).

    >>> resolve('rate(x{i=~"$instance"}[$__rate_interval])',
    ...         grafana_variables(1.0, 60.0, "w1"))
    'rate(x{i=~"w1"}[10s])'
    """
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(name, variables[name])
    return expr


def unresolved(expr: str) -> list[str]:
    """Variable references left in an expression (``$name`` or ``${name}``).

    >>> unresolved('label_replace(x[$__rate_interval], "a", "$1", "b", "(.*)") + ${other}')
    ['$__rate_interval', '${other}']
    """
    return re.findall(r"\$\{?[A-Za-z_]\w*\}?", expr)  # not regex groups like $1


def legend(fmt: str, labels: dict[str, str]) -> str:
    """Grafana's ``{{label}}`` legend format filled from a series' labels.

    >>> legend("{{instance}} scored", {"instance": "w1"})
    'w1 scored'
    """
    filled = ""
    if fmt and fmt != "__auto":
        filled = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)
    if filled.strip():
        return filled
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    return ",".join(f"{k}={v}" for k, v in shown.items()) or "value"


class Prometheus:
    """The two query endpoints of a Prometheus server."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _get(self, path: str, params: dict[str, str]) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=15) as r:  # noqa: S310
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        params = {"query": expr, "start": f"{start}", "end": f"{end}", "step": f"{step}"}
        data = self._get("/api/v1/query_range", params)
        return list(data["result"])

    def instant(self, expr: str, at: float) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query", {"query": expr, "time": f"{at}"})
        return list(data["result"]) if data["resultType"] in {"vector", "matrix"} else []


# --- units --------------------------------------------------------------------------------
def unit_formatter(unit: str) -> tuple[Callable[[float], str], str]:
    """A value formatter for a Grafana unit, and the unit's label for the title.

    >>> fmt, label = unit_formatter("s"); fmt(0.0125), label
    ('12.5 ms', 'seconds')
    >>> fmt, label = unit_formatter("suffix: tx/s"); fmt(1234.0), label
    ('1.23k', 'tx/s')
    """
    if unit == "s":
        return _seconds, "seconds"
    if unit == "percentunit":
        return (lambda v: f"{100 * v:.3g} %"), "%"
    if unit == "bytes":
        return (lambda v: f"{v / 2**20:.4g} MiB"), "bytes"
    if unit.startswith("suffix:"):
        return _short, unit.split(":", 1)[1].strip()
    return _short, ""


def _short(v: float) -> str:
    if not math.isfinite(v):
        return "–"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _seconds(v: float) -> str:
    if not math.isfinite(v):
        return "–"
    if abs(v) < 1e-3:
        return f"{v * 1e6:.3g} µs"
    if abs(v) < 1:
        return f"{v * 1e3:.3g} ms"
    return f"{v:.3g} s"


# --- drawing ------------------------------------------------------------------------------
Series = tuple[str, list[float], list[float]]  # legend, times (s since start), values


def panel_series(
    prom: Prometheus, panel: dict[str, Any], variables: dict[str, str], window: tuple[float, ...]
) -> list[Series]:
    start, end, step = window
    out: list[Series] = []
    for target in panel.get("targets", []):
        for result in prom.range(resolve(target["expr"], variables), start, end, step):
            times = [float(t) - start for t, _ in result["values"]]
            values = [float(v) for _, v in result["values"]]
            out.append((legend(target.get("legendFormat", ""), result["metric"]), times, values))
    return out


def _draw_timeseries(ax: Any, series: list[Series], fmt: Callable[[float], str]) -> None:
    for name, times, values in series[:10]:
        ax.plot(times, values, linewidth=1.2, label=name[:40])
    ax.yaxis.set_major_formatter(_tick(fmt))
    if series:
        ax.legend(fontsize=6, loc="upper left", frameon=False, ncol=2)


def _draw_stat(ax: Any, series: list[Series], fmt: Callable[[float], str]) -> None:
    last = next((v for _, _, vs in series[:1] for v in reversed(vs) if math.isfinite(v)), math.nan)
    if series:
        _, times, values = series[0]
        ax.fill_between(times, values, alpha=0.15, color="tab:green")
    ax.text(0.5, 0.45, fmt(last), ha="center", va="center", fontsize=20, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_heatmap(ax: Any, series: list[Series]) -> None:
    """Cumulative ``le`` buckets per interval, drawn as per-bin counts (log colour)."""
    import numpy as np

    bounded = sorted(
        (float(name), dict(zip(ts, vs, strict=True)))
        for name, ts, vs in series
        if name.replace(".", "", 1).isdigit()
    )
    if not bounded:
        return
    times = sorted({t for _, points in bounded for t in points})
    cumulative = np.array([[points.get(t, 0.0) for t in times] for _, points in bounded])
    cumulative = np.nan_to_num(cumulative)
    per_bin = np.diff(cumulative, axis=0, prepend=0.0).clip(min=0)
    edges = [0.0] + [le for le, _ in bounded]
    centers = [(lo + hi) / 2 for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    ax.pcolormesh(times, centers, np.log1p(per_bin), shading="nearest", cmap="Oranges")
    ax.set_ylabel("score", fontsize=7)


def _draw_state_timeline(ax: Any, series: list[Series], steps: list[dict[str, Any]]) -> None:
    """One row per series; the panel's threshold colours when it has some, else purple."""

    def color(v: float) -> str:
        if len(steps) < 2:
            return "tab:purple"
        chosen = steps[0]["color"]
        for s in steps[1:]:
            if v >= s["value"]:
                chosen = s["color"]
        return {"green": "tab:green", "red": "tab:red", "orange": "tab:orange"}.get(chosen, chosen)

    shown = series[:8]
    for row, (_, times, values) in enumerate(shown):
        bars: dict[str, list[tuple[float, float]]] = {}
        for t, v in zip(times, values, strict=True):
            if math.isfinite(v):
                bars.setdefault(color(v), []).append((t, 1.0))
        for c, spans in bars.items():
            ax.broken_barh(spans, (row - 0.4, 0.8), color=c, linewidth=0)
    ax.set_yticks(range(len(shown)), [name[:24] for name, _, _ in shown], fontsize=6)


def _draw_table(
    ax: Any, prom: Prometheus, panel: dict[str, Any], variables: dict[str, str], at: float
) -> None:
    """Label columns of every target merged per instance (Grafana's merge transformation);
    a ``time() - x_start_time_seconds`` target becomes an ``uptime`` column."""
    rows: dict[str, dict[str, str]] = {}
    for target in panel.get("targets", []):
        uptime = target["expr"].startswith("time() -")
        for result in prom.instant(resolve(target["expr"], variables), at):
            labels = result["metric"]
            row = rows.setdefault(labels.get("instance", "?"), {})
            row |= {k: v for k, v in labels.items() if k not in {"__name__", "job"}}
            if uptime:
                row["uptime"] = _seconds(float(result["value"][1]))
    ax.axis("off")
    if not rows:
        return
    columns = sorted({k for r in rows.values() for k in r})[:9]
    cells = [[r.get(c, "")[:28] for c in columns] for r in rows.values()]
    table = ax.table(cellText=cells, colLabels=columns, loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(6)


def _tick(fmt: Callable[[float], str]) -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: fmt(v))


def render_dashboard(
    prom: Prometheus, board: dict[str, Any], start: float, end: float, step: float, out: Path
) -> Path:
    """Draw ``board`` over ``[start, end]`` into the PNG ``out``; returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variables = grafana_variables(step, end - start)
    panels = board["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(WIDTH_INCHES, rows * ROW_INCHES + 0.6), dpi=DPI)
    grid = fig.add_gridspec(
        rows, GRID_COLUMNS, hspace=3.0, wspace=1.6, left=0.05, right=0.995, top=0.95, bottom=0.04
    )
    for panel in panels:
        pos = panel["gridPos"]
        ax = fig.add_subplot(grid[pos["y"] : pos["y"] + pos["h"], pos["x"] : pos["x"] + pos["w"]])
        fmt, unit_label = unit_formatter(panel["fieldConfig"]["defaults"].get("unit", ""))
        title = panel["title"] + (f" [{unit_label}]" if unit_label else "")
        ax.set_title(title, fontsize=8, loc="left")
        ax.tick_params(labelsize=6)
        kind = panel["type"]
        if kind == "table":
            _draw_table(ax, prom, panel, variables, end)
            continue
        series = panel_series(prom, panel, variables, (start, end, step))
        if kind == "stat":
            _draw_stat(ax, series, fmt)
        elif kind == "heatmap":
            _draw_heatmap(ax, series)
        elif kind == "state-timeline":
            _draw_state_timeline(
                ax, series, panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            )
        else:
            _draw_timeseries(ax, series, fmt)
        if not series:
            ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes, color="grey")
        if kind != "stat":
            ax.set_xlim(0, end - start)
            ax.set_xlabel("seconds", fontsize=6)
    fig.suptitle(
        f"{board['title']} — {board.get('description', '')}", fontsize=10, x=0.01, ha="left"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return out


def render_all(
    url: str, start: float, end: float, out_dir: Path = OUT, step: float = 1.0
) -> list[Path]:
    """One PNG per dashboard in ops/grafana/dashboards, named after its JSON file."""
    prom = Prometheus(url)
    written = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        written.append(
            render_dashboard(prom, board, start, end, step, out_dir / f"{path.stem}.png")
        )
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", required=True, help="Prometheus base URL")
    parser.add_argument("--minutes", type=float, default=5.0, help="window ending now")
    parser.add_argument("--step", type=float, default=1.0, help="query step in seconds")
    parser.add_argument("--out", type=Path, default=OUT, help="output folder")
    args = parser.parse_args(argv)
    end = time.time()
    for path in render_all(args.url, end - 60 * args.minutes, end, args.out, args.step):
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
