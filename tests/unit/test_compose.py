"""docker-compose.yml is checked statically: there is no Docker engine here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_service_the_design_names_is_there(compose: dict[str, Any]) -> None:
    assert {"kafka", "redis", "worker", "producer", "prometheus", "grafana"} <= set(
        compose["services"]
    )


def test_every_image_is_pinned_to_a_version(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image")
        assert image, f"{name} has no image"
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert re.match(r"v?\d+(\.\d+)+", tag), f"{name}: {image} is not pinned"


def test_kafka_runs_kraft_single_node(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:4.")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]


def test_published_ports(compose: dict[str, Any]) -> None:
    ports = {n: [str(p) for p in s.get("ports", [])] for n, s in compose["services"].items()}
    assert "9092:9092" in ports["kafka"]
    assert "6379:6379" in ports["redis"]
    assert "9090:9090" in ports["prometheus"]
    assert "3000:3000" in ports["grafana"]
    assert "6066" in [str(p) for p in compose["services"]["worker"]["expose"]]


def test_every_mounted_path_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_workers_point_at_the_compose_services(compose: dict[str, Any]) -> None:
    env = compose["services"]["worker"]["environment"]
    assert env["RISKSTREAM_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["RISKSTREAM_REDIS_URL"].startswith("redis://redis:")
    assert (ROOT / "Dockerfile").exists()


def test_grafana_opens_on_a_provisioned_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    source = mounts[str(home.parent)]
    assert (ROOT / source / home.name).is_file()
