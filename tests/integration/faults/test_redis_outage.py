"""Stop Redis for 30 s mid-stream, with labels flowing.

The test's own Valkey (with snapshots, like a production Redis) is stopped for 30 s
while transactions stream in at 1,500/s and analysts' labels keep arriving. Expected:

* scoring goes on with the current model: scores keep arriving during the outage;
* the worker's ``riskstream_degraded{component="redis"}`` gauge is 1 during it, 0 after;
* every label sent during the outage is in the Redis case store afterwards;
* every transaction is scored; the worker never dies.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from fault_helpers import send_labels, wait_all_scored, wait_until
from pipeline_helpers import pipeline_settings, wire_source, workers

from streams.producer import produce_transactions
from streams.services.valkey import EmbeddedValkey

pytestmark = [pytest.mark.faults, pytest.mark.integration]

OUTAGE_S = 30.0
DEGRADED = "riskstream_degraded"
SLICE_S = 5.0


def test_redis_outage_keeps_scoring_and_loses_no_label(
    settings: Any, tiny_model: Path, tmp_path: Path, private_valkey: EmbeddedValkey
) -> None:
    s = pipeline_settings(
        settings,
        tiny_model,
        redis_url=private_valkey.url,
        case_cap_per_class=10_000,
        pending_label_ttl_s=300.0,
    )
    warmup = wire_source(3_000, seed=29)
    stream = wire_source(62_000, seed=31, n_customers=1_000)[3_000:]  # ~40 s at 1,500/s
    assert len(stream) == 59_000
    # labels of warm-up transactions (scored before the outage), both classes
    labelled = [(tx["tx_id"], i % 2) for i, (tx, _) in enumerate(warmup[:2_000])]
    seen_degraded: list[float] = []
    window: dict[str, float] = {}

    with workers(s, tmp_path, 1) as (worker,):
        worker.wait_ready()
        asyncio.run(produce_transactions(s, warmup))
        wait_all_scored(s, {tx["tx_id"] for tx, _ in warmup}, [worker], timeout=60)
        assert worker.sample(DEGRADED, component="redis") in (None, 0.0)

        def outage() -> None:
            time.sleep(3.0)
            private_valkey.stop()
            window["down"] = time.time()
            # labels flow during the outage
            asyncio.run(send_labels(s, labelled, rate=200))
            while time.time() < window["down"] + OUTAGE_S:
                if worker.sample(DEGRADED, component="redis") == 1.0:
                    seen_degraded.append(time.time())
                time.sleep(0.5)
            window["labels_done"] = time.time()
            private_valkey.start()
            window["up"] = time.time()

        breaker = threading.Thread(target=outage)
        breaker.start()
        asyncio.run(produce_transactions(s, stream, rate=1_500))
        window["produced"] = time.time()
        breaker.join()
        assert window["produced"] > window["up"], "the stream ended before Redis came back"
        assert window["labels_done"] <= window["up"]
        everything = {tx["tx_id"] for tx, _ in warmup + stream}
        scores = wait_all_scored(s, everything, [worker], timeout=120)
        recovered = wait_until(lambda: worker.sample(DEGRADED, component="redis") == 0.0, 30)
        client = redis.Redis.from_url(private_valkey.url)
        fraud_key, legit_key = f"{s.app_id}:cases:fraud", f"{s.app_id}:cases:legit"

        def cases() -> set[str]:
            members = client.zrange(fraud_key, 0, -1) + client.zrange(legit_key, 0, -1)
            return {m.decode() for m in members}

        wait_until(lambda: {t for t, _ in labelled} <= cases(), 60)
        stored_fraud = {m.decode() for m in client.zrange(fraud_key, 0, -1)}
        stored = cases()
        client.close()
        assert worker.alive(), worker.tail()

    down, up = window["down"], window["up"]
    during = [v for v in scores if down <= v["scored_at"] <= up]
    # scores per 5 s slice of the outage: scoring must go on all through it, not stall
    slices = [0] * int((up - down) // SLICE_S)
    for v in during:
        i = int((v["scored_at"] - down) // SLICE_S)
        if i < len(slices):
            slices[i] += 1
    scored = {v["tx_id"] for v in scores}
    print(
        f"\nRedis down {up - down:.1f} s: {len(during)} scores during it"
        f" ({len(during) / (up - down):.0f}/s; per {SLICE_S:g} s: {slices});"
        f" degraded seen {len(seen_degraded)}x; {len(stored)} cases stored"
        f" of {len(labelled)} labels sent during the outage"
    )
    assert up - down >= OUTAGE_S
    # scoring continued on the current model while Redis was down (1,500 tx/s offered)
    assert min(slices) >= 100, slices
    assert {v["model_version"] for v in during} == {scores[0]["model_version"]}
    assert seen_degraded, "the degraded gauge never showed the outage"
    assert recovered, "the degraded gauge did not return to 0 after Redis came back"
    assert everything <= scored, f"{len(everything - scored)} transactions never scored"
    missing = {t for t, _ in labelled} - stored
    assert not missing, f"{len(missing)} labels sent during the outage are not in the case store"
    assert stored_fraud == {t for t, y in labelled if y == 1}
