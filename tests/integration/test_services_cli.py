"""`riskstream up` starts detached services that outlive it; `down` stops them by PID."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.services.process import pid_alive
from streams.services.runner import services_down, services_status, services_up
from streams.services.state import read_state
from streams.services.topics import topic_partitions
from streams.services.valkey import ping
from streams.settings import Settings

pytestmark = pytest.mark.integration

RISKSTREAM = Path(sys.executable).with_name("riskstream")


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state folder for `up`; whatever the test leaves running there is stopped after."""
    yield tmp_path
    services_down(Settings(state_dir=tmp_path), timeout=10)


def _riskstream(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKSTREAM_")}
    env |= {"RISKSTREAM_STATE_DIR": str(state_dir), "COLUMNS": "200"}
    return subprocess.run(
        [str(RISKSTREAM), *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


def test_up_status_down(state_dir: Path) -> None:
    first = _riskstream(state_dir, "up")
    assert first.returncode == 0, first.stderr
    state = read_state(state_dir / "services.json")
    kafka, valkey = state["kafka"], state["valkey"]
    # The command has exited; the services it started still run and answer.
    assert pid_alive(kafka["pid"]) and pid_alive(valkey["pid"])
    settings = Settings(state_dir=state_dir, **state["settings"])
    assert settings.kafka_bootstrap_servers == kafka["address"]
    assert ping(settings.redis_url)
    partitions = topic_partitions(settings, ["transactions", "model-updates", "transactions.dlq"])
    assert partitions == {"transactions": 4, "model-updates": 1, "transactions.dlq": 4}
    assert [(r.name, r.source, r.healthy) for r in services_status(settings)] == [
        ("kafka", "embedded", True),
        ("valkey", "embedded", True),
    ]

    # Idempotent: a second `up` reuses the running processes.
    services_up(settings)
    assert read_state(state_dir / "services.json")["kafka"]["pid"] == kafka["pid"]
    assert read_state(state_dir / "services.json")["valkey"]["pid"] == valkey["pid"]

    messages = services_down(settings, timeout=30)
    assert messages == [
        f"valkey: stopped (pid {valkey['pid']})",
        f"kafka: stopped (pid {kafka['pid']})",
    ]
    assert not pid_alive(kafka["pid"]) and not pid_alive(valkey["pid"])
    assert read_state(state_dir / "services.json").get("settings") == {}
