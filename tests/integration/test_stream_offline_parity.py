"""The stream and the offline builder give the same feature vectors (to 1e-6).

Simulated transactions go through a real worker (Kafka, the card-state table, terminal
counts in Valkey) week by week; after each week its fraud labels are sent, as analysts
would, so the next week's terminal risk can see them (label delay: 7 days). The vectors
the worker scored with (stored for the labels agent) must equal
``models.features.build_features`` over the same transactions and labels.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from aiokafka import AIOKafkaProducer
from pipeline_helpers import (  # noqa: F401 - tiny_model is a fixture
    WorkerProcess,
    pipeline_settings,
    simulated_records,
    tiny_model_fixture,
    workers,
)

from models.features import DAY_SECONDS, build_features
from streams.producer import kafka_client_kwargs, produce_transactions
from streams.records import Label, encode
from streams.redis_conn import connect_redis
from streams.scored_store import ScoredStore
from streams.settings import Settings

pytestmark = pytest.mark.integration


def wait_for(worker: WorkerProcess, metric: str, at_least: float, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.metric(metric) >= at_least:
            return
        assert worker.alive(), worker.tail()
        time.sleep(0.2)
    raise TimeoutError(f"{metric} < {at_least}:\n{worker.tail()}")


async def send_labels(s: Settings, tx_ids: list[str]) -> None:
    producer = AIOKafkaProducer(**kafka_client_kwargs(s))
    await producer.start()
    try:
        for tx_id in tx_ids:
            label = Label(tx_id=tx_id, label=1, source="test", labelled_at=time.time())
            await producer.send(s.topic_labels, encode(label), key=tx_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def stored_vectors(s: Settings, tx_ids: list[str]) -> dict[str, list[float]]:
    redis = connect_redis(s)
    try:
        store = ScoredStore(redis, prefix=f"{s.app_id}:", ttl_s=s.feature_ttl_s)
        found: dict[str, list[float]] = {}
        for start in range(0, len(tx_ids), 1000):
            chunk = await store.get_many(tx_ids[start : start + 1000])
            found.update({tx: entry["x"] for tx, entry in chunk.items()})
        return found
    finally:
        await redis.aclose()


@pytest.mark.parametrize("score_path", ["native", "python"])
def test_stream_vectors_equal_offline_vectors(
    settings: Any, tiny_model: Path, tmp_path: Path, score_path: str
) -> None:
    """Both score paths: the compiled kernels and their Python references."""
    s = pipeline_settings(
        settings, tiny_model, terminal_cache_ttl_s=0.0, native=score_path == "native"
    )
    frame = simulated_records(n_customers=60, n_terminals=120, n_days=36, seed=23)
    day = np.floor(frame["ts"].to_numpy() / DAY_SECONDS).astype(np.int64)
    week = (day - day.min()) // 7
    frauds = int(frame["is_fraud"].sum())
    assert frauds > 20 and week.max() >= 4  # enough history for every terminal window

    with workers(s, tmp_path, 1) as (worker,):
        worker.wait_ready()
        info = worker.samples("riskstream_worker_info")
        assert info and info[0][0]["score_path"] == score_path, info
        sent = labels = 0
        for w in range(int(week.max()) + 1):
            rows = frame[week == w]
            source = [
                ({k: row[k] for k in ("tx_id", "ts", "card_id", "terminal_id", "amount")}, None)
                for row in rows.to_dict("records")
            ]
            asyncio.run(produce_transactions(s, source))
            sent += len(source)
            wait_for(worker, "riskstream_transactions_scored_total", sent)
            fraud_ids = rows.loc[rows["is_fraud"] == 1, "tx_id"].tolist()
            if fraud_ids:  # the week's fraud labels, sent right after their week
                asyncio.run(send_labels(s, fraud_ids))
                labels += len(fraud_ids)
                wait_for(worker, "riskstream_labels_consumed_total", labels)
        assert worker.alive(), worker.tail()
        assert worker.metric("riskstream_dead_letter_total") == 0
    stream = asyncio.run(stored_vectors(s, frame["tx_id"].tolist()))
    assert len(stream) == len(frame)

    labels_df = pd.DataFrame({"tx_id": frame["tx_id"], "label": frame["is_fraud"]})
    offline = build_features(frame.drop(columns=["is_fraud"]), labels=labels_df)
    got = np.array([stream[tx] for tx in frame["tx_id"]], dtype=np.float32)
    np.testing.assert_allclose(got, offline.values, rtol=1e-6, atol=1e-6)
    # the label-delayed terminal risk was really exercised, not all zeros
    risk = offline.column("terminal_risk_30d")
    assert (risk > 0).sum() > 10
