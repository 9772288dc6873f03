"""The fraud handbook's train / delay / test protocol, and its validation twin.

Train on ``delta_train`` days, skip ``delta_delay`` days (labels arrive a week late, so
the model could not have learnt from them), test on ``delta_test`` days. A card with a
fraud already known to the investigators is blocked, so its test-day transactions are
removed: known are the frauds of the training window plus, for each test day, the frauds
of the days that ended at least ``delta_delay + 1`` days before it. The test set never
depends on how much history a model trains on.

Hyperparameters are chosen on :func:`validation_split`: the same shape moved back by
``delta_delay + delta_test`` days, so its test window is the handbook's training window
and no test day is ever looked at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

BoolArray = npt.NDArray[np.bool_]

HANDBOOK_TRAIN_START = date(2018, 7, 25)


@dataclass(frozen=True)
class Split:
    """Row masks over one transaction table plus the windows they were cut from.

    ``train`` covers ``history_days`` days ending where the ``delta_train`` window ends;
    ``test`` is the test window minus known-compromised cards.
    """

    train: BoolArray
    test: BoolArray
    train_window: tuple[date, date]
    test_window: tuple[date, date]
    history_days: int
    removed_test_transactions: int
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self, is_fraud: Any) -> dict[str, Any]:
        """Counts and windows, JSON-ready, for a report's metadata.

        >>> tx = _toy_transactions()
        >>> split = handbook_split(tx, date(2018, 1, 1), delta_train=2, delta_delay=1, delta_test=2)
        >>> d = split.describe(tx["is_fraud"])
        >>> d["train_transactions"], d["test_transactions"], d["test_frauds"]
        (4, 3, 1)
        """
        y = np.asarray(is_fraud)
        return {
            "train_window": [d.isoformat() for d in self.train_window],
            "test_window": [d.isoformat() for d in self.test_window],
            "history_days": self.history_days,
            "train_transactions": int(self.train.sum()),
            "train_frauds": int(y[self.train].sum()),
            "test_transactions": int(self.test.sum()),
            "test_frauds": int(y[self.test].sum()),
            "test_transactions_removed_known_compromised": self.removed_test_transactions,
            **self.info,
        }


def transaction_days(ts: Any) -> npt.NDArray[np.datetime64]:
    """Calendar day (UTC) of each timestamp (datetime64, tz-aware, or epoch seconds).

    >>> transaction_days(pd.to_datetime(pd.Series(["2018-07-25 23:59:59", "2018-07-26 00:00:00"])))
    array(['2018-07-25', '2018-07-26'], dtype='datetime64[D]')
    >>> transaction_days(np.array([0.0, 86_400.0]))
    array(['1970-01-01', '1970-01-02'], dtype='datetime64[D]')
    """
    series = pd.Series(ts)
    if pd.api.types.is_numeric_dtype(series):
        series = pd.to_datetime(series, unit="s")
    elif isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return np.asarray(series.to_numpy(), dtype="datetime64[D]")


def handbook_split(
    tx: pd.DataFrame,
    train_start: date = HANDBOOK_TRAIN_START,
    *,
    delta_train: int = 7,
    delta_delay: int = 7,
    delta_test: int = 7,
    history_days: int | None = None,
) -> Split:
    """Cut ``tx`` (columns ``ts``, ``card_id``, ``is_fraud``) into train and test masks.

    Parameters
    ----------
    tx
        Transactions, any order; masks are aligned with its rows.
    train_start
        First day of the training window (2018-07-25 in the handbook).
    delta_train, delta_delay, delta_test
        Window lengths in days.
    history_days
        Days of training data ending with the training window (default ``delta_train``).
        Only the training mask grows; the test set is the same for every value.

    Examples
    --------
    >>> tx = _toy_transactions()
    >>> split = handbook_split(tx, date(2018, 1, 1), delta_train=2, delta_delay=1, delta_test=2)
    >>> tx.loc[split.test, "tx_id"].tolist()  # c blocked all along, d from day 5
    ['t6', 't9', 't10']
    >>> split.removed_test_transactions
    2
    """
    history = delta_train if history_days is None else history_days
    if history < delta_train:
        raise ValueError(f"history_days={history} is shorter than delta_train={delta_train}")
    days = transaction_days(tx["ts"])
    start = np.datetime64(train_start, "D")
    train_end = start + np.timedelta64(delta_train, "D")  # exclusive
    test_start = train_end + np.timedelta64(delta_delay, "D")
    test_end = test_start + np.timedelta64(delta_test, "D")

    train = (days >= train_end - np.timedelta64(history, "D")) & (days < train_end)
    in_window = (days >= start) & (days < train_end)
    fraud = np.asarray(tx["is_fraud"]).astype(bool)
    cards = np.asarray(tx["card_id"])

    test = np.zeros(len(tx), dtype=bool)
    known = set(cards[in_window & fraud].tolist())
    for offset in range(delta_test):
        day = test_start + np.timedelta64(offset, "D")
        # Frauds of this day's "last labelled day" become known before the day starts.
        newly_labelled = day - np.timedelta64(delta_delay + 1, "D")
        if newly_labelled >= train_end:
            known.update(cards[(days == newly_labelled) & fraud].tolist())
        today = days == day
        test |= today & ~np.isin(cards, list(known))
    in_test_window = (days >= test_start) & (days < test_end)
    return Split(
        train=train,
        test=test,
        train_window=(_as_date(train_end - np.timedelta64(history, "D")), _as_date(train_end - 1)),
        test_window=(_as_date(test_start), _as_date(test_end - 1)),
        history_days=history,
        removed_test_transactions=int(in_test_window.sum() - test.sum()),
    )


def validation_split(
    tx: pd.DataFrame,
    train_start: date = HANDBOOK_TRAIN_START,
    *,
    delta_train: int = 7,
    delta_delay: int = 7,
    delta_test: int = 7,
    history_days: int | None = None,
) -> Split:
    """The handbook split moved back by ``delta_delay + delta_test`` days, for tuning.

    Its test window ends the day before the real training window ends, so nothing
    after the training window is used.

    >>> tx = _toy_transactions()
    >>> v = validation_split(tx, date(2018, 1, 4), delta_train=2, delta_delay=1, delta_test=2)
    >>> v.train_window, v.test_window
    ((datetime.date(2018, 1, 1), datetime.date(2018, 1, 2)), (datetime.date(2018, 1, 4), \
datetime.date(2018, 1, 5)))
    """
    shifted = train_start - timedelta(days=delta_delay + delta_test)
    return handbook_split(
        tx,
        shifted,
        delta_train=delta_train,
        delta_delay=delta_delay,
        delta_test=delta_test,
        history_days=history_days,
    )


def _as_date(day: Any) -> date:
    return date.fromisoformat(str(day.astype("datetime64[D]")))


def _toy_transactions() -> pd.DataFrame:
    """Ten transactions over five days, for the examples.

    Card ``c`` commits a fraud on day 2 (training window), so it is blocked for the whole
    test window; card ``d`` on day 3 (the delay day), which is known only from day 5 on.
    """
    rows = [
        ("t1", "2018-01-01 10:00", "a", 0),
        ("t2", "2018-01-01 11:00", "b", 0),
        ("t3", "2018-01-02 09:00", "c", 1),
        ("t4", "2018-01-02 12:00", "a", 0),
        ("t5", "2018-01-03 08:00", "d", 1),
        ("t6", "2018-01-04 09:00", "d", 0),
        ("t7", "2018-01-04 10:00", "c", 0),
        ("t8", "2018-01-05 10:00", "d", 1),
        ("t9", "2018-01-05 11:00", "b", 0),
        ("t10", "2018-01-05 12:00", "e", 1),
    ]
    frame = pd.DataFrame(rows, columns=["tx_id", "ts", "card_id", "is_fraud"])
    frame["ts"] = pd.to_datetime(frame["ts"])
    return frame
