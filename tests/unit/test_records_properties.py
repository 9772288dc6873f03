"""Property tests: valid records round-trip exactly; no input raises anything but RecordError."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.records import (
    DECISIONS,
    MAX_AMOUNT,
    MAX_EPOCH_SECONDS,
    REASONS,
    DeadLetter,
    Explanation,
    Label,
    ModelUpdate,
    RecordError,
    Score,
    Transaction,
    WireRecord,
    alert_from_score,
    encode,
    parse,
    parse_alert,
    parse_dead_letter,
    parse_label,
    parse_model_update,
    parse_score,
    parse_transaction,
    to_dict,
)
from streams.records.hotpath import accept_transaction
from streams.records.parsers import _check_transaction

# A named profile so a CI run can raise the counts without touching the tests.
settings.register_profile(
    "records", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
RECORDS = settings.get_profile("records")

PARSERS: list[Callable[[bytes], WireRecord]] = [
    parse_transaction,
    parse_label,
    parse_score,
    parse_alert,
    parse_dead_letter,
    parse_model_update,
]
FIELD_NAMES = sorted(
    {
        name
        for cls in (Transaction, Label, Score, DeadLetter, ModelUpdate)
        for name in cls._options.fields
    }
    | {"amount", "reason", "case_id", "weight"}
)

# --- valid records ----------------------------------------------------------------------

unicode = st.characters(exclude_categories=["Cs"])  # every code point but lone surrogates
texts = st.text(unicode, max_size=16)
ids = st.text(unicode, min_size=1, max_size=16)
optional_texts = st.none() | texts
finite = st.floats(allow_nan=False, allow_infinity=False)
non_negative = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
epoch_seconds = st.floats(min_value=0.0, max_value=MAX_EPOCH_SECONDS, exclude_max=True)
number_maps = st.dictionaries(texts, finite, max_size=12)
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
binary = st.sampled_from([0, 1])

transactions = st.builds(
    Transaction,
    tx_id=ids,
    ts=epoch_seconds,
    card_id=ids,
    terminal_id=ids,
    amount=st.floats(min_value=0.0, max_value=MAX_AMOUNT),
    currency=optional_texts,
    channel=optional_texts,
    mcc=optional_texts,
    country=optional_texts,
    features=number_maps,
)
labels = st.builds(Label, tx_id=ids, label=binary, source=texts, labelled_at=epoch_seconds)
explanations = st.builds(Explanation, case_id=ids, label=binary, weight=finite)
scores = st.builds(
    Score,
    tx_id=ids,
    card_id=ids,
    score=st.floats(min_value=0.0, max_value=1.0),
    decision=st.sampled_from(sorted(DECISIONS)),
    model_version=texts,
    scored_at=epoch_seconds,
    latency_ms=finite,
    explanation=st.lists(explanations, max_size=4),
)
alerts = st.builds(alert_from_score, scores, amount=non_negative, reason=texts)
dead_letters = st.builds(
    DeadLetter,
    payload_b64=st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
    error=st.sampled_from(sorted(REASONS)),
    detail=texts,
    topic=texts,
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(-(2**63), 2**63 - 1),
    failed_at=epoch_seconds,
)
model_updates = st.builds(
    ModelUpdate,
    version=ids,
    parent=optional_texts,
    created_at=epoch_seconds,
    sha256=hex64,
    signature=hex64,
    metrics=number_maps,
    location=ids,
)
records = transactions | labels | scores | alerts | dead_letters | model_updates


@RECORDS
@given(records)
def test_valid_records_round_trip_exactly(record: WireRecord) -> None:
    wire = encode(record)
    again = parse(wire, type(record), max_bytes=1 << 20)
    assert type(again) is type(record)
    assert again == record
    assert encode(again) == wire  # floats bit-exact, and no int/float drift


@RECORDS
@given(transactions)
def test_transactions_round_trip_through_the_named_parser(tx: Transaction) -> None:
    again = parse_transaction(encode(tx))
    assert again == tx
    assert all(type(v) is float for v in again.features.values())
    assert type(again.ts) is float and type(again.amount) is float


# --- hostile input ------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
# One level deep is enough to replace a single field of an otherwise valid record.
field_values = (
    json_scalars
    | st.lists(json_scalars, max_size=3)
    | st.dictionaries(st.text(max_size=6), json_scalars, max_size=3)
)


def to_wire(value: Any, ascii_only: bool) -> bytes:
    # The stdlib writes NaN/Infinity tokens, huge integers and lone surrogates (escaped,
    # or as invalid UTF-8): all things a hostile producer can send.
    text = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def only_record_errors(payload: bytes) -> None:
    for parser in PARSERS:
        try:
            record = parser(payload)
        except RecordError as err:
            assert err.reason in REASONS
        else:  # whatever is accepted must be a valid record that round-trips
            assert parse(encode(record), type(record), max_bytes=1 << 20) == record


@RECORDS
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_record_error(payload: bytes) -> None:
    only_record_errors(payload)


@RECORDS
@given(json_values, st.booleans())
def test_arbitrary_json_raises_only_record_error(value: Any, ascii_only: bool) -> None:
    only_record_errors(to_wire(value, ascii_only))


def mutate(base: dict[str, Any], name: str, value: Any, delete: bool) -> dict[str, Any]:
    out = dict(base)
    if delete:
        out.pop(name, None)
    else:
        out[name] = value
    return out


@RECORDS
@given(records, st.sampled_from(FIELD_NAMES), field_values, st.booleans(), st.booleans())
def test_almost_valid_records_raise_only_record_error(
    record: WireRecord, name: str, value: Any, delete: bool, ascii_only: bool
) -> None:
    # One field replaced by anything JSON can hold, or dropped: this reaches every check.
    only_record_errors(to_wire(mutate(to_dict(record), name, value, delete), ascii_only))


@RECORDS
@given(transactions, st.sampled_from(FIELD_NAMES), field_values, st.booleans())
def test_fast_path_agrees_with_the_full_checker(
    tx: Transaction, name: str, value: Any, delete: bool
) -> None:
    for candidate in (to_dict(tx), mutate(to_dict(tx), name, value, delete)):
        try:
            obj = orjson.loads(orjson.dumps(candidate))  # what the parser sees: JSON types
        except orjson.JSONEncodeError:
            continue  # unencodable (huge int, surrogate): never reaches a parser as a dict
        fast = accept_transaction(obj, 256)
        try:
            checked = _check_transaction(obj, 256)
        except RecordError:
            assert fast is None
        else:
            if fast is not None:
                assert fast == checked and encode(fast) == encode(checked)


@RECORDS
@given(st.binary(min_size=1, max_size=64), st.integers(0, 63))
def test_oversized_wins_over_every_other_reason(payload: bytes, limit: int) -> None:
    big = payload * (limit // len(payload) + 2)
    for parser in (parse_transaction, parse_label, parse_model_update):
        with pytest.raises(RecordError) as info:
            parser(big, max_bytes=limit)
        assert info.value.reason == "oversized"
