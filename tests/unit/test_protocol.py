"""The handbook split: windows, delay, known-compromised removal, validation twin."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from models.evaluation.protocol import handbook_split, transaction_days, validation_split


def _frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["ts", "card_id", "is_fraud"])
    df["ts"] = pd.to_datetime(df["ts"], format="ISO8601")
    df["tx_id"] = [f"t{i}" for i in range(len(df))]
    return df


@pytest.fixture
def tx() -> pd.DataFrame:
    """One legit transaction per card per day from 2018-06-01 to 2018-08-20, plus frauds."""
    days = pd.date_range("2018-06-01 12:00", "2018-08-20 12:00", freq="D")
    rows = [(str(d), card, 0) for d in days for card in ("legit", "train", "delay", "late", "new")]
    rows += [
        ("2018-07-27 10:00", "train", 1),  # inside the training window
        ("2018-08-03 10:00", "delay", 1),  # delay day 3: known from 2018-08-11 on
        ("2018-08-07 23:00", "late", 1),  # last delay day: never known during the test
        ("2018-08-10 10:00", "new", 1),  # a test-window fraud, kept
    ]
    return _frame(rows)


def test_windows_are_the_handbook_dates(tx: pd.DataFrame) -> None:
    split = handbook_split(tx)
    assert split.train_window == (date(2018, 7, 25), date(2018, 7, 31))
    assert split.test_window == (date(2018, 8, 8), date(2018, 8, 14))
    days = transaction_days(tx["ts"])
    assert days[split.train].min() == np.datetime64("2018-07-25")
    assert days[split.train].max() == np.datetime64("2018-07-31")
    assert days[split.test].min() == np.datetime64("2018-08-08")
    assert days[split.test].max() == np.datetime64("2018-08-14")
    assert not (split.train & split.test).any()


def test_the_delay_week_is_in_neither_set(tx: pd.DataFrame) -> None:
    split = handbook_split(tx)
    days = transaction_days(tx["ts"])
    delay = (days >= np.datetime64("2018-08-01")) & (days <= np.datetime64("2018-08-07"))
    assert not (split.train | split.test)[delay].any()


def test_known_compromised_cards_are_removed_from_the_day_they_are_known(
    tx: pd.DataFrame,
) -> None:
    split = handbook_split(tx)
    test = tx[split.test]
    per_card = test.groupby("card_id")["ts"].agg(["count", "min"])
    assert "train" not in per_card.index  # known before the first test day
    # A fraud on 08-03 is labelled after 7 days: blocked from 08-11 (3 test days kept).
    assert per_card.loc["delay", "count"] == 3
    assert per_card.loc["late", "count"] == 7  # its label arrives after the test window
    assert per_card.loc["legit", "count"] == 7
    assert per_card.loc["new", "count"] == 8  # 7 legit + its test-window fraud
    assert split.removed_test_transactions == 7 + 4
    described = split.describe(tx["is_fraud"])
    assert described["test_frauds"] == 1 and described["train_frauds"] == 1


def test_longer_history_grows_only_the_training_set(tx: pd.DataFrame) -> None:
    short = handbook_split(tx)
    long = handbook_split(tx, history_days=35)
    assert long.train_window == (date(2018, 6, 27), date(2018, 7, 31))
    assert long.train.sum() == 5 * 35 + 1 and short.train.sum() == 5 * 7 + 1
    assert (short.train <= long.train).all()
    np.testing.assert_array_equal(short.test, long.test)
    with pytest.raises(ValueError, match="shorter"):
        handbook_split(tx, history_days=3)


def test_validation_split_never_touches_the_test_window(tx: pd.DataFrame) -> None:
    val = validation_split(tx)
    assert val.train_window == (date(2018, 7, 11), date(2018, 7, 17))
    assert val.test_window == (date(2018, 7, 25), date(2018, 7, 31))
    days = transaction_days(tx["ts"])
    used = val.train | val.test
    assert days[used].max() <= np.datetime64("2018-07-31")
    # The validation "test" cards are filtered the same way: nothing was known yet.
    assert val.test.sum() == 5 * 7 + 1


def test_timezone_aware_and_epoch_timestamps_give_the_same_days() -> None:
    naive = pd.Series(pd.to_datetime(["2018-07-25 23:30:00", "2018-07-26 00:30:00"]))
    aware = naive.dt.tz_localize("UTC").dt.tz_convert("Europe/Brussels")
    epoch = (naive - pd.Timestamp("1970-01-01")).dt.total_seconds()
    np.testing.assert_array_equal(transaction_days(naive), transaction_days(aware))
    np.testing.assert_array_equal(transaction_days(naive), transaction_days(epoch.to_numpy()))
