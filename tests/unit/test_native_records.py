"""The compiled record kernels give exactly what their Python references give.

``streams.native._records``: batch validation (the same columns and the same dead
letters, reasons and details included, for valid, odd and hostile input), the ``scores``
record bytes, the scored-vector entries and the RESP payloads, byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import native
from streams.outputs import BatchExplanations, score_record_bytes, score_record_bytes_native
from streams.pipeline import RawRecord
from streams.resp import pack_commands, pack_commands_native
from streams.score_columns import TxBatch, validate_batch, validate_batch_native
from streams.scored_store import encode_entries, encode_entries_native

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
unicode = st.characters(exclude_categories=["Cs"])  # every code point but lone surrogates
ids = st.text(unicode, min_size=1, max_size=12)
any_float = st.floats(allow_nan=True, allow_infinity=True)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | any_float | st.text(unicode, max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ids, inner, max_size=3),
    max_leaves=6,
)


def test_the_kernels_are_built_from_these_sources() -> None:
    """`make bootstrap` builds them; a stale or missing build says why here."""
    assert native.AVAILABLE, native.MISSING


@st.composite
def transaction_values(draw: st.DrawFn) -> dict[str, Any]:
    """A transaction object, often valid, often with one field made odd or wrong."""
    obj: dict[str, Any] = {
        "tx_id": draw(ids),
        "ts": draw(st.floats(min_value=0.0, max_value=2e9)),
        "card_id": draw(st.sampled_from(["c1", "c2", "ü3", 'c"4'])),
        "terminal_id": draw(ids),
        "amount": draw(st.floats(min_value=0.0, max_value=1e6)),
        "schema_version": 1,
    }
    for name in ("currency", "channel", "mcc", "country"):
        if draw(st.booleans()):
            obj[name] = draw(st.none() | st.text(unicode, max_size=4))
    if draw(st.booleans()):
        obj["features"] = draw(
            st.dictionaries(ids, st.floats(allow_nan=False, allow_infinity=False), max_size=4)
            | st.none()
        )
    if draw(st.integers(0, 2)) == 0:  # one field odd: absent, another JSON type or value
        name = draw(st.sampled_from(sorted(obj)))
        if draw(st.booleans()):
            del obj[name]
        else:
            obj[name] = draw(json_values)
    return obj


@st.composite
def messages(draw: st.DrawFn) -> RawRecord:
    kind = draw(st.integers(0, 9))
    obj = draw(transaction_values())
    if kind == 0:
        value: Any = draw(st.binary(max_size=40))  # not JSON, or not an object
    elif kind == 1:
        value = None  # a tombstone
    elif kind == 2:
        value = json.dumps(draw(json_values)).encode()  # NaN, huge ints: what producers send
    else:
        value = json.dumps(obj, ensure_ascii=draw(st.booleans())).encode()
    card = obj.get("card_id")
    key_kind = draw(st.integers(0, 5))
    if key_kind == 0:
        key = None
    elif key_kind == 1:
        key = draw(st.binary(max_size=4))
    else:
        key = card.encode() if isinstance(card, str) else b"c1"
    stamp = draw(st.none() | st.integers(-5, 2**40) | st.sampled_from([True, 1.5]))
    return RawRecord(
        "transactions", draw(st.integers(0, 3)), draw(st.integers(0, 99)), stamp, key, value
    )


def _same_batches(a: tuple[TxBatch, Any], b: tuple[TxBatch, Any]) -> None:
    (batch_a, dead_a), (batch_b, dead_b) = a, b
    assert [id(r) for r in batch_a.records] == [id(r) for r in batch_b.records]
    assert batch_a.tx_ids == batch_b.tx_ids
    assert batch_a.card_ids == batch_b.card_ids
    assert batch_a.terminal_ids == batch_b.terminal_ids
    assert batch_a.features == batch_b.features
    for name in ("ts", "amounts", "partitions", "offsets", "stamps"):
        left, right = getattr(batch_a, name), getattr(batch_b, name)
        assert left.dtype == right.dtype, name
        np.testing.assert_array_equal(left, right, err_msg=name)
    assert [(id(r), e.reason, e.detail) for r, e in dead_a] == [
        (id(r), e.reason, e.detail) for r, e in dead_b
    ]


@PROPERTY
@given(records=st.lists(messages(), max_size=12), max_features=st.integers(0, 3))
def test_validate_batch_native_equals_the_reference(
    records: list[RawRecord], max_features: int
) -> None:
    limits = {"max_bytes": 300, "max_features": max_features}
    _same_batches(validate_batch(records, **limits), validate_batch_native(records, **limits))


def test_validate_batch_native_on_plain_and_broken_messages() -> None:
    ok = orjson.dumps(
        {
            "tx_id": "t1",
            "ts": 1.7e9,
            "card_id": "c1",
            "terminal_id": "m1",
            "amount": 5.0,
            "features": {"v": 0.5},
            "schema_version": 1,
        }
    )
    as_int = ok.replace(b'"amount":5.0', b'"amount":5')  # valid: the full checker converts
    records = [
        RawRecord("transactions", 2, 10, 1_700_000_000_000, b"c1", ok),
        RawRecord("transactions", 2, 11, None, b"c1", as_int),
        RawRecord("transactions", 2, 12, 5, b"c2", ok),  # wrong key
        RawRecord("transactions", 2, 13, 5, b"c1", ok[:-3]),  # truncated
        RawRecord("transactions", 2, 14, 5, b"c1", ok.replace(b"5.0", b"NaN")),
    ]
    batch, dead = validate_batch_native(records, max_bytes=1000, max_features=4)
    assert batch.tx_ids == ["t1", "t1"] and batch.amounts.tolist() == [5.0, 5.0]
    assert batch.stamps.tolist() == [1_700_000_000_000, 0]
    assert batch.features == [{"v": 0.5}, {"v": 0.5}]
    assert [e.reason for _, e in dead] == ["bad_key", "not_json", "non_finite"]
    _same_batches((batch, dead), validate_batch(records, max_bytes=1000, max_features=4))


@st.composite
def scored_batches(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 6))
    k = draw(st.integers(0, 3))
    support = draw(st.lists(st.text(unicode, max_size=6), min_size=max(k, 1), max_size=8))
    labels = draw(st.lists(st.sampled_from([0, 1]), min_size=len(support), max_size=len(support)))
    floats = st.floats(min_value=0.0, max_value=1.0) | st.sampled_from([1e-7, 3e-5, 1e-300])
    top = np.array(
        draw(
            st.lists(
                st.lists(st.integers(0, len(support) - 1), min_size=k, max_size=k),
                min_size=n,
                max_size=n,
            )
        ),
        dtype=np.int64,
    ).reshape(n, k)
    weights = np.array(
        draw(st.lists(st.lists(floats, min_size=k, max_size=k), min_size=n, max_size=n)),
        dtype=np.float64,
    ).reshape(n, k)
    rows = draw(st.permutations(list(range(n))))
    m = len(rows)
    return {
        "tx_ids": draw(st.lists(st.text(unicode, min_size=1, max_size=8), min_size=m, max_size=m)),
        "card_ids": draw(
            st.lists(st.text(unicode, min_size=1, max_size=8), min_size=m, max_size=m)
        ),
        "scores": np.array(draw(st.lists(floats, min_size=m, max_size=m)), dtype=np.float64),
        "decisions": np.array(
            draw(st.lists(st.integers(0, 2), min_size=m, max_size=m)), dtype=np.int8
        ),
        "model_version": draw(st.text(unicode, max_size=10)),
        "scored_at": draw(st.floats(min_value=0.0, max_value=2e9)),
        "latencies_ms": np.array(
            draw(st.lists(st.floats(-1e3, 1e6), min_size=m, max_size=m)), dtype=np.float64
        ),
        "why": BatchExplanations(top, weights, support, labels),
        "rows": rows,
    }


@PROPERTY
@given(batch=scored_batches())
def test_score_records_native_equals_the_reference(batch: dict[str, Any]) -> None:
    keys, values = score_record_bytes_native(**batch)
    assert (keys, values) == score_record_bytes(**batch)
    for value in values:  # and each one parses back to the record it describes
        assert orjson.loads(value)["schema_version"] == 1


def test_score_records_escape_like_orjson() -> None:
    """Every control character, quotes, backslashes and non-ASCII text, as orjson writes."""
    text = "".join(chr(c) for c in range(0x80)) + "\u2028é\U0001f600"
    why = BatchExplanations(np.zeros((1, 1), dtype=np.int64), np.ones((1, 1)), [text], [1])
    batch = {
        "tx_ids": [text],
        "card_ids": ['c"\\'],
        "scores": np.array([0.5]),
        "decisions": np.array([2], dtype=np.int8),
        "model_version": text,
        "scored_at": 1.5,
        "latencies_ms": np.array([0.25]),
        "why": why,
        "rows": [0],
    }
    _, (value,) = score_record_bytes_native(**batch)
    assert value == score_record_bytes(**batch)[1][0]
    assert orjson.loads(value)["tx_id"] == text


@PROPERTY
@given(
    n=st.integers(0, 5),
    width=st.integers(0, 4),
    data=st.data(),
)
def test_scored_entries_native_equal_the_reference(n: int, width: int, data: st.DataObject) -> None:
    vectors = np.array(
        data.draw(st.lists(st.floats(width=32), min_size=n * width, max_size=n * width)),
        dtype=np.float32,
    ).reshape(n, width)
    columns = {
        "terminal_ids": data.draw(st.lists(st.text(unicode, max_size=6), min_size=n, max_size=n)),
        "ts": np.array(data.draw(st.lists(st.floats(0, 2e9), min_size=n, max_size=n))),
        "card_ids": data.draw(st.lists(st.text(unicode, max_size=6), min_size=n, max_size=n)),
        "model_version": data.draw(st.text(unicode, max_size=6)),
        "scores": np.array(data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))),
    }
    assert encode_entries_native(vectors, **columns) == encode_entries(vectors, **columns)


args = (
    st.binary(max_size=8)
    | st.text(unicode, max_size=8)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.builds(bytearray, st.binary(max_size=4))
)


@PROPERTY
@given(commands=st.lists(st.lists(args, min_size=1, max_size=5).map(tuple), max_size=6))
def test_pack_commands_native_equals_the_reference(commands: list[tuple[Any, ...]]) -> None:
    assert pack_commands_native(commands) == pack_commands(commands)


def test_pack_commands_refuses_what_redis_cannot_take() -> None:
    with pytest.raises(TypeError, match="cannot send"):
        pack_commands_native([("SET", object())])
