"""The shipped model and ``train_default``: a worker without history must not alert on
every transaction (a new deployment's first weeks), and training keeps the cold days."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.artifacts import load_artifact
from models.default_model import cold_start_alert_rates, train_default, with_cold_start

SHIPPED = Path(__file__).resolve().parents[2] / "artifacts" / "default"


def test_shipped_model_does_not_flag_a_fresh_worlds_legit_traffic() -> None:
    # Before the cold days joined the training rows, this was 100 % in the first week.
    rates = cold_start_alert_rates(load_artifact(SHIPPED), seed=5, n_customers=300)
    assert set(rates) == {
        "cold_legit_alert_rate_days_0_6",
        "cold_legit_alert_rate_days_7_13",
        "cold_legit_alert_rate_days_14_29",
    }
    assert all(rate < 0.05 for rate in rates.values()), rates


def test_shipped_model_records_how_it_was_trained() -> None:
    meta = load_artifact(SHIPPED).meta
    assert meta["training_config"]["data"]["cold_start_days"] > 0
    assert meta["metrics"]["cold_legit_alert_rate_days_0_6"] < 0.05


def test_cold_days_join_the_mask_right_before_the_window() -> None:
    ts = pd.date_range("2018-04-01", periods=100, freq="D")
    df = pd.DataFrame({"ts": ts, "v": np.arange(100)})
    window = np.asarray(ts >= pd.Timestamp("2018-06-01"))
    moved, mask = with_cold_start(df, window, 10)
    assert mask.sum() == window.sum() + 10
    cold_days = pd.to_datetime(moved.loc[mask & ~window, "ts"])
    assert cold_days.max() == pd.Timestamp("2018-05-31")
    assert (cold_days.diff().dropna() == pd.Timedelta(days=1)).all()  # order kept
    assert moved["v"].tolist() == df["v"].tolist()  # only the clock moved
    assert df["ts"].iloc[0] == pd.Timestamp("2018-04-01")  # the input is not modified


def test_no_cold_days_leaves_the_mask_alone() -> None:
    df = pd.DataFrame({"ts": pd.date_range("2018-04-01", periods=5, freq="D")})
    mask = np.array([False, False, True, True, True])
    moved, same = with_cold_start(df, mask, 0)
    assert moved is df and same is mask


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_train_default_trains_on_history_plus_cold_days() -> None:
    torch.set_num_threads(1)
    art = train_default("tiny", n_episodes=20, history_days=14, cold_start_days=7, validate=False)
    data = art.meta["training_config"]["data"]
    assert data["history_days"] == 14 and data["cold_start_days"] == 7
    rows_with = art.meta["training_config"]["train_rows"]
    plain = train_default("tiny", n_episodes=20, history_days=14, cold_start_days=0, validate=False)
    assert rows_with > plain.meta["training_config"]["train_rows"]


def test_train_cli_rejects_negative_days_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from streams.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", "unused", "--cold-start-days", "-1"])
    err = capsys.readouterr().err
    assert exc.value.code != 0 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert "--cold-start-days" in err
