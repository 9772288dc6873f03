"""The score pipeline, its runner and the score agent, without services.

Redis and the producer are in-memory stand-ins (``streams_fakes``); the scorer is the
real :class:`models.scorer.Scorer` over a tiny untrained network. The Faust agent runs
under ``test_context()``. Integration tests cover the same paths on real Kafka/Valkey.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from streams_fakes import FakeEmitter, FakeRedis, small_scorer

from models.features import CardState, card_features
from streams import native
from streams.alert_dedupe import AlertClaims
from streams.consumer import BatchConsumer
from streams.outputs import (
    BatchExplanations,
    alert_reason,
    alert_value,
    dumps,
    explanation_dicts,
    score_value,
)
from streams.pipeline import RawRecord, ScorePipeline
from streams.records import (
    Explanation,
    Score,
    Transaction,
    alert_from_score,
    encode,
    parse_alert,
    parse_score,
)
from streams.redis_conn import RedisGuard
from streams.runner import BatchRunner
from streams.runtime import ScorerRuntime
from streams.scored_store import ScoredStore
from streams.settings import Settings
from streams.tables import CardStates
from streams.terminal_store import TerminalStore

TOPIC = "transactions"


@pytest.fixture(autouse=True, params=["native", "python"])
def score_path(request: pytest.FixtureRequest) -> Any:
    """Every test here runs on the compiled kernels and on their Python references."""
    was = native.active()
    if not native.configure(request.param == "native") and request.param == "native":
        pytest.skip(f"streams.native: {native.MISSING}")
    yield request.param
    native.configure(was)


def make(alert_threshold: float = 0.99, scorer: Any = None, **overrides: Any) -> SimpleNamespace:
    s = Settings(
        app_id="unit",
        alert_threshold=alert_threshold,
        review_threshold=min(0.5, alert_threshold),
        max_features=4,
        max_message_bytes=2048,
        **overrides,
    )
    redis, emitter = FakeRedis(), FakeEmitter()
    table: dict[str, Any] = {}
    cards = CardStates(table, "unit-card-state-changelog", emitter.send_many)
    terminals = TerminalStore(redis, prefix="unit:", cache_ttl_s=0.0)
    scored = ScoredStore(redis, prefix="unit:", ttl_s=3600)
    claims = AlertClaims(s, prefix="unit:")
    guard = RedisGuard(retry_s=0.0, timeout_s=1.0)
    runtime: ScorerRuntime[Any] = ScorerRuntime(scorer or small_scorer())
    pipeline = ScorePipeline(
        s,
        runtime=runtime,
        cards=cards,
        terminals=terminals,
        scored=scored,
        claims=claims,
        emitter=emitter,  # type: ignore[arg-type]
        redis=redis,
        guard=guard,
    )
    return SimpleNamespace(
        settings=s,
        redis=redis,
        emitter=emitter,
        table=table,
        cards=cards,
        terminals=terminals,
        scored=scored,
        claims=claims,
        guard=guard,
        runtime=runtime,
        pipeline=pipeline,
    )


def tx_record(
    i: int,
    card: str = "c1",
    amount: float = 12.5,
    offset: int | None = None,
    partition: int = 0,
    **changes: Any,
) -> RawRecord:
    tx = Transaction(
        tx_id=f"t{i}", ts=1.7e9 + i * 60.0, card_id=card, terminal_id=f"m{i % 3}", amount=amount
    )
    value = encode(tx)
    for k, v in changes.items():
        value = orjson.dumps({**orjson.loads(value), k: v})
    stamp = int(time.time() * 1000) - 5
    return RawRecord(TOPIC, partition, i if offset is None else offset, stamp, card.encode(), value)


async def run(rig: SimpleNamespace, records: list[RawRecord]) -> list[Any]:
    """Process a batch and wait for its background Redis writes and alerts."""
    futures = await rig.pipeline.process(records)
    await rig.pipeline.writer.idle()
    return futures


def raw(offset: int, value: bytes | None, key: bytes | None = b"c1") -> RawRecord:
    return RawRecord(TOPIC, 0, offset, None, key, value)


def sent(rig: SimpleNamespace, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(v) for _, _, v in rig.emitter.sent[topic]]


# --- outputs are the wire records -------------------------------------------------------
def test_fast_score_and_alert_bytes_equal_record_encoding() -> None:
    why = [("case1", 1, 0.75), ("case2", 0, 0.125)]
    value = score_value(
        tx_id="t1",
        card_id="c1",
        score=0.875,
        decision="block",
        model_version="v3",
        scored_at=1.7e9,
        latency_ms=2.5,
        explanation=[{"case_id": c, "label": lab, "weight": w} for c, lab, w in why],
    )
    record = Score(
        tx_id="t1",
        card_id="c1",
        score=0.875,
        decision="block",
        model_version="v3",
        scored_at=1.7e9,
        latency_ms=2.5,
        explanation=[Explanation(case_id=c, label=lab, weight=w) for c, lab, w in why],
    )
    assert dumps(value) == encode(record)
    assert parse_score(dumps(value)) == record
    reason = alert_reason(0.875, 0.8, why)
    alert = alert_value(value, amount=250.0, reason=reason)
    assert dumps(alert) == encode(alert_from_score(record, amount=250.0, reason=reason))
    assert parse_alert(dumps(alert)).reason.startswith("score 0.875 >= 0.80")


def test_bulk_explanation_json_equals_the_dicts_encoding() -> None:
    ids = ["plain", 'quo"te', "ünï", "back\\slash", "tab\t", 42]
    rows: list[Any] = [
        [("plain", 1, 0.5), ('quo"te', 0, 1e-300), ("ünï", 1, 0.333333343267)],
        [],
        [("back\\slash", 0, 1.0)],
        [("tab\t", 1, float("nan")), (42, 0, 123456.789)],
    ]
    bulk = BatchExplanations.from_tuples(rows)
    assert bulk.json_rows([0, 1, 2, 3]) == [orjson.dumps(explanation_dicts(r)) for r in rows]
    assert bulk.json_rows([3, 1]) == [orjson.dumps(explanation_dicts(rows[i])) for i in (3, 1)]
    by_index = BatchExplanations(
        np.array([[5, 0], [1, 5]]), np.array([[0.75, 0.25], [1.0, 0.0]]), ids, [1, 0, 1, 0, 1, 0]
    )
    assert by_index.row(1) == [('quo"te', 0, 1.0), (42, 0, 0.0)]
    assert by_index.json_rows([0, 1]) == [
        orjson.dumps(explanation_dicts(by_index.row(j))) for j in (0, 1)
    ]
    fragment = orjson.Fragment(by_index.json_rows([1])[0])
    value = score_value(
        tx_id="t",
        card_id="c",
        score=0.5,
        decision="review",
        model_version="v",
        scored_at=1.0,
        latency_ms=0.0,
        explanation=fragment,
    )
    listed = dict(value, explanation=explanation_dicts(by_index.row(1)))
    assert dumps(value) == dumps(listed)


class _TuplesOnly:
    """A scorer with ``score_batch`` only (no explanation arrays), like test wrappers."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.version, self.schema = inner, inner.version, inner.schema

    def score_batch(self, X: np.ndarray) -> Any:
        return self.inner.score_batch(X)


async def test_records_explained_alike_from_arrays_and_from_tuples() -> None:
    scorer = small_scorer()
    outputs = []
    for rig in (make(alert_threshold=0.0, scorer=scorer), make(0.0, scorer=_TuplesOnly(scorer))):
        await run(rig, [tx_record(i, card=f"c{i % 2}") for i in range(6)])
        scores = sent(rig, rig.settings.topic_scores)
        alerts = sent(rig, rig.settings.topic_alerts)
        outputs.append(
            [(s["tx_id"], s["score"], s["explanation"]) for s in scores]
            + [(a["tx_id"], a["reason"], a["explanation"]) for a in alerts]
        )
        assert len(scores) == len(alerts) == 6 and all(len(s["explanation"]) for s in scores)
    assert outputs[0] == outputs[1]


# --- the pipeline -------------------------------------------------------------------------
async def test_valid_scored_invalid_dead_lettered_with_reason() -> None:
    rig = make()
    records = [
        tx_record(0),
        raw(1, b"{not json"),
        tx_record(2),
        raw(3, None),
        raw(4, b"\xff\xfe"),
        tx_record(5, amount=-1.0, offset=5),
        tx_record(6, offset=6, schema_version=7),
        raw(
            7,
            encode(Transaction(tx_id="t7", ts=1.0, card_id="c1", terminal_id="m", amount=1.0)),
            key=b"other",
        ),
        tx_record(8, offset=8, features={f"f{i}": 1.0 for i in range(9)}),
        raw(9, b"x" * 5000),
        tx_record(10),
    ]
    futures = await run(rig, records)
    assert futures and all(f.done() for f in futures)
    scores = sent(rig, rig.settings.topic_scores)
    assert [s["tx_id"] for s in scores] == ["t0", "t2", "t10"]
    for s in scores:
        assert parse_score(orjson.dumps(s)).model_version == "v1"
        assert 0.0 <= s["score"] <= 1.0 and s["latency_ms"] >= 0.0
    reasons = {d["offset"]: d["error"] for d in sent(rig, rig.settings.topic_dlq)}
    assert reasons == {
        1: "not_json",
        3: "not_json",
        4: "not_utf8",
        5: "negative_amount",
        6: "unknown_schema_version",
        7: "bad_key",
        8: "too_many_features",
        9: "oversized",
    }
    # per-card state learnt in arrival order; terminal counts and vectors written to Redis
    assert list(rig.cards.get("c1").ts) == [1.7e9, 1.7e9 + 120.0, 1.7e9 + 600.0]
    counts = await rig.terminals.counts("m0")
    assert sum(counts[0].values()) == 1  # t0 (t10 is on m1, t2 on m2)
    stored = await rig.scored.get_many(["t0", "t2", "t10", "t1"])
    assert set(stored) == {"t0", "t2", "t10"}
    assert stored["t2"]["terminal_id"] == "m2" and len(stored["t2"]["x"]) == 17


async def test_feature_vector_matches_the_shared_definitions() -> None:
    rig = make()
    await run(rig, [tx_record(0, amount=10.0), tx_record(1, amount=30.0)])
    stored = await rig.scored.get_many(["t1"])
    state = CardState([1.7e9], [10.0])
    expected = card_features(state, 1.7e9 + 60.0, 30.0)
    x = stored["t1"]["x"]
    assert x[3:9] == pytest.approx(list(expected[:6]))  # card windows, after tx features
    assert x[-2:] == pytest.approx(list(expected[6:]))  # gap and amount / card mean


async def test_replayed_offsets_score_again_but_do_not_learn_twice() -> None:
    rig = make()
    batch = [tx_record(0), tx_record(1)]
    await run(rig, batch)
    await run(rig, batch)  # e.g. after a crash before the commit
    assert len(rig.cards.get("c1")) == 2
    assert len(sent(rig, rig.settings.topic_scores)) == 4
    counts = await rig.terminals.counts("m0")
    assert sum(counts[0].values()) == 1


async def test_alerts_claimed_once_and_replays_checked_against_kafka() -> None:
    rig = make(alert_threshold=0.0)  # every score alerts
    checked: list[Any] = []

    async def unpublished(replayed: Any) -> set[str]:
        checked.extend(replayed)
        return {"t1"}  # t0's alert is already in Kafka, t1's was lost with the old worker

    rig.claims.unpublished = unpublished
    await run(rig, [tx_record(0), tx_record(1)])
    assert [a["tx_id"] for a in sent(rig, rig.settings.topic_alerts)] == ["t0", "t1"]
    await run(rig, [tx_record(0), tx_record(1)])
    assert [a["tx_id"] for a in sent(rig, rig.settings.topic_alerts)] == ["t0", "t1", "t1"]
    assert [(tx, p) for tx, p, _ in checked] == [("t0", 0), ("t1", 0)]
    assert all(isinstance(ms, int) for _, _, ms in checked)


async def test_redis_down_scoring_continues_and_writes_catch_up() -> None:
    rig = make(alert_threshold=0.0)
    rig.redis.down = True
    await run(rig, [tx_record(0), tx_record(1)])
    assert len(sent(rig, rig.settings.topic_scores)) == 2
    assert len(sent(rig, rig.settings.topic_alerts)) == 2  # sent unclaimed
    assert rig.guard.degraded and rig.scored.pending == 2 and rig.terminals.pending_writes
    rig.redis.down = False
    await run(rig, [tx_record(2)])
    assert not rig.guard.degraded and rig.scored.pending == 0
    assert set(await rig.scored.get_many(["t0", "t1", "t2"])) == {"t0", "t1", "t2"}


async def test_lost_lua_scripts_are_reloaded() -> None:
    rig = make()
    rig.redis.scripts_loaded = False  # Redis restarted empty
    await run(rig, [tx_record(0)])
    assert not rig.guard.degraded
    assert sum((await rig.terminals.counts("m0"))[0].values()) == 1


class _FailsOnBigAmounts:
    """Wraps a scorer so that a batch containing an amount > 1000 raises."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.version, self.schema = inner, inner.version, inner.schema

    def score_batch(self, X: np.ndarray) -> Any:
        if (X[:, 0] > 1000).any():
            raise FloatingPointError("model blew up")
        return self.inner.score_batch(X)


async def test_a_record_that_breaks_scoring_is_isolated() -> None:
    rig = make(scorer=_FailsOnBigAmounts(small_scorer()))
    await run(rig, [tx_record(0), tx_record(1, amount=5000.0), tx_record(2)])
    assert [s["tx_id"] for s in sent(rig, rig.settings.topic_scores)] == ["t0", "t2"]
    (letter,) = sent(rig, rig.settings.topic_dlq)
    assert letter["error"] == "scoring_error" and letter["offset"] == 1


async def test_model_swaps_between_batches_only() -> None:
    rig = make()
    await run(rig, [tx_record(0)])
    rig.runtime.swap(small_scorer(version="v2", seed=1))
    await run(rig, [tx_record(1), tx_record(2)])
    versions = [s["model_version"] for s in sent(rig, rig.settings.topic_scores)]
    assert versions == ["v1", "v2", "v2"]


# --- acknowledgements ---------------------------------------------------------------------
async def test_offsets_acked_only_when_delivered_and_state_flushed() -> None:
    rig = make()
    acked: list[int] = []
    runner = BatchRunner(
        rig.pipeline,
        rig.cards,
        ack=lambda rs: acked.extend(r.offset for r in rs),
        max_batch=2,
        flush_interval_s=3600.0,
    )
    await runner.handle([tx_record(0), tx_record(1), tx_record(2)])
    assert acked == [] and runner.unsettled == 3  # state not flushed yet
    assert rig.emitter.sent["unit-card-state-changelog"] == []
    await rig.pipeline.writer.idle()  # alerts and Redis writes run in the background
    await runner.tick()
    assert acked == [0, 1, 2]
    (change,) = rig.emitter.sent["unit-card-state-changelog"]
    assert change[0] == 0 and orjson.loads(change[2])["o"] == 2
    assert rig.table["c1"] is rig.cards.get("c1")  # the table holds the flushed card


async def test_undelivered_outputs_are_reprocessed_before_ack() -> None:
    rig = make()
    acked: list[int] = []
    runner = BatchRunner(
        rig.pipeline,
        rig.cards,
        ack=lambda rs: acked.extend(r.offset for r in rs),
        max_batch=10,
        flush_interval_s=0.0,
    )
    rig.emitter.fail_topics.add(rig.settings.topic_scores)
    await runner.handle([tx_record(0)])
    assert acked == []
    rig.emitter.fail_topics.clear()
    for _ in range(5):  # each check: reprocess what failed, or ack what was delivered
        await rig.pipeline.writer.idle()
        await runner.tick()
    assert acked == [0]
    scored = [s["tx_id"] for s in sent(rig, rig.settings.topic_scores)]
    assert len(scored) >= 2 and set(scored) == {"t0"}
    assert len(rig.cards.get("c1")) == 1  # reprocessing did not learn the card twice


def test_batch_consumer_relies_on_pinned_faust_internals() -> None:
    # BatchConsumer uses these faust-streaming 0.15.3 internals; an upgrade must keep them.
    assert issubclass(BatchConsumer, FaustConsumer)
    assert inspect.iscoroutinefunction(FaustConsumer._wait_next_records)
    assert inspect.iscoroutinefunction(FaustConsumer._add_gap)
    source = inspect.getsource(FaustConsumer.__init__) + inspect.getsource(FaustConsumer)
    for name in (
        "_acked",
        "_acked_index",
        "_committed_offset",
        "_read_offset",
        "_n_acked",
        "_waiting_for_ack",
        "_buffered_partitions",
    ):
        assert f"self.{name}" in source, name
    assert "acked_index = self._acked_index[tp]" in inspect.getsource(FaustConsumer.ack)


def test_terminal_cache_sweep_keeps_counts_just_loaded() -> None:
    store = TerminalStore(None, prefix="p:", cache_ttl_s=0.0)
    store.load({"m1": {b"t100": b"5"}}, now=0.0)
    store.load({"m1": {b"t100": b"5"}}, now=10.0)  # a sweep is due at this load
    assert store.features([("m1", 108)])[("m1", 108)][0] == 5.0


# --- the Faust agent under test_context ----------------------------------------------------
async def test_score_agent_in_stream_mode() -> None:
    from streams.app import create_app

    s = Settings(
        app_id="unit-agent",
        consume_mode="stream",
        max_batch=10,
        max_wait_s=0.01,
        alert_threshold=0.99,
        review_threshold=0.5,
    )
    app = create_app(s, scorer=small_scorer())
    rig = make()
    pipeline = app.rs.pipeline
    for name in ("emitter", "redis"):
        setattr(pipeline, name, getattr(rig, name))
    pipeline.terminals.redis = pipeline.scored.redis = rig.redis
    pipeline.guard.timeout_s = 1.0
    app.rs.cards._send = rig.emitter.send_many
    agent = app.agents["score"]
    async with agent.test_context() as ctx:
        for i in range(3):
            r = tx_record(i)
            await ctx.put(r.value, key=r.key, wait=False)
        await ctx.put(b"garbage", key=b"c1", wait=False)
        deadline = time.monotonic() + 5
        while len(rig.emitter.sent[s.topic_scores]) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        while not rig.emitter.sent[s.topic_dlq] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    assert [orjson.loads(v)["tx_id"] for _, _, v in rig.emitter.sent[s.topic_scores]] == [
        "t0",
        "t1",
        "t2",
    ]
    (letter,) = [orjson.loads(v) for _, _, v in rig.emitter.sent[s.topic_dlq]]
    assert letter["error"] == "not_json"


async def test_old_alert_claims_are_duplicates_not_replays() -> None:
    # a tx_id seen again an hour later: its alert went out then; no Kafka scan, no resend
    claims = AlertClaims(Settings(app_id="unit"), prefix="unit:")
    an_hour_ago = int((time.time() - 3600) * 1000)
    assert await claims.unpublished([("t1", 0, an_hour_ago), ("t2", 1, None)]) == set()


def _acking_runner(
    *, max_batch: int, flush_interval_s: float
) -> tuple[SimpleNamespace, list[int], BatchRunner]:
    """A rig, the offsets its runner acknowledges, and the runner."""
    rig = make()
    acked: list[int] = []
    runner = BatchRunner(
        rig.pipeline,
        rig.cards,
        ack=lambda rs: acked.extend(r.offset for r in rs),
        max_batch=max_batch,
        flush_interval_s=flush_interval_s,
    )
    return rig, acked, runner


async def test_flush_rounds_keep_up_with_the_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch flushes twice as many cards as it had records, so a round never falls
    behind a stream of distinct cards (FLUSH_CHUNK is only the floor)."""
    from streams import runner as runner_module

    monkeypatch.setattr(runner_module, "FLUSH_CHUNK", 2)
    rig, acked, runner = _acking_runner(max_batch=3, flush_interval_s=0.0)
    await runner.handle([tx_record(i, card=f"c{i}") for i in range(6)])
    changelog = rig.emitter.sent["unit-card-state-changelog"]
    assert [orjson.loads(k) for _, k, _ in changelog] == [f"c{i}" for i in range(6)]
    await rig.pipeline.writer.idle()
    await runner.handle([])  # acks what has settled meanwhile
    assert acked == [0, 1, 2, 3, 4, 5]


async def test_idle_timer_flushes_in_chunks_between_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between batches the timer carries a round on FLUSH_CHUNK cards at a time, and a
    batch that arrives meanwhile is scored between two chunks (no 25-40 ms stall)."""
    from streams import runner as runner_module

    monkeypatch.setattr(runner_module, "FLUSH_CHUNK", 2)
    # never due by time: only the timer flushes here
    rig, acked, runner = _acking_runner(max_batch=6, flush_interval_s=3600.0)
    await runner.handle([tx_record(i, card=f"c{i}") for i in range(6)])
    await rig.pipeline.writer.idle()
    assert acked == [] and rig.cards.dirty == 6
    flushes_before = rig.cards.flushes
    between: list[int] = []

    async def batch_meanwhile() -> None:
        await asyncio.sleep(0)  # the timer has flushed its first chunk and yielded
        between.append(rig.cards.dirty)
        await runner.handle([tx_record(6, card="c6")])

    await asyncio.gather(runner.tick(), batch_meanwhile())
    assert rig.cards.flushes - flushes_before >= 3  # 6 cards, 2 at a time
    assert between and 0 < between[0] < 6  # the batch ran while the round was half done
    await rig.pipeline.writer.idle()
    await runner.tick()
    assert acked == [0, 1, 2, 3, 4, 5, 6]


async def test_batch_consumer_skips_records_it_already_took_after_a_seek_back() -> None:
    from collections import defaultdict

    from faust.types import TP

    consumer = object.__new__(BatchConsumer)  # only the offset bookkeeping is exercised
    consumer._read_offset = defaultdict(lambda: None)
    consumer._taken_upto = {}
    gaps: list[tuple[int, int]] = []

    async def add_gap(tp: Any, start: int, end: int) -> None:
        gaps.append((start, end))

    consumer._add_gap = add_gap  # type: ignore[method-assign]
    tp = TP("transactions", 0)
    first = [RawRecord("transactions", 0, o, None, b"c", b"{}") for o in range(5, 10)]
    assert [r.offset for r in await consumer._accept(tp, first)] == [5, 6, 7, 8, 9]
    consumer._read_offset[tp] = 5  # the position jumped back to the committed offset
    again = first + [RawRecord("transactions", 0, 12, None, b"c", b"{}")]
    assert [r.offset for r in await consumer._accept(tp, again)] == [12]
    assert gaps == [(10, 11)]  # skipped offsets (e.g. control records) stay committable


def test_worker_consumer_fetches_with_a_short_long_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust creates the worker's aiokafka consumer with a 1.5 s fetch wait; the batch
    consumer's thread shortens it (records arriving during an idle fetch waited for it)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    from streams.consumer import FETCH_MAX_WAIT_MS, BatchConsumerThread

    made = SimpleNamespace(_fetch_max_wait_ms=1500)  # what Faust's own method returns
    monkeypatch.setattr(AIOKafkaConsumerThread, "_create_worker_consumer", lambda *_: made)
    thread = object.__new__(BatchConsumerThread)
    assert thread._create_worker_consumer(None) is made
    assert made._fetch_max_wait_ms == FETCH_MAX_WAIT_MS <= 50
    assert BatchConsumer._new_consumer_thread.__qualname__.startswith("BatchConsumer.")
    # aiokafka's consumer hands this attribute to its Fetcher when it starts (pinned 0.14)
    import aiokafka

    source = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in source
