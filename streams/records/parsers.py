"""Validating parsers: raw Kafka bytes (or a decoded dict) to typed records.

Every ``parse_*`` raises only :class:`~streams.records.errors.RecordError`, whatever the
bytes. Unknown extra fields are ignored, so a producer may add optional fields within a
schema version; absent optional fields take their defaults.

>>> raw = (b'{"tx_id":"t1","ts":1700000000,"card_id":"c1","terminal_id":"m1",'
...        b'"amount":5,"features":{"v1":-0.5},"schema_version":1}')
>>> tx = parse_transaction(raw)
>>> tx.amount, tx.ts, tx.features, tx.country
(5.0, 1700000000.0, {'v1': -0.5}, None)
>>> parse_transaction(raw.replace(b'"amount":5', b'"amount":-5'))
Traceback (most recent call last):
...
streams.records.errors.RecordError: negative_amount: field 'amount' must be >= 0, got -5.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

from streams.records import fields as f
from streams.records.decode import decode_object, json_kind
from streams.records.errors import RecordError
from streams.records.hotpath import accept_transaction
from streams.records.schema import (
    DECISIONS,
    MAX_AMOUNT,
    Alert,
    DeadLetter,
    Explanation,
    Label,
    ModelUpdate,
    Score,
    Transaction,
    WireRecord,
    build,
)

DEFAULT_MAX_BYTES: Final = 65536
#: Dead letters wrap a (base64, so 4/3 larger) payload of up to 512 KiB.
DLQ_MAX_BYTES: Final = 1024 * 1024
DEFAULT_MAX_FEATURES: Final = 256
R = TypeVar("R", bound=WireRecord)
Obj = dict[str, Any]


def transaction_from_dict(obj: Obj, *, max_features: int = DEFAULT_MAX_FEATURES) -> Transaction:
    """Check a decoded ``transactions`` object and build the record.

    The record takes over ``obj``'s ``features`` dict rather than copying it.

    >>> transaction_from_dict({"tx_id": "t", "ts": 0, "card_id": "c", "terminal_id": "m",
    ...                        "amount": 1.5, "schema_version": 1}).amount
    1.5
    """
    record = accept_transaction(obj, max_features)
    return record if record is not None else _check_transaction(obj, max_features)


def _check_transaction(obj: Obj, max_features: int) -> Transaction:
    """Every rule, field by field; the authority that :func:`accept_transaction` mirrors."""
    schema_version = f.schema_version(obj)
    amount = f.number(obj, "amount")
    if amount < 0.0:
        raise RecordError("negative_amount", f"field 'amount' must be >= 0, got {amount}")
    if amount > MAX_AMOUNT:
        raise RecordError(
            "invalid_value", f"field 'amount' must be at most {MAX_AMOUNT:.0e}, got {amount:.6g}"
        )
    return build(
        Transaction,
        {
            "tx_id": f.identifier(obj, "tx_id"),
            "ts": f.timestamp(obj, "ts"),
            "card_id": f.identifier(obj, "card_id"),
            "terminal_id": f.identifier(obj, "terminal_id"),
            "amount": amount,
            "currency": f.optional_text(obj, "currency"),
            "channel": f.optional_text(obj, "channel"),
            "mcc": f.optional_text(obj, "mcc"),
            "country": f.optional_text(obj, "country"),
            "features": f.number_map(obj, "features", required=False, max_items=max_features),
            "schema_version": schema_version,
        },
    )


def label_from_dict(obj: Obj) -> Label:
    """Check a decoded ``labels`` object and build the record."""
    version = f.schema_version(obj)
    return build(
        Label,
        {
            "tx_id": f.identifier(obj, "tx_id"),
            "label": f.binary_label(obj, "label"),
            "source": f.text(obj, "source"),
            "labelled_at": f.timestamp(obj, "labelled_at"),
            "schema_version": version,
        },
    )


def _explanations(obj: Obj) -> list[Explanation]:
    items = obj.get("explanation")
    if items is None:  # absent or null: no explanation
        return []
    if type(items) is not list:
        raise RecordError(
            "wrong_type", f"field 'explanation' must be an array, got {json_kind(items)}"
        )
    out = []
    for i, item in enumerate(items):
        at = f"explanation[{i}]."
        if type(item) is not dict:
            raise RecordError("wrong_type", f"{at[:-1]} must be an object, got {json_kind(item)}")
        out.append(
            build(
                Explanation,
                {
                    "case_id": f.identifier(item, "case_id", at),
                    "label": f.binary_label(item, "label", at),
                    "weight": f.number(item, "weight", at),
                },
            )
        )
    return out


def _score_fields(obj: Obj) -> Obj:
    score = f.number(obj, "score")
    if not 0.0 <= score <= 1.0:
        raise RecordError("invalid_value", f"field 'score' must be in [0, 1], got {score}")
    decision = f.text(obj, "decision")
    if decision not in DECISIONS:
        raise RecordError(
            "invalid_value", f"field 'decision' must be allow, review or block, got {decision!r}"
        )
    return {
        "tx_id": f.identifier(obj, "tx_id"),
        "card_id": f.identifier(obj, "card_id"),
        "score": score,
        "decision": decision,
        "model_version": f.text(obj, "model_version"),
        "scored_at": f.timestamp(obj, "scored_at"),
        # Not checked for sign: produce->score latency spans two hosts' clocks.
        "latency_ms": f.number(obj, "latency_ms"),
    }


def score_from_dict(obj: Obj) -> Score:
    """Check a decoded ``scores`` object and build the record."""
    version = f.schema_version(obj)
    values = _score_fields(obj)
    values["explanation"] = _explanations(obj)
    values["schema_version"] = version
    return build(Score, values)


def alert_from_dict(obj: Obj) -> Alert:
    """Check a decoded ``alerts`` object and build the record."""
    version = f.schema_version(obj)
    values = _score_fields(obj)
    amount = f.number(obj, "amount")
    if amount < 0.0:
        raise RecordError("negative_amount", f"field 'amount' must be >= 0, got {amount}")
    values["amount"] = amount
    values["reason"] = f.text(obj, "reason")
    values["explanation"] = _explanations(obj)
    values["schema_version"] = version
    return build(Alert, values)


def dead_letter_from_dict(obj: Obj) -> DeadLetter:
    """Check a decoded ``transactions.dlq`` object and build the record."""
    version = f.schema_version(obj)
    return build(
        DeadLetter,
        {
            "payload_b64": f.text(obj, "payload_b64"),
            "error": f.identifier(obj, "error"),
            "detail": f.text(obj, "detail"),
            "topic": f.text(obj, "topic"),
            "partition": f.integer(obj, "partition"),
            "offset": f.integer(obj, "offset"),
            "failed_at": f.timestamp(obj, "failed_at"),
            "schema_version": version,
        },
    )


def model_update_from_dict(obj: Obj) -> ModelUpdate:
    """Check a decoded ``model-updates`` object and build the record."""
    version = f.schema_version(obj)
    parent = f.optional_text(obj, "parent")
    if parent is None and "parent" not in obj:
        raise RecordError("missing_field", "missing required field 'parent' (null for none)")
    return build(
        ModelUpdate,
        {
            "version": f.identifier(obj, "version"),
            "parent": parent,
            "created_at": f.timestamp(obj, "created_at"),
            "sha256": f.hex_digest(obj, "sha256"),
            "signature": f.hex_digest(obj, "signature"),
            "metrics": f.number_map(obj, "metrics", required=True),
            "location": f.identifier(obj, "location"),
            "schema_version": version,
        },
    )


def parse_transaction(
    raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_features: int = DEFAULT_MAX_FEATURES
) -> Transaction:
    """Validate one ``transactions`` message; the score agent's hot path."""
    return transaction_from_dict(decode_object(raw, max_bytes=max_bytes), max_features=max_features)


def parse_label(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Label:
    """Validate one ``labels`` message.

    >>> parse_label(b'{"tx_id":"t1","label":1,"source":"analyst","labelled_at":1.0,'
    ...             b'"schema_version":1}').label
    1
    """
    return label_from_dict(decode_object(raw, max_bytes=max_bytes))


def parse_score(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Score:
    """Validate one ``scores`` message."""
    return score_from_dict(decode_object(raw, max_bytes=max_bytes))


def parse_alert(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Alert:
    """Validate one ``alerts`` message."""
    return alert_from_dict(decode_object(raw, max_bytes=max_bytes))


def parse_dead_letter(raw: bytes, *, max_bytes: int = DLQ_MAX_BYTES) -> DeadLetter:
    """Validate one ``transactions.dlq`` message (larger default: it wraps a payload)."""
    return dead_letter_from_dict(decode_object(raw, max_bytes=max_bytes))


def parse_model_update(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ModelUpdate:
    """Validate one ``model-updates`` message (signature *format* only; see ``signing``)."""
    return model_update_from_dict(decode_object(raw, max_bytes=max_bytes))


#: Record type -> its ``*_from_dict`` checker (Explanation only appears nested).
FROM_DICT: Final[dict[type[WireRecord], Callable[[Obj], WireRecord]]] = {
    Transaction: transaction_from_dict,
    Label: label_from_dict,
    Score: score_from_dict,
    Alert: alert_from_dict,
    DeadLetter: dead_letter_from_dict,
    ModelUpdate: model_update_from_dict,
}


def parse(raw: bytes, record_type: type[R], *, max_bytes: int | None = None) -> R:
    """Validate ``raw`` as a ``record_type``; ``max_bytes`` defaults per type.

    >>> parse(b'{"tx_id":"t1","label":0,"source":"x","labelled_at":2,"schema_version":1}',
    ...       Label).labelled_at
    2.0
    """
    if max_bytes is None:
        max_bytes = DLQ_MAX_BYTES if record_type is DeadLetter else DEFAULT_MAX_BYTES
    # FROM_DICT maps each type to the checker that builds exactly that type.
    return cast(R, FROM_DICT[record_type](decode_object(raw, max_bytes=max_bytes)))
