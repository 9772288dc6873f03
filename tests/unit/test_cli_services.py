"""`riskstream up/down/status/config`: one-line errors, nothing left behind, no services needed.

The real start and stop of both services is in tests/integration/test_services_cli.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.cli import main
from streams.services.kafka_jars import POM, kafka_home
from streams.services.process import free_port, pid_cwd
from streams.settings import Settings, get_settings

RISKSTREAM = Path(sys.executable).with_name("riskstream")
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> Iterator[Run]:
    """``run(*args, **env) -> (exit code, stdout, stderr)`` of ``riskstream`` in-process."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"RISKSTREAM_{name.upper()}", raising=False)
    monkeypatch.setenv("RISKSTREAM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str, **env: str) -> tuple[int, str, str]:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    get_settings.cache_clear()


def _assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    assert code != 0
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for fragment in fragments:
        assert fragment in last
    return last


def _processes_working_in(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cwd = pid_cwd(int(entry.name))
            if cwd is not None and folder in (cwd, *cwd.parents):
                found.append(int(entry.name))
    return found


def test_console_script_without_java_prints_one_line_and_starts_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKSTREAM_")}
    env |= {"PATH": "/nonexistent", "RISKSTREAM_STATE_DIR": str(tmp_path)}
    result = subprocess.run(
        [str(RISKSTREAM), "up"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    _assert_one_line_error(result.returncode, result.stderr, "`java` is not installed", "openjdk")
    assert not _processes_working_in(tmp_path)
    assert not (tmp_path / "services.json").exists()


def test_up_without_maven_and_no_cached_jars_is_one_line(cli: Run, tmp_path: Path) -> None:
    java = shutil.which("java")
    if java is None:
        pytest.skip("java is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(java)
    code, _, err = cli("up", PATH=str(bin_dir), RISKSTREAM_CACHE_DIR=str(tmp_path / "cache"))
    _assert_one_line_error(code, err, "`mvn` is not installed", "maven")
    assert not _processes_working_in(tmp_path / "state")


def test_broker_not_ready_in_time_is_one_line_and_leaves_no_jvm(cli: Run, tmp_path: Path) -> None:
    if not (kafka_home(Settings(), POM) / "libs" / ".complete").is_file():
        pytest.skip("Kafka jars not cached yet (`python -m streams.services.kafka fetch`)")
    code, _, err = cli("up", RISKSTREAM_KAFKA_START_TIMEOUT_S="0.2")
    last = _assert_one_line_error(code, err, "did not become ready in 0.2 s", "see ")
    assert last.endswith(str(tmp_path / "state" / "kafka" / "server.log"))
    time.sleep(0.2)
    assert not _processes_working_in(tmp_path / "state")


def test_status_shows_unreachable_external_services(cli: Run) -> None:
    code, out, err = cli(
        "status",
        RISKSTREAM_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        RISKSTREAM_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    assert code == 0, err
    rows = [line for line in out.splitlines() if "external" in line]
    assert len(rows) == 2
    assert all("unreachable" in row for row in rows)


def test_down_with_nothing_recorded(cli: Run) -> None:
    code, out, err = cli("down")
    assert code == 0, err
    assert "nothing to stop" in out


def test_down_never_stops_a_process_that_is_not_ours(cli: Run, tmp_path: Path) -> None:
    """A recorded PID now used by another process (here: this test) is left alone."""
    state = tmp_path / "state"
    state.mkdir()
    record = {"kafka": {"pid": os.getpid(), "port": 1}, "settings": {}}
    (state / "services.json").write_text(json.dumps(record))
    code, out, err = cli("down")
    assert code == 0, err
    assert f"was not running (pid {os.getpid()} is gone or not ours)" in out
    assert "kafka" not in json.loads((state / "services.json").read_text())


def test_invalid_setting_is_one_line(cli: Run) -> None:
    code, _, err = cli("config", RISKSTREAM_REVIEW_THRESHOLD="lots")
    _assert_one_line_error(code, err, "RISKSTREAM_REVIEW_THRESHOLD")
