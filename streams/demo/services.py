"""The demo's moving parts: embedded Kafka and Valkey, and worker processes.

Everything started here is stopped by the context managers, in reverse order, even when
the demo fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streams.errors import RiskstreamError
from streams.services.kafka import KafkaBroker
from streams.services.process import free_port
from streams.services.topics import ensure_topics
from streams.services.valkey import EmbeddedValkey
from streams.settings import Settings


@dataclass
class Worker:
    """A ``riskstream worker`` subprocess and where its metrics are served."""

    process: subprocess.Popen[bytes]
    web_port: int
    log_path: Path

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/metrics"

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=2) as reply:  # noqa: S310 loopback
            return str(reply.read().decode())


@contextlib.contextmanager
def embedded_services(base: Settings, root: Path) -> Iterator[Settings]:
    """Start Kafka and (unless ``redis_url`` points elsewhere) Valkey; yield settings for them.

    The broker's and Valkey's data live under ``root``, which is wiped first so that each
    demo starts from empty topics.
    """
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(KafkaBroker(root / "kafka"))
        redis_url = base.redis_url
        if not _redis_given_explicitly(base):
            valkey = stack.enter_context(EmbeddedValkey(root / "valkey"))
            redis_url = valkey.url
        settings = Settings(
            **{
                **base.model_dump(),
                "kafka_bootstrap_servers": broker.bootstrap_servers,
                "redis_url": redis_url,
                "state_dir": root,
            }
        )
        ensure_topics(settings)
        yield settings


def _redis_given_explicitly(settings: Settings) -> bool:
    # Settings are the only reader of the environment: a non-default URL means the user
    # pointed riskstream at their own Redis/Valkey.
    return settings.redis_url != Settings.model_fields["redis_url"].default


def _env_for(settings: Settings, web_port: int) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"RISKSTREAM_{name.upper()}"] = str(value)
    env["RISKSTREAM_WEB_PORT"] = str(web_port)
    env["OPENBLAS_NUM_THREADS"] = "1"
    return env


@contextlib.contextmanager
def worker_process(settings: Settings, name: str, ready_timeout: float = 90.0) -> Iterator[Worker]:
    """Run ``riskstream worker`` as a child process until the block ends."""
    web_port = free_port()
    log_path = settings.state_dir / f"{name}.log"
    log = log_path.open("wb")
    cmd = [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "warning"]
    process = subprocess.Popen(  # noqa: S603 our own CLI
        cmd, env=_env_for(settings, web_port), stdout=log, stderr=subprocess.STDOUT
    )
    worker = Worker(process, web_port, log_path)
    try:
        _wait_ready(worker, ready_timeout)
        yield worker
    finally:
        _stop(process)
        log.close()


def _wait_ready(worker: Worker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise RiskstreamError(f"the worker exited at start; see {worker.log_path}")
        with contextlib.suppress(OSError):
            if "riskstream_" in worker.metrics_text():
                return
        time.sleep(0.5)
    raise RiskstreamError(
        f"the worker did not serve metrics in {timeout:.0f} s; see {worker.log_path}"
    )


def _stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
