"""Grafana dashboards: valid, provisioned datasource, defined variables, real metric names.

The names a PromQL expression reads are taken from the expression itself and checked
against the metrics streams/metrics.py registers, so a renamed metric breaks this test
instead of leaving an empty panel.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.metrics import RiskstreamMetrics, metric_names

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "ops" / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
NAMES = ("overview", "model", "infrastructure")
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}
# Series Prometheus itself adds to every scrape target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

_FUNCTION_OR_KEYWORD = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?")


def promql_metric_names(expr: str) -> set[str]:
    """Metric (and recording-rule) names an expression reads.

    >>> sorted(promql_metric_names(
    ...     'sum by (le) (rate(a_bucket{x=~"$w", y="b c"}[5m])) / on () b:c > bool 1e-9'))
    ['a_bucket', 'b:c']
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = _LABEL_LISTS.sub(" ", text)  # grouping label lists
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.groups()
        if not call and name not in _FUNCTION_OR_KEYWORD:
            names.add(name)
    return names


def load(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARD_DIR / f"{name}.json").read_text(encoding="utf-8"))


def all_exprs(board: dict[str, Any]) -> list[tuple[str, str]]:
    found = [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
    found += [(a["name"], a["expr"]) for a in board["annotations"]["list"] if "expr" in a]
    # Variable queries are `label_values(metric, label)`: the metric is what must exist.
    found += [
        (v["name"], re.sub(r"label_values\((.+),\s*\w+\)", r"\1", v["definition"]))
        for v in board["templating"]["list"]
    ]
    return found


def known_names() -> set[str]:
    rules = yaml.safe_load((ROOT / "ops/prometheus/rules.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    return (
        metric_names(RiskstreamMetrics(CollectorRegistry()).registry) | recorded | PROMETHEUS_SERIES
    )


@pytest.fixture(scope="module")
def boards() -> dict[str, dict[str, Any]]:
    return {name: load(name) for name in NAMES}


@pytest.fixture(scope="module")
def datasource_uids() -> set[str]:
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    return {d["uid"] for d in provisioned["datasources"]}


def test_the_three_dashboards_exist_with_unique_uids(boards: dict[str, dict[str, Any]]) -> None:
    assert sorted(p.stem for p in DASHBOARD_DIR.glob("*.json")) == sorted(NAMES)
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == 3 and all(uids)
    assert all(b["title"].startswith("riskstream / ") for b in boards.values())


def test_committed_json_is_what_the_builder_writes() -> None:
    spec = importlib.util.spec_from_file_location(
        "build_dashboards", GRAFANA / "build_dashboards.py"
    )
    assert spec and spec.loader
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    for name in NAMES:
        committed = (DASHBOARD_DIR / f"{name}.json").read_text(encoding="utf-8")
        assert committed == builder.render(name), (
            f"{name}.json differs from its builder: run python ops/grafana/build_dashboards.py"
        )


def test_every_panel_queries_prometheus(
    boards: dict[str, dict[str, Any]], datasource_uids: set[str]
) -> None:
    assert datasource_uids == {"prometheus"}
    for board in boards.values():
        assert board["panels"]
        for panel in board["panels"]:
            where = f"{board['title']} / {panel['title']}"
            assert panel["datasource"]["uid"] in datasource_uids, where
            assert panel["targets"], f"{where} has no query"
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(set(ref_ids)) == len(ref_ids), where
            for target in panel["targets"]:
                assert target["expr"].strip(), where
                assert target["datasource"]["uid"] in datasource_uids, where
        for item in board["annotations"]["list"] + board["templating"]["list"]:
            assert item["datasource"]["uid"] in datasource_uids, item["name"]


def test_every_variable_used_is_defined(boards: dict[str, dict[str, Any]]) -> None:
    for board in boards.values():
        defined = {v["name"] for v in board["templating"]["list"]} | GRAFANA_BUILTINS
        text = json.dumps(board["panels"]) + json.dumps(board["annotations"])
        # `$1` in label_replace is a regex group: Grafana leaves names it does not know alone
        used = set(re.findall(r"\$\{?([A-Za-z_]\w*)", text))
        assert used <= defined, f"{board['title']}: undefined {used - defined}"
        assert "instance" in used  # the worker picker filters the panels


def test_every_metric_name_in_an_expression_exists(boards: dict[str, dict[str, Any]]) -> None:
    known = known_names()
    for board in boards.values():
        for where, expr in all_exprs(board):
            unknown = promql_metric_names(expr) - known
            assert not unknown, f"{board['title']} / {where}: unknown {unknown} in {expr}"


def test_every_riskstream_metric_is_watched_somewhere(boards: dict[str, dict[str, Any]]) -> None:
    registry = CollectorRegistry()
    RiskstreamMetrics(registry, process=False)
    families = {f.name for f in registry.collect()}
    text = " ".join(e for b in boards.values() for _, e in all_exprs(b))
    unwatched = {f for f in families if f not in text}
    assert not unwatched, f"no panel shows {unwatched}"


def test_each_dashboard_covers_what_the_issue_asks(boards: dict[str, dict[str, Any]]) -> None:
    wanted = {
        "overview": {
            "riskstream_transactions_scored_total",
            "riskstream_produce_to_score_latency_seconds_bucket",
            "riskstream_alerts_total",
            "riskstream_dead_letter_total",
            "riskstream_consumer_lag_messages",
        },
        "model": {
            "riskstream_model_info",
            "riskstream_fraud_score_bucket",
            "riskstream_prequential_precision",
            "riskstream_prequential_recall",
            "riskstream_drift_alarms_total",
            "riskstream_adaptation_runs_total",
        },
        "infrastructure": {
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "riskstream_degraded",
            "riskstream_consumer_lag_messages",
        },
    }
    for name, metrics in wanted.items():
        used = set().union(*(promql_metric_names(e) for _, e in all_exprs(boards[name])))
        assert metrics <= used, f"{name} lacks {metrics - used}"


def test_panels_fit_the_grid_without_overlap(boards: dict[str, dict[str, Any]]) -> None:
    for board in boards.values():
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            g = panel["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
            area = {
                (x, y)
                for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])
            }
            assert not cells & area, f"{board['title']} / {panel['title']} overlaps"
            cells |= area
        assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


def test_provisioning_matches_the_compose_mounts() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/riskstream.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert mounts["./ops/grafana/dashboards"] == path
    assert mounts["./ops/grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    url = datasource["datasources"][0]["url"]
    assert url == "http://prometheus:9090" and "prometheus" in compose["services"]


def test_name_parser_ignores_functions_labels_and_durations() -> None:
    expr = (
        "histogram_quantile(0.99, sum without (instance) "
        '(rate(x_bucket{le!="1"}[$__rate_interval])))'
        ' and on (topic) time() - y offset 5m > bool 3 unless z{a="b"}'
    )
    assert promql_metric_names(expr) == {"x_bucket", "y", "z"}


def _module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, GRAFANA / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CannedPrometheus:
    """Answers every query with one series per ``le``/instance; records what was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        self.asked.append(expr)
        times = [start + i * step for i in range(int((end - start) / step) + 1)]
        if "_bucket" in expr and "histogram_quantile" not in expr:
            return [
                {
                    "metric": {"le": le},
                    "values": [[t, str(n * (i + 1))] for i, t in enumerate(times)],
                }
                for n, le in enumerate(("0.5", "1.0", "+Inf"), start=1)
            ]
        return [{"metric": {"instance": "w1:6066", "version": "v1"},
                 "values": [[t, str(0.01 * i)] for i, t in enumerate(times)]}]  # fmt: skip

    def instant(self, expr: str, at: float) -> list[dict[str, Any]]:
        self.asked.append(expr)
        return [{"metric": {"instance": "w1:6066", "version": "0.1.0"}, "value": [at, "12.5"]}]


def test_png_renderer_draws_every_panel_with_its_variables_resolved(tmp_path: Path) -> None:
    renderer = _module("render_pngs")
    renderer.DPI = 30  # the layout and every drawing path are the same; the pixels are cheaper
    prom = CannedPrometheus()
    for name in NAMES:
        board = load(name)
        out = renderer.render_dashboard(prom, board, 1000.0, 1060.0, 10.0, tmp_path / f"{name}.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert out.stat().st_size < 300_000
    n_targets = sum(len(p["targets"]) for name in NAMES for p in load(name)["panels"])
    assert len(prom.asked) == n_targets
    assert all(renderer.unresolved(expr) == [] for expr in prom.asked)
    assert any('instance=~".*"' in expr and "[40s]" in expr for expr in prom.asked)


def test_png_renderer_units_and_legends() -> None:
    renderer = _module("render_pngs")
    seconds, label = renderer.unit_formatter("s")
    assert (seconds(0.025), label) == ("25 ms", "seconds")
    percent, _ = renderer.unit_formatter("percentunit")
    assert percent(0.125) == "12.5 %"
    assert renderer.legend("{{topic}}/{{partition}}", {"topic": "tx", "partition": "3"}) == "tx/3"
    assert renderer.grafana_variables(5.0, 600.0)["$__rate_interval"] == "20s"
    assert renderer.unresolved(renderer.resolve("x[$__range]", {"$__range": "5m"})) == []


def test_every_dashboard_has_its_committed_png_linked_from_the_readme_section() -> None:
    docs = ROOT / "docs" / "monitoring"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Monitoring", 1)[1].split("\n## ", 1)[0]
    for name in NAMES:
        png = docs / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert png.stat().st_size < 300_000, png
        assert f"](docs/monitoring/{name}.png)" in section, name
