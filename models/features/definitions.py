"""Feature names, window constants and the feature schema shared by training and the stream.

Every definition here is used verbatim by the offline builder (:mod:`.offline`) and the
online pieces (:mod:`.online`), so a transaction gets the same vector in both places.

Definitions (``ts`` is UNIX epoch seconds, UTC; ``day = floor(ts / 86400)``):

* ``amount``: the transaction amount.
* ``is_weekend``: 1 when the UTC date is a Saturday or Sunday.
* ``is_night``: 1 when the UTC time of day is in [00:00, 06:00).
* ``card_count_{w}d`` / ``card_mean_amount_{w}d`` for w in 1, 7, 30: the card's
  transactions with ``ts - w*86400 < ts_j <= ts`` *including the current one*; a
  transaction with the same ``ts`` counts only when it was processed earlier
  (offline: earlier in a stable sort by ``ts``).
* ``terminal_count_{w}d`` / ``terminal_risk_{w}d`` for w in 1, 7, 30: the terminal's
  transactions on the ``w`` whole days ``day-7-w .. day-8`` (inclusive), so every
  label used is at least 7 days old; risk = known frauds / count (0 when count is 0).
* ``seconds_since_last_tx``: seconds since the card's previous transaction, capped at
  30 days (also the value for a card's first transaction).
* ``amount_over_card_mean``: amount / mean amount of the card's *previous* transactions
  in the last 30 days (excluding the current one; the mean is floored at 0.01); 1.0 when
  there is no previous transaction in that window.
* free features: the transaction's ``features`` map, in the order recorded by the
  schema; a missing name is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DAY_SECONDS = 86_400
CARD_WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30)
TERMINAL_WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30)
LABEL_DELAY_DAYS = 7
CARD_HISTORY_SECONDS = 30 * DAY_SECONDS  # the longest card window: all CardState keeps
GAP_CAP_SECONDS = float(30 * DAY_SECONDS)
MEAN_FLOOR = 0.01  # one cent: keeps amount_over_card_mean finite after zero-amount history
NIGHT_END_SECONDS = 6 * 3600

TX_FEATURE_NAMES: tuple[str, ...] = ("amount", "is_weekend", "is_night")
CARD_WINDOW_FEATURE_NAMES: tuple[str, ...] = tuple(
    name for w in CARD_WINDOWS_DAYS for name in (f"card_count_{w}d", f"card_mean_amount_{w}d")
)
TERMINAL_FEATURE_NAMES: tuple[str, ...] = tuple(
    name for w in TERMINAL_WINDOWS_DAYS for name in (f"terminal_count_{w}d", f"terminal_risk_{w}d")
)
CARD_EXTRA_FEATURE_NAMES: tuple[str, ...] = ("seconds_since_last_tx", "amount_over_card_mean")
CARD_FEATURE_NAMES: tuple[str, ...] = CARD_WINDOW_FEATURE_NAMES + CARD_EXTRA_FEATURE_NAMES

#: The built-in features, in vector order; free features follow them.
FEATURE_NAMES: tuple[str, ...] = (
    TX_FEATURE_NAMES + CARD_WINDOW_FEATURE_NAMES + TERMINAL_FEATURE_NAMES + CARD_EXTRA_FEATURE_NAMES
)
HANDBOOK_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES[:15]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class FeatureSchema:
    """The ordered feature names a model was trained on (built-ins then free features).

    >>> s = FeatureSchema.with_extras(["merchant_risk"])
    >>> s.n_features, s.names[-1], s.index("amount")
    (18, 'merchant_risk', 0)
    >>> FeatureSchema.from_dict(s.to_dict()) == s
    True
    """

    extra_names: tuple[str, ...] = ()
    version: int = SCHEMA_VERSION
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        clash = set(self.extra_names) & set(FEATURE_NAMES)
        if clash or len(set(self.extra_names)) != len(self.extra_names):
            raise ValueError(f"free feature names must be unique and new: {sorted(clash)}")
        object.__setattr__(self, "names", FEATURE_NAMES + tuple(self.extra_names))

    @classmethod
    def with_extras(cls, extra_names: Sequence[str] = ()) -> FeatureSchema:
        """Schema of the built-in features followed by ``extra_names``."""
        return cls(extra_names=tuple(extra_names))

    @property
    def n_features(self) -> int:
        """Length of a feature vector."""
        return len(self.names)

    def index(self, name: str) -> int:
        """Column of feature ``name``."""
        return self.names.index(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored in model artifacts."""
        return {"version": self.version, "names": list(self.names)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        """Inverse of :meth:`to_dict`; refuses a schema whose built-ins differ from this code."""
        names = tuple(str(n) for n in data["names"])
        if names[: len(FEATURE_NAMES)] != FEATURE_NAMES or int(data["version"]) != SCHEMA_VERSION:
            raise ValueError("feature schema does not match this version of riskstream")
        return cls(extra_names=names[len(FEATURE_NAMES) :])
