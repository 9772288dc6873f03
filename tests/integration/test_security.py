"""Kafka SASL/PLAIN and Redis AUTH on the real services, and no secret in any output.

A broker whose client listener takes only SASL_PLAINTEXT/PLAIN accounts and a Valkey with
``requirepass`` are started for this module. With the right credentials a real worker
scores what ``riskstream produce`` sends; with wrong ones each command fails with one
readable line and no traceback. No secret (SASL password, Redis password, model signing
key) may appear in the worker's log, in CLI error output or in ``riskstream config``.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import (  # noqa: F401 - tiny_model is a fixture
    REPO,
    RISKSTREAM,
    WorkerProcess,
    read_topic,
    tiny_model_fixture,
    values,
    worker_env,
)
from pydantic import SecretStr

from streams.services.kafka import KafkaBroker
from streams.services.process import ServiceStartError
from streams.services.topics import ensure_topics
from streams.services.valkey import EmbeddedValkey
from streams.settings import Settings

pytestmark = pytest.mark.integration

USER = "riskstream-app"
WRONG = "wrong-password"  # noqa: S105 - a deliberately wrong test credential


class Secure:
    """The secured services and the secrets that open them."""

    def __init__(self, broker: KafkaBroker, valkey: EmbeddedValkey, secrets_: dict[str, str]):
        self.broker = broker
        self.valkey = valkey
        self.secrets = secrets_

    def settings(self, state: Path, **overrides: Any) -> Settings:
        values_: dict[str, Any] = {
            "kafka_bootstrap_servers": self.broker.bootstrap_servers,
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "PLAIN",
            "kafka_sasl_username": USER,
            "kafka_sasl_password": SecretStr(self.secrets["kafka"]),
            "redis_url": self.valkey.url,
            "redis_password": SecretStr(self.secrets["redis"]),
            "model_signing_key": SecretStr(self.secrets["signing"]),
            "state_dir": state,
            "app_id": f"rs-sec-{secrets.token_hex(4)}",
            "session_timeout_s": 6.0,
            "commit_interval_s": 0.5,
        }
        values_.update(overrides)
        return Settings(**values_)

    def env(self, s: Settings, **wrong: str) -> dict[str, str]:
        """A CLI/worker environment for ``s``, secrets included (``wrong`` overrides them)."""
        secret_env = {
            "RISKSTREAM_KAFKA_SASL_PASSWORD": self.secrets["kafka"],
            "RISKSTREAM_REDIS_PASSWORD": self.secrets["redis"],
            "RISKSTREAM_MODEL_SIGNING_KEY": self.secrets["signing"],
        }
        secret_env.update(wrong)
        return worker_env(s, **secret_env)

    def leaks(self, text: str) -> list[str]:
        """Which secrets appear in ``text``."""
        return [name for name, value in self.secrets.items() if value in text]


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    # Distinctive secrets, so a leak cannot hide behind a common word.
    made = {name: f"{name}-{secrets.token_urlsafe(18)}" for name in ("kafka", "redis", "signing")}
    base = tmp_path_factory.mktemp("secure")
    broker = KafkaBroker(base / "kafka", sasl_users={USER: made["kafka"]})
    valkey = EmbeddedValkey(base / "valkey", password=made["redis"])
    try:
        try:
            broker.start()
            valkey.start()
        except ServiceStartError as exc:
            pytest.fail(f"{exc}\n{exc.log_tail}", pytrace=False)
        yield Secure(broker, valkey, made)
    finally:
        valkey.stop()
        broker.stop()


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own console script
        [str(RISKSTREAM), *args],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


PRODUCE = ["produce", "--customers", "200", "--terminals", "400", "--days", "10", "--limit", "500"]


def assert_one_clean_line(result: subprocess.CompletedProcess[str], what: str) -> str:
    assert result.returncode != 0, f"{what} succeeded with wrong credentials"
    err = result.stderr.strip()
    assert "Traceback" not in err and "Traceback" not in result.stdout, err
    assert len(err.splitlines()) == 1, f"{what}: expected one line, got:\n{err}"
    return err


def test_right_credentials_score_end_to_end(
    secure: Secure, tmp_path: Path, tiny_model: Path
) -> None:
    s = secure.settings(tmp_path / "state", model_path=tiny_model)
    ensure_topics(s)
    worker = WorkerProcess(s, tmp_path / "worker.log", **secure.env(s))
    try:
        worker.wait_ready(timeout=90)
        produced = run_cli(PRODUCE, secure.env(s))
        assert produced.returncode == 0, produced.stderr
        deadline = time.monotonic() + 90
        scores: list[dict[str, Any]] = []
        while len({v["tx_id"] for v in scores}) < 500 and time.monotonic() < deadline:
            scores = values(asyncio.run(read_topic(s, s.topic_scores, idle_s=2.0)))
        assert worker.alive(), worker.tail()
    finally:
        worker.stop()
    assert len({v["tx_id"] for v in scores}) == 500, worker.tail()
    log = worker.log_path.read_text(errors="replace")
    assert not secure.leaks(log + produced.stdout + produced.stderr)


def test_wrong_kafka_password_fails_in_one_line(secure: Secure, tmp_path: Path) -> None:
    s = secure.settings(tmp_path / "state")
    result = run_cli(PRODUCE, secure.env(s, RISKSTREAM_KAFKA_SASL_PASSWORD=WRONG))
    line = assert_one_clean_line(result, "riskstream produce")
    print(f"\nproduce, wrong SASL password: {line}")
    assert not secure.leaks(result.stdout + result.stderr)
    assert WRONG not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("wrong", "says"),
    [
        ("RISKSTREAM_KAFKA_SASL_PASSWORD", "SASL user name and password"),
        ("RISKSTREAM_REDIS_PASSWORD", "RISKSTREAM_REDIS_PASSWORD"),
    ],
)
def test_worker_with_a_wrong_password_stops_in_one_line(
    secure: Secure, tmp_path: Path, tiny_model: Path, wrong: str, says: str
) -> None:
    s = secure.settings(tmp_path / "state", model_path=tiny_model)
    ensure_topics(s)
    env = secure.env(s, **{wrong: WRONG})
    worker = WorkerProcess(s, tmp_path / "worker.log", **env)
    try:
        deadline = time.monotonic() + 60
        while worker.alive() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not worker.alive(), f"worker kept running with a wrong password:\n{worker.tail()}"
        code = worker.proc.returncode
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    lines = [line for line in log.splitlines() if line.strip()]
    print(f"\nworker, wrong {wrong}: exit {code}: {lines}")
    assert code != 0
    assert "Traceback" not in log
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines
    assert not secure.leaks(log) and WRONG not in log


def test_config_output_shows_no_secret(secure: Secure, tmp_path: Path) -> None:
    s = secure.settings(tmp_path / "state")
    env = secure.env(s)
    # a password inside the Redis URL is a secret too
    env["RISKSTREAM_REDIS_URL"] = (
        f"redis://:{secure.secrets['redis']}@127.0.0.1:{secure.valkey.port}/0"
    )
    outputs = [run_cli(["config"], env), run_cli(["config", "--json"], env)]
    for result in outputs:
        assert result.returncode == 0, result.stderr
        assert not secure.leaks(result.stdout + result.stderr), result.stdout
    shown = outputs[1].stdout
    for field in ("kafka_sasl_password", "redis_password", "model_signing_key"):
        assert field in shown
    assert "**********" in shown and ":***@" in shown
