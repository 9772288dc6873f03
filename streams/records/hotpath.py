"""The common-case acceptor for transactions: a few type tests, no function calls.

The score agent parses every transaction, so this shaves the per-field helper calls off
the usual message: all numbers already floats, ids non-empty strings, optionals strings
or null. It only ever *accepts*; anything unusual (integers, a missing field, any error)
returns ``None`` and the caller runs the full checker in :mod:`streams.records.parsers`,
which gives the same record for what this accepts and the precise reason otherwise.
Tests hold the two paths to the same results.

>>> ok = {"tx_id": "t", "ts": 1.0, "card_id": "c", "terminal_id": "m", "amount": 2.0,
...       "features": {"v1": 0.5}, "schema_version": 1}
>>> accept_transaction(ok, 256).amount
2.0
>>> accept_transaction(dict(ok, amount=2), 256) is None  # int: the full checker converts
True
"""

from __future__ import annotations

from math import inf
from typing import Any

from streams.records.schema import (
    MAX_AMOUNT,
    MAX_EPOCH_SECONDS,
    SCHEMA_VERSION,
    Transaction,
    build,
)

_str = str
_float = float
_int = int
_dict = dict


def accept_transaction(obj: dict[str, Any], max_features: int) -> Transaction | None:
    """A :class:`Transaction` if ``obj`` is a plainly valid one, else ``None``."""
    get = obj.get
    tx_id = get("tx_id")
    card_id = get("card_id")
    terminal_id = get("terminal_id")
    ts = get("ts")
    amount = get("amount")
    version = get("schema_version")
    if not (
        type(tx_id) is _str
        and tx_id
        and type(card_id) is _str
        and card_id
        and type(terminal_id) is _str
        and terminal_id
        and type(ts) is _float
        and 0.0 <= ts < MAX_EPOCH_SECONDS  # also false for NaN
        and type(amount) is _float
        and 0.0 <= amount <= MAX_AMOUNT
        and type(version) is _int
        and version == SCHEMA_VERSION
    ):
        return None
    currency = get("currency")
    channel = get("channel")
    mcc = get("mcc")
    country = get("country")
    if not (
        (currency is None or type(currency) is _str)
        and (channel is None or type(channel) is _str)
        and (mcc is None or type(mcc) is _str)
        and (country is None or type(country) is _str)
    ):
        return None
    features = get("features")
    if features is None:
        features = {}
    elif type(features) is not _dict or len(features) > max_features:
        return None
    else:
        for value in features.values():
            if type(value) is not _float or not -inf < value < inf:
                return None
    return build(
        Transaction,
        {
            "tx_id": tx_id,
            "ts": ts,
            "card_id": card_id,
            "terminal_id": terminal_id,
            "amount": amount,
            "currency": currency,
            "channel": channel,
            "mcc": mcc,
            "country": country,
            "features": features,
            "schema_version": version,
        },
    )
