"""A label flood far beyond the case cap: the case store stays at the cap, memory stays flat.

10,000 transactions are scored, then 60,000 labels arrive for them (six rounds, each
flipping every label, so cases keep changing class) plus 5,000 labels for transactions
that do not exist. The Redis case store must hold exactly ``cap`` cases per class, all
from the latest round; the unknown labels must leave the pending set (dead-lettered);
and the worker's resident memory must stay bounded.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis
from fault_helpers import rss_mb, send_labels, wait_all_scored, wait_until
from pipeline_helpers import WorkerProcess, pipeline_settings, wire_source, workers

from streams.producer import produce_transactions

pytestmark = [pytest.mark.faults, pytest.mark.integration]

CAP = 200
ROUNDS = 6
N_TX = 10_000
N_UNKNOWN = 5_000
RSS_GROWTH_LIMIT_MB = 64.0  # torch alone makes the worker ~750 MiB
SECOND_HALF_LIMIT_MB = 16.0


def consumed(worker: WorkerProcess) -> float:
    return worker.metric("riskstream_labels_consumed_total")


def test_label_flood_keeps_the_case_store_at_its_cap_and_memory_bounded(
    settings: Any, tiny_model: Path, tmp_path: Path, redis_url: str
) -> None:
    # No adaptation by case count or timer: this measures the label path and the case
    # store. Flipped labels still raise drift alarms, and each one adapts and hot-swaps.
    s = pipeline_settings(
        settings,
        tiny_model,
        case_cap_per_class=CAP,
        pending_label_ttl_s=2.0,
        adapt_min_new_cases=10**9,
        adapt_interval_s=1e6,
    )
    source = wire_source(N_TX, seed=61, n_customers=800)
    tx_ids = [tx["tx_id"] for tx, _ in source]
    client = redis.Redis.from_url(redis_url)
    fraud_key, legit_key = f"{s.app_id}:cases:fraud", f"{s.app_id}:cases:legit"
    data_key, pending_key = f"{s.app_id}:cases:data", f"{s.app_id}:labels:pending"
    flood = [(t, (i + r) % 2) for r in range(ROUNDS) for i, t in enumerate(tx_ids)]
    unknown = [(f"ghost-{i}", i % 2) for i in range(N_UNKNOWN)]
    try:
        with workers(s, tmp_path, 1) as (worker,):
            worker.wait_ready()
            asyncio.run(produce_transactions(s, source))
            wait_all_scored(s, tx_ids, [worker], timeout=90)
            # warm the label path up (imports, scripts, buffers) before the baseline
            warm = asyncio.run(send_labels(s, [(t, 1) for t in tx_ids[:2_000]]))
            assert wait_until(lambda: worker.metric("riskstream_labels_consumed_total") >= warm, 60)
            rss = [rss_mb(worker.pid)]
            sent = warm
            quarter = len(flood) // 4
            parts = [flood[i * quarter : (i + 1) * quarter] for i in range(4)]
            parts[0] += unknown
            for part in parts:  # memory after each quarter
                sent += asyncio.run(send_labels(s, part))
                assert wait_until(lambda n=sent: consumed(worker) >= n, 180, 1.0), consumed(worker)
                rss.append(rss_mb(worker.pid))
            drained = wait_until(lambda: client.zcard(pending_key) == 0, 60, step=1.0)
            dead = worker.metric("riskstream_dead_letter_total")
            assert worker.alive(), worker.tail()
        fraud = {m.decode() for m in client.zrange(fraud_key, 0, -1)}
        legit = {m.decode() for m in client.zrange(legit_key, 0, -1)}
        stored = client.hlen(data_key)
    finally:
        for key in client.scan_iter(match=f"{s.app_id}:*"):
            client.delete(key)
        client.close()

    print(
        f"\n{sent} labels (cap {CAP}/class): {len(fraud)} fraud + {len(legit)} legit cases,"
        f" {stored} payloads; {dead:.0f} dead letters; worker RSS before and after each"
        f" quarter: {' / '.join(f'{m:.1f}' for m in rss)} MiB"
    )
    assert len(fraud) == CAP and len(legit) == CAP
    assert stored == 2 * CAP, "case payloads outlived their evicted cases"
    last_round = {t: (i + ROUNDS - 1) % 2 for i, t in enumerate(tx_ids)}
    assert all(last_round[t] == 1 for t in fraud) and all(last_round[t] == 0 for t in legit)
    assert drained, "labels for unknown transactions stayed pending"
    assert dead >= N_UNKNOWN
    assert rss[-1] - rss[0] < RSS_GROWTH_LIMIT_MB, f"RSS grew {rss[-1] - rss[0]:.1f} MiB"
    # bounded, not merely slow: the second half of the flood adds (almost) nothing
    assert rss[4] - rss[2] < SECOND_HALF_LIMIT_MB, f"RSS still growing: {rss}"
