"""What the fault tests share: reading outcomes back from Kafka, waiting, memory.

Outcomes are always read from the real topics (scores, alerts, DLQ) or from Redis,
never from the worker's own counters alone.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from pipeline_helpers import WorkerProcess, read_topic, values

from streams.producer import kafka_client_kwargs
from streams.records import Label, encode
from streams.settings import Settings


def all_records(settings: Settings, topic: str, idle_s: float = 2.0) -> list[dict[str, Any]]:
    """Every record of ``topic`` so far, decoded."""
    return values(asyncio.run(read_topic(settings, topic, idle_s=idle_s, timeout_s=120)))


def wait_all_scored(
    settings: Settings,
    wanted: Iterable[str],
    workers: list[WorkerProcess],
    timeout: float = 120.0,
) -> list[dict[str, Any]]:
    """Read ``scores`` until every id in ``wanted`` has a score (or ``timeout``); returns them.

    Fails early with the worker's log tail when a worker that should live has died.
    """
    wanted = set(wanted)
    deadline = time.monotonic() + timeout
    scores: list[dict[str, Any]] = []
    while True:
        scores = all_records(settings, settings.topic_scores)
        if wanted <= {v["tx_id"] for v in scores} or time.monotonic() > deadline:
            return scores
        for w in workers:
            assert w.alive(), f"worker died:\n{w.tail()}"


def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.3) -> bool:
    """Poll ``check`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


def duplicates(ids: Iterable[str]) -> dict[str, int]:
    """Ids seen more than once, with their counts."""
    return {k: n for k, n in Counter(ids).items() if n > 1}


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (from ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def send_labels(
    settings: Settings, labels: Iterable[tuple[str, int]], rate: float | None = None
) -> int:
    """Produce ``(tx_id, label)`` pairs to the labels topic (key: tx_id); returns the count."""
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings), linger_ms=5)
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        for tx_id, label in labels:
            if rate is not None:
                wait = started + sent / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            record = Label(tx_id=tx_id, label=label, source="analyst", labelled_at=time.time())
            await producer.send(settings.topic_labels, encode(record), key=tx_id.encode())
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent
