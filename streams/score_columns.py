"""A micro-batch of ``transactions`` as columns: validation, and the feature matrix.

The score pipeline never builds a record object per valid transaction: validation
returns the batch's fields as columns (:class:`TxBatch`), and the feature matrix is
assembled column by column. :func:`validate_batch` is the definition; its compiled twin
(``streams.native._records.validate_batch``) gives the same columns and the same dead
letters, and tests hold the two equal.

>>> from streams.pipeline import RawRecord
>>> ok = b'{"tx_id":"t1","ts":1.7e9,"card_id":"c1","terminal_id":"m1","amount":5.0,' \\
...      b'"schema_version":1}'
>>> batch, dead = validate_batch([RawRecord("transactions", 0, 7, None, b"c1", ok),
...                               RawRecord("transactions", 0, 8, None, b"c1", b"[]")],
...                              max_bytes=1000, max_features=8)
>>> batch.tx_ids, batch.amounts.tolist(), [err.reason for _, err in dead]
(['t1'], [5.0], ['not_object'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, cast

import numpy as np

from models.features import free_feature_values
from models.features.definitions import (
    CARD_WINDOWS_DAYS,
    DAY_SECONDS,
    NIGHT_END_SECONDS,
    TERMINAL_WINDOWS_DAYS,
)
from streams import native
from streams.records import RecordError, Transaction, parse_transaction


class InputRecord(Protocol):
    """What the pipeline reads of a Kafka message (aiokafka's ``ConsumerRecord`` fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...  # milliseconds
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


Dead = list[tuple[InputRecord, RecordError]]


class TxBatch(NamedTuple):
    """The valid transactions of a micro-batch, in arrival order, as columns."""

    records: list[InputRecord]  # the Kafka messages they came in
    tx_ids: list[str]
    card_ids: list[str]
    terminal_ids: list[str]
    ts: np.ndarray  # float64 epoch seconds
    amounts: np.ndarray  # float64
    features: list[dict[str, float] | None]  # the free map; None when empty
    partitions: np.ndarray  # int64, of the Kafka messages
    offsets: np.ndarray  # int64
    stamps: np.ndarray  # int64 Kafka timestamps (ms), 0 where a message has none

    def __len__(self) -> int:  # type: ignore[override]  # the rows, not the fields
        return len(self.tx_ids)

    def take(self, rows: Sequence[int]) -> TxBatch:
        """The rows ``rows`` (indices into this batch), in that order."""
        index = list(rows)
        return TxBatch(
            [self.records[i] for i in index],
            [self.tx_ids[i] for i in index],
            [self.card_ids[i] for i in index],
            [self.terminal_ids[i] for i in index],
            self.ts[index],
            self.amounts[index],
            [self.features[i] for i in index],
            self.partitions[index],
            self.offsets[index],
            self.stamps[index],
        )


def parse_record(
    record: InputRecord, max_bytes: int, max_features: int
) -> tuple[Transaction | None, RecordError | None]:
    """``(transaction, None)``, or ``(None, the reason to dead-letter it)``; never raises."""
    try:
        # a None value (tombstone) is the parser's to reject, with its reason
        value: Any = record.value
        return parse_transaction(value, max_bytes=max_bytes, max_features=max_features), None
    except RecordError as err:
        return None, err
    except Exception as exc:  # the parser promises RecordError only; never trust it
        return None, RecordError("scoring_error", f"parser: {exc!r}")


def key_error(record: InputRecord, card_id: str) -> RecordError | None:
    """Why the record's Kafka key is not its ``card_id`` (the partitioning), or None."""
    key = record.key
    try:
        if key is not None and key == card_id.encode():
            return None
    except Exception as exc:  # noqa: BLE001 - an unencodable id: say so, never raise
        return RecordError("bad_key", f"card_id cannot be a Kafka key: {exc!r}")
    shown = "none" if key is None else repr(key[:60])
    return RecordError("bad_key", f"Kafka key {shown} must be the card_id {card_id[:60]!r}")


def validate_batch(
    records: Sequence[InputRecord], *, max_bytes: int, max_features: int
) -> tuple[TxBatch, Dead]:
    """The valid transactions of ``records`` as columns, and the rest with their reasons."""
    kept: list[InputRecord] = []
    tx_ids: list[str] = []
    card_ids: list[str] = []
    terminal_ids: list[str] = []
    ts: list[float] = []
    amounts: list[float] = []
    features: list[dict[str, float] | None] = []
    where: list[tuple[int, int, int]] = []  # partition, offset, timestamp
    dead: Dead = []
    for record in records:
        tx, err = parse_record(record, max_bytes, max_features)
        if tx is None:
            dead.append((record, cast(RecordError, err)))  # set whenever tx is None
            continue
        err = key_error(record, tx.card_id)
        if err is not None:
            dead.append((record, err))
            continue
        kept.append(record)
        tx_ids.append(tx.tx_id)
        card_ids.append(tx.card_id)
        terminal_ids.append(tx.terminal_id)
        ts.append(tx.ts)
        amounts.append(tx.amount)
        features.append(tx.features or None)
        stamp = record.timestamp
        where.append((record.partition, record.offset, stamp_ms(stamp)))
    positions = np.array(where, dtype=np.int64).reshape(len(where), 3)
    batch = TxBatch(
        kept,
        tx_ids,
        card_ids,
        terminal_ids,
        np.array(ts, dtype=np.float64),
        np.array(amounts, dtype=np.float64),
        features,
        positions[:, 0].copy(),
        positions[:, 1].copy(),
        positions[:, 2].copy(),
    )
    return batch, dead


def stamp_ms(stamp: Any) -> int:
    """A message's Kafka timestamp in ms, 0 when it has none (or a negative one)."""
    if stamp is None:
        return 0
    value = int(stamp)
    return value if value > 0 else 0


def validate_batch_native(
    records: Sequence[InputRecord], *, max_bytes: int, max_features: int
) -> tuple[TxBatch, Dead]:
    """:func:`validate_batch` by the compiled kernel (same columns, same dead letters)."""
    n = len(records)
    numbers = np.empty((2, n), dtype=np.float64)  # ts, amount
    positions = np.empty((3, n), dtype=np.int64)  # partition, offset, timestamp
    kept, tx_ids, card_ids, terminal_ids, features, dead = native.kernel("_records").validate_batch(
        records if type(records) is list else list(records),
        max_bytes,
        max_features,
        lambda record: parse_record(record, max_bytes, max_features),
        key_error,
        stamp_ms,
        numbers,
        positions,
    )
    m = len(kept)
    batch = TxBatch(
        kept,
        tx_ids,
        card_ids,
        terminal_ids,
        numbers[0, :m],
        numbers[1, :m],
        features,
        positions[0, :m],
        positions[1, :m],
        positions[2, :m],
    )
    return batch, dead


N_CARD_WINDOW = 2 * len(CARD_WINDOWS_DAYS)
N_CARD = N_CARD_WINDOW + 2  # the windows, then time since the last tx and amount / mean
N_TERMINAL = 2 * len(TERMINAL_WINDOWS_DAYS)


def assemble_rows(
    amounts: np.ndarray,
    ts: np.ndarray,
    days: np.ndarray,
    card: np.ndarray,
    terminal: np.ndarray,
    free: Sequence[dict[str, float] | None],
    schema: Any,
) -> np.ndarray:
    """The float32 feature matrix of a batch, in :func:`feature_row`'s layout.

    ``ts`` and ``days`` (``floor(ts / 86400)``) are the transactions' times: the time
    features are computed for the whole batch with the float64 arithmetic of
    :func:`models.features.tx_features` (so the same values); ``card`` ``[n, 8]`` and
    ``terminal`` ``[n, 6]`` are copied in as blocks; ``free`` holds each row's free
    feature map. A unit test holds each row equal to :func:`feature_row`.

    >>> from models.features import FeatureSchema
    >>> X = assemble_rows(np.array([3.0]), np.array([0.0]), np.array([0.0]),
    ...                   np.ones((1, 8)), np.full((1, 6), 2.0), [None], FeatureSchema())
    >>> X.shape, X[0, :4].tolist()
    ((1, 17), [3.0, 0.0, 1.0, 1.0])
    """
    extra = schema.extra_names
    width = 3 + N_CARD + N_TERMINAL + len(extra)
    if width != schema.n_features:
        raise ValueError(f"assembled {width} features, the model takes {schema.n_features}")
    n = len(amounts)
    X = np.empty((n, width), dtype=np.float32)
    if not n:
        return X
    X[:, 0] = amounts
    X[:, 1] = (days + 3) % 7 >= 5  # weekend: Monday = 0, day 0 was a Thursday
    X[:, 2] = ts - days * DAY_SECONDS < NIGHT_END_SECONDS
    X[:, 3 : 3 + N_CARD_WINDOW] = card[:, :N_CARD_WINDOW]
    at = 3 + N_CARD_WINDOW
    X[:, at : at + N_TERMINAL] = terminal
    at += N_TERMINAL
    X[:, at : at + 2] = card[:, N_CARD_WINDOW:]
    if extra:
        X[:, at + 2 :] = [free_feature_values(f, extra) for f in free]
    return X


def feature_row(
    card: Sequence[float],
    terminal: Sequence[float],
    time_feats: Sequence[float],
    free: dict[str, float] | None,
    extra_names: Sequence[str],
) -> list[float]:
    """One feature vector in :func:`models.features.assemble_vector`'s layout, as a list.

    A unit test holds this equal to ``assemble_vector``.

    >>> feature_row([1.0] * 8, [2.0] * 6, (3.0, 0.0, 1.0), {"v": 5.0}, ["v"])[:4]
    [3.0, 0.0, 1.0, 1.0]
    """
    row = [*time_feats, *card[:N_CARD_WINDOW], *terminal, *card[N_CARD_WINDOW:]]
    if extra_names:
        row += free_feature_values(free, extra_names)
    return row
