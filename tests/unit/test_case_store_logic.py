"""Labelled cases and the support sets built from them (no services).

The Redis side of the store (caps, eviction, dedup in Lua) is tested against real Valkey
in ``tests/integration/test_case_store.py``.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.artifacts import SupportSet
from streams.adaptation_support import (
    SupportPolicy,
    fold_of,
    support_from,
    validation_ids,
)
from streams.case_store import Case, cases_arrays, parse_put_reply
from streams.label_flow import PendingLabel

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(
    x=st.lists(finite, min_size=1, max_size=20),
    label=st.sampled_from([0, 1]),
    tx_id=st.text(min_size=1, max_size=40),
    score=finite,
)
def test_case_json_round_trip(x: list[float], label: int, tx_id: str, score: float) -> None:
    case = Case(tx_id, label, tuple(x), 1.0, 2.0, 3.0, "analyst", "v1", score, seq=7)
    assert Case.from_json(case.to_json(), seq=7) == case


def test_cases_arrays_and_replies() -> None:
    cases = [Case(f"t{i}", i % 2, (float(i), 1.0), 0.0, 0.0, 0.0, "s", "v", 0.1) for i in range(3)]
    x, y, ids = cases_arrays(cases)
    assert x.dtype == np.float32 and x.shape == (3, 2)
    assert y.tolist() == [0, 1, 0] and ids == ["t0", "t1", "t2"]
    assert cases_arrays([])[0].shape == (0, 0)
    assert parse_put_reply([1, 12, 3]).evicted == 3


def test_pending_label_round_trip_keeps_raw_bytes() -> None:
    raw = bytes(range(256))
    pending = PendingLabel(raw, "labels", 3, 99, 1.5, 61.5)
    assert PendingLabel.from_json(pending.to_json()) == pending


# --- support sets -----------------------------------------------------------------------
def _base(n_fraud: int = 40, n_legit: int = 160, width: int = 3) -> SupportSet:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_fraud + n_legit, width))
    y = [1] * n_fraud + [0] * n_legit
    return SupportSet.build(x, y, [f"b{i}" for i in range(n_fraud + n_legit)])


def _cases(n: int, label: int, start: int = 0, width: int = 3) -> list[Case]:
    return [
        Case(f"n{label}-{i}", label, (9.0,) * width, 0.0, 0.0, 0.0, "s", "v", 0.1, seq=start + i)
        for i in range(n)
    ]


def test_without_stream_cases_the_base_support_is_kept() -> None:
    base = _base()
    support = support_from([], base, SupportPolicy())
    assert support.case_ids == base.case_ids


def test_recent_frauds_get_half_of_the_fraud_side() -> None:
    base = _base()
    support = support_from(_cases(12, 1), base, SupportPolicy(recent_share=0.5, min_old_fraud=4))
    ids = list(support.case_ids)
    recent = [i for i in ids if i.startswith("n1-")]
    old_fraud = [i for i in ids if i.startswith("b") and int(i[1:]) < 40]
    assert recent == [f"n1-{i}" for i in reversed(range(12))]  # newest first
    assert old_fraud == [f"b{i}" for i in range(12)]  # the base's first (most recent) frauds
    assert support.n_fraud == 24 and len(support) - support.n_fraud == 160  # legit untouched


def test_few_recent_frauds_keep_at_least_min_old_fraud() -> None:
    support = support_from(_cases(2, 1), _base(), SupportPolicy(min_old_fraud=10))
    assert support.n_fraud == 12


def test_budgets_and_exclusions() -> None:
    policy = SupportPolicy(max_fraud=5, max_legit=20)
    cases = _cases(8, 1) + _cases(3, 0, start=100)
    support = support_from(cases, _base(), policy, exclude={"n1-7", "b50"})
    ids = set(support.case_ids)
    assert support.n_fraud == 5 and "n1-7" not in ids  # the newest fraud was held out
    assert len(support) - support.n_fraud == 20 and "b50" not in ids
    assert {"n0-0", "n0-1", "n0-2"} <= ids  # stream legit cases come first


def test_validation_pool_fills_a_class_without_enough_stream_cases() -> None:
    base = _base()
    x, y, ids = validation_ids(_cases(10, 1), base, min_recent=5, n_old_legit=30)
    assert int(y.sum()) == 10 and len(y) == 40  # ten stream frauds, thirty base legit
    assert all(i.startswith("n1-") for i in ids[:10]) and x.shape == (40, 3)
    x, y, ids = validation_ids(_cases(2, 1), base, min_recent=5, n_old_fraud=6, n_old_legit=4)
    assert int(y.sum()) == 8 and len(y) == 12  # too few frauds: six base frauds join them


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_folds_are_stable_and_cover_all(folds: int) -> None:
    got = {fold_of(f"tx-{i}", folds) for i in range(200)}
    assert got == set(range(folds))
    assert fold_of("tx-1", folds) == fold_of("tx-1", folds)


def test_a_case_keeps_its_card_and_older_payloads_still_load() -> None:
    case = Case("t1", 1, (1.0, 2.0), 5.0, 6.0, 7.0, "analyst", "v1", 0.3, card_id="c42")
    again = Case.from_json(case.to_json(), seq=4)
    assert again.card_id == "c42" and again.incident == "card:c42" and again.seq == 4
    # a payload written before cases kept their card
    old = orjson.loads(case.to_json())
    del old["card_id"]
    legacy = Case.from_json(orjson.dumps(old))
    assert legacy.card_id == "" and legacy.incident == "tx:t1"
