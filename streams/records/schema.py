"""The typed record of every topic, as ``faust.Record`` classes.

Field types are the wire contract (DESIGN.md "Wire contracts"). Records built with the
normal constructor are *not* validated; records coming off the wire go through the
parsers in :mod:`streams.records.parsers`, which check every field and then hand the
checked values to :func:`build`, skipping Faust's per-field ``__set__`` and coercion
(~0.4 µs instead of ~6 µs for ``Transaction(**kw)``; see ``bench/bench_records.py``).
:meth:`WireRecord.construct` is the keyword form of the same shortcut for producers
that already hold correctly typed values (the score agent's ``Score``/``Alert``).

>>> tx = Transaction(tx_id="t1", ts=1.7e9, card_id="c1", terminal_id="m1", amount=9.5)
>>> tx.features, tx.currency, tx.schema_version
({}, None, 1)
>>> Transaction.construct(**tx.asdict()) == tx
True
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, TypeVar

import faust

SCHEMA_VERSION: Final = 1
DECISIONS: Final = frozenset({"allow", "review", "block"})
#: Timestamps are epoch seconds below this (year 5138): 1.7e12 is milliseconds, a bug.
MAX_EPOCH_SECONDS: Final = 1e11
#: Transaction amounts are at most this: a card's 30-day totals are exact sums of
#: amounts (``models.features.card_state``), and amounts near the largest double (1e308
#: passes as finite) overflowed them. 1e15 is beyond any payment in any currency.
MAX_AMOUNT: Final = 1e15

R = TypeVar("R", bound="WireRecord")
_object_new = object.__new__


class WireRecord(faust.Record, abstract=True, serializer="json", include_metadata=False):
    """Base of every wire record: JSON, no ``__faust`` metadata on the wire.

    Faust shares one default object between instances, so fields with a mutable
    default (``{}``/``[]``) get a fresh copy in ``__post_init__``.
    """

    _mutable_defaults: ClassVar[tuple[str, ...]] = ()
    _lazy_fields: ClassVar[frozenset[str]] = frozenset()
    _field_names: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        defaults = self._options.defaults
        values = self.__dict__
        for name in self._mutable_defaults:
            if values[name] is defaults[name]:
                values[name] = type(values[name])()

    @classmethod
    def construct(cls: type[R], **fields: Any) -> R:
        """Build a record from values the caller guarantees are already the right types.

        No checks and no coercion: this is the hot path for the parsers and for the
        score agent's output records. Absent fields take their defaults.

        Raises
        ------
        TypeError
            A required field is absent or an unknown field is given.

        Examples
        --------
        >>> Explanation.construct(case_id="t9", label=1, weight=0.25)
        <Explanation: case_id='t9', label=1, weight=0.25>
        """
        if fields.keys() != cls._field_names:
            fields = _with_defaults(cls, fields)
        return build(cls, fields)


def build(cls: type[R], values: dict[str, Any]) -> R:
    """Make a ``cls`` whose field values are exactly ``values`` (taken over, not copied).

    ``values`` must hold every field and nothing else. Lazily coerced fields (Faust
    converts generic types on first access) are marked as already converted.
    """
    values["__evaluated_fields__"] = set(cls._lazy_fields)
    obj = _object_new(cls)
    obj.__dict__ = values
    return obj


def _with_defaults(cls: type[WireRecord], fields: dict[str, Any]) -> dict[str, Any]:
    unknown = fields.keys() - cls._field_names
    if unknown:
        raise TypeError(f"{cls.__name__} got unknown fields: {sorted(unknown)}")
    defaults = cls._options.defaults
    out = {}
    for name in cls._options.fields:
        if name in fields:
            out[name] = fields[name]
        elif name in defaults:
            value = defaults[name]
            out[name] = type(value)() if name in cls._mutable_defaults else value
        else:
            raise TypeError(f"{cls.__name__} is missing required field {name!r}")
    return out


class Transaction(WireRecord):
    """One card payment (topic ``transactions``, key ``card_id``). ``ts`` is epoch seconds UTC."""

    tx_id: str
    ts: float
    card_id: str
    terminal_id: str
    amount: float
    currency: str | None = None
    channel: str | None = None
    mcc: str | None = None
    country: str | None = None
    features: dict[str, float] = {}  # copied per record
    schema_version: int = SCHEMA_VERSION


class Label(WireRecord):
    """An analyst's or chargeback's verdict (topic ``labels``, key ``tx_id``); 1 = fraud."""

    tx_id: str
    label: int
    source: str
    labelled_at: float
    schema_version: int = SCHEMA_VERSION


class Explanation(WireRecord):
    """One labelled support case behind a score, with its attention weight."""

    case_id: str
    label: int
    weight: float


class Score(WireRecord):
    """The verdict on one transaction (topic ``scores``). ``score`` is in [0, 1]."""

    tx_id: str
    card_id: str
    score: float
    decision: str
    model_version: str
    scored_at: float
    latency_ms: float
    explanation: list[Explanation] = []  # copied per record
    schema_version: int = SCHEMA_VERSION


class Alert(WireRecord):
    """A score at or above the alert threshold, plus what the analyst needs (topic ``alerts``)."""

    tx_id: str
    card_id: str
    score: float
    decision: str
    model_version: str
    scored_at: float
    latency_ms: float
    amount: float
    reason: str
    explanation: list[Explanation] = []  # copied per record
    schema_version: int = SCHEMA_VERSION


class DeadLetter(WireRecord):
    """A message that could not be processed (topic ``transactions.dlq``)."""

    payload_b64: str
    error: str
    detail: str
    topic: str
    partition: int
    offset: int
    failed_at: float
    schema_version: int = SCHEMA_VERSION


class ModelUpdate(WireRecord):
    """A new model version (topic ``model-updates``); weights live in Redis at ``location``."""

    version: str
    parent: str | None
    created_at: float
    sha256: str
    signature: str
    metrics: dict[str, float]
    location: str
    schema_version: int = SCHEMA_VERSION


RECORD_TYPES: Final[tuple[type[WireRecord], ...]] = (
    Transaction,
    Label,
    Explanation,
    Score,
    Alert,
    DeadLetter,
    ModelUpdate,
)


def _finish(cls: type[WireRecord]) -> None:
    descriptors = cls._options.descriptors
    cls._field_names = frozenset(cls._options.fields)
    cls._lazy_fields = frozenset(n for n, d in descriptors.items() if d.lazy_coercion)
    cls._mutable_defaults = tuple(
        n for n, v in cls._options.defaults.items() if isinstance(v, dict | list)
    )


for _cls in RECORD_TYPES:
    _finish(_cls)
