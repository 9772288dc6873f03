"""Replay any CSV or Parquet transaction file (or a simulated frame) as wire-contract dicts.

A :class:`ColumnMap` says which column is what; everything else that is numeric goes
into the free ``features`` map, so anonymized data sets (``V1..V28``) stream as they
are. The labels come out separately, so a producer can hold them back and send them
later, like chargebacks.

Examples
--------
>>> import pandas as pd
>>> frame = pd.DataFrame({"Time": [0.0, 5.0], "V1": [0.1, -1.2], "Amount": [9.99, 120.0],
...                       "Class": [0, 1]})
>>> table = from_frame(frame, CREDITCARD_MAP)
>>> next(table.transactions())
{'tx_id': '0', 'ts': 1522540800.0, 'card_id': 'unknown', 'terminal_id': 'unknown', \
'amount': 9.99, 'features': {'V1': 0.1}}
>>> list(table.labels())
[('0', 0), ('1', 1)]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

UNKNOWN = "unknown"
"""Placeholder ``card_id`` / ``terminal_id`` when the file has no such column."""

NO_LABEL = -1
"""Value of :attr:`WireTable.label` for a transaction without a label."""

TimeFormat = Literal["auto", "epoch", "epoch_ms", "iso", "offset"]
_CHUNK = 8192  # rows turned into Python objects at a time, to bound memory


@dataclass(frozen=True)
class ColumnMap:
    """Which file column holds which wire field.

    Parameters
    ----------
    id : str or None
        Transaction id column; ``None`` uses the row number.
    time : str or None
        Event time column; ``None`` puts the rows one second apart from ``base_date``.
    card, terminal : str or None
        Card and terminal id columns; ``None`` fills :data:`UNKNOWN`.
    amount : str
        Amount column (required, must be >= 0).
    label : str or None
        Fraud label column (1 fraud, 0 legit; empty cells mean no label).
    features : tuple of str or None
        Columns for the ``features`` map; ``None`` takes every other numeric column.
    time_format : {"auto", "epoch", "epoch_ms", "iso", "offset"}
        ``epoch``: UNIX seconds; ``epoch_ms``: milliseconds; ``iso``: date-time text
        (naive means UTC); ``offset``: seconds since ``base_date`` (like the public
        ``creditcard.csv`` ``Time`` column). ``auto``: datetimes and text are ``iso``;
        numbers above 1e12 are ``epoch_ms``, above 1e8 ``epoch``, else ``offset``.
    base_date : str
        Origin of ``offset`` times (UTC).
    """

    id: str | None = None
    time: str | None = None
    card: str | None = None
    terminal: str | None = None
    amount: str = "amount"
    label: str | None = None
    features: tuple[str, ...] | None = None
    time_format: TimeFormat = "auto"
    base_date: str = "2018-04-01"

    @classmethod
    def parse(cls, spec: str, **overrides: Any) -> ColumnMap:
        """Read ``"id=tx,time=Time,amount=Amount,features=V1;V2"`` (the CLI's ``--map``).

        >>> ColumnMap.parse("time=Time,amount=Amount,label=Class,features=V1;V2")
        ... # doctest: +NORMALIZE_WHITESPACE
        ColumnMap(id=None, time='Time', card=None, terminal=None, amount='Amount',
                  label='Class', features=('V1', 'V2'), time_format='auto',
                  base_date='2018-04-01')
        """
        known = set(cls.__dataclass_fields__)
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in known:
                raise ValueError(
                    f"bad mapping item {item!r}; use KEY=COLUMN with KEY in {sorted(known)}"
                )
            value = value.strip()
            values[key] = tuple(v for v in value.split(";") if v) if key == "features" else value
        values.update(overrides)
        return cls(**values)


CREDITCARD_MAP = ColumnMap(time="Time", amount="Amount", label="Class")
"""Mapping of the public ``creditcard.csv`` (Time offset, V1..V28, Amount, Class)."""

SIMULATOR_MAP = ColumnMap(
    id="tx_id", time="ts", card="card_id", terminal="terminal_id", amount="amount",
    label="is_fraud", features=(), time_format="iso",
)  # fmt: skip
"""Mapping of :func:`models.datasets.simulate` frames (``scenario`` is not streamed)."""


@dataclass(frozen=True)
class WireTable:
    """Transactions in wire-contract form, time ordered, with their labels held apart.

    ``label`` is :data:`NO_LABEL` where the source has none. ``features`` holds one
    float column per ``features`` entry (NaN cells are left out of the record).
    """

    tx_id: npt.NDArray[np.object_]
    ts: npt.NDArray[np.float64]
    card_id: npt.NDArray[np.object_]
    terminal_id: npt.NDArray[np.object_]
    amount: npt.NDArray[np.float64]
    label: npt.NDArray[np.int8]
    features: pd.DataFrame

    def __len__(self) -> int:
        return int(self.tx_id.size)

    def transactions(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """Wire dicts (without ``schema_version``), from row ``start`` on."""
        names = list(self.features.columns)
        for lo in range(start, len(self), _CHUNK):
            hi = min(lo + _CHUNK, len(self))
            columns = zip(
                self.tx_id[lo:hi].tolist(),
                self.ts[lo:hi].tolist(),
                self.card_id[lo:hi].tolist(),
                self.terminal_id[lo:hi].tolist(),
                self.amount[lo:hi].tolist(),
                strict=True,
            )
            if not names:
                for tx_id, ts, card, terminal, amount in columns:
                    yield {"tx_id": tx_id, "ts": ts, "card_id": card,
                           "terminal_id": terminal, "amount": amount}  # fmt: skip
                continue
            rows = self.features.iloc[lo:hi].to_numpy(dtype=np.float64).tolist()
            for (tx_id, ts, card, terminal, amount), values in zip(columns, rows, strict=True):
                feats = {n: v for n, v in zip(names, values, strict=True) if v == v}  # not NaN
                yield {"tx_id": tx_id, "ts": ts, "card_id": card, "terminal_id": terminal,
                       "amount": amount, "features": feats}  # fmt: skip

    def labels(self) -> Iterator[tuple[str, int]]:
        """``(tx_id, label)`` of every labelled transaction, in stream order."""
        has = self.label != NO_LABEL
        yield from zip(self.tx_id[has].tolist(), self.label[has].tolist(), strict=True)

    def records(self, start: int = 0) -> Iterator[tuple[dict[str, Any], int | None]]:
        """Each transaction dict with its label (``None`` when unlabelled)."""
        labels = self.label.tolist()
        for i, tx in enumerate(self.transactions(start), start):
            yield tx, (None if labels[i] == NO_LABEL else labels[i])


def _epoch_seconds(column: pd.Series, mapping: ColumnMap) -> npt.NDArray[np.float64]:
    fmt = mapping.time_format
    if pd.api.types.is_datetime64_any_dtype(column):
        if getattr(column.dt, "tz", None) is not None:
            column = column.dt.tz_convert("UTC").dt.tz_localize(None)
        return column.to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9
    numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    if fmt == "auto":
        if not numeric:
            fmt = "iso"
        else:
            top = float(np.nanmax(np.abs(column.to_numpy(dtype=np.float64)), initial=0.0))
            fmt = "epoch_ms" if top > 1e12 else "epoch" if top > 1e8 else "offset"
    if fmt == "iso":
        stamps = pd.to_datetime(column, utc=True, format="ISO8601")
        ns = stamps.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)
        return ns / 1e9
    values = column.to_numpy(dtype=np.float64)
    if fmt == "epoch_ms":
        return values / 1000.0
    if fmt == "epoch":
        return values
    base = pd.Timestamp(mapping.base_date, tz="UTC").timestamp()
    return base + values


def _ids(frame: pd.DataFrame, column: str | None, default: npt.ArrayLike) -> npt.NDArray[Any]:
    if column is None:
        return np.asarray(default, dtype=object)
    values = frame[column]
    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")  # 12.0 -> "12", as the id was before CSV typing
    return values.astype(str).to_numpy(dtype=object)


def from_frame(frame: pd.DataFrame, mapping: ColumnMap, sort: bool = True) -> WireTable:
    """Turn ``frame`` into a :class:`WireTable` following ``mapping``.

    Raises
    ------
    ValueError
        A mapped column is missing, an amount is negative or missing, a time is
        missing, or a label is not 0/1.
    """
    named = [
        mapping.id,
        mapping.time,
        mapping.card,
        mapping.terminal,
        mapping.amount,
        mapping.label,
    ]
    missing = [c for c in [*named, *(mapping.features or ())] if c and c not in frame.columns]
    if missing:
        raise ValueError(f"columns not in the file: {missing}; it has {list(frame.columns)}")
    n = len(frame)
    if mapping.time is None:
        base = pd.Timestamp(mapping.base_date, tz="UTC").timestamp()
        ts = base + np.arange(n, dtype=np.float64)
    else:
        ts = _epoch_seconds(frame[mapping.time], mapping)
    amount = pd.to_numeric(frame[mapping.amount]).to_numpy(dtype=np.float64)
    if not np.isfinite(ts).all():
        raise ValueError(f"time column {mapping.time!r} has missing or invalid values")
    if not (np.isfinite(amount).all() and (amount >= 0).all()):
        raise ValueError(f"amount column {mapping.amount!r} has missing or negative values")
    label = np.full(n, NO_LABEL, dtype=np.int8)
    if mapping.label is not None:
        raw = pd.to_numeric(frame[mapping.label])
        if not raw.dropna().isin([0, 1]).all():
            raise ValueError(f"label column {mapping.label!r} must hold 0/1 (or be empty)")
        label = raw.fillna(NO_LABEL).to_numpy(dtype=np.int8)
    if mapping.features is None:
        taken = {c for c in named if c}
        feature_names = [
            c for c in frame.columns
            if c not in taken and pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c])
        ]  # fmt: skip
    else:
        feature_names = list(mapping.features)
    features = frame[feature_names].astype(np.float64).reset_index(drop=True)
    order = np.argsort(ts, kind="stable") if sort else np.arange(n)
    return WireTable(
        tx_id=_ids(frame, mapping.id, np.arange(n).astype(str))[order],
        ts=ts[order],
        card_id=_ids(frame, mapping.card, np.full(n, UNKNOWN, dtype=object))[order],
        terminal_id=_ids(frame, mapping.terminal, np.full(n, UNKNOWN, dtype=object))[order],
        amount=amount[order],
        label=label[order],
        features=features.iloc[order].reset_index(drop=True),
    )


def read_file(path: str | Path, mapping: ColumnMap, sort: bool = True) -> WireTable:
    """Load a ``.csv`` (optionally compressed) or ``.parquet`` file into a :class:`WireTable`.

    Raises
    ------
    ValueError
        Unknown file type, or a mapping problem (see :func:`from_frame`).
    FileNotFoundError
        The file does not exist.
    """
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        frame = pd.read_parquet(path)
    elif ".csv" in suffixes:
        frame = pd.read_csv(path)
    else:
        raise ValueError(f"{path.name}: replay reads .csv[.gz] and .parquet files")
    return from_frame(frame, mapping, sort=sort)


def from_simulation(frame: pd.DataFrame) -> WireTable:
    """A :func:`models.datasets.simulate` frame as a :class:`WireTable` (already sorted)."""
    return from_frame(frame, SIMULATOR_MAP, sort=False)
