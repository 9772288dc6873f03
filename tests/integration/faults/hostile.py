"""Hypothesis strategies for hostile ``transactions`` messages, each with what it must become.

A message is ``Message(key, value, expected, kind)``: the Kafka key and value, and the set
of dead-letter reason codes it may legitimately get. Each strategy breaks one thing on
purpose, so ``expected`` is narrow: a truncated record must be ``not_json``, a negative
amount ``negative_amount``, and so on.

Hypothesis costs about 60 us per drawn value here, so each message is drawn from few
values (a seed integer makes the valid record it starts from) to keep 100,000 of them
within a minute or so.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import orjson
from hypothesis import strategies as st

REQUIRED = ("tx_id", "ts", "card_id", "terminal_id", "amount", "schema_version")
GIANT_MAX = 512 * 1024  # far over max_message_bytes, well within the broker's 1 MiB limit


class Message(NamedTuple):
    key: bytes | None
    value: bytes | None
    expected: frozenset[str]
    kind: str


def base_record(seed: int) -> dict[str, Any]:
    """A valid transaction object made from ``seed`` (what each strategy then breaks)."""
    record: dict[str, Any] = {
        "tx_id": f"h-{seed}",
        "ts": 1.6e9 + (seed % 200_000_000) + 0.25,
        "card_id": f"c{seed % 997}",
        "terminal_id": f"m{seed % 1999}",
        "amount": (seed % 100_000) / 7.0,
        "schema_version": 1,
    }
    if seed % 3 == 0:
        record["features"] = {"v1": (seed % 1000) / 10.0 - 50.0}
    return record


seeds = st.integers(min_value=0, max_value=2**40)


def _dumps(value: Any) -> bytes:
    # json, not orjson: hypothesis draws integers beyond 64 bits, which JSON allows
    return json.dumps(value).encode()


def _message(record: dict[str, Any], expected: str, kind: str) -> Message:
    card = record.get("card_id")
    key = card.encode() if isinstance(card, str) else b"k"
    return Message(key, _dumps(record), frozenset({expected}), kind)


def _with_token(record: dict[str, Any], field: str, token: str) -> bytes:
    """``record`` as JSON with ``field`` set to the raw JSON ``token`` (NaN, 1e999, ...)."""
    marker = "__HOSTILE__"
    return json.dumps({**record, field: marker}).replace(f'"{marker}"', token).encode()


def _truncated(seed: int, where: float) -> Message:
    raw = orjson.dumps(base_record(seed))
    return Message(b"k", raw[: int(where * len(raw))], frozenset({"not_json"}), "truncated")


def _random_bytes(raw: bytes) -> Message:
    try:  # the rare random payload that is a JSON object is still no transaction
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        decoded = None
    if isinstance(decoded, dict):
        expected = {"missing_field", "wrong_type", "invalid_value"}
    else:
        expected = {"not_json", "not_utf8", "not_object", "non_finite"}
    return Message(b"k", raw, frozenset(expected), "random_bytes")


BAD_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\x80", b"\xf8\x88\x80\x80\x80"]


def _bad_utf8(seed: int, field: str, junk: bytes) -> Message:
    record = base_record(seed)
    value = record[field].encode()
    raw = orjson.dumps(record).replace(value, value + junk, 1)
    return Message(record["card_id"].encode(), raw, frozenset({"not_utf8"}), "bad_utf8")


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.binary(max_size=12).map(lambda b: b.decode("latin-1"))
)
not_object_values = json_scalars | st.lists(json_scalars, max_size=3)


def _deep(seed: int, depth: int, where: str) -> Message:
    nest = "[" * depth + "]" * depth
    if where == "top":  # orjson refuses nesting beyond 1024; shallower is still an array
        expected = "not_json" if depth > 1024 else "not_object"
        return Message(b"k", nest.encode(), frozenset({expected}), "deep_nesting")
    record = base_record(seed)
    expected = "not_json" if depth + 1 > 1024 else "wrong_type"  # + the record's own level
    raw = _with_token(record, where, nest)
    return Message(record["card_id"].encode(), raw, frozenset({expected}), "deep_nesting")


def _giant(seed: int, size: int, field: str) -> Message:
    record = base_record(seed)
    record[field] = "g" * size
    return _message(record, "oversized", "giant")


def _missing(seed: int, gone: frozenset[str]) -> Message:
    record = {k: v for k, v in base_record(seed).items() if k not in gone}
    return _message(record, "missing_field", "missing_field")


WRONG_FOR = {  # a value of the wrong JSON type for each field
    "tx_id": st.integers() | st.booleans() | st.just([1, 2]) | st.floats(-1e6, 1e6),
    "card_id": st.integers() | st.booleans() | st.just({"a": 1}),
    "terminal_id": st.integers() | st.booleans() | st.just(["m1"]),
    "ts": st.binary(max_size=8).map(lambda b: b.hex()) | st.booleans() | st.just([1.0]),
    "amount": st.binary(max_size=8).map(lambda b: b.hex()) | st.booleans() | st.just({}),
    "features": st.binary(max_size=8).map(lambda b: b.hex()) | st.integers() | st.just([0.5]),
    "currency": st.integers() | st.booleans() | st.just([1]),
    "schema_version": st.booleans() | st.just("1") | st.just([1]),
}


def _wrong_type(seed: int, field: str, value: Any) -> Message:
    return _message({**base_record(seed), field: value}, "wrong_type", "wrong_type")


def _wrong_feature(seed: int, value: Any) -> Message:
    record = {**base_record(seed), "features": {"v1": 1.0, "bad": value}}
    return _message(record, "wrong_type", "wrong_feature_value")


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1" + "0" * 400]


def _non_finite(seed: int, token: str, field: str) -> Message:
    record = base_record(seed)
    if field == "features":
        raw = _with_token(record, field, '{"v1": ' + token + "}")
    else:
        raw = _with_token(record, field, token)
    return Message(record["card_id"].encode(), raw, frozenset({"non_finite"}), "non_finite")


def _huge_ts(seed: int, ts: float) -> Message:
    """Finite but absurd: a timestamp past the year 9999."""
    return _message({**base_record(seed), "ts": ts}, "invalid_value", "huge_ts")


def _huge_amount(seed: int, amount: float) -> Message:
    """Finite but beyond any card total (``MAX_AMOUNT``): 1e300 passes as a double."""
    return _message({**base_record(seed), "amount": amount}, "invalid_value", "huge_amount")


def _negative(seed: int, value: float, field: str) -> Message:
    reason = "negative_amount" if field == "amount" else "invalid_value"
    return _message({**base_record(seed), field: -value}, reason, f"negative_{field}")


def _schema(seed: int, version: int) -> Message:
    return _message(
        {**base_record(seed), "schema_version": version}, "unknown_schema_version", "schema_version"
    )


def _too_many(seed: int, extra: int, max_features: int) -> Message:
    features = {f"f{i}": float(i) for i in range(max_features + extra)}
    return _message(
        {**base_record(seed), "features": features}, "too_many_features", "too_many_features"
    )


def _empty_id(seed: int, field: str) -> Message:
    return _message({**base_record(seed), field: ""}, "invalid_value", "empty_id")


def _bad_key(seed: int, key: bytes | None) -> Message:
    record = base_record(seed)
    if key == record["card_id"].encode():
        key = key + b"x"
    return Message(key, _dumps(record), frozenset({"bad_key"}), "bad_key")


TOMBSTONE = Message(b"k", None, frozenset({"not_json"}), "tombstone")
ID_FIELDS = ["tx_id", "card_id", "terminal_id"]


def hostile_messages(max_features: int) -> st.SearchStrategy[Message]:
    """One hostile message of any kind except giants (see :func:`giant_messages`)."""
    return st.one_of(
        st.builds(_truncated, seeds, st.floats(0.0, 0.999)),
        st.builds(_random_bytes, st.binary(max_size=64)),
        st.builds(_bad_utf8, seeds, st.sampled_from(ID_FIELDS), st.sampled_from(BAD_UTF8)),
        st.builds(
            lambda v: Message(b"k", _dumps(v), frozenset({"not_object"}), "not_object"),
            not_object_values,
        ),
        st.builds(
            _deep, seeds, st.integers(200, 1_900), st.sampled_from(["top", "features", "amount"])
        ),
        st.builds(_missing, seeds, st.frozensets(st.sampled_from(REQUIRED), min_size=1)),
        st.sampled_from(sorted(WRONG_FOR)).flatmap(
            lambda f: st.builds(_wrong_type, seeds, st.just(f), WRONG_FOR[f])
        ),
        st.builds(_wrong_feature, seeds, st.none() | st.booleans() | st.integers().map(str)),
        st.builds(
            _non_finite,
            seeds,
            st.sampled_from(NON_FINITE),
            st.sampled_from(["amount", "ts", "features"]),
        ),
        st.builds(_huge_ts, seeds, st.floats(1e12, 1e300)),
        st.builds(_huge_amount, seeds, st.floats(1e15, 1e308, exclude_min=True)),
        st.builds(_negative, seeds, st.floats(0.01, 1e300), st.sampled_from(["amount", "ts"])),
        st.builds(_schema, seeds, st.integers(-(2**40), 2**40).filter(lambda v: v != 1)),
        st.builds(_too_many, seeds, st.integers(1, 40), st.just(max_features)),
        st.builds(_empty_id, seeds, st.sampled_from(ID_FIELDS)),
        st.builds(_bad_key, seeds, st.none() | st.binary(max_size=8)),
        st.just(TOMBSTONE),
    )


def giant_messages() -> st.SearchStrategy[Message]:
    """A record far over ``max_message_bytes`` (8 KiB to 512 KiB), within the broker's limit."""
    return st.builds(
        _giant,
        seeds,
        st.integers(8 * 1024, GIANT_MAX),
        st.sampled_from(["tx_id", "card_id", "padding"]),
    )
