"""Replay of CSV/Parquet files and simulated frames as wire dicts (models/datasets/replay)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.datasets import SimulatorConfig, simulate
from models.datasets.replay import (
    CREDITCARD_MAP,
    UNKNOWN,
    ColumnMap,
    from_frame,
    from_simulation,
    read_file,
)
from streams.records import Transaction, encode, parse_transaction

BASE = pd.Timestamp("2013-09-01", tz="UTC").timestamp()


def creditcard_like(path: Path) -> pd.DataFrame:
    """A small file shaped like the public creditcard.csv, rows not in time order."""
    frame = pd.DataFrame(
        {
            "Time": [0.0, 2.0, 1.0, 86_401.0],
            "V1": [-1.36, 1.19, np.nan, 0.5],
            "V2": [-0.07, 0.27, -1.34, 0.0],
            "V3": [2.54, 0.17, 1.77, -0.3],
            "Amount": [149.62, 2.69, 378.66, 0.0],
            "Class": [0, 0, 1, 0],
        }
    )
    frame.to_csv(path, index=False)
    return frame


def test_creditcard_csv(tmp_path: Path) -> None:
    creditcard_like(tmp_path / "creditcard.csv")
    mapping = ColumnMap.parse("time=Time,amount=Amount,label=Class", base_date="2013-09-01")
    assert mapping == ColumnMap(time="Time", amount="Amount", label="Class", base_date="2013-09-01")
    table = read_file(tmp_path / "creditcard.csv", mapping)
    txs = list(table.transactions())
    assert [t["tx_id"] for t in txs] == ["0", "2", "1", "3"]  # time order, ids = row numbers
    assert [t["ts"] for t in txs] == [BASE, BASE + 1, BASE + 2, BASE + 86_401]
    assert {t["card_id"] for t in txs} == {t["terminal_id"] for t in txs} == {UNKNOWN}
    assert txs[0]["amount"] == 149.62 and txs[0]["features"] == {
        "V1": -1.36, "V2": -0.07, "V3": 2.54
    }  # fmt: skip
    assert txs[1]["features"] == {"V2": -1.34, "V3": 1.77}  # the NaN cell is left out
    assert list(table.labels()) == [("0", 0), ("2", 1), ("1", 0), ("3", 0)]
    assert [label for _, label in table.records()] == [0, 1, 0, 0]
    for tx in txs:  # every dict is a valid wire transaction
        assert parse_transaction(encode(Transaction(**tx))) == Transaction(**tx)


def test_parquet_with_iso_times_ids_and_chosen_features(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "when": ["2024-01-01T00:00:10Z", "2024-01-01T01:00:00+01:00", "2024-01-01 00:00:05"],
            "card": [11, 12, 11],
            "shop": ["m1", "m2", "m3"],
            "value": [1.0, 2.0, 3.0],
            "fraud": [1.0, np.nan, 0.0],
            "risk": [0.1, 0.2, 0.3],
            "ignored": [7, 8, 9],
        }
    )
    path = tmp_path / "tx.parquet"
    frame.to_parquet(path)
    spec = "id=id,time=when,card=card,terminal=shop,amount=value,label=fraud,features=risk"
    table = read_file(path, ColumnMap.parse(spec))
    txs = list(table.transactions())
    epoch = pd.Timestamp("2024-01-01", tz="UTC").timestamp()
    # "+01:00" is converted to UTC (00:00:00Z) and naive text is read as UTC.
    assert [(t["tx_id"], t["ts"]) for t in txs] == [
        ("b", epoch),
        ("c", epoch + 5),
        ("a", epoch + 10),
    ]
    assert [t["card_id"] for t in txs] == ["12", "11", "11"]
    assert [t["terminal_id"] for t in txs] == ["m2", "m3", "m1"]
    assert all(set(t["features"]) == {"risk"} for t in txs)
    assert list(table.labels()) == [("c", 0), ("a", 1)]  # "b" has no label
    assert [label for _, label in table.records()] == [None, 0, 1]


@pytest.mark.parametrize(
    ("values", "time_format", "expected"),
    [
        ([1_700_000_000, 1_700_000_001], "auto", [1_700_000_000.0, 1_700_000_001.0]),
        ([1_700_000_000_500, 1_700_000_001_000], "auto", [1_700_000_000.5, 1_700_000_001.0]),
        ([0.5, 60.0], "auto", [BASE + 0.5, BASE + 60.0]),
        ([5, 6], "epoch", [5.0, 6.0]),
    ],
)
def test_time_formats(values: list[float], time_format: str, expected: list[float]) -> None:
    frame = pd.DataFrame({"t": values, "amount": [1.0, 2.0]})
    mapping = ColumnMap(time="t", time_format=time_format, base_date="2013-09-01")  # type: ignore[arg-type]
    assert from_frame(frame, mapping).ts.tolist() == expected


def test_without_time_rows_are_one_second_apart() -> None:
    table = from_frame(pd.DataFrame({"amount": [1.0, 2.0, 3.0]}), ColumnMap(features=()))
    base = pd.Timestamp("2018-04-01", tz="UTC").timestamp()
    assert table.ts.tolist() == [base, base + 1, base + 2]
    assert "features" not in next(table.transactions())


@pytest.mark.parametrize(
    ("frame", "mapping", "message"),
    [
        (pd.DataFrame({"amount": [1.0]}), ColumnMap(card="card"), "columns not in the file"),
        (pd.DataFrame({"amount": [-1.0]}), ColumnMap(), "missing or negative"),
        (pd.DataFrame({"amount": [np.nan]}), ColumnMap(), "missing or negative"),
        (pd.DataFrame({"amount": [1.0], "y": [2]}), ColumnMap(label="y"), "must hold 0/1"),
        (
            pd.DataFrame({"amount": [1.0], "t": [None]}),
            ColumnMap(time="t", time_format="epoch"),
            "time",
        ),
    ],
)
def test_mapping_errors(frame: pd.DataFrame, mapping: ColumnMap, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_frame(frame, mapping)


def test_bad_mapping_text_and_file_type(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bad mapping item"):
        ColumnMap.parse("colour=red")
    with pytest.raises(ValueError, match="bad mapping item"):
        ColumnMap.parse("time")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="reads .csv"):
        read_file(tmp_path / "x.json", CREDITCARD_MAP)


def test_simulated_frame_as_wire_table() -> None:
    frame = simulate(SimulatorConfig(n_customers=30, n_terminals=60, n_days=4, seed=2))
    table = from_simulation(frame)
    txs = list(table.transactions())
    assert len(txs) == len(frame)
    assert [t["tx_id"] for t in txs] == frame.tx_id.astype(str).tolist()
    assert [t["card_id"] for t in txs] == frame.card_id.astype(str).tolist()
    expected_ts = (frame.ts - pd.Timestamp("1970-01-01")).dt.total_seconds().tolist()
    assert [t["ts"] for t in txs] == expected_ts
    assert [t["amount"] for t in txs] == frame.amount.tolist()
    assert all("features" not in t for t in txs)  # the scenario code is never streamed
    assert [label for _, label in table.labels()] == frame.is_fraud.tolist()
    assert list(table.transactions(start=len(frame) - 2)) == txs[-2:]
