"""Shared by the pipeline's integration tests: a small real model, worker processes, topic reads.

Nothing here fakes the system under test: the model is a matching network meta-trained
for a few seconds on simulated data (cached on disk for the session), the workers are
``riskstream worker`` subprocesses, and results are read back from Kafka and Redis.
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
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.artifacts import save_artifact
from models.datasets import SimulatorConfig, simulate
from models.features import build_features
from models.meta_train import MetaTrainConfig
from models.training import SupportConfig, fit_matching_network
from streams.services.process import free_port
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
RISKSTREAM = Path(sys.executable).with_name("riskstream")
MAX_BYTES = 4096
MAX_FEATURES = 8


def tiny_artifact(directory: Path) -> Path:
    """A matching network trained for a few seconds on a tiny simulation (cached)."""
    if (directory / "meta.json").is_file():
        return directory
    df = simulate(SimulatorConfig(n_customers=150, n_terminals=300, n_days=60, seed=7))
    features = build_features(df)
    mask = np.ones(len(df), dtype=bool)
    config = MetaTrainConfig(n_episodes=60, hidden=(16,), emb_dim=8, seed=7)
    artifact = fit_matching_network(
        df, features, mask, config, SupportConfig(n_fraud=60, n_legit=240, seed=7)
    )
    tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
    save_artifact(artifact.model, artifact.transform, artifact.support, artifact.meta, tmp)
    tmp.rename(directory)
    return directory


def simulated_records(n_customers: int, n_terminals: int, n_days: int, seed: int) -> pd.DataFrame:
    """Simulated transactions as wire-ready rows (string ids, epoch seconds)."""
    df = simulate(
        SimulatorConfig(n_customers=n_customers, n_terminals=n_terminals, n_days=n_days, seed=seed)
    )
    out = pd.DataFrame(
        {
            "tx_id": [f"s{seed}-{i}" for i in df["tx_id"].tolist()],
            "ts": (df["ts"].astype("int64") / 1e9).astype(float)
            if pd.api.types.is_datetime64_any_dtype(df["ts"])
            else df["ts"].astype(float),
            "card_id": ["c" + str(c) for c in df["card_id"].tolist()],
            "terminal_id": ["m" + str(t) for t in df["terminal_id"].tolist()],
            "amount": df["amount"].astype(float),
            "is_fraud": df["is_fraud"].astype(int),
        }
    )
    return out


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a ``riskstream worker`` subprocess using ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKSTREAM_")}
    for name, value in settings.model_dump().items():
        if value is None or name.endswith("password") or name == "model_signing_key":
            continue
        env[f"RISKSTREAM_{name.upper()}"] = str(value)
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class WorkerProcess:
    """One ``riskstream worker`` subprocess with its own free web port and log file."""

    def __init__(self, settings: Settings, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(RISKSTREAM), "worker", "-l", "info", "--web-port", str(self.port)],
            env=worker_env(settings, **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(REPO),
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:  # noqa: S310
            return r.read().decode()

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Every sample named exactly ``name`` (a counter's ``x_total``, a histogram's
        ``x_count``...) as (labels, value); none if the worker is unreachable."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = self.metrics()
        except OSError:
            return []
        return [
            (dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        ]

    def metric(self, name: str) -> float:
        """Sum of the samples named ``name`` over all labels (0 if absent or unreachable)."""
        return sum(value for _, value in self.samples(name))

    def sample(self, name: str, **labels: str) -> float | None:
        """The sample named ``name`` with exactly these labels (None if absent)."""
        return next((v for have, v in self.samples(name) if have == labels), None)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until /metrics answers and the worker has joined its group."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"worker exited early:\n{self.tail()}")
            try:
                self.metrics()
                if b"Worker ready" in self.log_path.read_bytes():
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready after {timeout} s:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def dump_tasks(self, wait_s: float = 3.0) -> None:
        """Ask the worker to log every thread's stack and asyncio task (mode's SIGUSR1),
        for a test that found it stuck; the dump lands in :attr:`log_path`."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGUSR1)
            time.sleep(wait_s)

    def kill(self) -> None:
        """SIGKILL, no cleanup (the crash under test)."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


@contextlib.contextmanager
def workers(settings: Settings, log_dir: Path, n: int, **env: str) -> Iterator[list[WorkerProcess]]:
    """Start ``n`` workers; always stop them (by PID) on exit."""
    started: list[WorkerProcess] = []
    try:
        for i in range(n):
            started.append(WorkerProcess(settings, log_dir / f"worker-{i}.log", **env))
        yield started
    finally:
        for w in started:
            w.stop()


async def read_topic(
    settings: Settings,
    topic: str,
    *,
    until: int | None = None,
    idle_s: float = 5.0,
    timeout_s: float = 60.0,
) -> list[Any]:
    """Every record of ``topic`` from the start: until ``until`` records or ``idle_s`` quiet."""
    from streams.producer import kafka_client_kwargs

    consumer = AIOKafkaConsumer(
        **kafka_client_kwargs(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            got = sum(len(v) for v in batch.values())
            for records in batch.values():
                out.extend(records)
            if got:
                quiet_since = time.monotonic()
            if until is not None and len(out) >= until:
                # read a little longer to catch duplicates beyond the expected count
                if time.monotonic() - quiet_since > 1.0:
                    break
            elif time.monotonic() - quiet_since > idle_s:
                break
        return out
    finally:
        await consumer.stop()


def values(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


@pytest.fixture(scope="session", name="tiny_model")
def tiny_model_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A matching network trained for a few seconds (built once per session)."""
    return tiny_artifact(tmp_path_factory.getbasetemp() / "tiny-model")


def pipeline_settings(settings: Any, model: Path, **overrides: Any) -> Settings:
    """Test settings: own topics and group, the tiny model, fast failure detection."""
    values: dict[str, Any] = {
        "model_path": model,
        "session_timeout_s": 6.0,
        "commit_interval_s": 0.5,
        "state_flush_interval_s": 0.5,
        "max_message_bytes": MAX_BYTES,
        "max_features": MAX_FEATURES,
        "alert_threshold": 0.6,
        "review_threshold": 0.3,
    }
    values.update(overrides)
    made: Settings = settings(create_topics=True, **values)
    return made


def wire_source(
    n: int, seed: int, n_customers: int = 400
) -> list[tuple[dict[str, Any], int | None]]:
    """The first ``n`` simulated transactions as (wire dict, no label)."""
    frame = simulated_records(
        n_customers=n_customers, n_terminals=2 * n_customers, n_days=40, seed=seed
    )
    rows = frame.head(n).to_dict("records")
    return [
        (
            {k: row[k] for k in ("tx_id", "ts", "card_id", "terminal_id", "amount")},
            None,
        )
        for row in rows
    ]
