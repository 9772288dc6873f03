"""``riskstream produce`` and ``produce_transactions`` against the real Kafka broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer

from models.datasets import SimulatorConfig, simulate
from models.datasets.replay import from_simulation
from streams.producer import produce_transactions
from streams.records import parse_label, parse_transaction
from streams.services.process import free_port
from streams.settings import Settings

pytestmark = pytest.mark.integration

SMALL = SimulatorConfig(n_customers=200, n_terminals=400, n_days=5, seed=11)
RISKSTREAM = Path(sys.executable).with_name("riskstream")


async def _read_all(
    settings: Settings, topic: str, expected: int, timeout_s: float = 30.0
) -> list[Any]:
    """Every record of ``topic`` from the beginning, once ``expected`` have arrived."""
    # No group: the consumer is assigned every partition of the topic.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            records.extend(r for batch in batches.values() for r in batch)
        # Anything beyond `expected` would be a duplicate: give it a moment to show up.
        batches = await consumer.getmany(timeout_ms=300)
        records.extend(r for batch in batches.values() for r in batch)
        return records
    finally:
        await consumer.stop()


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RISKSTREAM_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        RISKSTREAM_TOPIC_TRANSACTIONS=settings.topic_transactions,
        RISKSTREAM_TOPIC_LABELS=settings.topic_labels,
        RISKSTREAM_STATE_DIR=str(settings.state_dir),
        COLUMNS="120",
    )
    return env


def _cli(
    env: dict[str, str], *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RISKSTREAM), "produce", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def test_simulated_transactions_round_trip_with_delayed_labels(settings: Any) -> None:
    s: Settings = settings()
    table = from_simulation(simulate(SMALL))
    n = 1500
    sent_from = time.time()
    stats = await produce_transactions(s, table.records(), limit=n, labels_delay=0.5)
    sent_until = time.time()
    assert (stats.sent, stats.labels_sent) == (n, n)

    records = await _read_all(s, s.topic_transactions, n)
    assert len(records) == n
    expected = {tx["tx_id"]: tx for tx in table.transactions()}
    for record in records:
        tx = parse_transaction(record.value)
        source = expected[tx.tx_id]
        assert record.key == source["card_id"].encode()  # keyed by card
        assert (tx.card_id, tx.terminal_id, tx.amount, tx.ts) == (
            source["card_id"], source["terminal_id"], source["amount"], source["ts"]
        )  # fmt: skip
        # Kafka's CreateTime is the wall-clock send time, whatever the event time says.
        assert sent_from - 1 <= record.timestamp / 1000 <= sent_until + 1
    assert len({parse_transaction(r.value).tx_id for r in records}) == n

    labels = await _read_all(s, s.topic_labels, n)
    assert len(labels) == n
    sent_at = {parse_transaction(r.value).tx_id: r.timestamp / 1000 for r in records}
    truth = dict(table.labels())
    for record in labels:
        label = parse_label(record.value)
        assert record.key == label.tx_id.encode()
        assert label.source == "simulator" and label.label == truth[label.tx_id]
        assert record.timestamp / 1000 - sent_at[label.tx_id] >= 0.45  # held back ~0.5 s


async def test_rate_is_paced(settings: Any) -> None:
    s: Settings = settings()
    table = from_simulation(simulate(SMALL))
    seen: list[int] = []
    stats = await produce_transactions(
        s, table.records(), rate=2000, limit=1000, progress=seen.append
    )
    assert stats.sent == 1000 and stats.labels_sent == 0
    assert 0.45 <= stats.elapsed_s < 5.0  # 1000 tx at 2000 tx/s cannot finish in < 0.5 s
    assert seen == sorted(seen) and seen[-1] == 1000 and len(seen) == 50  # chunks of rate/100


async def test_ts_now_stamps_wall_clock(settings: Any) -> None:
    s: Settings = settings()
    table = from_simulation(simulate(SMALL))
    before = time.time()
    await produce_transactions(s, table.records(), limit=50, stamp_now=True)
    records = await _read_all(s, s.topic_transactions, 50)
    stamps = [parse_transaction(r.value).ts for r in records]
    assert len(stamps) == 50 and all(before <= t <= time.time() for t in stamps)


def test_cli_simulated_with_labels(settings: Any) -> None:
    s: Settings = settings()
    result = _cli(
        _env(s), "--customers", "100", "--terminals", "200", "--days", "4", "--seed", "3",
        "--scenarios", "1,2,3,4,5", "--limit", "400", "--rate", "2000", "--labels-delay", "0.2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("produced 400 transactions in ") and last.endswith(" 400 labels"), last
    rate = float(last.split("(")[1].split(" tx/s")[0].replace(",", ""))
    assert 500 < rate <= 2100  # paced: never above the target (CPU starvation aside)
    records = asyncio.run(_read_all(s, s.topic_transactions, 400))
    labels = asyncio.run(_read_all(s, s.topic_labels, 400))
    assert len(records) == 400 and len(labels) == 400
    assert {parse_label(r.value).source for r in labels} == {"simulator"}


def test_cli_replays_a_csv_with_features(settings: Any, tmp_path: Path) -> None:
    s: Settings = settings()
    path = tmp_path / "cards.csv"
    pd.DataFrame(
        {"Time": [0, 1, 2], "V1": [0.5, -0.5, 1.5], "Amount": [1.0, 2.5, 0.0], "Class": [0, 1, 0]}
    ).to_csv(path, index=False)
    result = _cli(_env(s), "--replay", str(path), "--map", "time=Time,amount=Amount,label=Class",
                  "--labels-delay", "0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith(" 3 labels")
    txs = [parse_transaction(r.value) for r in asyncio.run(_read_all(s, s.topic_transactions, 3))]
    assert sorted((t.tx_id, t.card_id, t.features["V1"]) for t in txs) == [
        ("0", "unknown", 0.5), ("1", "unknown", -0.5), ("2", "unknown", 1.5)
    ]  # fmt: skip
    labels = [parse_label(r.value) for r in asyncio.run(_read_all(s, s.topic_labels, 3))]
    assert sorted((x.tx_id, x.label, x.source) for x in labels) == [
        ("0", 0, "replay"), ("1", 1, "replay"), ("2", 0, "replay")
    ]  # fmt: skip


def test_cli_unreachable_kafka_fails_fast_with_one_line(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(RISKSTREAM_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
               RISKSTREAM_STATE_DIR=str(tmp_path), COLUMNS="80")  # fmt: skip
    started = time.monotonic()
    result = _cli(env, "--customers", "20", "--terminals", "40", "--days", "2", timeout=60)
    took = time.monotonic() - started
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Kafka is not reachable at 127.0.0.1:")
    assert "Traceback" not in result.stdout + result.stderr
    assert took < 30  # aiokafka's own defaults would retry for 40 s and more


def test_cli_user_mistakes_are_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, RISKSTREAM_STATE_DIR=str(tmp_path))
    for args, message in [
        (("--scenarios", "1,9"), "unknown scenario code"),
        (("--replay", str(tmp_path / "missing.csv")), "no such file"),
        (("--ts", "later"), "--ts must be"),
    ]:
        result = _cli(env, *args, timeout=60)
        assert result.returncode != 0
        assert result.stderr.strip().startswith("error: ") and message in result.stderr, (
            result.stderr
        )
        assert len(result.stderr.strip().splitlines()) == 1
