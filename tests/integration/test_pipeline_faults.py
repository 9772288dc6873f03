"""Two ``riskstream worker`` processes in one consumer group, on real Kafka + Valkey.

* Together they split the partitions and score every transaction exactly once.
* ``kill -9`` one mid-stream: every transaction still gets at least one score, and
  alerts stay unique per ``tx_id``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from pipeline_helpers import (  # noqa: F401 - tiny_model is a fixture
    WorkerProcess,
    pipeline_settings,
    read_topic,
    tiny_model_fixture,
    values,
    wire_source,
    workers,
)

from streams.producer import produce_transactions
from streams.settings import Settings

pytestmark = pytest.mark.integration


def wait_for_stable_group(s: Settings, members: int, timeout: float = 60.0) -> list[set[int]]:
    """Until the group is Stable with ``members`` members each owning transactions
    partitions; returns each member's ``transactions`` partitions."""
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap_servers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            group = admin.describe_groups([s.app_id])[s.app_id]
            owned = []
            for member in group.get("members") or []:
                assignment = member.get("member_assignment") or {}
                parts: set[int] = set()
                for item in assignment.get("assigned_partitions", []):
                    if item["topic"] == s.topic_transactions:
                        parts |= set(item["partitions"])
                owned.append(parts)
            if group.get("group_state") == "Stable" and len(owned) == members and all(owned):
                return owned
            time.sleep(0.5)
    finally:
        admin.close()
    raise TimeoutError(f"group {s.app_id} not stable with {members} members")


def wait_idle(procs: list[WorkerProcess], expected: int, timeout: float = 60.0) -> None:
    """Until the workers together report ``expected`` consumed transactions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(w.metric("riskstream_transactions_consumed_total") for w in procs) >= expected:
            return
        time.sleep(0.5)


def test_two_workers_split_partitions_and_score_once(
    settings: Any, tiny_model: Path, tmp_path: Path
) -> None:
    s = pipeline_settings(settings, tiny_model)
    source = wire_source(12_000, seed=13)
    with workers(s, tmp_path, 2) as pair:
        for w in pair:
            w.wait_ready()
        owned = wait_for_stable_group(s, 2)
        time.sleep(2.0)  # recovery after the last rebalance
        asyncio.run(produce_transactions(s, source))
        scores = asyncio.run(read_topic(s, s.topic_scores, until=len(source), timeout_s=90))
        wait_idle(pair, len(source))
        per_worker = [w.metric("riskstream_transactions_scored_total") for w in pair]
        assert all(w.alive() for w in pair), [w.tail() for w in pair]
    ids = [v["tx_id"] for v in values(scores)]
    assert len(ids) == len(source)
    assert Counter(ids).most_common(1)[0][1] == 1
    assert set(ids) == {tx["tx_id"] for tx, _ in source}
    # both did work, and between them exactly the whole stream
    assert all(n > 0 for n in per_worker), per_worker
    assert sum(per_worker) == len(source)
    # the partitions were split, not shared: disjoint, and all of them covered
    assert not (owned[0] & owned[1])
    assert owned[0] | owned[1] == set(range(s.topic_partitions))


def test_kill_9_one_worker_mid_stream_loses_nothing(
    settings: Any, tiny_model: Path, tmp_path: Path
) -> None:
    s = pipeline_settings(settings, tiny_model)
    source = wire_source(20_000, seed=17)

    async def produce_and_kill(victim: WorkerProcess) -> None:
        producing = asyncio.create_task(produce_transactions(s, source, rate=4_000))
        await asyncio.sleep(2.0)
        victim.kill()
        await producing

    with workers(s, tmp_path, 2) as pair:
        for w in pair:
            w.wait_ready()
        wait_for_stable_group(s, 2)
        time.sleep(2.0)
        victim, survivor = pair
        asyncio.run(produce_and_kill(victim))
        assert not victim.alive()
        deadline = time.monotonic() + 90
        wanted = {tx["tx_id"] for tx, _ in source}
        scores: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            scores = values(asyncio.run(read_topic(s, s.topic_scores, idle_s=2.0)))
            if wanted <= {v["tx_id"] for v in scores}:
                break
        else:
            survivor.dump_tasks()  # stuck: its log now shows where
        alerts = values(asyncio.run(read_topic(s, s.topic_alerts, idle_s=2.0)))
        assert survivor.alive(), survivor.tail()
    scored = {v["tx_id"] for v in scores}
    assert wanted <= scored, (
        f"{len(wanted - scored)} transactions never scored; survivor log: {survivor.log_path}"
    )
    alert_ids = [a["tx_id"] for a in alerts]
    assert len(alert_ids) == len(set(alert_ids)), "duplicate alerts"
    # a transaction whose every score is at or above the threshold has its alert
    by_tx: defaultdict[str, list[float]] = defaultdict(list)
    for v in scores:
        by_tx[v["tx_id"]].append(v["score"])
    always_high = {tx for tx, ss in by_tx.items() if min(ss) >= s.alert_threshold}
    assert always_high <= set(alert_ids)
    replayed = sum(1 for ss in by_tx.values() if len(ss) > 1)
    print(f"\n{replayed} transactions scored twice after the kill; {len(alert_ids)} alerts")


def test_worker_joining_mid_stream_rebalances_without_replays(
    settings: Any, tiny_model: Path, tmp_path: Path
) -> None:
    # Scale-out is a rebalance, not a failure: the first worker finishes its batch, flushes
    # its state and commits before it gives partitions away, so nothing is scored twice.
    s = pipeline_settings(settings, tiny_model)
    source = wire_source(80_000, seed=19, n_customers=1200)  # ~40 s at 2,000/s at most
    joined = threading.Event()
    produced: list[str] = []

    def until_joined() -> Iterator[tuple[dict[str, Any], int | None]]:
        stop_at: float | None = None
        for record in source:
            if joined.is_set():
                stop_at = stop_at or time.monotonic() + 3.0  # keep going 3 s after the join
                if time.monotonic() > stop_at:
                    return
            produced.append(record[0]["tx_id"])
            yield record

    first = WorkerProcess(s, tmp_path / "first.log")
    second: WorkerProcess | None = None
    try:
        first.wait_ready()
        wait_for_stable_group(s, 1)
        second = WorkerProcess(s, tmp_path / "second.log")

        def join() -> None:
            assert second is not None
            second.wait_ready(timeout=120)
            wait_for_stable_group(s, 2)
            joined.set()

        async def produce_while_joining() -> None:
            waiting = asyncio.create_task(asyncio.to_thread(join))
            await produce_transactions(s, until_joined(), rate=2_000)
            await waiting

        asyncio.run(produce_while_joining())
        assert len(produced) < len(source), "the stream ended before the second worker joined"
        both = [first, second]
        wait_idle(both, len(produced))
        scores = values(asyncio.run(read_topic(s, s.topic_scores, idle_s=3.0)))
        per_worker = [w.metric("riskstream_transactions_scored_total") for w in both]
        assert all(w.alive() for w in both)
    finally:
        for w in (first, second):
            if w is not None:
                w.stop()
    ids = Counter(v["tx_id"] for v in scores)
    twice = sum(1 for n in ids.values() if n > 1)
    missing = set(produced) - set(ids)
    assert not missing, f"{len(missing)} of {len(produced)} never scored ({twice} twice)"
    assert twice == 0, f"{twice} transactions scored twice across the rebalance"
    assert per_worker[1] > 0, per_worker
