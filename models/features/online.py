"""Incremental feature pieces for the stream: per-card state, terminal risk, vector assembly.

The stream keeps one :class:`CardState` per card (a Faust table value, via
:meth:`CardState.to_dict`) and per-terminal, per-day counts of transactions and known
frauds (in Redis). For each transaction, in this order::

    card = card_features(state, ts, amount)   # includes the current tx
    state.learn_one(ts, amount)
    term = terminal_features(tx_by_day, fraud_by_day, day_index(ts))
    x = assemble_vector(card, term, tx_features(ts, amount), features_map, schema)

The definitions are documented in :mod:`models.features.definitions`; the offline
builder uses the same ones (a unit test checks both agree to 1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from models.features.card_state import CardState, card_features
from models.features.definitions import (
    CARD_WINDOWS_DAYS,
    DAY_SECONDS,
    LABEL_DELAY_DAYS,
    NIGHT_END_SECONDS,
    TERMINAL_WINDOWS_DAYS,
    FeatureSchema,
)


def day_index(ts: float) -> int:
    """Integer UTC day of an epoch timestamp: ``floor(ts / 86400)``.

    >>> day_index(0.0), day_index(86_399.9), day_index(86_400.0)
    (0, 0, 1)
    """
    return math.floor(ts / DAY_SECONDS)


def tx_features(ts: float, amount: float) -> tuple[float, float, float]:
    """``(amount, is_weekend, is_night)`` of one transaction.

    >>> tx_features(0.0, 12.5)  # 1970-01-01 00:00 UTC was a Thursday night
    (12.5, 0.0, 1.0)
    >>> tx_features(2 * 86_400 + 43_200.0, 3.0)  # Saturday noon
    (3.0, 1.0, 0.0)
    """
    day = math.floor(ts / DAY_SECONDS)
    weekday = (day + 3) % 7  # Monday = 0; day 0 was a Thursday
    seconds_of_day = ts - day * DAY_SECONDS
    return (
        float(amount),
        1.0 if weekday >= 5 else 0.0,
        1.0 if seconds_of_day < NIGHT_END_SECONDS else 0.0,
    )


def terminal_window_days(day: int, window_days: int) -> range:
    """The day indices of a terminal window: ``day-7-w .. day-8`` inclusive.

    >>> list(terminal_window_days(100, 1)), len(terminal_window_days(100, 30))
    ([92], 30)
    """
    last = day - LABEL_DELAY_DAYS - 1
    return range(last - window_days + 1, last + 1)


def terminal_features(
    tx_by_day: Mapping[int, int], fraud_by_day: Mapping[int, int], day: int
) -> tuple[float, ...]:
    """``(count_1d, risk_1d, count_7d, risk_7d, count_30d, risk_30d)`` of a terminal.

    ``tx_by_day[d]`` / ``fraud_by_day[d]`` are the terminal's transaction count and known
    fraud count on UTC day ``d``; missing days are 0. Only days at least 8 days before
    ``day`` are read (the 7-day label delay).

    >>> terminal_features({92: 4, 80: 6}, {92: 1}, 100)
    (4.0, 0.25, 4.0, 0.25, 10.0, 0.1)
    """
    out: list[float] = []
    for w in TERMINAL_WINDOWS_DAYS:
        days = terminal_window_days(day, w)
        n = sum(int(tx_by_day.get(d, 0)) for d in days)
        f = sum(int(fraud_by_day.get(d, 0)) for d in days)
        out.append(float(n))
        out.append(f / n if n else 0.0)
    return tuple(out)


def free_feature_values(features: Mapping[str, float] | None, names: Sequence[str]) -> list[float]:
    """Values of the free features ``names`` from a transaction's map; missing or bad → 0.

    >>> free_feature_values({"b": 2.0, "zz": 9.0}, ["a", "b"])
    [0.0, 2.0]
    """
    if not features:
        return [0.0] * len(names)
    out = []
    for name in names:
        try:
            v = float(features.get(name, 0.0))
        except (TypeError, ValueError):
            v = 0.0
        out.append(v if math.isfinite(v) else 0.0)
    return out


def assemble_vector(
    card_feats: Sequence[float],
    terminal_feats: Sequence[float],
    tx_time_feats: Sequence[float],
    free_features: Mapping[str, float] | None,
    schema: FeatureSchema,
) -> np.ndarray:
    """One float32 feature vector in ``schema`` order.

    ``tx_time_feats`` is :func:`tx_features` (amount, weekend, night), ``card_feats``
    :func:`card_features`, ``terminal_feats`` :func:`terminal_features`.

    >>> s = FeatureSchema.with_extras(["x"])
    >>> v = assemble_vector(card_features(CardState(), 0.0, 5.0),
    ...                     terminal_features({}, {}, 0), tx_features(0.0, 5.0), {"x": 2}, s)
    >>> v.shape, v.dtype, float(v[0]), float(v[-1])
    ((18,), dtype('float32'), 5.0, 2.0)
    """
    n_window = 2 * len(CARD_WINDOWS_DAYS)
    values = [
        *tx_time_feats,
        *card_feats[:n_window],
        *terminal_feats,
        *card_feats[n_window:],
        *free_feature_values(free_features, schema.extra_names),
    ]
    if len(values) != schema.n_features:
        raise ValueError(f"expected {schema.n_features} features, assembled {len(values)}")
    return np.asarray(values, dtype=np.float32)


def features_for_transaction(
    state: CardState,
    tx_by_day: Mapping[int, int],
    fraud_by_day: Mapping[int, int],
    ts: float,
    amount: float,
    free_features: Mapping[str, float] | None,
    schema: FeatureSchema,
) -> np.ndarray:
    """The whole online step for one transaction: its vector, then ``state.learn_one``.

    ``tx_by_day`` / ``fraud_by_day`` are the terminal's per-day counts (the caller adds
    this transaction to ``tx_by_day[day_index(ts)]`` afterwards, and its label to
    ``fraud_by_day`` of that same day when the label arrives).

    >>> s = CardState()
    >>> v = features_for_transaction(s, {}, {}, 1000.0, 12.0, None, FeatureSchema())
    >>> len(s), v.shape
    (1, (17,))
    """
    card = card_features(state, ts, amount)
    state.learn_one(ts, amount)
    term = terminal_features(tx_by_day, fraud_by_day, day_index(ts))
    return assemble_vector(card, term, tx_features(ts, amount), free_features, schema)


__all__ = [
    "CardState",
    "assemble_vector",
    "card_features",
    "day_index",
    "features_for_transaction",
    "free_feature_values",
    "terminal_features",
    "terminal_window_days",
    "tx_features",
]
