"""Typed wire records for every topic, their validating parsers and their encoding.

One ``faust.Record`` per topic (JSON, ``schema_version`` on each). Consumers that must
dead-letter bad input read raw bytes and call a ``parse_*`` function, which returns a
typed record or raises :class:`RecordError` with a reason code from :data:`REASONS`,
and never anything else. :func:`encode` is the inverse.

Examples
--------
>>> tx = Transaction(tx_id="t1", ts=1700000000.25, card_id="c7", terminal_id="m3",
...                  amount=42.0, currency="EUR", features={"v1": 0.5})
>>> raw = encode(tx)
>>> parse_transaction(raw) == tx
True
>>> try:
...     parse_transaction(b'{"tx_id": "t2"}')
... except RecordError as err:
...     print(err.reason, "-", err.detail)
missing_field - missing required field 'schema_version'

>>> err = RecordError("not_json", "unexpected character")
>>> dead_letter(b"{oops", err, topic="transactions", partition=0, offset=7).error
'not_json'
"""

from streams.records.encoding import (
    DLQ_MAX_PAYLOAD_BYTES,
    alert_from_score,
    dead_letter,
    encode,
    kafka_key,
    to_dict,
)
from streams.records.errors import REASONS, RecordError
from streams.records.parsers import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FEATURES,
    DLQ_MAX_BYTES,
    FROM_DICT,
    alert_from_dict,
    dead_letter_from_dict,
    label_from_dict,
    model_update_from_dict,
    parse,
    parse_alert,
    parse_dead_letter,
    parse_label,
    parse_model_update,
    parse_score,
    parse_transaction,
    score_from_dict,
    transaction_from_dict,
)
from streams.records.schema import (
    DECISIONS,
    MAX_AMOUNT,
    MAX_EPOCH_SECONDS,
    RECORD_TYPES,
    SCHEMA_VERSION,
    Alert,
    DeadLetter,
    Explanation,
    Label,
    ModelUpdate,
    Score,
    Transaction,
    WireRecord,
)
from streams.records.signing import sign_model_update, signing_payload, verify_model_update

# The producer's name for it; every record type has the same shape of helper.
transaction_to_dict = to_dict

__all__ = [
    "DECISIONS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FEATURES",
    "DLQ_MAX_BYTES",
    "DLQ_MAX_PAYLOAD_BYTES",
    "MAX_AMOUNT",
    "MAX_EPOCH_SECONDS",
    "FROM_DICT",
    "REASONS",
    "RECORD_TYPES",
    "SCHEMA_VERSION",
    "Alert",
    "DeadLetter",
    "Explanation",
    "Label",
    "ModelUpdate",
    "RecordError",
    "Score",
    "Transaction",
    "WireRecord",
    "alert_from_dict",
    "alert_from_score",
    "dead_letter",
    "dead_letter_from_dict",
    "encode",
    "kafka_key",
    "label_from_dict",
    "model_update_from_dict",
    "parse",
    "parse_alert",
    "parse_dead_letter",
    "parse_label",
    "parse_model_update",
    "parse_score",
    "parse_transaction",
    "score_from_dict",
    "sign_model_update",
    "signing_payload",
    "to_dict",
    "transaction_from_dict",
    "transaction_to_dict",
    "verify_model_update",
]
