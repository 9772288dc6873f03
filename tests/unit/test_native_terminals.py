"""The terminal store's compiled loops give what its Python loops give.

Two stores over one in-memory Redis, one with ``native=True``: the same terminals to
fetch, the same feature rows (bit-equal, and equal to ``terminal_features`` of the
counts in Redis), the same buffered transaction counts, across event days, labels and
refetches.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streams_fakes import FakeRedis

from models.features import terminal_features
from streams.native import kernel
from streams.terminal_store import TerminalCounts, TerminalStore, needed_days, parse_counts

PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIRST = 17_000


@st.composite
def replays(draw: st.DrawFn) -> tuple[dict, list[list[tuple[str, int]]]]:
    terminals = ["m1", "m2", "m3", "m4"]
    history = {
        t: {
            day: (draw(st.integers(0, 9)), draw(st.integers(0, 3)))
            for day in draw(st.lists(st.integers(FIRST - 45, FIRST + 20), max_size=12))
        }
        for t in terminals
    }
    batches, day = [], FIRST
    for _ in range(draw(st.integers(1, 12))):
        day += draw(st.integers(0, 3))
        rows = draw(
            st.lists(st.tuples(st.sampled_from(terminals), st.integers(day - 2, day)), max_size=8)
        )
        batches.append(rows)
    return history, batches


@PROPERTY
@given(replay=replays(), data=st.data())
async def test_native_terminal_rows_equal_the_python_loops(
    replay: tuple[dict, list[list[tuple[str, int]]]], data: st.DataObject
) -> None:
    history, batches = replay
    redis = FakeRedis()
    stores = [
        TerminalStore(redis, prefix="u:", cache_ttl_s=30.0, native=flag) for flag in (False, True)
    ]
    for terminal, days in history.items():
        for day, (tx, fraud) in days.items():
            redis.hashes[stores[0].key(terminal)][f"t{day}".encode()] = str(tx).encode()
            redis.hashes[stores[0].key(terminal)][f"f{day}".encode()] = str(fraud).encode()
    for rows in batches:
        terminals = [t for t, _ in rows]
        days = np.array([d for _, d in rows], dtype=np.int64)
        missing = [store.stale(store.needed(terminals, days)) for store in stores]
        assert stores[0].expired(set(terminals), now=1e12) == sorted(
            stores[1].expired(stores[1].needed(terminals, days), now=1e12)
        ) or set(stores[0].expired(set(terminals), now=1e12)) == set(
            stores[1].expired(stores[1].needed(terminals, days), now=1e12)
        )
        assert missing[0] == missing[1]
        for store in stores:
            await store.fetch(missing[0])
        python, compiled = (store.rows(terminals, days) for store in stores)
        np.testing.assert_array_equal(compiled, python)
        for (terminal, day), row in zip(rows, compiled.tolist(), strict=True):
            truth = parse_counts(redis.hashes.get(stores[0].key(terminal), {}))
            assert tuple(row) == terminal_features(*truth, day)
        learnt = np.array(
            data.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows))),
            dtype=np.uint8,
        )
        for store in stores:
            store.count_rows(terminals, days, learnt)
        assert dict(stores[0]._pending_tx) == dict(stores[1]._pending_tx)
        writes = redis.command_batch()
        stores[0].queue_writes(writes)  # type: ignore[arg-type] - one store writes Redis
        await writes.execute()
        stores[1]._pending_tx.clear()


@PROPERTY
@given(
    tx=st.dictionaries(st.integers(0, 60), st.integers(0, 9), max_size=20),
    fraud=st.dictionaries(st.integers(0, 60), st.integers(-1, 3), max_size=8),
    patches=st.lists(
        st.tuples(
            st.integers(-5, 80),
            st.lists(st.tuples(st.integers(0, 9), st.integers(0, 2)), max_size=6),
        ),
        max_size=4,
    ),
    prune_at=st.none() | st.integers(-5, 90),
)
def test_native_terminal_counts_equal_terminal_counts(
    tx: dict, fraud: dict, patches: list, prune_at: int | None
) -> None:
    """Built, patched day by day and pruned alike: every feature on every day is equal."""
    python = TerminalCounts(tx, fraud)
    compiled = kernel("_terminals").NativeTerminalCounts(tx, fraud)
    for first, days in patches:
        for counts in (python, compiled):
            counts.set_days(first, [t for t, _ in days], [f for _, f in days])
    if prune_at is not None:
        python.prune(prune_at)
        compiled.prune(prune_at)
    for day in range(-10, 130):
        assert compiled.features(day) == python.features(day), day
    assert {d: n for d, n in python.tx.items() if n} == compiled.tx
    assert {d: n for d, n in python.fraud.items() if n} == compiled.fraud


def test_needed_days_and_rows_without_counts() -> None:
    store = TerminalStore(None, prefix="u:", native=True)
    days = np.array([5, 9, 7], dtype=np.int64)
    assert store.stale(store.needed(["a", "b", "a"], days)) == ["a", "b"]
    assert needed_days(["a", "b", "a"], days) == {"a": 7, "b": 9}
    assert store.rows(["a"], days[:1]).tolist() == [[0.0] * 6]  # no counts yet: zeros
