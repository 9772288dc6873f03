"""The score pipeline end to end: a ``riskstream worker`` subprocess on real Kafka + Valkey.

* 20,000 simulated transactions → exactly 20,000 score records, one per ``tx_id``.
* 1,000 malformed messages of 14 kinds mixed in → each in the DLQ with its reason, the
  worker alive, every valid transaction scored.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from pipeline_helpers import (  # noqa: F401 - tiny_model is a fixture
    MAX_BYTES,
    MAX_FEATURES,
    RISKSTREAM,
    pipeline_settings,
    read_topic,
    tiny_model_fixture,
    values,
    wire_source,
    worker_env,
    workers,
)

from streams.producer import kafka_client_kwargs, produce_transactions
from streams.records import Transaction, encode, parse_alert, parse_label, parse_score
from streams.settings import Settings

pytestmark = pytest.mark.integration


def test_every_transaction_scored_exactly_once(
    settings: Any, tiny_model: Path, tmp_path: Path
) -> None:
    s = pipeline_settings(settings, tiny_model)
    source = wire_source(20_000, seed=3)
    assert len(source) == 20_000
    with workers(s, tmp_path, 1) as (worker,):
        worker.wait_ready()
        stats = asyncio.run(produce_transactions(s, source))
        assert stats.sent == 20_000
        scores = asyncio.run(read_topic(s, s.topic_scores, until=20_000, timeout_s=90))
        alerts = asyncio.run(read_topic(s, s.topic_alerts, idle_s=2.0))
        assert worker.alive(), worker.tail()
        scored_metric = worker.metric("riskstream_transactions_scored_total")
    ids = [parse_score(r.value).tx_id for r in scores]
    assert len(ids) == 20_000, f"{len(ids)} score records"
    assert Counter(ids).most_common(1)[0][1] == 1, "a transaction was scored twice"
    assert set(ids) == {tx["tx_id"] for tx, _ in source}
    assert scored_metric == 20_000
    # every score names the model and says how long it took; alerts are the high scores
    parsed = [parse_score(r.value) for r in scores[:500]]
    assert {p.model_version for p in parsed} == {parsed[0].model_version}
    assert all(p.latency_ms >= 0 and len(p.explanation) == s.explain_top_k for p in parsed)
    alert_ids = [parse_alert(r.value).tx_id for r in alerts]
    assert len(alert_ids) == len(set(alert_ids))
    high = {v["tx_id"] for v in values(scores) if v["score"] >= s.alert_threshold}
    assert set(alert_ids) == high


# --- malformed input -----------------------------------------------------------------
VALID = {
    "tx_id": "x",
    "ts": 1_700_000_000.0,
    "card_id": "card-9",
    "terminal_id": "term-9",
    "amount": 10.0,
    "schema_version": 1,
}


def _json(**changes: Any) -> bytes:
    obj = {**VALID, **changes}
    return orjson.dumps({k: v for k, v in obj.items() if v is not ...})


MALFORMED: list[tuple[str, bytes | None, bytes | None, str]] = [
    # (kind, key, value, expected reason)
    ("empty", b"card-9", b"", "not_json"),
    ("garbage", b"card-9", b"not json at all {", "not_json"),
    ("tombstone", b"card-9", None, "not_json"),
    ("bad utf-8", b"card-9", b'{"tx_id": "\xff\xfe"}', "not_utf8"),
    ("array", b"card-9", b"[1, 2, 3]", "not_object"),
    ("missing terminal", b"card-9", _json(terminal_id=...), "missing_field"),
    ("string amount", b"card-9", _json(amount="12.50"), "wrong_type"),
    ("NaN amount", b"card-9", _json(amount=1.5).replace(b":1.5", b":NaN"), "non_finite"),
    ("negative amount", b"card-9", _json(amount=-5.0), "negative_amount"),
    ("schema 2", b"card-9", _json(schema_version=2), "unknown_schema_version"),
    (
        "too many features",
        b"card-9",
        _json(features={f"f{i}": 1.0 for i in range(MAX_FEATURES + 4)}),
        "too_many_features",
    ),
    ("oversized", b"card-9", _json(channel="x" * (MAX_BYTES + 100)), "oversized"),
    ("empty tx_id", b"card-9", _json(tx_id=""), "invalid_value"),
    ("wrong key", b"another-card", _json(), "bad_key"),
    ("no key", None, _json(), "bad_key"),
]


async def _produce_mixed(
    s: Settings, valid: list[dict[str, Any]], n_bad: int
) -> dict[int, tuple[str, bytes | None, str]]:
    """Valid transactions with ``n_bad`` malformed messages spread among them.

    Returns, per malformed message, its tx index marker → (kind, value, expected reason),
    keyed by a unique ``tx_id``/payload so the DLQ records can be matched back.
    """
    producer = AIOKafkaProducer(**kafka_client_kwargs(s), linger_ms=5)
    await producer.start()
    expected: dict[int, tuple[str, bytes | None, str]] = {}
    try:
        every = max(1, len(valid) // n_bad)
        bad = 0
        for i, tx in enumerate(valid):
            await producer.send(
                s.topic_transactions, encode(Transaction(**tx)), key=tx["card_id"].encode()
            )
            if i % every == 0 and bad < n_bad:
                kind, key, value, reason = MALFORMED[bad % len(MALFORMED)]
                if value is not None and value.startswith(b"{") and b'"tx_id":"x"' in value:
                    value = value.replace(b'"tx_id":"x"', f'"tx_id":"bad-{bad}"'.encode())
                partition = bad % s.topic_partitions
                meta = await (
                    await producer.send(s.topic_transactions, value, key=key, partition=partition)
                )
                expected[meta.offset * 1000 + partition] = (kind, value, reason)
                bad += 1
        await producer.flush()
    finally:
        await producer.stop()
    assert len(expected) == n_bad
    return expected


def test_malformed_messages_dead_lettered_with_reason(
    settings: Any, tiny_model: Path, tmp_path: Path
) -> None:
    s = pipeline_settings(settings, tiny_model)
    valid = [tx for tx, _ in wire_source(5_000, seed=5)]
    with workers(s, tmp_path, 1) as (worker,):
        worker.wait_ready()
        expected = asyncio.run(_produce_mixed(s, valid, 1_000))
        dlq = asyncio.run(read_topic(s, s.topic_dlq, until=1_000, timeout_s=60))
        scores = asyncio.run(read_topic(s, s.topic_scores, until=len(valid), timeout_s=60))
        time.sleep(0.5)
        assert worker.alive(), worker.tail()
        dead_metric = worker.metric("riskstream_dead_letter_total")
    letters = values(dlq)
    assert len(letters) == 1_000
    seen_kinds: Counter[str] = Counter()
    for letter in letters:
        marker = letter["offset"] * 1000 + letter["partition"]
        kind, value, reason = expected[marker]
        assert letter["error"] == reason, f"{kind}: {letter['error']} ({letter['detail']})"
        assert letter["topic"] == s.topic_transactions
        assert base64.b64decode(letter["payload_b64"]) == (value or b"")
        seen_kinds[kind] += 1
    assert len(seen_kinds) == len(MALFORMED) >= 10
    assert dead_metric == 1_000
    scored = [v["tx_id"] for v in values(scores)]
    assert sorted(scored) == sorted(tx["tx_id"] for tx in valid)


def test_alerts_cli_tails_unique_alerts_and_label_cli_sends_labels(
    settings: Any, tiny_model: Path, tmp_path: Path
) -> None:
    s = pipeline_settings(settings, tiny_model, alert_threshold=0.5, review_threshold=0.3)
    source = wire_source(3_000, seed=29)
    env = worker_env(s)
    with workers(s, tmp_path, 1) as (worker,):
        worker.wait_ready()
        asyncio.run(produce_transactions(s, source))
        asyncio.run(read_topic(s, s.topic_scores, until=len(source)))
        alerts = values(asyncio.run(read_topic(s, s.topic_alerts, idle_s=2.0)))
    assert alerts, "the test needs some alerts"
    # an alert delivered twice (e.g. Redis was down) is shown once by the consumer side
    asyncio.run(_resend(s, s.topic_alerts, orjson.dumps(alerts[0])))
    tail = subprocess.run(
        [str(RISKSTREAM), "alerts", "--json", "--from-beginning", "--idle-timeout", "3"],
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    shown = [orjson.loads(line) for line in tail.stdout.splitlines()]
    assert shown, tail.stderr.decode()
    assert sorted(a["tx_id"] for a in shown) == sorted(a["tx_id"] for a in alerts)

    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("tx_id,label\n" + "\n".join(f"{a['tx_id']},fraud" for a in alerts[:3]))
    one = subprocess.run(
        [str(RISKSTREAM), "label", source[0][0]["tx_id"], "--legit"],
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    many = subprocess.run(
        [str(RISKSTREAM), "label", "--file", str(labels_csv)],
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert b"sent 1 label" in one.stdout and b"sent 3 label" in many.stdout
    labels = [parse_label(r.value) for r in asyncio.run(read_topic(s, s.topic_labels, until=4))]
    assert {(lab.tx_id, lab.label) for lab in labels} == {(source[0][0]["tx_id"], 0)} | {
        (a["tx_id"], 1) for a in alerts[:3]
    }
    bad = subprocess.run(
        [str(RISKSTREAM), "label", "tx-1"], env=env, capture_output=True, timeout=60
    )
    assert bad.returncode != 0 and b"--fraud or --legit" in bad.stderr
    assert b"Traceback" not in bad.stderr


async def _resend(s: Settings, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(**kafka_client_kwargs(s))
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"dup")
    finally:
        await producer.stop()
