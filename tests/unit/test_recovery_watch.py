"""The card-state restore watchdog: when it calls a restore stalled, and what it restarts."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.recovery_watch import (
    RecoveryProgress,
    behind,
    describe,
    restart_reading,
    task_stacks,
)

CL = "rs-card-state-changelog"


def test_a_moving_restore_is_never_stalled_however_long_it_takes() -> None:
    p = RecoveryProgress(stall_s=5, max_restarts=1)
    verdicts = [
        p.observe(in_recovery=True, remaining=10_000 - 100 * i, now=4.0 * i) for i in range(50)
    ]
    assert set(verdicts) == {"ok"}


def test_progress_after_a_restart_clears_the_count() -> None:
    p = RecoveryProgress(stall_s=5, max_restarts=1)
    assert p.observe(in_recovery=True, remaining=50, now=0) == "ok"
    assert p.observe(in_recovery=True, remaining=50, now=6) == "stalled"
    assert p.restarts == 1
    assert p.observe(in_recovery=True, remaining=40, now=7) == "ok"  # the restart helped
    assert p.restarts == 0
    assert p.observe(in_recovery=True, remaining=40, now=13) == "stalled"  # not give_up


def test_give_up_after_max_restarts_without_progress() -> None:
    p = RecoveryProgress(stall_s=5, max_restarts=2)
    seen = [p.observe(in_recovery=True, remaining=7, now=t) for t in (0, 5, 10, 15, 20)]
    assert seen == ["ok", "stalled", "stalled", "give_up", "give_up"]


def test_a_new_restore_starts_with_a_clean_slate() -> None:
    p = RecoveryProgress(stall_s=5, max_restarts=0)
    p.observe(in_recovery=True, remaining=7, now=0)
    assert p.observe(in_recovery=True, remaining=7, now=5) == "give_up"
    assert p.observe(in_recovery=False, remaining=0, now=6) == "ok"
    # the next rebalance's restore: its first look is never a stall, even with the same count
    assert p.observe(in_recovery=True, remaining=7, now=7) == "ok"


def recovery(offsets: dict[TP, int], highwaters: dict[TP, int]) -> Any:
    remaining = Counter({tp: highwaters[tp] - offsets.get(tp, -1) for tp in highwaters})
    return SimpleNamespace(
        active_offsets=offsets,
        active_highwaters=highwaters,
        active_remaining=lambda: remaining,
    )


def test_behind_lists_only_partitions_short_of_their_highwater() -> None:
    tp0, tp1, tp2 = TP(CL, 0), TP(CL, 1), TP(CL, 2)
    r = recovery({tp0: 346, tp1: 10}, {tp0: 346, tp1: 308, tp2: 999})
    assert behind(r) == {tp1: (10, 308), tp2: (-1, 999)}


class Calls(list[str]):
    """An ordered record of what the watchdog asked of the app's parts."""


def fake_app(calls: Calls, *, flow: bool, control: bool, fetcher_state: str) -> Any:
    async def seek_wait(offsets: dict[TP, int]) -> None:
        calls.append(f"seek {sorted((tp.partition, o) for tp, o in offsets.items())}")

    async def stop() -> None:
        calls.append("fetcher stop")

    async def maybe_start() -> bool:
        calls.append("fetcher maybe_start")
        return True

    consumer = SimpleNamespace(
        seek_wait=seek_wait,
        resume_partitions=lambda tps: calls.append(f"resume {sorted(t.partition for t in tps)}"),
        resume_flow=lambda: calls.append("resume_flow"),
        flow_active=flow,
        _active_partitions={TP(CL, 1)},
        _paused_partitions={TP(CL, 2)},
        _buffered_partitions=set(),
    )
    return SimpleNamespace(
        consumer=consumer,
        flow_control=SimpleNamespace(
            is_active=lambda: control, resume=lambda: calls.append("flow_control resume")
        ),
        tables=SimpleNamespace(changelog_queue=asyncio.Queue(maxsize=4096)),
        _fetcher=SimpleNamespace(
            state=fetcher_state,
            stop=stop,
            service_reset=lambda: calls.append("fetcher reset"),
            maybe_start=maybe_start,
        ),
    )


def test_restart_reading_seeks_back_and_resumes_in_an_order_that_loses_nothing() -> None:
    calls = Calls()
    app = fake_app(calls, flow=False, control=False, fetcher_state="shutdown")
    lagging = {TP(CL, 1): (10, 308), TP(CL, 2): (-1, 999)}
    asyncio.run(restart_reading(app, lagging))
    assert calls == [
        "flow_control resume",  # empties the changelog queue: before anything is re-read
        "seek [(1, 10), (2, 0)]",  # Faust's restore position: last applied, or the start
        "resume [1, 2]",
        "resume_flow",
        "fetcher stop",  # a fetcher whose loop ended is reset, then started
        "fetcher reset",
        "fetcher maybe_start",
    ]


def test_restart_reading_leaves_running_parts_alone() -> None:
    calls = Calls()
    app = fake_app(calls, flow=True, control=True, fetcher_state="running")
    asyncio.run(restart_reading(app, {TP(CL, 3): (5, 9)}))
    assert calls == ["seek [(3, 5)]", "resume [3]", "fetcher maybe_start"]


def test_describe_names_each_lagging_partition_and_the_consumer_state() -> None:
    app = fake_app(Calls(), flow=False, control=True, fetcher_state="running")
    line = describe(app, {TP(CL, 1): (10, 308), TP(CL, 2): (-1, 999)})
    assert f"{CL}[1] applied 10 of 308 (active)" in line
    assert f"{CL}[2] applied -1 of 999 (not-active,paused)" in line
    assert "flow OFF" in line and "flow control on" in line
    assert "changelog queue 0/4096" in line and "fetcher running" in line


def test_task_stacks_show_where_each_task_waits_innermost_first() -> None:
    async def waits_here() -> None:
        await asyncio.sleep(5)

    async def caller() -> None:
        await waits_here()

    async def main() -> str:
        task = asyncio.create_task(caller(), name="stuck-one")
        await asyncio.sleep(0.01)
        try:
            return task_stacks()
        finally:
            task.cancel()

    line = next(x for x in asyncio.run(main()).splitlines() if "stuck-one" in x)
    assert line.index("sleep (tasks.py") < line.index("waits_here (") < line.index("caller (")


def test_check_restore_marks_the_worker_degraded_while_stalled_and_restarts_reading() -> None:
    from prometheus_client import CollectorRegistry

    from streams.metrics import RiskstreamMetrics
    from streams.recovery_watch import check_restore

    calls = Calls()
    app = fake_app(calls, flow=True, control=True, fetcher_state="running")
    tp = TP(CL, 0)
    app.tables.recovery = SimpleNamespace(in_recovery=True, **vars(recovery({tp: 4}, {tp: 90})))
    app.tables.recovery.active_remaining_total = lambda: 86
    metrics = RiskstreamMetrics(CollectorRegistry())
    progress = RecoveryProgress(stall_s=0.0, max_restarts=3)

    def degraded() -> float | None:
        return metrics.registry.get_sample_value(
            "riskstream_degraded", {"component": "table_recovery"}
        )

    asyncio.run(check_restore(app, progress, metrics))  # first look: the clock starts
    assert degraded() == 0 and calls == []
    asyncio.run(check_restore(app, progress, metrics))  # no progress since: stalled
    assert degraded() == 1 and calls == ["seek [(0, 4)]", "resume [0]", "fetcher maybe_start"]
    assert metrics.registry.get_sample_value("riskstream_table_recovery_restarts_total") == 1
    app.tables.recovery.active_remaining_total = lambda: 10  # reading again
    asyncio.run(check_restore(app, progress, metrics))
    assert degraded() == 0 and progress.restarts == 0


async def test_the_watch_reads_what_the_real_faust_objects_have() -> None:
    # The watch reads private faust-streaming 0.15.3 attributes (consumer partition sets,
    # the app's fetcher, the changelog queue, the recovery's offsets); the fakes above
    # mirror them, so an upgrade that renames one must fail here, not in the first stall.
    from prometheus_client import CollectorRegistry
    from streams_fakes import small_scorer

    from streams.app import create_app
    from streams.metrics import RiskstreamMetrics
    from streams.recovery_watch import check_restore
    from streams.settings import Settings

    app = create_app(Settings(app_id="unit-recovery-watch"), scorer=small_scorer())
    recovery = app.tables.recovery
    assert behind(recovery) == {} and not recovery.in_recovery
    assert recovery.active_remaining_total() == 0
    line = describe(app, {TP(CL, 3): (7, 40)})
    assert f"{CL}[3] applied 7 of 40 (not-active)" in line
    assert "flow control" in line and "changelog queue 0/" in line and "fetcher init" in line
    consumer, fetcher = app.consumer, app._fetcher
    for obj, names in (
        (consumer, ("seek_wait", "resume_partitions", "resume_flow")),
        (fetcher, ("stop", "service_reset", "maybe_start")),
        (app.flow_control, ("resume", "is_active")),
    ):
        for name in names:
            assert callable(getattr(obj, name)), name
    assert isinstance(consumer.flow_active, bool)
    metrics = RiskstreamMetrics(CollectorRegistry())
    progress = RecoveryProgress(stall_s=0.0, max_restarts=0)
    for _ in range(2):  # not restoring: never stalled, even with no patience at all
        await check_restore(app, progress, metrics)
    assert progress.restarts == 0
    assert (
        metrics.registry.get_sample_value("riskstream_degraded", {"component": "table_recovery"})
        == 0
    )
