"""Cards in C (``streams.native._cards``) behave exactly as ``TableCard`` cards.

The same transactions, in the same micro-batches, through a native and a Python
``CardStates``: every card feature bit-equal, the same learnt flags, dirty cards and
changelog bytes, through out-of-order times, replayed offsets, zero and huge amounts,
adoption from the table and a rebalance (``forget``).
"""

from __future__ import annotations

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.features import CardState, card_features
from streams.native import kernel
from streams.tables import CardStates, TableCard

PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DAY = 86_400.0

amounts = (
    st.floats(min_value=0.0, max_value=5e3)
    | st.sampled_from([0.0, 0.005, 0.01, 1e-9, 2.0**40, 3e12, 1e15])  # 1e15: MAX_AMOUNT
)
steps = st.floats(min_value=-3 * DAY, max_value=12 * DAY)  # mostly forward, some back


@st.composite
def streams_of_transactions(draw: st.DrawFn) -> list[tuple[str, float, float, int, int]]:
    """``(card, ts, amount, partition, offset)`` rows; offsets sometimes replayed."""
    n = draw(st.integers(1, 60))
    t = 1.7e9
    offsets = {0: 0, 1: 0}
    rows = []
    for _ in range(n):
        t = max(0.0, t + draw(steps) * draw(st.sampled_from([1e-4, 0.01, 1.0])))
        partition = draw(st.sampled_from([0, 1]))
        if draw(st.integers(0, 9)) == 0:
            offset = max(0, offsets[partition] - draw(st.integers(0, 3)))  # a replay
        else:
            offsets[partition] += 1
            offset = offsets[partition]
        card = draw(st.sampled_from(["c1", "c2", "c3"]))
        rows.append((card, t, draw(amounts), partition, offset))
    return rows


def _run(cards: CardStates, rows: list, cuts: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for start, end in zip([0, *cuts], [*cuts, len(rows)], strict=True):
        chunk = rows[start:end]
        cards.next_batch()
        out.append(
            cards.featurize_and_learn_batch(
                [r[0] for r in chunk],
                np.array([r[1] for r in chunk], dtype=np.float64),
                np.array([r[2] for r in chunk], dtype=np.float64),
                np.array([r[3] for r in chunk], dtype=np.int64),
                np.array([r[4] for r in chunk], dtype=np.int64),
            )
        )
    return out


@PROPERTY
@given(rows=streams_of_transactions(), data=st.data())
def test_native_cards_equal_python_cards(rows: list, data: st.DataObject) -> None:
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(rows)), max_size=4))))
    python = CardStates({}, "cl", None, native=False)
    compiled = CardStates({}, "cl", None, native=True)
    for (f_py, l_py), (f_c, l_c) in zip(
        _run(python, rows, cuts), _run(compiled, rows, cuts), strict=True
    ):
        np.testing.assert_array_equal(f_c, f_py)  # bit for bit
        np.testing.assert_array_equal(l_c, l_py)
    assert compiled._dirty == python._dirty
    assert compiled.changelog_messages() == python.changelog_messages()
    for card_id in ("c1", "c2", "c3"):
        assert compiled.get(card_id).to_dict() == python.get(card_id).to_dict()
        assert len(compiled.get(card_id)) == len(python.get(card_id))


@PROPERTY
@given(rows=streams_of_transactions())
def test_native_card_features_equal_card_features(rows: list) -> None:
    """One card, learnt row by row: the features before each row equal the reference's."""
    reference, compiled = CardState(), kernel("_cards").NativeCard()
    for _, ts, amount, _, _ in rows:
        assert compiled.features(ts, amount) == card_features(reference, ts, amount)
        reference.learn_one(ts, amount)
        compiled.learn_one(ts, amount)
        assert compiled.ts == reference.ts.tolist()
        assert compiled.amounts == reference.amounts.tolist()


def test_huge_amounts_continue_exactly_in_python() -> None:
    card = kernel("_cards").NativeCard([1.0, 2.0], [5.0, 7.0])
    reference = CardState([1.0, 2.0], [5.0, 7.0])
    assert not card.exact
    for ts, amount in [(3.0, 1e15), (4.0, 2.5)]:
        assert card.features(ts, amount) == card_features(reference, ts, amount)
        card.learn_one(ts, amount)
        reference.learn_one(ts, amount)
    assert card.exact and card.to_dict() == reference.to_dict()


def test_adoption_from_the_table_and_after_a_rebalance() -> None:
    stored = {"ts": [1.7e9, 1.7e9 + 60.0], "amounts": [3.0, 4.0], "p": 1, "o": 41}
    for native in (False, True):
        table: dict = {"c1": dict(stored)}
        cards = CardStates(table, "cl", None, native=native)
        card = cards.get("c1")
        assert (card.p, card.o, len(card)) == (1, 41, 2)
        assert not cards.should_learn("c1", partition=1, offset=41)  # already applied
        cards.next_batch()
        feats, learnt = cards.featurize_and_learn("c1", 1.7e9 + 120.0, 5.0, 1, 42)
        assert learnt and feats[:2] == (3.0, 4.0)
        (message,) = cards.changelog_messages()
        assert orjson.loads(message[2]) == {
            "ts": [1.7e9, 1.7e9 + 60.0, 1.7e9 + 120.0],
            "amounts": [3.0, 4.0, 5.0],
            "p": 1,
            "o": 42,
        }
        table["c1"] = cards.get("c1")  # what flush writes: the card itself
        cards.forget()
        assert cards.get("c1") is table["c1"]  # taken over as it is


def test_table_card_is_the_reference_interface() -> None:
    native_card = kernel("_cards").NativeCard([5.0], [2.0])
    python_card = TableCard([5.0], [2.0])
    for card in (native_card, python_card):
        card.set_applied(3, 9)
        assert card.changelog_value() == {"ts": [5.0], "amounts": [2.0], "p": 3, "o": 9}
        assert card.features(6.0, 4.0) == card_features(CardState([5.0], [2.0]), 6.0, 4.0)
    assert type(native_card).from_dict({"ts": [1.0], "amounts": [2.0]}).to_dict() == {
        "ts": [1.0],
        "amounts": [2.0],
    }
