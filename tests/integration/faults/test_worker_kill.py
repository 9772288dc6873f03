"""``kill -9`` one of two workers while transactions arrive at 5,000/s.

The survivor takes over the victim's partitions from their last committed offsets, so
some transactions may be scored twice (at-least-once), but none may be left without a
score, and alerts stay unique per ``tx_id`` (the Redis alert dedupe).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import all_records, duplicates, wait_all_scored
from pipeline_helpers import WorkerProcess, pipeline_settings, wire_source, workers
from test_pipeline_faults import wait_for_stable_group

from streams.producer import produce_transactions

pytestmark = [pytest.mark.faults, pytest.mark.integration]

RATE = 5_000


def test_kill_9_at_5k_per_second_leaves_no_transaction_unscored(
    settings: Any, tiny_model: Path, tmp_path: Path
) -> None:
    s = pipeline_settings(settings, tiny_model)
    source = wire_source(40_000, seed=37, n_customers=1_000)  # 8 s at 5,000/s
    timing: dict[str, float] = {}

    async def produce_and_kill(victim: WorkerProcess) -> None:
        started = time.monotonic()
        producing = asyncio.create_task(produce_transactions(s, source, rate=RATE))
        await asyncio.sleep(3.0)
        victim.kill()
        timing["killed_after_s"] = time.monotonic() - started
        stats = await producing
        timing["produce_s"] = stats.elapsed_s

    with workers(s, tmp_path, 2) as (victim, survivor):
        for w in (victim, survivor):
            w.wait_ready()
        wait_for_stable_group(s, 2)
        time.sleep(2.0)  # the last rebalance's recovery
        victim_scored_before = victim.metric("riskstream_transactions_scored_total")
        asyncio.run(produce_and_kill(victim))
        assert not victim.alive()
        wanted = {tx["tx_id"] for tx, _ in source}
        scores = wait_all_scored(s, wanted, [survivor], timeout=120)
        alerts = all_records(s, s.topic_alerts)
        assert survivor.alive(), survivor.tail()
    assert victim_scored_before == 0
    scored = {v["tx_id"] for v in scores}
    missing = wanted - scored
    twice = duplicates(v["tx_id"] for v in scores)
    alert_ids = [a["tx_id"] for a in alerts]
    print(
        f"\nproduced {len(source)} in {timing['produce_s']:.1f} s"
        f" ({len(source) / timing['produce_s']:.0f}/s),"
        f" killed after {timing['killed_after_s']:.1f} s;"
        f" {len(scored)} scored, {len(twice)} scored twice, {len(alert_ids)} alerts"
    )
    assert timing["killed_after_s"] < timing["produce_s"], "the kill came after the stream"
    assert not missing, f"{len(missing)} of {len(wanted)} transactions never scored"
    assert not duplicates(alert_ids), f"duplicate alerts: {list(duplicates(alert_ids))[:5]}"
    # every transaction scored at or above the threshold each time it was scored has its alert
    by_tx: defaultdict[str, list[float]] = defaultdict(list)
    for v in scores:
        by_tx[v["tx_id"]].append(v["score"])
    always_high = {tx for tx, ss in by_tx.items() if min(ss) >= s.alert_threshold}
    assert always_high, "no alert-worthy transaction: the test would prove nothing about alerts"
    assert always_high <= set(alert_ids)
