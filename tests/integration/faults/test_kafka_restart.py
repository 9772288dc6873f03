"""Restart Kafka mid-stream: the worker resumes and every transaction is scored.

The test's own broker is stopped (SIGTERM, clean shutdown) while transactions are being
produced and scored, then started again on the same ports and log folders. The producer
keeps sending through the outage (its records wait in its buffer); the worker must
reconnect by itself, without a restart of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import duplicates, wait_all_scored
from pipeline_helpers import pipeline_settings, wire_source, workers

from streams.producer import produce_transactions
from streams.services.kafka import KafkaBroker

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_kafka_restart_mid_stream_loses_nothing(
    settings: Any,
    tiny_model: Path,
    tmp_path: Path,
    private_kafka: KafkaBroker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the test's own clients log every refused reconnect while the broker is down
    caplog.set_level(logging.CRITICAL, logger="aiokafka")
    s = pipeline_settings(
        settings, tiny_model, kafka_bootstrap_servers=private_kafka.bootstrap_servers
    )
    source = wire_source(16_000, seed=23)
    sent = [0]
    marks: dict[str, int] = {}

    async def produce_through_restart() -> None:
        producing = asyncio.create_task(
            produce_transactions(s, source, rate=2_000, progress=lambda n: sent.__setitem__(0, n))
        )
        await asyncio.sleep(3.0)
        port, log_dir = private_kafka.port, private_kafka.data_dir
        marks["stopped_at"] = sent[0]
        await asyncio.to_thread(private_kafka.stop)
        await asyncio.sleep(3.0)
        await asyncio.to_thread(private_kafka.start)
        marks["restarted_at"] = sent[0]
        assert (private_kafka.port, private_kafka.data_dir) == (port, log_dir)
        await producing

    with workers(s, tmp_path, 1) as (worker,):
        worker.wait_ready()
        started = time.monotonic()
        asyncio.run(produce_through_restart())
        wanted = {tx["tx_id"] for tx, _ in source}
        scores = wait_all_scored(s, wanted, [worker], timeout=120)
        took = time.monotonic() - started
        assert worker.alive(), worker.tail()
    scored = {v["tx_id"] for v in scores}
    missing = wanted - scored
    print(
        f"\nbroker stopped after {marks['stopped_at']} sent, back after {marks['restarted_at']};"
        f" {len(scored)} of {len(wanted)} scored in {took:.1f} s,"
        f" {len(duplicates(v['tx_id'] for v in scores))} scored twice"
    )
    assert marks["stopped_at"] < len(source), "the stream ended before the broker stopped"
    assert not missing, f"{len(missing)} of {len(wanted)} transactions never scored"
