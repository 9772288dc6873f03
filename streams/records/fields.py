"""Field checkers: one JSON object field in, one typed Python value out, or RecordError.

Each checker tests the common case with one or two ``type(v) is T`` comparisons (booleans
are never numbers, so ``isinstance`` is wrong here) and only classifies the failure when
there is one. ``at`` prefixes field names in messages for nested objects.

>>> obj = {"amount": 12, "flag": True}
>>> number(obj, "amount")
12.0
>>> number(obj, "flag")
Traceback (most recent call last):
...
streams.records.errors.RecordError: wrong_type: field 'flag' must be a number, got boolean
"""

from __future__ import annotations

from math import isfinite
from typing import Any

from streams.records.decode import json_kind
from streams.records.errors import RecordError
from streams.records.schema import MAX_EPOCH_SECONDS, SCHEMA_VERSION

Obj = dict[str, Any]
_HEX = frozenset("0123456789abcdef")


def _name(name: str, at: str) -> str:
    return repr(at + name) if len(name) + len(at) <= 80 else repr((at + name)[:77] + "...")


def _absent_or_wrong(obj: Obj, name: str, expected: str, at: str) -> RecordError:
    if name not in obj:
        return RecordError("missing_field", f"missing required field {_name(name, at)}")
    kind = json_kind(obj[name])
    return RecordError("wrong_type", f"field {_name(name, at)} must be {expected}, got {kind}")


def identifier(obj: Obj, name: str, at: str = "") -> str:
    """A required, non-empty string."""
    value = obj.get(name)
    if type(value) is str and value:
        return value
    if value == "":
        raise RecordError("invalid_value", f"field {_name(name, at)} must not be empty")
    raise _absent_or_wrong(obj, name, "a non-empty string", at)


def text(obj: Obj, name: str, at: str = "") -> str:
    """A required string, possibly empty."""
    value = obj.get(name)
    if type(value) is str:
        return value
    raise _absent_or_wrong(obj, name, "a string", at)


def optional_text(obj: Obj, name: str, at: str = "") -> str | None:
    """A string, or ``None`` when absent or null."""
    value = obj.get(name)
    if value is None or type(value) is str:
        return value
    raise _absent_or_wrong(obj, name, "a string or null", at)


def _to_float(obj: Obj, name: str, value: Any, at: str) -> float:
    """Slow path of :func:`number`: ints, overflow, non-finite, wrong types."""
    if type(value) is int:
        try:
            result = float(value)
        except OverflowError:
            raise RecordError("non_finite", f"field {_name(name, at)} overflows") from None
        return result
    if type(value) is float:  # only non-finite floats get here
        raise RecordError("non_finite", f"field {_name(name, at)} must be finite, got {value}")
    raise _absent_or_wrong(obj, name, "a number", at)


def number(obj: Obj, name: str, at: str = "") -> float:
    """A required finite number; integers become floats, booleans are refused."""
    value = obj.get(name)
    if type(value) is float and isfinite(value):
        return value
    return _to_float(obj, name, value, at)


def timestamp(obj: Obj, name: str, at: str = "") -> float:
    """Required seconds since the UNIX epoch, in ``[0, MAX_EPOCH_SECONDS)``.

    The upper bound catches the usual producer bug, milliseconds sent as seconds.
    """
    value = number(obj, name, at)
    if 0.0 <= value < MAX_EPOCH_SECONDS:
        return value
    if value < 0.0:
        raise RecordError("invalid_value", f"field {_name(name, at)} must be >= 0, got {value}")
    raise RecordError(
        "invalid_value",
        f"field {_name(name, at)} must be epoch seconds, got {value:.6g} (milliseconds?)",
    )


def integer(obj: Obj, name: str, at: str = "") -> int:
    """A required integer (not a boolean, not 1.0)."""
    value = obj.get(name)
    if type(value) is int:
        return value
    raise _absent_or_wrong(obj, name, "an integer", at)


def binary_label(obj: Obj, name: str, at: str = "") -> int:
    """A required 0 or 1."""
    value = integer(obj, name, at)
    if value == 0 or value == 1:
        return value
    raise RecordError("invalid_value", f"field {_name(name, at)} must be 0 or 1, got {value}")


def hex_digest(obj: Obj, name: str) -> str:
    """A required SHA-256 sized lowercase hex string (64 characters)."""
    value = text(obj, name)
    if len(value) == 64 and _HEX.issuperset(value):
        return value
    raise RecordError("invalid_value", f"field {_name(name, '')} must be 64 lowercase hex digits")


def schema_version(obj: Obj) -> int:
    """``schema_version``, which must be one this build reads."""
    value = obj.get("schema_version")
    if value == SCHEMA_VERSION and type(value) is int:
        return value
    if type(value) is int:
        raise RecordError(
            "unknown_schema_version", f"schema_version {value} is not {SCHEMA_VERSION}"
        )
    raise _absent_or_wrong(obj, "schema_version", "an integer", "")


def number_map(
    obj: Obj, name: str, *, required: bool, max_items: int | None = None
) -> dict[str, float]:
    """An object of finite numbers (ints become floats); ``{}`` when optional and absent.

    Keys are strings by construction (JSON objects have string keys). More than
    ``max_items`` entries is ``too_many_features``.
    """
    value = obj.get(name)
    if type(value) is not dict:
        if value is None and not required:
            return {}
        raise _absent_or_wrong(obj, name, "an object of numbers", "")
    if max_items is not None and len(value) > max_items:
        raise RecordError(
            "too_many_features", f"{name!r} has {len(value)} entries, limit is {max_items}"
        )
    for item in value.values():
        if type(item) is not float or not isfinite(item):
            return _converted_map(value, name)
    return value


def _converted_map(value: Obj, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in value:
        if type(key) is not str:
            raise RecordError("wrong_type", f"{name!r} keys must be strings, got {json_kind(key)}")
        out[key] = number(value, key, at=f"{name}.")
    return out
