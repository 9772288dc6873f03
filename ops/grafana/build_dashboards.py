"""Writes the riskstream Grafana dashboards (ops/grafana/dashboards/*.json).

The JSON files are what Grafana provisions; this script is how they are kept uniform
(datasource uid, layout, units). Edit the panels here, then run
``python ops/grafana/build_dashboards.py``; tests/unit/test_dashboards.py fails when the
committed JSON and this script disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "prometheus"}
W = 'instance=~"$instance"'  # the worker selector every panel honours
WJ = 'job="riskstream-worker", ' + W
RATE = "$__rate_interval"
LATENCY_BUDGET_S = 0.025  # ANCHORS.md: p99 produce->score <= 25 ms
LABEL_TO_LIVE_BUDGET_S = 2.0  # ANCHORS.md: label -> live in every worker, p95 <= 2 s


def q(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "") -> dict[str, Any]:
    target: dict[str, Any] = {"expr": expr, "legendFormat": legend or "__auto"}
    target |= {"instant": True, "range": False} if instant else {"range": True}
    if fmt:
        target["format"] = fmt
    return target


def quantile(phi: float, metric: str, window: str = RATE, sel: str = W) -> str:
    return f"histogram_quantile({phi}, sum by (le) (rate({metric}_bucket{{{sel}}}[{window}])))"


def rate(metric: str, by: str = "") -> str:
    """Per-second rate of ``metric`` over the selected workers, summed (``by`` groups)."""
    return f"sum{' ' + by + ' ' if by else ''}(rate({metric}{{{W}}}[{RATE}]))"


def inc(metric: str, by: str) -> str:
    """Events of ``metric`` per interval, grouped by the label ``by``."""
    return f"sum by ({by}) (increase({metric}{{{W}}}[{RATE}]))"


def panel(
    kind: str,
    title: str,
    desc: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "short",
    w: int = 12,
    h: int = 8,
    thresholds: list[tuple[float | None, str]] | None = None,
    custom: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    steps = [{"color": c, "value": v} for v, c in (thresholds or [(None, "green")])]
    defaults: dict[str, Any] = {
        "unit": unit,
        "thresholds": {"mode": "absolute", "steps": steps},
        "color": {"mode": "thresholds" if kind in {"stat", "bargauge"} else "palette-classic"},
    }
    if custom:
        defaults["custom"] = custom
    out = {
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options or {},
        "targets": [{"refId": chr(65 + i), "datasource": DS, **t} for i, t in enumerate(targets)],
    }
    return out | (extra or {})


def stat(title: str, desc: str, expr: str, unit: str, **kw: Any) -> dict[str, Any]:
    opts = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value", "graphMode": "area"}
    return panel("stat", title, desc, [q(expr)], unit=unit, w=4, h=4, options=opts, **kw)


def series(title: str, desc: str, targets: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    kw.setdefault("options", {"legend": {"displayMode": "list", "placement": "bottom"}})
    kw.setdefault("custom", {"fillOpacity": 10, "lineWidth": 1, "spanNulls": False})
    return panel("timeseries", title, desc, targets, **kw)


def budget_line(threshold: float) -> dict[str, Any]:
    """Draws ``threshold`` as a red dashed line on a time series panel."""
    return {
        "thresholds": [(None, "green"), (threshold, "red")],
        "custom": {"fillOpacity": 0, "lineWidth": 1, "thresholdsStyle": {"mode": "dashed"}},
    }


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gives panels ids and packs them left to right, top to bottom on the 24-column grid."""
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["id"], p["gridPos"] = i, {"x": x, "y": y, "w": w, "h": h}
        x, row_h = x + w, max(row_h, h)
    return panels


def dashboard(uid: str, title: str, desc: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    variable = {
        "name": "instance",
        "label": "Worker",
        "type": "query",
        "datasource": DS,
        "definition": "label_values(riskstream_worker_info, instance)",
        "query": {"query": "label_values(riskstream_worker_info, instance)", "refId": "instance"},
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }
    swaps = {
        "name": "Model swaps",
        "datasource": DS,
        "enable": True,
        "iconColor": "purple",
        "expr": f"changes(riskstream_model_loaded_timestamp_seconds{{{W}}}[1m]) > 0",
        "titleFormat": "model swap on {{instance}}",
        "step": "30s",
    }
    drift = {
        "name": "Drift alarms",
        "datasource": DS,
        "enable": True,
        "iconColor": "orange",
        "expr": f"sum by (detector) (increase(riskstream_drift_alarms_total{{{W}}}[1m])) > 0",
        "titleFormat": "drift: {{detector}}",
        "step": "30s",
    }
    return {
        "uid": uid,
        "title": title,
        "description": desc,
        "tags": ["riskstream"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-30m", "to": "now"},
        "links": [{"type": "dashboards", "tags": ["riskstream"], "title": "riskstream"}],
        "annotations": {"list": [swaps, drift]},
        "templating": {"list": [variable]},
        "panels": layout(panels),
    }


def overview() -> dict[str, Any]:
    panels = [
        stat(
            "Scored",
            "Transactions scored per second.",
            rate("riskstream_transactions_scored_total"),
            "suffix: tx/s",
        ),
        stat(
            "p99 produce→score",
            "Over the 25 ms budget turns red.",
            quantile(0.99, "riskstream_produce_to_score_latency_seconds"),
            "s",
            thresholds=[(None, "green"), (LATENCY_BUDGET_S, "red")],
        ),
        stat(
            "Alerts",
            "Alert records per minute.",
            rate("riskstream_alerts_total") + " * 60",
            "suffix: /min",
        ),
        stat(
            "Dead-lettered",
            "Share of consumed messages sent to the DLQ.",
            f"{rate('riskstream_dead_letter_total')} / "
            f"clamp_min({rate('riskstream_transactions_consumed_total')}, 1e-9)",
            "percentunit",
            thresholds=[(None, "green"), (0.01, "red")],
        ),
        stat(
            "Consumer lag",
            "Messages waiting in Kafka, all partitions.",
            f"sum(riskstream_consumer_lag_messages{{{W}}})",
            "short",
            thresholds=[(None, "green"), (1000, "orange")],
        ),
        stat(
            "Workers up",
            "Workers Prometheus scrapes successfully.",
            f"sum(up{{{WJ}}})",
            "short",
            thresholds=[(None, "red"), (1, "green")],
        ),
        series(
            "Throughput",
            "Messages consumed and transactions scored per second, per worker.",
            [
                q(
                    rate("riskstream_transactions_consumed_total", "by (instance)"),
                    "{{instance}} consumed",
                ),
                q(
                    rate("riskstream_transactions_scored_total", "by (instance)"),
                    "{{instance}} scored",
                ),
            ],
            unit="suffix: tx/s",
        ),
        series(
            "Produce → score latency",
            "From the Kafka record timestamp to the score record. Dashed: the 25 ms p99 budget.",
            [
                q(quantile(0.50, "riskstream_produce_to_score_latency_seconds"), "p50"),
                q(quantile(0.99, "riskstream_produce_to_score_latency_seconds"), "p99"),
            ],
            unit="s",
            **budget_line(LATENCY_BUDGET_S),
        ),
        series(
            "Alerts by decision",
            "Alert records per second.",
            [
                q(rate("riskstream_alerts_total", "by (decision)"), "{{decision}}"),
            ],
            unit="suffix: /s",
            w=8,
        ),
        series(
            "Decisions",
            "Score records per second by decision.",
            [
                q(rate("riskstream_decisions_total", "by (decision)"), "{{decision}}"),
            ],
            unit="suffix: /s",
            w=8,
        ),
        series(
            "Dead-lettered by reason",
            "Messages per second sent to a DLQ, by reason code.",
            [
                q(rate("riskstream_dead_letter_total", "by (reason)"), "{{reason}}"),
            ],
            unit="suffix: /s",
            w=8,
        ),
        series(
            "Consumer lag per partition",
            "Messages behind the high-water mark.",
            [
                q(
                    f"sum by (topic, partition) (riskstream_consumer_lag_messages{{{W}}})",
                    "{{topic}}/{{partition}}",
                ),
            ],
            w=24,
        ),
    ]
    return dashboard(
        "riskstream-overview",
        "riskstream / Overview",
        "Is every transaction scored, fast, and what comes out.",
        panels,
    )


def model() -> dict[str, Any]:
    panels = [
        panel(
            "state-timeline",
            "Model version in use",
            "Which version each worker scores with; a swap shows as a new row.",
            [
                q(f"max by (version) (riskstream_model_info{{{W}}})", "{{version}}"),
            ],
            w=16,
            options={"showValue": "never", "mergeValues": True},
        ),
        stat(
            "Model age",
            "Time since the newest model went live (smallest over workers).",
            f"time() - max(riskstream_model_loaded_timestamp_seconds{{{W}}})",
            "s",
            thresholds=[(None, "green"), (3600, "orange")],
        ),
        stat(
            "Label → live p95",
            "Over the selected range; budget 2 s.",
            quantile(0.95, "riskstream_label_to_live_seconds", "$__range"),
            "s",
            thresholds=[(None, "green"), (LABEL_TO_LIVE_BUDGET_S, "red")],
        ),
        panel(
            "heatmap",
            "Score distribution",
            "Scores per interval in 0.05-wide bins.",
            [
                q(
                    f"sum by (le) (increase(riskstream_fraud_score_bucket{{{W}}}[{RATE}]))",
                    "{{le}}",
                    fmt="heatmap",
                ),
            ],
            options={
                "calculate": False,
                "yAxis": {"unit": "short"},
                "color": {"scheme": "Oranges", "mode": "scheme"},
            },
        ),
        series(
            "Prequential precision / recall / AP",
            "Over the sliding window of labelled "
            "transactions, per worker (empty until enough labels).",
            [
                q(f"riskstream_prequential_precision{{{W}}}", "{{instance}} precision"),
                q(f"riskstream_prequential_recall{{{W}}}", "{{instance}} recall"),
                q(f"riskstream_prequential_average_precision{{{W}}}", "{{instance}} AP"),
            ],
            unit="percentunit",
        ),
        series(
            "Drift alarms",
            "Alarms per interval, by detector.",
            [
                q(inc("riskstream_drift_alarms_total", "detector"), "{{detector}}"),
            ],
            w=8,
            custom={"drawStyle": "bars", "fillOpacity": 80},
        ),
        series(
            "Adaptations",
            "Runs by trigger, published and rejected candidates.",
            [
                q(inc("riskstream_adaptation_runs_total", "trigger"), "run: {{trigger}}"),
                q(
                    f"sum(increase(riskstream_adaptation_published_total{{{W}}}[{RATE}]))",
                    "published",
                ),
                q(inc("riskstream_adaptation_rejections_total", "reason"), "rejected: {{reason}}"),
            ],
            w=8,
            custom={"drawStyle": "bars", "fillOpacity": 80, "stacking": {"mode": "normal"}},
        ),
        series(
            "Validation average precision",
            "Candidate vs current model on the held-out slice at each adaptation.",
            [
                q(
                    f"max by (model) (riskstream_adaptation_validation_average_precision{{{W}}})",
                    "{{model}}",
                ),
            ],
            w=8,
            unit="percentunit",
        ),
        series(
            "Adaptation duration and label → live",
            "p50/p95; dashed: the 2 s budget.",
            [
                q(quantile(0.50, "riskstream_adaptation_duration_seconds", "15m"), "adapt p50"),
                q(quantile(0.95, "riskstream_adaptation_duration_seconds", "15m"), "adapt p95"),
                q(quantile(0.95, "riskstream_label_to_live_seconds", "15m"), "label→live p95"),
            ],
            unit="s",
            w=8,
            **budget_line(LABEL_TO_LIVE_BUDGET_S),
        ),
        series(
            "Model scoring time per batch",
            "p50/p99 of one micro-batch through the model.",
            [
                q(quantile(0.50, "riskstream_model_scoring_seconds"), "p50"),
                q(quantile(0.99, "riskstream_model_scoring_seconds"), "p99"),
            ],
            unit="s",
            w=8,
        ),
        series(
            "Labelled cases and labels",
            "Cases per class in the Redis store; labels "
            "consumed per second and waiting for their transaction.",
            [
                q(f"max by (label) (riskstream_redis_cases{{{W}}})", "cases: {{label}}"),
                q(f"sum(rate(riskstream_labels_consumed_total{{{W}}}[{RATE}]))", "labels/s"),
                q(f"sum(riskstream_labels_pending{{{W}}})", "pending"),
                q(
                    f"max(riskstream_prequential_window_labels{{{W}}})",
                    "labels in prequential window",
                ),
            ],
            w=8,
        ),
        series(
            "Model updates",
            "Updates read per second; rejected ones by reason.",
            [
                q(rate("riskstream_model_updates_received_total"), "received"),
                q(
                    rate("riskstream_model_updates_rejected_total", "by (reason)"),
                    "rejected: {{reason}}",
                ),
            ],
            w=12,
            unit="suffix: /s",
        ),
        series(
            "Mean score",
            "Average fraud score per worker.",
            [
                q(
                    f"sum by (instance) (rate(riskstream_fraud_score_sum{{{W}}}[{RATE}])) / "
                    f"sum by (instance) (rate(riskstream_fraud_score_count{{{W}}}[{RATE}]))",
                    "{{instance}}",
                ),
            ],
            w=12,
            unit="percentunit",
        ),
    ]
    return dashboard(
        "riskstream-model",
        "riskstream / Model",
        "What the model does, how it adapts, and how good it is.",
        panels,
    )


def infrastructure() -> dict[str, Any]:
    panels = [
        series(
            "CPU per worker",
            "Cores used by each worker process.",
            [
                q(f"rate(process_cpu_seconds_total{{{WJ}}}[{RATE}])", "{{instance}}"),
            ],
            unit="percentunit",
            w=8,
        ),
        series(
            "Resident memory per worker",
            "",
            [
                q(f"process_resident_memory_bytes{{{WJ}}}", "{{instance}}"),
            ],
            unit="bytes",
            w=8,
        ),
        series(
            "Open file descriptors",
            "Sockets and files per worker, against the limit.",
            [
                q(f"process_open_fds{{{WJ}}}", "{{instance}} open"),
                q(f"process_max_fds{{{WJ}}}", "{{instance}} max"),
            ],
            w=8,
        ),
        panel(
            "state-timeline",
            "Redis and card-state restore",
            "Red while a worker runs without Redis, or while its card-state restore is stalled "
            "(restore: restarts of the reading in the last 10 minutes).",
            [
                q(
                    f'max by (instance) (riskstream_degraded{{component="redis", {W}}})',
                    "{{instance}} redis",
                ),
                q(
                    f"max by (instance) "
                    f"(increase(riskstream_table_recovery_restarts_total{{{W}}}[10m]))",
                    "{{instance}} restore",
                ),
            ],
            w=12,
            thresholds=[(None, "green"), (1, "red")],
            options={"showValue": "never", "mergeValues": True},
        ),
        series(
            "Kafka consumer lag by topic",
            "Messages behind, summed over partitions.",
            [
                q(f"sum by (topic) (riskstream_consumer_lag_messages{{{W}}})", "{{topic}}"),
            ],
            w=12,
        ),
        series(
            "Micro-batch size",
            "Messages per take() batch: bigger batches pay Faust's per-message cost less often.",
            [
                q(quantile(0.50, "riskstream_batch_size_transactions"), "p50"),
                q(quantile(0.99, "riskstream_batch_size_transactions"), "p99"),
                q(
                    f"sum(rate(riskstream_batch_size_transactions_sum{{{W}}}[{RATE}])) / "
                    f"sum(rate(riskstream_batch_size_transactions_count{{{W}}}[{RATE}]))",
                    "mean",
                ),
            ],
            w=8,
        ),
        series(
            "Python GC",
            "Collections per second by generation.",
            [
                q(
                    f"sum by (generation) (rate(python_gc_collections_total{{{WJ}}}[{RATE}]))",
                    "gen {{generation}}",
                ),
            ],
            w=8,
            unit="suffix: /s",
        ),
        series(
            "Scrapes",
            "Whether each worker answers, and how long /metrics takes.",
            [
                q(f"up{{{WJ}}}", "{{instance}} up"),
                q(f"scrape_duration_seconds{{{WJ}}}", "{{instance}} scrape s"),
            ],
            w=8,
        ),
        panel(
            "table",
            "Workers",
            "Version, host, uptime and score path (native: the compiled kernels) of each worker.",
            [
                q(f"riskstream_worker_info{{{W}}}", instant=True, fmt="table"),
                q(f"time() - process_start_time_seconds{{{WJ}}}", instant=True, fmt="table"),
                # python_info's `version` would overwrite riskstream's in the merged row.
                q(
                    f"max by (instance, python_version) (label_replace(python_info{{{WJ}}}, "
                    '"python_version", "$1", "version", "(.*)"))',
                    instant=True,
                    fmt="table",
                ),
            ],
            w=24,
            h=6,
            extra={"transformations": [{"id": "merge", "options": {}}]},
        ),
    ]
    return dashboard(
        "riskstream-infrastructure",
        "riskstream / Infrastructure",
        "Worker processes, Redis and Kafka as riskstream sees them.",
        panels,
    )


DASHBOARDS = {"overview": overview, "model": model, "infrastructure": infrastructure}


def render(name: str) -> str:
    """The JSON text of dashboard ``name`` as committed."""
    return json.dumps(DASHBOARDS[name](), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name in DASHBOARDS:
        (OUT / f"{name}.json").write_text(render(name), encoding="utf-8")
        print(f"wrote {OUT / name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
