"""streams/lag.py: per-partition consumer lag from the consumer's assignment and offsets."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from streams.app import create_app
from streams.lag import LagReporter, partition_lags, read_lags
from streams.metrics import RiskstreamMetrics
from streams.settings import Settings

TX, LABELS, CHANGELOG = "transactions", "labels", "rs-card-state-changelog"


class FakeConsumer:
    """The few calls of Faust's consumer that the lag reader makes, with call counts."""

    def __init__(
        self,
        assignment: set[TP],
        highwaters: dict[TP, int],
        committed: dict[TP, int],
        positions: dict[TP, int] | None = None,
        fail: BaseException | None = None,
    ) -> None:
        self._assignment = assignment
        self._highwaters = highwaters
        self._committed_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._committed_offset.update(committed)
        self._positions = positions or {}
        self.fail = fail
        self.asked_highwaters: list[tuple[TP, ...]] = []
        self.asked_positions: list[TP] = []

    def assignment(self) -> set[TP]:
        if self.fail is not None:
            raise self.fail
        return set(self._assignment)

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        self.asked_highwaters.append(tps)
        return {tp: self._highwaters[tp] for tp in tps if tp in self._highwaters}

    async def position(self, tp: TP) -> int | None:
        self.asked_positions.append(tp)
        return self._positions.get(tp)


def lag_samples(m: RiskstreamMetrics) -> dict[tuple[str, str], float]:
    family = next(f for f in m.registry.collect() if f.name == "riskstream_consumer_lag_messages")
    return {(s.labels["topic"], s.labels["partition"]): s.value for s in family.samples}


@pytest.fixture
def m() -> RiskstreamMetrics:
    return RiskstreamMetrics(CollectorRegistry(), process=False)


def test_lag_is_highwater_minus_committed_per_partition() -> None:
    t0, t1, l0 = TP(TX, 0), TP(TX, 1), TP(LABELS, 0)
    lags = partition_lags(
        [t0, t1, l0, TP(CHANGELOG, 0)],
        highwaters={t0: 1000, t1: 50, l0: 7, TP(CHANGELOG, 0): 99},
        committed={t0: 400, t1: 50, l0: 3, TP(CHANGELOG, 0): 0},
        positions={},
        topics={TX, LABELS},
    )
    assert lags == {(TX, 0): 600.0, (TX, 1): 0.0, (LABELS, 0): 4.0}


def test_position_stands_in_before_the_first_commit_and_unknown_is_left_out() -> None:
    t0, t1, t2 = TP(TX, 0), TP(TX, 1), TP(TX, 2)
    lags = partition_lags(
        [t0, t1, t2],
        highwaters={t0: 10, t1: 10},  # t2: the broker did not answer for it
        committed={t0: None, t1: None},
        positions={t0: 4, t1: None, t2: 0},
        topics={TX},
    )
    assert lags == {(TX, 0): 6.0}


def test_a_commit_racing_the_highwater_reading_is_not_negative() -> None:
    assert partition_lags([TP(TX, 0)], {TP(TX, 0): 10}, {TP(TX, 0): 12}, {}, {TX}) == {(TX, 0): 0.0}


async def test_read_lags_asks_the_broker_only_for_watched_partitions() -> None:
    t0, t1, c0 = TP(TX, 0), TP(TX, 1), TP(CHANGELOG, 0)
    consumer = FakeConsumer(
        {t0, t1, c0}, highwaters={t0: 30, t1: 8, c0: 5}, committed={t0: 25}, positions={t1: 2}
    )
    assert await read_lags(consumer, {TX}) == {(TX, 0): 5.0, (TX, 1): 6.0}
    assert [set(call) for call in consumer.asked_highwaters] == [{t0, t1}]
    assert consumer.asked_positions == [t1]  # only where nothing was committed yet


async def test_reporter_exports_and_follows_a_rebalance(m: RiskstreamMetrics) -> None:
    t0, t1 = TP(TX, 0), TP(TX, 1)
    consumer = FakeConsumer({t0, t1}, highwaters={t0: 100, t1: 20}, committed={t0: 90, t1: 20})
    reporter = LagReporter(consumer, m, {TX, LABELS})
    assert await reporter.update() == {(TX, 0): 10.0, (TX, 1): 0.0}
    assert lag_samples(m) == {(TX, "0"): 10.0, (TX, "1"): 0.0}
    consumer._assignment = {t1}  # partition 0 revoked by a rebalance
    consumer._committed_offset[t1] = 15
    await reporter.update()
    assert lag_samples(m) == {(TX, "1"): 5.0}


async def test_a_failed_reading_keeps_the_last_values(m: RiskstreamMetrics) -> None:
    t0 = TP(TX, 0)
    consumer = FakeConsumer({t0}, highwaters={t0: 9}, committed={t0: 1})
    reporter = LagReporter(consumer, m, {TX})
    await reporter.update()
    consumer.fail = RuntimeError("Consumer thread not yet started")
    assert await reporter.update() is None
    assert lag_samples(m) == {(TX, "0"): 8.0}


async def test_a_broker_that_does_not_answer_skips_one_reading(m: RiskstreamMetrics) -> None:
    class Hanging(FakeConsumer):
        async def highwaters(self, *tps: TP) -> dict[TP, int]:
            await asyncio.sleep(10)
            return {}

    reporter = LagReporter(Hanging({TP(TX, 0)}, {}, {}), m, {TX})
    assert await reporter.update(timeout_s=0.05) is None
    assert lag_samples(m) == {}


async def test_the_worker_app_runs_the_lag_timer_on_its_own_topics(m: RiskstreamMetrics) -> None:
    class Stub:
        version = "lag-test"

    settings = Settings(app_id="lag-test", topic_transactions="tx-x", topic_labels="lb-x")
    app: Any = create_app(settings, scorer=Stub())
    timer = next(t for t in app._app_tasks if t.__name__ == "consumer_lag")
    tick = timer.__wrapped__.__wrapped__  # the body the timer runs every LAG_INTERVAL_S
    tx, lb, other = TP("tx-x", 0), TP("lb-x", 1), TP("transactions", 0)
    app._consumer = FakeConsumer(
        {tx, lb, other}, highwaters={tx: 12, lb: 3, other: 99}, committed={tx: 2, lb: 3}
    )
    app.rs.metrics = m
    await tick()
    assert lag_samples(m) == {("tx-x", "0"): 10.0, ("lb-x", "1"): 0.0}
