"""Fixtures of the fault suite (``pytest -m faults``; ``make test-faults``).

The shared, session-wide services and factories are those of the integration suite
(``tests/integration/conftest.py``), loaded here under another module name so the two
folders share one definition. A test that stops or restarts a service never touches the
session's: it asks :func:`private_kafka` / :func:`private_valkey` for its own.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
if str(INTEGRATION) not in sys.path:  # pipeline_helpers and adaptation_helpers live there
    sys.path.insert(0, str(INTEGRATION))


def _load_integration_conftest() -> object:
    spec = importlib.util.spec_from_file_location(
        "riskstream_integration_conftest", INTEGRATION / "conftest.py"
    )
    assert spec is not None and spec.loader is not None  # noqa: S101 - a file we ship
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_shared = _load_integration_conftest()
kafka_broker = _shared.kafka_broker  # type: ignore[attr-defined]
kafka_bootstrap = _shared.kafka_bootstrap  # type: ignore[attr-defined]
kafka_admin = _shared.kafka_admin  # type: ignore[attr-defined]
redis_url = _shared.redis_url  # type: ignore[attr-defined]
redis_client = _shared.redis_client  # type: ignore[attr-defined]
settings = _shared.settings  # type: ignore[attr-defined]
make_topic = _shared.make_topic  # type: ignore[attr-defined]
start_or_fail = _shared._start_or_fail  # type: ignore[attr-defined]

from pipeline_helpers import tiny_model_fixture  # noqa: E402,F401 - the tiny_model fixture

from streams.services.kafka import KafkaBroker  # noqa: E402
from streams.services.valkey import EmbeddedValkey  # noqa: E402


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of this test only (it may stop and restart it); stopped afterwards."""
    broker = KafkaBroker(tmp_path / "private-kafka", owned=True)
    try:
        start_or_fail(broker)
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def private_valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """A Valkey of this test only (it may stop and restart it); stopped afterwards.

    It saves its data set on shutdown and reloads it on start, as a production Redis with
    snapshots does, so a stop/start is an outage, not a wipe.
    """
    server = EmbeddedValkey(tmp_path / "private-valkey", owned=True, persist=True)
    try:
        start_or_fail(server)
        yield server
    finally:
        server.stop()
