"""The stream's fast feature pieces equal the shared definitions in ``models.features``."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.features import (
    CardState,
    FeatureSchema,
    assemble_vector,
    card_features,
    terminal_features,
    tx_features,
)
from streams.pipeline import feature_row
from streams.resp import pack_command, pairs
from streams.terminal_store import TerminalCounts, parse_counts

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


def test_resp_packing_and_flat_replies() -> None:
    assert (
        pack_command(("SET", "k", 5, "NX"))
        == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n$2\r\nNX\r\n"
    )
    assert parse_counts(pairs([b"t17000", b"3", b"f17000", b"1"])) == ({17000: 3}, {17000: 1})
