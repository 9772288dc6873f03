"""A real Prometheus scraping a real exporter evaluates every dashboard and rule expression.

The helpers here are the harness for the live observability test: ``run_prometheus``
starts Debian's ``prometheus`` on a free port with ops/prometheus/prometheus.yml (its
targets replaced, 1 s scrape and rule intervals, the real rules.yml), and
``wait_for_data`` evaluates every PromQL expression of the dashboards and rules through
``/api/v1/query`` and reports the ones that stay empty.

Alert expressions and Grafana annotation queries are *conditions*: on a healthy system
they are rightly empty. They are evaluated with their comparisons turned into ``bool``
comparisons (``x > 0.025`` becomes ``x > bool 0.025``), which returns a 0/1 sample for
every input series; empty then means the rule reads a metric or label that does not
exist, which is the defect to catch.

``test_harness_sees_every_expression_of_a_full_exporter`` points it at a
``prometheus_client`` HTTP server exposing the riskstream registry with a value in every
metric; the live worker test points the same harness at a real worker.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from streams.metrics import RiskstreamMetrics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = ROOT / "ops" / "prometheus" / "prometheus.yml"
RULES_YML = ROOT / "ops" / "prometheus" / "rules.yml"
DASHBOARDS = ROOT / "ops" / "grafana" / "dashboards"
WORKER_JOB = "riskstream-worker"


def _load_renderer() -> Any:
    """ops/grafana/render_pngs.py (not a package): the one place variables are resolved."""
    path = ROOT / "ops" / "grafana" / "render_pngs.py"
    spec = importlib.util.spec_from_file_location("render_pngs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_pngs = _load_renderer()
# Grafana's built-in variables and the dashboards' own, as a 1 s-scrape Prometheus needs.
DEFAULT_VARIABLES = {
    "$__rate_interval": "10s",
    "$__interval": "1s",
    "$__range": "1m",
    "$instance": ".*",
}


# --- expressions ----------------------------------------------------------------------
@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from (for readable failures)."""

    source: str
    expr: str


_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)")


def as_bool(expr: str) -> str:
    """Turns every filtering comparison outside label matchers into a ``bool`` one.

    >>> as_bool('up{job!="x"} == 0 and on () sum(a) > 0.5')
    'up{job!="x"} == bool 0 and on () sum(a) > bool 0.5'
    """
    out: list[str] = []
    depth, i, quote = 0, 0, ""
    while i < len(expr):
        ch = expr[i]
        if quote:
            out.append(ch)
            if ch == "\\":
                out.append(expr[i + 1])
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
            out.append(ch)
        elif ch in "{}":
            depth += 1 if ch == "{" else -1
            out.append(ch)
        elif depth == 0 and (m := _COMPARISON.match(expr, i)):
            out.append(m.group(1) + " bool")
            i = m.end()
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    """Replaces Grafana variables (longest names first, so ``$__range`` stays whole)."""
    resolved: str = render_pngs.resolve(expr, DEFAULT_VARIABLES | (variables or {}))
    return resolved


def dashboard_expressions(variables: dict[str, str] | None = None) -> list[Expression]:
    """Every panel target and annotation query of every dashboard, variables resolved."""
    found: list[Expression] = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append(
                    Expression(
                        f"{path.stem}: {panel['title']} [{target['refId']}]",
                        substitute(target["expr"], variables),
                    )
                )
        for annotation in board.get("annotations", {}).get("list", []):
            if "expr" in annotation:
                expr = as_bool(substitute(annotation["expr"], variables))
                found.append(Expression(f"{path.stem}: annotation {annotation['name']}", expr))
    return found


def rule_expressions() -> list[Expression]:
    """Recording rules, the series they record, and alert conditions as ``bool``."""
    found: list[Expression] = []
    for group in yaml.safe_load(RULES_YML.read_text())["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                found.append(Expression(f"rule {rule['record']}", rule["expr"]))
                found.append(Expression(f"recorded {rule['record']}", rule["record"]))
            else:
                found.append(Expression(f"alert {rule['alert']}", as_bool(rule["expr"])))
    return found


def all_expressions(variables: dict[str, str] | None = None) -> list[Expression]:
    """What the live test checks: every dashboard and rule expression."""
    return dashboard_expressions(variables) + rule_expressions()


# --- the server -----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def live_config(targets: list[str], listen: str, interval: str = "1s") -> dict[str, Any]:
    """ops/prometheus/prometheus.yml with the worker job pointed at ``targets``."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"] |= {"scrape_interval": interval, "evaluation_interval": interval}
    config["rule_files"] = [str(RULES_YML)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = jobs[WORKER_JOB]
    for discovery in ("dns_sd_configs", "file_sd_configs"):
        worker.pop(discovery, None)
    worker["static_configs"] = [{"targets": targets}]
    jobs["prometheus"]["static_configs"] = [{"targets": [listen]}]
    return config


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:  # noqa: S310
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query", query=expr)
        return data["result"] if data["resultType"] in {"vector", "matrix"} else [data["result"]]

    def empty(self, expressions: list[Expression]) -> list[Expression]:
        """The expressions whose instant query returns no sample now."""
        return [e for e in expressions if not self.query(e.expr)]

    def wait_for_data(
        self, expressions: list[Expression], timeout: float = 30.0
    ) -> list[Expression]:
        """Polls until every expression returns data; returns those still empty."""
        deadline = time.monotonic() + timeout
        pending = list(expressions)
        while pending and time.monotonic() < deadline:
            pending = self.empty(pending)
            if pending:
                time.sleep(0.5)
        return pending

    def unhealthy_rules(self) -> list[str]:
        """Rules whose last evaluation failed (e.g. many-to-many matching)."""
        groups = self.api("/api/v1/rules")["groups"]
        return [
            f"{r['name']}: {r.get('lastError')}"
            for g in groups
            for r in g["rules"]
            if r.get("health") not in {"ok", "unknown"}
        ]

    def target_health(self) -> dict[str, str]:
        active = self.api("/api/v1/targets")["activeTargets"]
        return {t["scrapeUrl"]: t["health"] for t in active}


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


@contextmanager
def run_prometheus(
    targets: list[str], workdir: Path, interval: str = "1s"
) -> Iterator[PrometheusServer]:
    """A real Prometheus on a free port scraping ``targets`` (``host:port``) every 1 s."""
    binary = prometheus_binary()
    if binary is None:
        raise RuntimeError("prometheus is not installed: bash ops/prometheus/install-promtool.sh")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    listen = f"127.0.0.1:{port}"
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(live_config(targets, listen, interval)))
    log = workdir / "prometheus.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={listen}",
                "--log.level=warn",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(f"http://{listen}", process, log)
    try:
        _wait_ready(server, timeout=30)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: PrometheusServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {server.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"prometheus not ready after {timeout}s: {server.log.read_text()[-2000:]}")


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Any]:
    """``start(targets)`` gives a running :class:`PrometheusServer`; all stop at teardown."""
    if prometheus_binary() is None:
        message = "prometheus not installed (bash ops/prometheus/install-promtool.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with ExitStack() as stack:
        count = iter(range(1000))

        def start(targets: list[str], interval: str = "1s") -> PrometheusServer:
            workdir = tmp_path / f"prometheus{next(count)}"
            return stack.enter_context(run_prometheus(targets, workdir, interval))

        yield start


# --- a synthetic exporter with every metric set ------------------------------------------
def record_sample_traffic(m: RiskstreamMetrics, rng: np.random.Generator) -> None:
    """One micro-batch's worth of every kind of event riskstream records."""
    n = 200
    scores = rng.beta(0.5, 6.0, n)
    m.record_consumed(n + 2)
    m.record_scored_batch(
        scores,
        rng.gamma(2.0, 0.003, n),
        scoring_seconds=0.0008,
        decisions={"allow": int((scores < 0.5).sum()), "review": 1, "block": 1},
        alerts={"block": 1},
    )
    m.record_dead_letter("not_json", 2)
    m.set_consumer_lag({("transactions", 0): 12, ("transactions", 1): 3, ("labels", 0): 0})
    m.record_labels(5, pending=2)
    m.set_case_counts({"fraud": 40, "legit": 400})
    m.set_prequential(0.7, 0.6, 0.65, window_labels=500)


def fill_every_metric(m: RiskstreamMetrics) -> None:
    """Sets a value in every metric family, including the rare events."""
    m.set_worker_info(worker_id="harness", app_id="riskstream")
    m.record_model_loaded("v2")
    m.record_model_update()
    m.record_model_update(rejected_reason="bad_signature")
    m.record_adaptation("new_cases", 0.4, candidate_ap=0.71, current_ap=0.65)
    m.record_adaptation("timer", 0.3, candidate_ap=0.6, current_ap=0.71, rejected_reason="ap_drop")
    m.record_label_to_live(0.8)
    m.record_drift("score_distribution")
    m.set_degraded("redis", True)


@contextmanager
def sample_exporter() -> Iterator[tuple[str, RiskstreamMetrics]]:
    """A prometheus_client HTTP server with the riskstream registry under steady traffic."""
    metrics = RiskstreamMetrics(CollectorRegistry())
    fill_every_metric(metrics)
    rng = np.random.default_rng(7)
    record_sample_traffic(metrics, rng)
    stop = threading.Event()

    def feed() -> None:  # bounded: stops with the test, or after 2 minutes at the latest
        deadline = time.monotonic() + 120
        while not stop.wait(0.1) and time.monotonic() < deadline:
            record_sample_traffic(metrics, rng)

    httpd, _ = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield f"127.0.0.1:{httpd.server_port}", metrics
    finally:
        stop.set()
        feeder.join(timeout=5)
        httpd.shutdown()
        httpd.server_close()


# --- the tests ----------------------------------------------------------------------------
def test_harness_sees_every_expression_of_a_full_exporter(prometheus_factory: Any) -> None:
    expressions = all_expressions()
    assert len(expressions) > 60
    with sample_exporter() as (target, metrics):
        started = time.monotonic()
        prom = prometheus_factory([target])
        ready_s = time.monotonic() - started
        still_empty = prom.wait_for_data(expressions, timeout=45)
        data_s = time.monotonic() - started
        assert still_empty == [], "\n".join(f"{e.source}: {e.expr}" for e in still_empty)
        assert prom.unhealthy_rules() == []
        assert set(prom.target_health().values()) == {"up"}
        # The harness does report emptiness: a metric nobody exports stays empty.
        missing = Expression("nonexistent", "riskstream_nonexistent_total")
        assert prom.empty([missing]) == [missing]
        # Rules evaluate against the real exporter's labels: the Redis outage set above is
        # pending (for: 1m), and a drift alarm raised now fires (no `for`).
        metrics.record_drift("prequential_error")
        fired = time.monotonic()
        alerts: set[tuple[str, str]] = set()
        while ("RiskstreamDriftAlarm", "firing") not in alerts and time.monotonic() < fired + 20:
            time.sleep(0.25)
            alerts = {
                (a["labels"]["alertname"], a["state"]) for a in prom.api("/api/v1/alerts")["alerts"]
            }
        fired_s = time.monotonic() - fired
        assert ("RiskstreamRedisDown", "pending") in alerts
        assert ("RiskstreamDriftAlarm", "firing") in alerts
        print(
            f"\nprometheus ready {ready_s:.2f}s; all {len(expressions)} expressions "
            f"non-empty {data_s:.2f}s after start; drift alarm -> firing in {fired_s:.2f}s"
        )


def test_bool_rewrite_keeps_label_matchers_and_strings() -> None:
    expr = 'x{a!="b>c",d=~"e<f"} >= 3 or y != bool 2 and label_replace(z, "a", "<", "", "")'
    assert as_bool(expr) == (
        'x{a!="b>c",d=~"e<f"} >= bool 3 or y != bool 2 and label_replace(z, "a", "<", "", "")'
    )


def test_live_config_replaces_discovery_with_the_given_targets() -> None:
    config = live_config(["127.0.0.1:1234"], "127.0.0.1:9999")
    worker = next(j for j in config["scrape_configs"] if j["job_name"] == WORKER_JOB)
    assert worker["static_configs"] == [{"targets": ["127.0.0.1:1234"]}]
    assert "dns_sd_configs" not in worker and "file_sd_configs" not in worker
    assert config["global"]["scrape_interval"] == "1s"
    assert config["rule_files"] == [str(RULES_YML)]
