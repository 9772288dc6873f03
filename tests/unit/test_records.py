"""Wire records: valid examples, one test per rejection reason, encoding and helpers."""

from __future__ import annotations

import base64
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from streams.records import (
    REASONS,
    SCHEMA_VERSION,
    Explanation,
    Label,
    ModelUpdate,
    RecordError,
    Score,
    Transaction,
    alert_from_score,
    dead_letter,
    encode,
    kafka_key,
    parse,
    parse_alert,
    parse_dead_letter,
    parse_label,
    parse_model_update,
    parse_score,
    parse_transaction,
    sign_model_update,
    to_dict,
    transaction_from_dict,
    verify_model_update,
)

TX: dict[str, Any] = {
    "tx_id": "tx-1",
    "ts": 1_700_000_000.25,
    "card_id": "card-7",
    "terminal_id": "term-3",
    "amount": 42.5,
    "currency": "EUR",
    "channel": "pos",
    "mcc": "5411",
    "country": "FR",
    "features": {"v1": -0.5, "v2": 3.0},
    "schema_version": 1,
}
SCORE: dict[str, Any] = {
    "tx_id": "tx-1",
    "card_id": "card-7",
    "score": 0.93,
    "decision": "block",
    "model_version": "v4",
    "scored_at": 1_700_000_000.5,
    "latency_ms": 3.25,
    "explanation": [{"case_id": "tx-0", "label": 1, "weight": 0.75}],
    "schema_version": 1,
}


def raw(obj: Any) -> bytes:
    return orjson.dumps(obj)


def tx_with(**changes: Any) -> bytes:
    return raw({**TX, **changes})


def tx_without(name: str) -> bytes:
    return raw({k: v for k, v in TX.items() if k != name})


def rejected(parser: Callable[[bytes], Any], payload: Any) -> RecordError:
    with pytest.raises(RecordError) as info:
        parser(payload)
    assert info.value.reason in REASONS
    return info.value


def make_update(**changes: Any) -> ModelUpdate:
    fields: dict[str, Any] = {
        "version": "v2",
        "parent": "v1",
        "created_at": 1_700_000_100.0,
        "sha256": "ab" * 32,
        "signature": "",
        "metrics": {"ap": 0.71, "auc": 0.9},
        "location": "riskstream:weights:v2",
    }
    return sign_model_update(ModelUpdate(**{**fields, **changes}), "test-key")


# --- valid input --------------------------------------------------------------------


def test_a_full_transaction_parses_to_typed_fields() -> None:
    tx = parse_transaction(raw(TX))
    assert isinstance(tx, Transaction)
    assert tx.asdict() == TX
    assert (tx.tx_id, tx.amount, tx.features["v2"]) == ("tx-1", 42.5, 3.0)


def test_optional_fields_may_be_absent_or_null_and_ints_become_floats() -> None:
    minimal = {"tx_id": "t", "ts": 17, "card_id": "c", "terminal_id": "m", "amount": 3}
    tx = parse_transaction(raw({**minimal, "schema_version": 1, "currency": None}))
    assert (tx.currency, tx.channel, tx.mcc, tx.country, tx.features) == (None,) * 4 + ({},)
    assert type(tx.ts) is float and type(tx.amount) is float
    with_int_feature = parse_transaction(tx_with(features={"n": 2}))
    assert with_int_feature.features == {"n": 2.0}
    assert type(with_int_feature.features["n"]) is float


def test_unknown_extra_fields_are_ignored() -> None:
    tx = parse_transaction(tx_with(merchant_name="ACME", nested={"a": [1, 2]}))
    assert tx == parse_transaction(raw(TX))


def test_every_record_type_round_trips_exactly() -> None:
    score = Score(**{**SCORE, "explanation": [Explanation(**SCORE["explanation"][0])]})
    records = [
        Transaction(**TX),
        Label(tx_id="tx-1", label=1, source="chargeback", labelled_at=1.7e9),
        score,
        alert_from_score(score, amount=42.5, reason="score 0.93 >= 0.80"),
        dead_letter(b"\xff", RecordError("not_utf8", "x"), topic="t", partition=1, offset=2),
        make_update(),
        make_update(parent=None, metrics={}),
    ]
    for record in records:
        wire = encode(record)
        again = parse(wire, type(record))
        assert again == record and type(again) is type(record)
        assert encode(again) == wire


def test_score_and_alert_parsers_build_nested_explanations() -> None:
    score = parse_score(raw(SCORE))
    assert isinstance(score.explanation[0], Explanation)
    assert score.explanation[0].weight == 0.75
    alert = parse_alert(raw({**SCORE, "amount": 250, "reason": "high score"}))
    assert (alert.amount, alert.reason, alert.explanation) == (
        250.0,
        "high score",
        score.explanation,
    )
    assert (
        parse_score(raw({k: v for k, v in SCORE.items() if k != "explanation"})).explanation == []
    )
    assert parse_score(raw({**SCORE, "explanation": None})).explanation == []


def test_bytes_like_inputs_are_accepted() -> None:
    wire = raw(TX)
    expected = parse_transaction(wire)
    assert parse_transaction(bytearray(wire)) == expected  # type: ignore[arg-type]
    assert parse_transaction(memoryview(wire)) == expected  # type: ignore[arg-type]
    assert parse_transaction(wire.decode()) == expected  # type: ignore[arg-type]


def test_records_parsed_by_faust_itself_equal_ours() -> None:
    # Agents that declare value_type=Score let Faust decode; both paths must agree.
    assert Transaction.loads(raw(TX)) == parse_transaction(raw(TX))
    faust_score = Score.loads(raw(SCORE))
    assert faust_score == parse_score(raw(SCORE))
    assert parse_score(faust_score.dumps()) == faust_score


# --- one test per rejection reason ---------------------------------------------------


def test_oversized() -> None:
    err = rejected(lambda b: parse_transaction(b, max_bytes=100), raw(TX))
    assert err.reason == "oversized"
    assert f"payload is {len(raw(TX))} bytes, limit is 100" in err.detail


def test_not_utf8() -> None:
    err = rejected(parse_transaction, b'{"tx_id": "\xff\xfe"}')
    assert err.reason == "not_utf8"
    assert "byte 11" in err.detail


def test_not_json() -> None:
    for payload in (b"{oops", b"", b"   ", b'{"a": 1} trailing', b"[" * 5000, None, 12):
        assert rejected(parse_transaction, payload).reason == "not_json"
    assert "empty" in rejected(parse_transaction, b"").detail
    assert "tombstone" in rejected(parse_transaction, None).detail


def test_not_object() -> None:
    for payload, kind in ((b"[1, 2]", "array"), (b'"tx"', "string"), (b"null", "null")):
        err = rejected(parse_label, payload)
        assert err.reason == "not_object"
        assert err.detail == f"expected a JSON object, got {kind}"


def test_missing_field() -> None:
    for name in ("tx_id", "ts", "card_id", "terminal_id", "amount", "schema_version"):
        err = rejected(parse_transaction, tx_without(name))
        assert err.reason == "missing_field"
        assert err.detail == f"missing required field {name!r}"


def test_wrong_type_and_booleans_are_never_numbers() -> None:
    cases = {
        "amount": (True, "must be a number, got boolean"),
        "ts": ("1700000000", "must be a number, got string"),
        "tx_id": (17, "must be a non-empty string, got integer"),
        "currency": (978, "must be a string or null, got integer"),
        "features": ([1.0], "must be an object of numbers, got array"),
        "schema_version": (1.0, "must be an integer, got number"),
    }
    for name, (value, message) in cases.items():
        err = rejected(parse_transaction, tx_with(**{name: value}))
        assert err.reason == "wrong_type"
        assert err.detail == f"field {name!r} {message}"
    err = rejected(parse_transaction, tx_with(features={"v1": False}))
    assert (err.reason, err.detail) == (
        "wrong_type",
        "field 'features.v1' must be a number, got boolean",
    )
    assert (
        rejected(
            parse_label,
            raw(
                {"tx_id": "t", "label": True, "source": "a", "labelled_at": 1, "schema_version": 1}
            ),
        ).reason
        == "wrong_type"
    )


def test_non_finite() -> None:
    for token in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-" + b"9" * 400):
        err = rejected(parse_transaction, raw(TX).replace(b"42.5", token))
        assert err.reason == "non_finite", token
        assert "non-finite number" in err.detail
    in_features = raw(TX).replace(b"-0.5", b"NaN")
    assert rejected(parse_transaction, in_features).reason == "non_finite"
    # A dict from Python can carry inf directly; the checker catches that too.
    err = rejected(lambda _: transaction_from_dict({**TX, "ts": float("inf")}), b"")
    assert (err.reason, err.detail) == ("non_finite", "field 'ts' must be finite, got inf")


def test_negative_amount() -> None:
    err = rejected(parse_transaction, tx_with(amount=-0.01))
    assert (err.reason, err.detail) == ("negative_amount", "field 'amount' must be >= 0, got -0.01")
    assert parse_transaction(tx_with(amount=0)).amount == 0.0


def test_unknown_schema_version() -> None:
    err = rejected(parse_transaction, tx_with(schema_version=2, amount="bad"))
    assert (err.reason, err.detail) == ("unknown_schema_version", "schema_version 2 is not 1")
    assert SCHEMA_VERSION == 1


def test_too_many_features() -> None:
    features = {f"v{i}": float(i) for i in range(5)}
    err = rejected(lambda b: parse_transaction(b, max_features=4), tx_with(features=features))
    assert (err.reason, err.detail) == ("too_many_features", "'features' has 5 entries, limit is 4")
    assert len(parse_transaction(tx_with(features=features), max_features=5).features) == 5


def test_invalid_value() -> None:
    cases: list[tuple[Callable[[bytes], Any], bytes, str]] = [
        (parse_transaction, tx_with(tx_id=""), "field 'tx_id' must not be empty"),
        (parse_transaction, tx_with(ts=-1), "field 'ts' must be >= 0, got -1.0"),
        (
            parse_transaction,
            tx_with(ts=1_700_000_000_123),
            "field 'ts' must be epoch seconds, got 1.7e+12 (milliseconds?)",
        ),
        (
            parse_label,
            raw({"tx_id": "t", "label": 2, "source": "a", "labelled_at": 1, "schema_version": 1}),
            "field 'label' must be 0 or 1, got 2",
        ),
        (
            parse_score,
            raw({**SCORE, "decision": "maybe"}),
            "field 'decision' must be allow, review or block, got 'maybe'",
        ),
        (parse_score, raw({**SCORE, "score": 1.5}), "field 'score' must be in [0, 1], got 1.5"),
        (
            parse_score,
            raw({**SCORE, "explanation": [{"case_id": "c", "label": 3, "weight": 1.0}]}),
            "field 'explanation[0].label' must be 0 or 1, got 3",
        ),
        (
            parse_model_update,
            encode(make_update()).replace(b'"sha256":"abab', b'"sha256":"ABAB'),
            "field 'sha256' must be 64 lowercase hex digits",
        ),
    ]
    for parser, payload, detail in cases:
        err = rejected(parser, payload)
        assert (err.reason, err.detail) == ("invalid_value", detail)


def test_reason_codes_are_a_closed_set_and_errors_pickle() -> None:
    with pytest.raises(ValueError, match="unknown RecordError reason"):
        RecordError("made_up", "x")
    err = RecordError("not_json", "y" * 1000)
    assert len(err.detail) == 300 and err.detail.endswith("...")
    copy = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own object
    assert (copy.reason, copy.detail) == (err.reason, err.detail)
    assert isinstance(err, ValueError)


def test_model_update_requires_parent_key_and_metrics() -> None:
    wire = orjson.loads(encode(make_update()))
    del wire["parent"]
    assert rejected(parse_model_update, raw(wire)).reason == "missing_field"
    wire.update(parent=None, metrics={"ap": "high"})
    err = rejected(parse_model_update, raw(wire))
    assert (err.reason, err.detail) == (
        "wrong_type",
        "field 'metrics.ap' must be a number, got string",
    )


# --- encoding, dead letters, keys, signing ----------------------------------------


def test_encode_is_compact_json_in_field_order() -> None:
    label = Label(tx_id="t", label=0, source="analyst", labelled_at=5.0)
    assert encode(label) == (
        b'{"tx_id":"t","label":0,"source":"analyst","labelled_at":5.0,"schema_version":1}'
    )
    assert b" " not in encode(Transaction(**TX))


def test_encode_validate_refuses_what_consumers_would_reject() -> None:
    nan_score = Score(**{**SCORE, "score": float("nan"), "explanation": []})
    assert b'"score":null' in encode(nan_score)  # orjson's choice; hence validate=True
    with pytest.raises(RecordError) as info:
        encode(nan_score, validate=True)
    assert info.value.reason == "wrong_type"
    numpy_score = Score(**{**SCORE, "score": np.float64(0.5), "explanation": []})
    assert parse_score(encode(numpy_score, validate=True)).score == 0.5
    with pytest.raises(RecordError) as info:
        encode(Label(tx_id="\ud800", label=1, source="a", labelled_at=1.0))
    assert info.value.reason == "not_utf8"


def test_dead_letter_keeps_payload_reason_and_position() -> None:
    err = rejected(parse_transaction, b"{nope")
    dl = dead_letter(b"{nope", err, topic="transactions", partition=3, offset=99)
    assert base64.b64decode(dl.payload_b64) == b"{nope"
    assert (dl.error, dl.detail, dl.topic, dl.partition, dl.offset) == (
        "not_json",
        err.detail,
        "transactions",
        3,
        99,
    )
    assert dl.failed_at > 1.6e9 and dl.schema_version == 1
    assert parse_dead_letter(encode(dl)) == dl


def test_dead_letter_cuts_huge_payloads_and_takes_any_raw_value() -> None:
    huge = b"x" * 2000
    dl = dead_letter(
        huge,
        RecordError("oversized", "big"),
        topic="t",
        partition=0,
        offset=0,
        max_payload_bytes=100,
    )
    assert base64.b64decode(dl.payload_b64) == b"x" * 100
    assert dl.detail == "big [payload cut to 100 of 2000 bytes]"
    tombstone = dead_letter(
        None,
        RecordError("not_json", "null"),
        topic="t",
        partition=0,
        offset=1,
    )
    assert tombstone.payload_b64 == ""


def test_kafka_keys_follow_the_wire_contract() -> None:
    tx = Transaction(**TX)
    assert kafka_key(tx) == b"card-7"
    assert kafka_key(Label(tx_id="tx-9", label=0, source="a", labelled_at=1.0)) == b"tx-9"
    assert kafka_key(parse_score(raw(SCORE))) == b"tx-1"
    assert kafka_key(make_update()) == b"v2"
    dl = dead_letter(b"", RecordError("not_json", "empty"), topic="t", partition=0, offset=0)
    assert kafka_key(dl) is None


def test_model_update_signature_covers_every_other_field() -> None:
    update = make_update()
    assert verify_model_update(update, "test-key")
    assert verify_model_update(parse_model_update(encode(update)), b"test-key")
    assert not verify_model_update(update, "wrong-key")
    tampered = ModelUpdate(**{**update.asdict(), "location": "riskstream:weights:evil"})
    assert not verify_model_update(tampered, "test-key")
    odd_signature = ModelUpdate(**{**update.asdict(), "signature": "é"})
    assert not verify_model_update(odd_signature, "test-key")


# --- construction ----------------------------------------------------------------------


def test_mutable_defaults_are_not_shared() -> None:
    a = Transaction(tx_id="a", ts=1.0, card_id="c", terminal_id="m", amount=1.0)
    b = Transaction(tx_id="b", ts=1.0, card_id="c", terminal_id="m", amount=1.0)
    a.features["x"] = 1.0
    assert b.features == {}
    c = Transaction.construct(tx_id="c", ts=1.0, card_id="c", terminal_id="m", amount=1.0)
    assert c.features == {} and c.features is not b.features
    assert Transaction._options.defaults["features"] == {}


def test_construct_fills_defaults_and_refuses_bad_fields() -> None:
    built = Score.construct(**{k: v for k, v in SCORE.items() if k != "explanation"})
    assert built.explanation == [] and built.schema_version == 1
    assert built == Score(**{**SCORE, "explanation": []})
    with pytest.raises(TypeError, match="missing required field 'card_id'"):
        Score.construct(tx_id="t")
    with pytest.raises(TypeError, match="unknown fields"):
        Label.construct(tx_id="t", label=1, source="a", labelled_at=1.0, colour="red")


def test_to_dict_gives_plain_json_values() -> None:
    score = parse_score(raw(SCORE))
    assert to_dict(score) == SCORE
    assert orjson.loads(encode(score)) == to_dict(score)
