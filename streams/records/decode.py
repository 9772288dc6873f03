"""Bytes to a JSON object, or a :class:`RecordError` saying precisely why not.

The happy path is one ``orjson.loads``. Only when it fails do we spend time finding
out *why* (bad UTF-8, NaN/Infinity tokens, numbers overflowing a double, or plain
malformed JSON), so the dead-letter reason is specific without slowing valid input.

>>> decode_object(b'{"a": 1}', max_bytes=100)
{'a': 1}
>>> decode_object(b'[1]', max_bytes=100)
Traceback (most recent call last):
...
streams.records.errors.RecordError: not_object: expected a JSON object, got array
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from streams.records.errors import RecordError

_JSON_KINDS = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def json_kind(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages.

    >>> json_kind(True), json_kind(1.5), json_kind(None)
    ('boolean', 'number', 'null')
    """
    return _JSON_KINDS.get(type(value), type(value).__name__)


def decode_object(raw: bytes, *, max_bytes: int) -> dict[str, Any]:
    """Parse ``raw`` as one JSON object of at most ``max_bytes`` bytes.

    Raises
    ------
    RecordError
        ``oversized``, ``not_utf8``, ``non_finite``, ``not_json`` or ``not_object``;
        never any other exception, whatever ``raw`` is.
    """
    if type(raw) is not bytes:
        raw = _as_bytes(raw)
    if len(raw) > max_bytes:
        raise RecordError("oversized", f"payload is {len(raw)} bytes, limit is {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _explain_bad_json(raw, str(exc)) from None
    if type(obj) is not dict:
        raise RecordError("not_object", f"expected a JSON object, got {json_kind(obj)}")
    return obj


def _as_bytes(raw: object) -> bytes:
    if raw is None:
        raise RecordError("not_json", "message has no value (null / tombstone)")
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        try:
            return raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RecordError("not_utf8", f"text is not encodable as UTF-8: {exc}") from None
    raise RecordError("not_json", f"expected bytes, got {type(raw).__name__}")


class _NonFiniteSeen:
    """``json.loads`` hooks that note NaN/Infinity tokens and overflowing numbers."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def constant(self, token: str) -> float:
        self.tokens.append(token)
        return 0.0

    def float_(self, token: str) -> float:
        value = float(token)
        if not math.isfinite(value):
            self.tokens.append(token)
        return value

    def int_(self, token: str) -> int:
        # orjson reads integers beyond 64 bits as doubles, so only a double overflow fails.
        digits = token.lstrip("-")
        if len(digits) > 310:
            self.tokens.append(token)
        elif len(digits) > 300:
            try:
                float(int(digits))
            except OverflowError:
                self.tokens.append(token)
        return 0


def _explain_bad_json(raw: bytes, orjson_message: str) -> RecordError:
    """Turn an orjson failure into the most specific reason (error path only)."""
    if not raw.strip():
        return RecordError("not_json", "payload is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return RecordError("not_utf8", f"invalid UTF-8 at byte {exc.start}")
    # The stdlib parser accepts NaN/Infinity and overflowing literals; if the payload
    # parses with it and contained one, it is JSON-shaped but carries a non-finite number.
    seen = _NonFiniteSeen()
    try:
        json.loads(text, parse_constant=seen.constant, parse_float=seen.float_, parse_int=seen.int_)
    except (ValueError, RecursionError):
        return RecordError("not_json", orjson_message)
    if seen.tokens:
        token = seen.tokens[0][:40]
        return RecordError("non_finite", f"non-finite number {token!r} (JSON allows none)")
    return RecordError("not_json", orjson_message)
