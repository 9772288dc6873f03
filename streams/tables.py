"""Per-card state: a Faust table with a Kafka changelog, and the score agent's working copy.

The table (``card-state``, partitioned like ``transactions``) is what survives restarts
and rebalances: Faust recovers it from its changelog topic for the partitions a worker
is assigned. A table write per transaction would add a changelog message per
transaction (ANCHORS.md: halves throughput), so the score agent works on
:class:`CardStates`, an in-memory working copy that writes each *changed* card to the
table and its changelog once per flush interval, and always before offsets are committed
(see ``streams.consumer``), so committed input never has unflushed state behind it.

Changelog values are ``CardState.to_dict()`` plus the partition/offset of the last
transaction applied (``p``, ``o``): a transaction replayed after a crash is scored but
not learnt twice. A card is a :class:`TableCard`, or its compiled twin from
:mod:`streams.native` (``CardStates(native=...)``); both write the same changelog.

Examples
--------
>>> cards = CardStates(table_data={}, changelog_topic="cl", send=None)
>>> state = cards.get("c1")
>>> len(state), cards.should_learn("c1", partition=0, offset=5)
(0, True)
>>> state.learn_one(100.0, 9.5); cards.learnt("c1", partition=0, offset=5)
>>> cards.should_learn("c1", partition=0, offset=5), cards.dirty
(False, 1)
>>> cards.changelog_messages()
[(0, b'"c1"', b'{"ts":[100.0],"amounts":[9.5],"p":0,"o":5}')]
>>> cards.flushed_through, cards.next_batch(), cards.flushed_through
(-1, 1, -1)
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import faust
import numpy as np
import orjson
from faust.types import TableT

from models.features import CardState, card_features
from streams import native as native_kernels
from streams.settings import Settings

CARD_TABLE_NAME = "card-state"

SendMany = Callable[[str, list[tuple[int | None, bytes | None, bytes]]], Awaitable[Any]]


def define_card_table(app: faust.App, settings: Settings) -> TableT[Any, Any]:
    """The per-card state table (JSON keys and values, in memory, changelog in Kafka)."""
    return app.Table(
        CARD_TABLE_NAME,
        default=None,
        partitions=settings.topic_partitions,
        # no key/value types: JSON in, plain str keys and dict values out
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        help="Per-card transaction history (last 30 days) for the card features.",
    )


class TableCard(CardState):
    """A card's state as the score agent keeps it: :class:`CardState`, plus the
    partition and offset of the last transaction applied (``p``, ``o``: a replayed
    offset is scored but not learnt twice). The Python reference of
    ``streams.native._cards.NativeCard``.

    >>> card = TableCard([100.0], [9.5])
    >>> card.set_applied(0, 5); card.changelog_value()
    {'ts': [100.0], 'amounts': [9.5], 'p': 0, 'o': 5}
    """

    __slots__ = ("p", "o")

    def __init__(
        self, ts: Sequence[float] | None = None, amounts: Sequence[float] | None = None
    ) -> None:
        super().__init__(ts, amounts)
        self.p: int | None = None
        self.o: int | None = None

    def features(self, ts: float, amount: float) -> tuple[float, ...]:
        """``card_features(self, ts, amount)``: before :meth:`learn_one`."""
        return card_features(self, ts, amount)

    def set_applied(self, p: Any, o: Any) -> None:
        """Record the partition/offset of the last transaction applied."""
        self.p = p
        self.o = o

    def changelog_value(self) -> dict[str, Any]:
        """The table's changelog value: :meth:`to_dict` plus ``p`` and ``o``."""
        return {"ts": self.ts.tolist(), "amounts": self.amounts.tolist(), "p": self.p, "o": self.o}


Card = Any  # a TableCard, or a streams.native NativeCard (the same interface)


def featurize_and_learn_batch(
    cards: CardStates,
    card_ids: Sequence[str],
    ts: np.ndarray,
    amounts: np.ndarray,
    partitions: np.ndarray,
    offsets: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``CardStates.featurize_and_learn`` of every row, in order: the card features
    ``[n, 8]`` (float64) and whether each row was learnt (uint8). The Python reference
    of ``streams.native._cards.featurize_and_learn``."""
    n = len(card_ids)
    out = np.empty((n, 8), dtype=np.float64)
    learnt = np.zeros(n, dtype=np.uint8)
    step = cards.featurize_and_learn
    for i, (card_id, t, a, p, o) in enumerate(
        zip(
            card_ids,
            ts.tolist(),
            amounts.tolist(),
            partitions.tolist(),
            offsets.tolist(),
            strict=True,
        )
    ):
        out[i], learnt[i] = step(card_id, t, a, p, o)
    return out, learnt


class CardStates:
    """Working copy of card states over the table's data, flushed to the changelog.

    Parameters
    ----------
    table_data
        The table's store (``table.data``); entries read from it are adopted, and
        written back on flush (the card objects themselves: a later adoption, after a
        rebalance, takes them over as they are).
    changelog_topic
        Name of the table's changelog topic.
    send
        ``send(topic, [(partition, key, value), ...])`` coroutine (the emitter).
    native
        Cards in C (``streams.native``) instead of :class:`TableCard`; default: when
        the kernels are active.
    """

    def __init__(
        self,
        table_data: MutableMapping[Any, Any],
        changelog_topic: str,
        send: SendMany | None,
        *,
        native: bool | None = None,
    ) -> None:
        self._data = table_data
        self._topic = changelog_topic
        self._send = send
        self.native = native_kernels.active() if native is None else native
        self._kernel = native_kernels.kernel("_cards") if self.native else None
        self._card_type: Any = self._kernel.NativeCard if self._kernel else TableCard
        self._live: dict[str, Card] = {}
        # card -> (partition, batch number of its first unflushed change), oldest first
        self._dirty: dict[str, tuple[int, int]] = {}
        self.batch = 0  # number of the micro-batch being applied (see next_batch)
        self.flushed_at = time.monotonic()
        self.flushes = 0
        self.last_futures: list[Any] = []  # delivery futures of the last flush

    def next_batch(self) -> int:
        """Start the next micro-batch; returns its number (changes are tagged with it)."""
        self.batch += 1
        return self.batch

    def get(self, card_id: str) -> Card:
        """The card's state (empty for a new card)."""
        card = self._live.get(card_id)
        return card if card is not None else self._adopt(card_id)

    def _adopt(self, card_id: str) -> Card:
        stored = self._data.get(card_id)
        if isinstance(stored, self._card_type):  # flushed by this worker before
            card = stored
        elif isinstance(stored, dict):  # restored from the changelog
            card = self._card_type.from_dict(stored)
            card.set_applied(stored.get("p"), stored.get("o"))
        else:
            card = self._card_type()
        self._live[card_id] = card
        return card

    def should_learn(self, card_id: str, *, partition: int, offset: int) -> bool:
        """False when this input offset was already applied to the card (a replay)."""
        card = self.get(card_id)
        last = card.o
        return last is None or card.p != partition or offset > last

    def learnt(self, card_id: str, *, partition: int, offset: int) -> None:
        """Record that the transaction at ``partition``/``offset`` was applied."""
        self._live[card_id].set_applied(partition, offset)
        if card_id not in self._dirty:
            # Tagged with the batch of its *first* unflushed change: flushing the card
            # writes its latest state, which covers every batch since.
            self._dirty[card_id] = (partition, self.batch)

    def learn_one(
        self, card_id: str, ts: float, amount: float, partition: int, offset: int
    ) -> bool:
        """Apply a transaction to the card unless its input offset already was (a replay).

        :meth:`should_learn`, ``learn_one`` of the card and :meth:`learnt` in one call;
        returns whether it was applied.
        """
        return self._apply(self.get(card_id), card_id, ts, amount, partition, offset)

    def _apply(
        self, card: Card, card_id: str, ts: float, amount: float, partition: int, offset: int
    ) -> bool:
        last = card.o
        if last is not None and card.p == partition and offset <= last:
            return False
        card.learn_one(ts, amount)
        card.set_applied(partition, offset)
        if card_id not in self._dirty:
            self._dirty[card_id] = (partition, self.batch)
        return True

    def featurize_and_learn(
        self, card_id: str, ts: float, amount: float, partition: int, offset: int
    ) -> tuple[tuple[float, ...], bool]:
        """``(card_features(state, ts, amount), learnt)``: the features from the card's
        state before this transaction, then :meth:`learn_one`.

        >>> cards = CardStates(table_data={}, changelog_topic="cl", send=None)
        >>> cards.featurize_and_learn("c1", 100.0, 9.5, 0, 5)[1]
        True
        >>> cards.featurize_and_learn("c1", 100.0, 9.5, 0, 5)  # a replayed offset
        ((2.0, 9.5, 2.0, 9.5, 2.0, 9.5, 0.0, 1.0), False)
        """
        card = self.get(card_id)
        features = card.features(ts, amount)
        return features, self._apply(card, card_id, ts, amount, partition, offset)

    def featurize_and_learn_batch(
        self,
        card_ids: list[str],
        ts: np.ndarray,
        amounts: np.ndarray,
        partitions: np.ndarray,
        offsets: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`featurize_and_learn` of every row in order: card features ``[n, 8]``
        and learnt flags (see :func:`featurize_and_learn_batch`).

        >>> cards = CardStates(table_data={}, changelog_topic="cl", send=None)
        >>> out, learnt = cards.featurize_and_learn_batch(
        ...     ["c1", "c1"], np.array([100.0, 160.0]), np.array([9.5, 0.5]),
        ...     np.array([0, 0]), np.array([5, 6]))
        >>> out[1, :2].tolist(), learnt.tolist()
        ([2.0, 5.0], [1, 1])
        """
        if self._kernel is None:
            return featurize_and_learn_batch(self, card_ids, ts, amounts, partitions, offsets)
        n = len(card_ids)
        out = np.empty((n, 8), dtype=np.float64)
        learnt = np.zeros(n, dtype=np.uint8)
        self._kernel.featurize_and_learn(
            self._live,
            self._dirty,
            self._adopt,
            self.batch,
            card_ids,
            np.ascontiguousarray(ts, dtype=np.float64),
            np.ascontiguousarray(amounts, dtype=np.float64),
            np.ascontiguousarray(partitions, dtype=np.int64),
            np.ascontiguousarray(offsets, dtype=np.int64),
            out,
            learnt,
        )
        return out, learnt

    @property
    def dirty(self) -> int:
        """Cards changed since they were last flushed."""
        return len(self._dirty)

    @property
    def flushed_through(self) -> int:
        """Every micro-batch numbered up to this has all its changes flushed."""
        for _, batch in self._dirty.values():
            return batch - 1
        return self.batch

    def due(self, interval_s: float, now: float | None = None) -> bool:
        """Whether a flush round is due (something dirty and ``interval_s`` elapsed)."""
        now = time.monotonic() if now is None else now
        return bool(self._dirty) and now - self.flushed_at >= interval_s

    def changelog_messages(
        self, limit: int | None = None, through: int | None = None
    ) -> list[tuple[int | None, bytes | None, bytes]]:
        """``(partition, key, value)`` of the oldest dirty cards, serialized like the table.

        At most ``limit`` cards, and only cards last changed in batch ``through`` or
        before (both optional).
        """
        out: list[tuple[int | None, bytes | None, bytes]] = []
        live = self._live
        dumps = orjson.dumps
        for card_id, (partition, batch) in self._dirty.items():
            if (limit is not None and len(out) >= limit) or (
                through is not None and batch > through
            ):
                break
            out.append((partition, dumps(card_id), dumps(live[card_id].changelog_value())))
        return out

    async def flush(self, limit: int | None = None, through: int | None = None) -> int:
        """Write the oldest dirty cards (see :meth:`changelog_messages`) to the table and its
        changelog; returns how many. ``last_futures`` holds their delivery futures."""
        if limit is None and through is None:
            self.flushed_at = time.monotonic()
        messages = self.changelog_messages(limit, through)
        self.last_futures = []
        if not messages:
            return 0
        if self._send is not None:
            self.last_futures = list(await self._send(self._topic, messages) or ())
        live, data, dirty = self._live, self._data, self._dirty
        for card_id in list(itertools.islice(dirty, len(messages))):
            data[card_id] = live[card_id]
            del dirty[card_id]
        self.flushes += 1
        return len(messages)

    def forget(self) -> None:
        """Drop the working copy (after a flush, when partitions are revoked)."""
        self._live.clear()
        self._dirty.clear()

    def __len__(self) -> int:
        return len(self._live)
