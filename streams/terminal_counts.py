"""One terminal's per-day transaction and known-fraud counts, and its window features.

:class:`TerminalCounts` holds what :mod:`streams.terminal_store` caches of a terminal's
Redis hash (``t{day}`` / ``f{day}`` fields, :func:`parse_counts`) as running totals, so a
window's sum is two lookups; its compiled twin is
``streams.native._terminals.NativeTerminalCounts``.

Examples
--------
>>> parse_counts({b"t17000": b"4", b"f17000": b"1", b"t16990": b"2"})
({17000: 4, 16990: 2}, {17000: 1})
"""

from __future__ import annotations

from collections.abc import Mapping

from models.features import LABEL_DELAY_DAYS
from models.features.definitions import TERMINAL_WINDOWS_DAYS

Counts = tuple[dict[int, int], dict[int, int]]


def parse_counts(raw: Mapping[bytes, bytes]) -> Counts:
    """``HGETALL`` of one terminal hash → ``(tx_by_day, fraud_by_day)``; junk fields skipped."""
    tx: dict[int, int] = {}
    fraud: dict[int, int] = {}
    for field, value in raw.items():
        try:
            day = int(field[1:])
            n = int(value)
        except ValueError:
            continue
        kind = field[:1]
        if kind == b"t":
            tx[day] = n
        elif kind == b"f":
            fraud[day] = n
    return tx, fraud


class _Cumulative:
    """Running totals of per-day counts, so any window's sum is two lookups.

    >>> c = _Cumulative({10: 2, 12: 3})
    >>> c.through(9), c.through(11), c.through(99)
    (0, 2, 5)
    >>> c.set_days(12, [1, 4]); c.totals, c.through(13)
    ([2, 2, 3, 7], 7)
    """

    __slots__ = ("first", "totals")

    def __init__(self, by_day: Mapping[int, int]) -> None:
        self.first = min(by_day) if by_day else 0
        last = max(by_day) if by_day else -1
        running, totals = 0, []
        for day in range(self.first, last + 1):
            running += int(by_day.get(day, 0))
            totals.append(running)
        self.totals = totals

    def through(self, day: int) -> int:
        """Sum of the counts of every day up to and including ``day``."""
        i = day - self.first
        if i < 0 or not self.totals:
            return 0
        return self.totals[min(i, len(self.totals) - 1)]

    def set_days(self, first_day: int, counts: list[int]) -> None:
        """Replace the counts of the consecutive days from ``first_day`` on (at or after
        :attr:`first`, or on an empty object); only the totals from there are redone."""
        totals = self.totals
        if not totals:
            self.first = first_day
        start = first_day - self.first
        if start < 0:
            raise ValueError("days before the first one are rebuilt, not patched")
        if start > len(totals):  # a gap after the last day: its total carries over
            totals.extend([totals[-1] if totals else 0] * (start - len(totals)))
        per_day = [totals[i] - (totals[i - 1] if i else 0) for i in range(start, len(totals))]
        per_day += [0] * (len(counts) - len(per_day))
        per_day[: len(counts)] = counts
        running = totals[start - 1] if start else 0
        del totals[start:]
        for n in per_day:
            running += n
            totals.append(running)


class TerminalCounts:
    """One terminal's per-day counts, with running totals for its window features.

    :meth:`features` is :func:`models.features.terminal_features` computed with the
    totals: the same windows (:func:`~models.features.terminal_window_days`), the same
    integer sums and the same division, so the same floats (a unit test holds the two
    equal), in two lookups per window instead of a loop over its days.

    >>> TerminalCounts({92: 4, 80: 6}, {92: 1}).features(100)
    (4.0, 0.25, 4.0, 0.25, 10.0, 0.1)
    """

    __slots__ = ("tx", "fraud", "_tx", "_fraud")

    def __init__(self, tx_by_day: Mapping[int, int], fraud_by_day: Mapping[int, int]) -> None:
        self.tx = dict(tx_by_day)
        self.fraud = dict(fraud_by_day)
        self._tx = _Cumulative(self.tx)
        self._fraud = _Cumulative(self.fraud)

    def features(self, day: int) -> tuple[float, ...]:
        """``(count_1d, risk_1d, count_7d, risk_7d, count_30d, risk_30d)`` on ``day``."""
        last = day - LABEL_DELAY_DAYS - 1  # every window ends here (terminal_window_days)
        # _Cumulative.through, inlined: a replay computes this for nearly every transaction
        tx, fraud = self._tx, self._fraud
        t_totals, t_first, t_top = tx.totals, tx.first, len(tx.totals) - 1
        f_totals, f_first, f_top = fraud.totals, fraud.first, len(fraud.totals) - 1
        i = last - t_first
        n_last = (t_totals[i if i < t_top else t_top] if i >= 0 else 0) if t_top >= 0 else 0
        i = last - f_first
        f_last = (f_totals[i if i < f_top else f_top] if i >= 0 else 0) if f_top >= 0 else 0
        out: list[float] = []
        for w in TERMINAL_WINDOWS_DAYS:
            i = last - w - t_first
            n = n_last - (
                (t_totals[i if i < t_top else t_top] if i >= 0 else 0) if t_top >= 0 else 0
            )
            i = last - w - f_first
            f = f_last - (
                (f_totals[i if i < f_top else f_top] if i >= 0 else 0) if f_top >= 0 else 0
            )
            out.append(float(n))
            out.append(f / n if n else 0.0)
        return tuple(out)

    def set_days(self, first_day: int, tx: list[int], fraud: list[int]) -> None:
        """Replace the counts of the consecutive days from ``first_day`` on (in place)."""
        for by_day, cumulative, counts in (
            (self.tx, self._tx, tx),
            (self.fraud, self._fraud, fraud),
        ):
            for day, n in enumerate(counts, first_day):
                if n:
                    by_day[day] = n
                else:
                    by_day.pop(day, None)
            if cumulative.totals and first_day < cumulative.first:
                rebuilt = _Cumulative(by_day)  # a late day before the first one: rare
                cumulative.first, cumulative.totals = rebuilt.first, rebuilt.totals
            else:
                cumulative.set_days(first_day, counts)

    def ends_before(self, day: int) -> bool:
        """Whether no count is held for ``day`` or later (zeros there change nothing).

        >>> c = TerminalCounts({92: 4}, {90: 1})
        >>> c.ends_before(93), c.ends_before(92), TerminalCounts({}, {}).ends_before(0)
        (True, False, True)
        """
        tx, fraud = self._tx, self._fraud
        return day - tx.first >= len(tx.totals) and day - fraud.first >= len(fraud.totals)

    def span(self) -> int:
        """Days held in the running totals (what a long replay's pruning keeps bounded)."""
        return len(self._tx.totals)

    def prune(self, oldest: int) -> None:
        """Forget the days before ``oldest`` (no window reads them any more)."""
        for by_day in (self.tx, self.fraud):
            for day in [d for d in by_day if d < oldest]:
                del by_day[day]
        self._tx = _Cumulative(self.tx)
        self._fraud = _Cumulative(self.fraud)
