"""Records to wire bytes, dead letters, and Kafka keys.

>>> from streams.records import parse_label
>>> label = Label(tx_id="t1", label=1, source="analyst", labelled_at=1700000000.5)
>>> encode(label)
b'{"tx_id":"t1","label":1,"source":"analyst","labelled_at":1700000000.5,"schema_version":1}'
>>> parse_label(encode(label)) == label, kafka_key(label)
(True, b't1')
"""

from __future__ import annotations

import base64
import time
from typing import Any, Final

import faust
import orjson

from streams.records.errors import RecordError
from streams.records.parsers import FROM_DICT
from streams.records.schema import (
    SCHEMA_VERSION,
    Alert,
    DeadLetter,
    Label,
    ModelUpdate,
    Score,
    Transaction,
    WireRecord,
    build,
)

#: Longest raw payload copied into a dead letter; base64 makes it 4/3 larger, and the
#: result must stay under Kafka's default 1 MB message limit.
DLQ_MAX_PAYLOAD_BYTES: Final = 512 * 1024

# Numpy scalars (a model's float32 score) serialize as plain numbers instead of failing.
_DUMPS_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY


def _nested(value: Any) -> Any:
    if isinstance(value, faust.Record):
        return value.asdict()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode(record: WireRecord, *, validate: bool = False) -> bytes:
    """Compact UTF-8 JSON for ``record``; ``parse_x(encode(r)) == r`` for valid records.

    Parameters
    ----------
    record
        Any wire record.
    validate
        Also run the record type's parser over the result, so a record that the
        consumers would reject (a NaN score becomes ``null``, a negative amount, ...)
        fails here instead. Costs one parse.

    Raises
    ------
    RecordError
        A value JSON cannot carry (``not_utf8`` for lone surrogates, ``wrong_type`` for
        other objects), or, with ``validate``, anything the parser rejects.
    """
    try:
        out = orjson.dumps(record.asdict(), default=_nested, option=_DUMPS_OPTIONS)
    except orjson.JSONEncodeError as exc:
        reason = "not_utf8" if "surrogates" in str(exc) else "wrong_type"
        raise RecordError(reason, f"cannot encode {type(record).__name__}: {exc}") from None
    if validate:
        check = FROM_DICT.get(type(record))
        if check is not None:
            check(orjson.loads(out))
    return out


def to_dict(record: WireRecord) -> dict[str, Any]:
    """The record as plain JSON-ready values, nested records included.

    >>> from streams.records import Explanation
    >>> to_dict(Score(tx_id="t", card_id="c", score=0.9, decision="block", model_version="v1",
    ...     scored_at=1.0, latency_ms=2.0, explanation=[Explanation(case_id="t0", label=1,
    ...     weight=1.0)]))["explanation"]
    [{'case_id': 't0', 'label': 1, 'weight': 1.0}]
    """
    values = record.asdict()
    explanation = values.get("explanation")
    if explanation:
        values["explanation"] = [item.asdict() for item in explanation]
    return values


def _payload_bytes(raw: object) -> bytes:
    if raw is None:
        return b""
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    return repr(raw).encode("utf-8", "backslashreplace")


def dead_letter(
    raw: bytes | None,
    err: RecordError,
    *,
    topic: str,
    partition: int,
    offset: int,
    max_payload_bytes: int = DLQ_MAX_PAYLOAD_BYTES,
) -> DeadLetter:
    """The dead-letter record for a message that failed with ``err``.

    A payload longer than ``max_payload_bytes`` is cut, and the detail says so.

    >>> dl = dead_letter(b"oops", RecordError("not_json", "unexpected character"),
    ...                  topic="transactions", partition=2, offset=41)
    >>> dl.payload_b64, dl.error, dl.offset
    ('b29wcw==', 'not_json', 41)
    """
    data = _payload_bytes(raw)
    detail = err.detail
    if len(data) > max_payload_bytes:
        detail = f"{detail} [payload cut to {max_payload_bytes} of {len(data)} bytes]"
        data = data[:max_payload_bytes]
    return build(
        DeadLetter,
        {
            "payload_b64": base64.b64encode(data).decode("ascii"),
            "error": err.reason,
            "detail": detail,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "failed_at": time.time(),
            "schema_version": SCHEMA_VERSION,
        },
    )


def alert_from_score(score: Score, *, amount: float, reason: str) -> Alert:
    """The alert for ``score`` (same fields, same explanation list) plus amount and reason.

    >>> s = Score(tx_id="t", card_id="c", score=0.95, decision="block", model_version="v3",
    ...           scored_at=1.0, latency_ms=3.5)
    >>> alert_from_score(s, amount=250.0, reason="score 0.95 >= 0.8").amount
    250.0
    """
    values = score.asdict()
    values["explanation"] = list(values["explanation"])
    values["amount"] = amount
    values["reason"] = reason
    return build(Alert, values)


def kafka_key(record: WireRecord) -> bytes | None:
    """The message key each topic is partitioned by (DESIGN.md wire contracts).

    ``transactions`` by card, ``labels``/``scores``/``alerts`` by transaction, model
    updates by version; dead letters have none.
    """
    if isinstance(record, Transaction):
        return record.card_id.encode()
    if isinstance(record, Label | Score | Alert):
        return record.tx_id.encode()
    if isinstance(record, ModelUpdate):
        return record.version.encode()
    return None
