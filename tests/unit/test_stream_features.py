"""The stream's fast feature pieces equal the shared definitions in ``models.features``."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from streams_fakes import FakeRedis

from models.features import (
    CardState,
    FeatureSchema,
    assemble_vector,
    card_features,
    terminal_features,
    tx_features,
)
from streams.resp import pack_command, pairs
from streams.score_columns import assemble_rows, feature_row
from streams.terminal_store import TerminalCounts, TerminalDay, TerminalStore, parse_counts

days = st.integers(min_value=17_000, max_value=17_080)
counts = st.dictionaries(days, st.integers(min_value=0, max_value=50), max_size=40)


@settings(max_examples=300, deadline=None)
@given(tx=counts, fraud=counts, day=st.integers(min_value=16_990, max_value=17_130))
def test_terminal_counts_equal_terminal_features(
    tx: dict[int, int], fraud: dict[int, int], day: int
) -> None:
    fraud = {d: min(n, tx.get(d, 0)) for d, n in fraud.items()}  # frauds are transactions
    assert TerminalCounts(tx, fraud).features(day) == terminal_features(tx, fraud, day)


@settings(max_examples=100, deadline=None)
@given(
    history=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=40 * 86_400),
            st.floats(min_value=0, max_value=5_000, allow_nan=False),
        ),
        max_size=30,
    ),
    amount=st.floats(min_value=0, max_value=5_000),
    free=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(-1e6, 1e6), max_size=3),
)
def test_feature_row_equals_assemble_vector(
    history: list[tuple[float, float]], amount: float, free: dict[str, float]
) -> None:
    state = CardState()
    for ts, value in sorted(history):
        state.learn_one(ts, value)
    ts = 41 * 86_400.0
    schema = FeatureSchema.with_extras(["b", "z"])
    card = card_features(state, ts, amount)
    term = terminal_features({485: 3}, {485: 1}, 492)
    expected = assemble_vector(card, term, tx_features(ts, amount), free, schema)
    row = feature_row(card, term, tx_features(ts, amount), free, schema.extra_names)
    np.testing.assert_array_equal(np.array([row], dtype=np.float32)[0], expected)


@settings(max_examples=50, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=4e9),  # any time of any day
            st.floats(min_value=0, max_value=1e6),
            st.lists(st.floats(-1e9, 1e9), min_size=8, max_size=8),
            st.lists(st.floats(0, 1e4), min_size=6, max_size=6),
            st.dictionaries(st.sampled_from(["a", "b"]), st.floats(-1e6, 1e6), max_size=2),
        ),
        max_size=20,
    ),
    extras=st.sampled_from([(), ("b", "z")]),
)
def test_assemble_rows_equals_feature_row(
    rows: list[tuple[float, float, list[float], list[float], dict[str, float]]],
    extras: tuple[str, ...],
) -> None:
    """The batch's feature matrix, built column by column, equals its rows built one by
    one (time features included: the same float64 arithmetic as ``tx_features``)."""
    schema = FeatureSchema.with_extras(extras)
    ts = np.array([r[0] for r in rows], dtype=np.float64)
    X = assemble_rows(
        np.array([r[1] for r in rows], dtype=np.float64),
        ts,
        np.floor(ts / 86_400),
        np.array([r[2] for r in rows], dtype=np.float64).reshape(len(rows), 8),
        np.array([r[3] for r in rows], dtype=np.float64).reshape(len(rows), 6),
        [r[4] or None for r in rows],
        schema,
    )
    expected = [
        feature_row(card, term, tx_features(t, amount), free, schema.extra_names)
        for t, amount, card, term, free in rows
    ]
    assert X.shape == (len(rows), schema.n_features)
    np.testing.assert_array_equal(X, np.array(expected, dtype=np.float32).reshape(X.shape))


def test_resp_packing_and_flat_replies() -> None:
    assert (
        pack_command(("SET", "k", 5, "NX"))
        == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n$2\r\nNX\r\n"
    )
    assert parse_counts(pairs([b"t17000", b"3", b"f17000", b"1"])) == ({17000: 3}, {17000: 1})


async def _replay(store: TerminalStore, redis: FakeRedis, days: list[list[TerminalDay]]) -> int:
    """Feed micro-batches through ``store`` as the pipeline does, with the wall clock frozen
    (history replayed faster than real time); checks each batch's features against the
    counts in Redis at that moment. Returns the number of terminal fetches."""
    fetched = 0
    for batch in days:
        missing = store.missing(batch)
        fetched += len(missing)
        await store.fetch(missing)
        got = store.features(batch)
        for terminal, day in batch:
            truth = parse_counts(redis.hashes.get(store.key(terminal), {}))
            assert got[(terminal, day)] == terminal_features(*truth, day), (terminal, day)
        store.add_transactions(batch)
        writes = redis.command_batch()
        store.queue_writes(writes)  # type: ignore[arg-type]
        await writes.execute()
    return fetched


async def test_terminal_cache_follows_event_time_not_the_wall_clock() -> None:
    """Replaying 40 days in well under a second gives the features of Redis' counts on
    each day (with a 30 s wall-clock TTL, the counts fetched on day 0 used to serve every
    later day: all zero), and each terminal is fetched once per event day, not per batch."""
    redis = FakeRedis()
    store = TerminalStore(redis, prefix="u:", cache_ttl_s=30.0)
    first = 17_000
    batches = [
        [("m1", day), ("m2", day), ("m1", day)] + ([("m3", day)] if day % 3 == 0 else [])
        for day in range(first, first + 40)
        for _ in range(2)  # two micro-batches per event day
    ]
    redis.hashes[store.key("m1")][f"f{first + 2}".encode()] = b"1"  # a label, 38 days back
    fetched = await _replay(store, redis, batches)
    late = store.features([("m1", first + 39)])[("m1", first + 39)]
    assert late[4] > 0  # 30-day window ending 8 days back saw the replayed transactions
    m3_days = sum(1 for day in range(first, first + 40) if day % 3 == 0)
    assert fetched == 40 * 2 + m3_days  # once per terminal and event day it appears on


async def test_quiet_terminal_days_keep_the_cached_counts(monkeypatch: Any) -> None:
    """A terminal that had no transaction on the days a refetch brings (the usual case
    in a replay: ~0.5 tx per terminal and day) keeps its counts as they were, without
    patching them; the features still equal those of Redis' counts on every day."""
    redis = FakeRedis()
    # the Python counts: their set_days can be spied on (the compiled twin's cannot)
    store = TerminalStore(redis, prefix="u:", cache_ttl_s=30.0, native=False)
    first = 17_000
    seen = {0, 2, 4, 13, 14, 15, 30, 31, 45, 47}  # days the quiet terminal q1 appears
    batches = [
        [("m1", day)] + ([("q1", day)] if day - first in seen else [])
        for day in range(first, first + 50)
    ]
    patched: list[str] = []
    original = TerminalCounts.set_days

    def spy(self: TerminalCounts, first_day: int, tx: list[int], fraud: list[int]) -> None:
        patched.append("q1" if self is store._counts["q1"].counts else "other")
        original(self, first_day, tx, fraud)

    monkeypatch.setattr(TerminalCounts, "set_days", spy)
    fetched = await _replay(store, redis, batches)
    assert fetched == 50 + len(seen)
    # q1 was refetched 9 times; only the fetches bringing one of its days patched it
    assert 0 < patched.count("q1") < len(seen) - 1


async def test_terminal_cache_ttl_zero_fetches_every_batch() -> None:
    redis = FakeRedis()
    store = TerminalStore(redis, prefix="u:", cache_ttl_s=0.0)
    batches = [[("m1", 17_000 + d), ("m2", 17_000 + d)] for d in range(20) for _ in range(2)]
    assert await _replay(store, redis, batches) == 20 * 2 * 2


@settings(max_examples=300, deadline=None)
@given(
    tx=counts,
    fraud=counts,
    patches=st.lists(
        st.tuples(
            st.integers(min_value=16_990, max_value=17_100),
            st.lists(st.tuples(st.integers(0, 9), st.integers(0, 3)), min_size=1, max_size=9),
        ),
        max_size=4,
    ),
    day=st.integers(min_value=16_990, max_value=17_140),
)
def test_terminal_counts_patched_in_place_equal_rebuilt(
    tx: dict[int, int],
    fraud: dict[int, int],
    patches: list[tuple[int, list[tuple[int, int]]]],
    day: int,
) -> None:
    """The event-day refetch patches a terminal's recent days in place: same features as
    counts built from scratch with those days replaced."""
    counts = TerminalCounts(tx, fraud)
    tx, fraud = dict(tx), dict(fraud)
    for first, values in patches:
        counts.set_days(first, [n for n, _ in values], [f for _, f in values])
        for d, (n, f) in enumerate(values, first):
            for by_day, v in ((tx, n), (fraud, f)):
                if v:
                    by_day[d] = v
                else:
                    by_day.pop(d, None)
    assert counts.features(day) == terminal_features(tx, fraud, day)
    assert (counts.tx, counts.fraud) == (tx, fraud)
    counts.prune(day - 40)
    assert counts.features(day) == terminal_features(tx, fraud, day)


async def test_terminal_refetch_reloads_its_script_after_a_redis_restart() -> None:
    redis = FakeRedis()
    store = TerminalStore(redis, prefix="u:", cache_ttl_s=30.0)
    await _replay(store, redis, [[("m1", 17_000)], [("m1", 17_001)]])
    redis.scripts_loaded = False  # a restarted Redis has forgotten the scripts
    assert await _replay(store, redis, [[("m1", 17_002)]]) == 1
    assert redis.scripts_loaded
