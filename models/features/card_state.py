"""Per-card state for the stream's card features: the last 30 days, with running windows.

The card features (:mod:`models.features.definitions`) of a transaction read the card's
earlier transactions in the 1, 7 and 30 days up to it. :class:`CardState` holds them
(a Faust table value, via :meth:`CardState.to_dict`) and :func:`card_features` computes
the features from it; :mod:`models.features.online` re-exports both.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any

from models.features.definitions import (
    CARD_HISTORY_SECONDS,
    CARD_WINDOWS_DAYS,
    DAY_SECONDS,
    GAP_CAP_SECONDS,
    MEAN_FLOOR,
)

# Window sums are exact integers of 2**-64: int(amount * _SCALE) is exact for every
# amount >= 2**-12 (smaller ones lose less than 2**-64), and integers never drift.
_SCALE = 2.0**64
_UNSCALE = 2.0**-64
# the card windows, unrolled in CardState and card_features (the per-transaction path)
_SPAN_1, _SPAN_7, _SPAN_30 = (float(w * DAY_SECONDS) for w in CARD_WINDOWS_DAYS)
if CARD_WINDOWS_DAYS != (1, 7, 30):  # pragma: no cover - a definitions change must come here
    raise ImportError("CardState unrolls the 1, 7 and 30-day card windows")


class CardState:
    """The last 30 days of one card's ``(ts, amount)``, kept sorted by time.

    Memory is bounded by the card's 30-day volume: :meth:`learn_one` drops everything
    older than 30 days before the newest transaction. ``ts`` and ``amounts`` are the whole
    state (:meth:`to_dict`); change them through :meth:`learn_one` only. They are
    ``array('d')``, not lists of floats: a list's float objects are allocated as the
    card's transactions arrive, so they end up scattered over a worker's large heap, and
    writing a card's changelog value (every float read once) cost a cache miss per
    float, 10-30 µs per card after a few hundred thousand transactions instead of ~3.

    In the stream's usual case (a transaction no older than the card's newest one) the
    windows are running sums: per window, its first index and the sum of the amounts
    from there on, so a transaction costs the entries leaving its windows instead of the
    whole history. The sums are exact integers of 2**-64 (``_SCALE``): no rounding
    drift however long a card lives, and the same sums when a restarted worker rebuilds
    them from :meth:`to_dict`. Out-of-order times fall back to summing the slices.

    >>> s = CardState()
    >>> card_features(s, 1000.0, 10.0)[:2]  # first tx: count 1, mean 10
    (1.0, 10.0)
    >>> s.learn_one(1000.0, 10.0)
    >>> card_features(s, 4600.0, 30.0)  # doctest: +NORMALIZE_WHITESPACE
    (2.0, 20.0, 2.0, 20.0, 2.0, 20.0, 3600.0, 3.0)
    >>> CardState.from_dict(s.to_dict()).to_dict() == s.to_dict()
    True
    """

    __slots__ = ("ts", "amounts", "_ref", "_i1", "_i7", "_i30", "_f1", "_f7", "_f30")

    def __init__(
        self, ts: Sequence[float] | None = None, amounts: Sequence[float] | None = None
    ) -> None:
        self.ts = array("d", [float(t) for t in ts] if ts else ())
        self.amounts = array("d", [float(a) for a in amounts] if amounts else ())
        if len(self.ts) != len(self.amounts):
            raise ValueError("ts and amounts must have the same length")
        # The running windows (1, 7 and 30 days, unrolled: this is the per-transaction
        # path), as of time _ref (None: not built). Window w holds the entries from _iw on
        # (the first with ts > _ref - w days); _fw is their fixed-point sum. No entry is
        # later than _ref while the windows are built.
        self._ref: float | None = None
        self._i1 = self._i7 = self._i30 = 0
        self._f1 = self._f7 = self._f30 = 0

    def _rebuild(self, ref: float) -> None:
        """Build the running windows ending at ``ref`` (``ref >= ts[-1]``) from scratch."""
        times, amounts = self.ts, self.amounts
        n = len(times)
        i1 = bisect_right(times, ref - _SPAN_1, 0, n)
        i7 = bisect_right(times, ref - _SPAN_7, 0, i1)
        i30 = bisect_right(times, ref - _SPAN_30, 0, i7)
        f1 = sum([int(a * _SCALE) for a in amounts[i1:n]])
        f7 = f1 + sum([int(a * _SCALE) for a in amounts[i7:i1]])
        self._f30 = f7 + sum([int(a * _SCALE) for a in amounts[i30:i7]])
        self._i1, self._i7, self._i30, self._f1, self._f7 = i1, i7, i30, f1, f7
        self._ref = ref

    def _advance(self, ref: float) -> None:
        """Move the running windows forward to end at ``ref`` (``ref >= _ref``)."""
        times, amounts = self.ts, self.amounts
        n = len(times)
        i = self._i1
        bound = ref - _SPAN_1
        while i < n and times[i] <= bound:  # usually none or one entry leaves a window
            self._f1 -= int(amounts[i] * _SCALE)
            i += 1
        self._i1 = i
        i = self._i7
        bound = ref - _SPAN_7
        while i < n and times[i] <= bound:
            self._f7 -= int(amounts[i] * _SCALE)
            i += 1
        self._i7 = i
        i = self._i30
        bound = ref - _SPAN_30
        while i < n and times[i] <= bound:
            self._f30 -= int(amounts[i] * _SCALE)
            i += 1
        self._i30 = i
        self._ref = ref

    def learn_one(self, ts: float, amount: float) -> None:
        """Record a transaction (after computing its features) and forget old ones."""
        ts, amount = float(ts), float(amount)
        times, amounts = self.ts, self.amounts
        ref = self._ref
        if not times or ts >= times[-1]:
            times.append(ts)
            amounts.append(amount)
            if ref is not None:
                if ts >= ref:  # the usual case: the new entry is in every window
                    if ts > ref:
                        self._advance(ts)
                    fixed = int(amount * _SCALE)
                    self._f1 += fixed
                    self._f7 += fixed
                    self._f30 += fixed
                else:  # older than a time already queried: rebuilt when next needed
                    self._ref = None
        else:  # out of order: insert after equal timestamps, as if processed last
            pos = bisect_right(times, ts)
            times.insert(pos, ts)
            amounts.insert(pos, amount)
            self._ref = None
        # keep ts_j > newest - 30 d: nothing older can enter any window or change the gap
        cut = bisect_right(times, times[-1] - CARD_HISTORY_SECONDS)
        if cut:
            del times[:cut]
            del amounts[:cut]
            if self._ref is not None:  # _ref is the newest ts: the cut entries were out
                self._i1 -= cut
                self._i7 -= cut
                self._i30 -= cut

    def _scan(self, ts: float) -> tuple[int, int, int, int, int, int, int]:
        """Window counts and fixed sums ending at any ``ts``, summed from the slices:
        ``(n1, f1, n7, f7, n30, f30, end)``, ``end`` = entries at or before ``ts``."""
        times, amounts = self.ts, self.amounts
        end = bisect_right(times, ts)  # later entries were processed earlier: not in
        out: list[int] = []
        for span in (_SPAN_1, _SPAN_7, _SPAN_30):
            start = bisect_right(times, ts - span, 0, end)
            out += (end - start, sum([int(a * _SCALE) for a in amounts[start:end]]))
        n1, f1, n7, f7, n30, f30 = out
        return n1, f1, n7, f7, n30, f30, end

    def __len__(self) -> int:
        return len(self.ts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (for a Faust table)."""
        return {"ts": self.ts.tolist(), "amounts": self.amounts.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CardState:
        """Inverse of :meth:`to_dict`."""
        return cls(data.get("ts") or [], data.get("amounts") or [])


def card_features(state: CardState, ts: float, amount: float) -> tuple[float, ...]:
    """Card features of a transaction, computed *before* ``state.learn_one(ts, amount)``.

    Returns ``(count_1d, mean_1d, count_7d, mean_7d, count_30d, mean_30d,
    seconds_since_last_tx, amount_over_card_mean)``; windows include the current
    transaction (see :mod:`models.features.definitions`).

    >>> card_features(CardState([0.0], [5.0]), 86_400.0, 15.0)  # 0.0 is just outside 1 d
    (1.0, 15.0, 2.0, 10.0, 2.0, 10.0, 86400.0, 3.0)
    """
    ts, amount = float(ts), float(amount)
    times = state.ts
    end = len(times)
    if end and ts >= times[-1]:  # the usual case: running windows, moved forward to ts
        ref = state._ref
        if ref is None:
            state._rebuild(ts)
            ref = ts
        elif ts > ref:
            state._advance(ts)
            ref = ts
        if ts < ref:  # older than a time already queried: the windows do not move back
            n1, f1, n7, f7, n30, f30, end = state._scan(ts)
        else:
            n1, n7, n30 = end - state._i1, end - state._i7, end - state._i30
            f1, f7, f30 = state._f1, state._f7, state._f30
        gap = ts - times[end - 1]
        if gap > GAP_CAP_SECONDS:
            gap = GAP_CAP_SECONDS
    elif end:  # out of order: entries later than ts are left out
        n1, f1, n7, f7, n30, f30, end = state._scan(ts)
        gap = min(ts - times[end - 1], GAP_CAP_SECONDS) if end else GAP_CAP_SECONDS
    else:  # a new card
        return (1.0, amount, 1.0, amount, 1.0, amount, GAP_CAP_SECONDS, 1.0)
    fixed = int(amount * _SCALE)
    # the exact sum, rounded once to float, then divided: as precise as the offline sums
    if n30:
        prev_mean = f30 * _UNSCALE / n30
        ratio = amount / (prev_mean if prev_mean > MEAN_FLOOR else MEAN_FLOOR)
    else:
        ratio = 1.0
    return (
        float(n1 + 1),
        (f1 + fixed) * _UNSCALE / (n1 + 1),
        float(n7 + 1),
        (f7 + fixed) * _UNSCALE / (n7 + 1),
        float(n30 + 1),
        (f30 + fixed) * _UNSCALE / (n30 + 1),
        float(gap),
        float(ratio),
    )


__all__ = ["CardState", "card_features"]
