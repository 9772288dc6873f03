"""Prometheus config and rules, checked and unit-tested with promtool.

promtool comes with Debian's ``prometheus`` package (``make bootstrap`` installs it). The
tests skip without it on a developer machine and fail without it in CI (``CI`` set).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_dashboards import known_names, promql_metric_names

from streams.metrics import metrics_payload

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "ops" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not installed (bash ops/prometheus/install-promtool.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(
    *args: str, stdin: bytes | None = None, cwd: Path = PROM
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, input=stdin.decode() if stdin else None, cwd=cwd, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    return yaml.safe_load((PROM / "rules.yml").read_text())


def alerts(rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def test_config_is_valid(promtool: str) -> None:
    result = run(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_are_valid(promtool: str) -> None:
    result = run(promtool, "check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_case(rules: dict[str, Any]) -> None:
    cases = yaml.safe_load((PROM / "rules_test.yml").read_text())["tests"]
    fires, silent = set(), set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {a["alert"] for a in alerts(rules)}
    assert names >= {
        "RiskstreamNothingScored",
        "RiskstreamDLQRateSpike",
        "RiskstreamLatencyP99OverBudget",
        "RiskstreamConsumerLagGrowing",
        "RiskstreamModelStale",
        "RiskstreamAdaptationFailing",
        "RiskstreamDriftAlarm",
        "RiskstreamRedisDown",
    }
    assert names - fires == set(), "alerts never shown to fire"
    assert names - silent == set(), "alerts never shown to stay silent"


@pytest.mark.parametrize(
    ("mutant", "expr"),
    [("never fires", "vector(1) < 0"), ("always fires", "vector(1)")],
)
def test_rule_tests_catch_a_broken_alert(
    promtool: str, rules: dict[str, Any], tmp_path: Path, mutant: str, expr: str
) -> None:
    rules = copy.deepcopy(rules)
    for alert in alerts(rules):
        alert["expr"] = expr
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(PROM / "rules_test.yml", tmp_path)
    result = run(promtool, "test", "rules", "rules_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    undetected = {a["alert"] for a in alerts(rules) if f"alertname: {a['alert']}," not in output}
    assert not undetected, f"rule tests still pass when these {mutant}: {undetected}"


def test_exposition_passes_promtool_metric_lint(promtool: str) -> None:
    result = run(promtool, "check", "metrics", stdin=metrics_payload())
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_rules_read_only_metrics_that_exist(rules: dict[str, Any]) -> None:
    known = known_names()
    for group in rules["groups"]:
        for rule in group["rules"]:
            unknown = promql_metric_names(rule["expr"]) - known
            assert not unknown, f"{rule.get('alert') or rule.get('record')}: unknown {unknown}"


def test_alerts_carry_severity_summary_and_description(rules: dict[str, Any]) -> None:
    for alert in alerts(rules):
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def test_latency_alert_uses_the_25ms_budget(rules: dict[str, Any]) -> None:
    latency = next(a for a in alerts(rules) if a["alert"] == "RiskstreamLatencyP99OverBudget")
    assert latency["expr"].strip().endswith("> 0.025")
    assert latency["for"] == "5m" and latency["labels"]["budget"] == "25ms"


def test_config_scrapes_the_compose_workers_and_loads_the_rules() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules.yml"]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "riskstream-worker")
    assert job["metrics_path"] == "/metrics"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    worker = compose["services"]["worker"]
    port = int(worker["environment"]["RISKSTREAM_WEB_PORT"])
    assert job["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": port, "refresh_interval": "15s"}
    ]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["prometheus"]["volumes"])
    # The whole folder is mounted, so rules.yml and targets/ sit beside prometheus.yml.
    assert mounts["./ops/prometheus"] == "/etc/prometheus"
    assert (
        "--config.file=/etc/prometheus/prometheus.yml"
        in compose["services"]["prometheus"]["command"]
    )


def test_install_script_is_idempotent_when_tools_are_present(promtool: str) -> None:
    script = PROM / "install-promtool.sh"
    assert run("bash", "-n", str(script)).returncode == 0
    if shutil.which("prometheus"):
        result = run("bash", str(script))
        assert result.returncode == 0 and not result.stdout, result.stdout + result.stderr
