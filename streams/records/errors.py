"""The one validation error of the wire records, and its closed set of reason codes.

A closed set keeps the ``reason`` label of the dead-letter metric bounded and lets
dashboards list every code up front.

>>> err = RecordError("negative_amount", "amount must be >= 0, got -1.0")
>>> err.reason, str(err)
('negative_amount', 'negative_amount: amount must be >= 0, got -1.0')
>>> "not_json" in REASONS
True
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

#: Reason code -> what it means. Iterating gives the codes; ``code in REASONS`` checks one.
REASONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "oversized": "payload larger than the configured maximum (max_message_bytes)",
        "not_utf8": "payload is not valid UTF-8",
        "not_json": "payload is not valid JSON (includes empty and null messages)",
        "not_object": "payload is JSON but not an object",
        "missing_field": "a required field is absent",
        "wrong_type": "a field has the wrong JSON type (booleans are never numbers)",
        "non_finite": "a number is NaN, Infinity or overflows a double",
        "negative_amount": "transaction amount is below zero",
        "unknown_schema_version": "schema_version is not one this build reads",
        "too_many_features": "the features map has more entries than max_features",
        "invalid_value": "right type, impossible value (empty id, label not 0/1, ...)",
        "unknown_tx_id": "a label whose tx_id was never scored (labels agent, after a wait)",
        "bad_key": "the Kafka key is missing or is not the record's key field (e.g. card_id)",
        "scoring_error": "a valid record whose features or score could not be computed",
    }
)

_DETAIL_MAX = 300  # details end up in logs and DLQ records: keep them short


class RecordError(ValueError):
    """A message that cannot become a typed record.

    Parameters
    ----------
    reason
        One of the codes in :data:`REASONS`; anything else is a programming error.
    detail
        Human-readable explanation, naming the field; cut to 300 characters.

    Examples
    --------
    >>> RecordError("missing_field", "missing required field 'tx_id'").detail
    "missing required field 'tx_id'"
    >>> RecordError("typo", "x")
    Traceback (most recent call last):
    ...
    ValueError: unknown RecordError reason 'typo'
    """

    __slots__ = ("reason", "detail")

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown RecordError reason {reason!r}")
        if len(detail) > _DETAIL_MAX:
            detail = detail[: _DETAIL_MAX - 3] + "..."
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[RecordError], tuple[str, str]]:
        # Exceptions pickle through ``args`` by default, which holds the joined message.
        return (RecordError, (self.reason, self.detail))
