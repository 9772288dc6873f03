"""Settings: precedence (kwargs > env > state file > defaults), frozen, validated, masked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from streams.cli import app
from streams.settings import STATE_FILE_NAME, Settings, env_field_names, get_settings

STATE_ADDRESSES = {"kafka_bootstrap_servers": "state-host:1111", "redis_url": "redis://state:2/0"}


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A state folder with a services file, and no RISKSTREAM_* variables but its own."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"RISKSTREAM_{name.upper()}", raising=False)
    monkeypatch.setenv("RISKSTREAM_STATE_DIR", str(tmp_path))
    (tmp_path / STATE_FILE_NAME).write_text(
        json.dumps({"settings": {**STATE_ADDRESSES, "alert_threshold": 0.1}, "kafka": {"pid": 1}})
    )
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_state_file_wins_over_defaults(state_dir: Path) -> None:
    s = Settings()
    assert s.kafka_bootstrap_servers == "state-host:1111"
    assert s.redis_url == "redis://state:2/0"
    assert s.state_file == state_dir / STATE_FILE_NAME
    # Only the service addresses come from the state file, nothing else.
    assert s.alert_threshold == Settings.model_fields["alert_threshold"].default


def test_env_wins_over_state_file(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKSTREAM_KAFKA_BOOTSTRAP_SERVERS", "env-host:2222")
    s = Settings()
    assert s.kafka_bootstrap_servers == "env-host:2222"
    assert s.redis_url == "redis://state:2/0"
    assert env_field_names() == {"kafka_bootstrap_servers", "state_dir"}


def test_keyword_arguments_win_over_env(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKSTREAM_KAFKA_BOOTSTRAP_SERVERS", "env-host:2222")
    assert Settings(kafka_bootstrap_servers="kw:3333").kafka_bootstrap_servers == "kw:3333"


def test_missing_or_corrupt_state_file_means_defaults(state_dir: Path) -> None:
    (state_dir / STATE_FILE_NAME).write_text("{not json")
    assert Settings().kafka_bootstrap_servers == "localhost:9092"
    (state_dir / STATE_FILE_NAME).unlink()
    assert Settings().redis_url == "redis://localhost:6379/0"


def test_settings_are_frozen(state_dir: Path) -> None:
    s = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.alert_threshold = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    "values",
    [
        {"review_threshold": 0.9, "alert_threshold": 0.8},
        {"alert_threshold": 1.5},
        {"review_threshold": -0.1},
        {"topic_partitions": 0},
    ],
)
def test_invalid_values_are_rejected(state_dir: Path, values: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        Settings(**values)


def test_invalid_env_value_is_a_one_line_cli_error(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISKSTREAM_ALERT_THRESHOLD", "1.5")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code != 0
    assert "RISKSTREAM_ALERT_THRESHOLD" in str(result.exception)
    assert "\n" not in str(result.exception)


SECRETS = {
    "RISKSTREAM_KAFKA_SASL_PASSWORD": "sasl-s3cret-value",
    "RISKSTREAM_REDIS_PASSWORD": "redis-s3cret-value",
    "RISKSTREAM_MODEL_SIGNING_KEY": "signing-s3cret-value",
}


@pytest.fixture
def secrets(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return SECRETS


def test_config_json_is_keyed_by_field_and_masks_secrets(secrets: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    for value in secrets.values():
        assert value not in result.output
    data = json.loads(result.output)
    assert set(data) == set(Settings.model_fields)
    assert data["kafka_bootstrap_servers"] == "state-host:1111"
    for key in ("kafka_sasl_password", "redis_password", "model_signing_key"):
        assert data[key] == "**********"


def test_config_table_masks_secrets_and_shows_sources(secrets: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["config"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for value in secrets.values():
        assert value not in result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "state file" in lines["kafka_bootstrap_servers"]
    assert "env" in lines["redis_password"] and "**********" in lines["redis_password"]
    assert "default" in lines["alert_threshold"]
