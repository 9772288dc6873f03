"""Per-card state: a Faust table with a Kafka changelog, and the score agent's working copy.

The table (``card-state``, partitioned like ``transactions``) is what survives restarts
and rebalances: Faust recovers it from its changelog topic for the partitions a worker
is assigned. A table write per transaction would add a changelog message per
transaction (ANCHORS.md: halves throughput), so the score agent works on
:class:`CardStates`, an in-memory working copy that writes each *changed* card to the
table and its changelog once per flush interval, and always before offsets are committed
(see ``streams.consumer``), so committed input never has unflushed state behind it.

Table values are ``CardState.to_dict()`` plus the partition/offset of the last
transaction applied (``p``, ``o``): a transaction replayed after a crash is scored but
not learnt twice.

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
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import faust
import orjson
from faust.types import TableT

from models.features import CardState, card_features
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


class _Entry:
    """A card's live state and the table value that shares its arrays."""

    __slots__ = ("state", "value")

    def __init__(self, state: CardState, value: dict[str, Any]) -> None:
        self.state = state
        self.value = value


class CardStates:
    """Working copy of card states over the table's data, flushed to the changelog.

    Parameters
    ----------
    table_data
        The table's store (``table.data``); entries read from it are adopted, and
        written back on flush.
    changelog_topic
        Name of the table's changelog topic.
    send
        ``send(topic, [(partition, key, value), ...])`` coroutine (the emitter).
    """

    def __init__(
        self, table_data: MutableMapping[Any, Any], changelog_topic: str, send: SendMany | None
    ) -> None:
        self._data = table_data
        self._topic = changelog_topic
        self._send = send
        self._live: dict[str, _Entry] = {}
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

    def get(self, card_id: str) -> CardState:
        """The card's state (empty for a new card)."""
        entry = self._live.get(card_id)
        if entry is None:
            entry = self._adopt(card_id)
        return entry.state

    def _adopt(self, card_id: str) -> _Entry:
        stored = self._data.get(card_id)
        state = CardState.from_dict(stored) if isinstance(stored, dict) else CardState()
        value: dict[str, Any] = {"ts": state.ts, "amounts": state.amounts}
        if isinstance(stored, dict):
            value["p"] = stored.get("p")
            value["o"] = stored.get("o")
        entry = self._live[card_id] = _Entry(state, value)
        return entry

    def should_learn(self, card_id: str, *, partition: int, offset: int) -> bool:
        """False when this input offset was already applied to the card (a replay)."""
        entry = self._live.get(card_id) or self._adopt(card_id)
        value = entry.value
        last = value.get("o")
        return last is None or value.get("p") != partition or offset > last

    def learnt(self, card_id: str, *, partition: int, offset: int) -> None:
        """Record that the transaction at ``partition``/``offset`` was applied."""
        value = self._live[card_id].value
        value["p"] = partition
        value["o"] = offset
        if card_id not in self._dirty:
            # Tagged with the batch of its *first* unflushed change: flushing the card
            # writes its latest state, which covers every batch since.
            self._dirty[card_id] = (partition, self.batch)

    def learn_one(
        self, card_id: str, ts: float, amount: float, partition: int, offset: int
    ) -> bool:
        """Apply a transaction to the card unless its input offset already was (a replay).

        :meth:`should_learn`, ``CardState.learn_one`` and :meth:`learnt` in one call (the
        score agent's per-transaction path); returns whether it was applied.
        """
        entry = self._live.get(card_id) or self._adopt(card_id)
        return self._apply(entry, card_id, ts, amount, partition, offset)

    def _apply(
        self, entry: _Entry, card_id: str, ts: float, amount: float, partition: int, offset: int
    ) -> bool:
        value = entry.value
        last = value.get("o")
        if last is not None and value.get("p") == partition and offset <= last:
            return False
        entry.state.learn_one(ts, amount)
        value["p"] = partition
        value["o"] = offset
        if card_id not in self._dirty:
            self._dirty[card_id] = (partition, self.batch)
        return True

    def featurize_and_learn(
        self, card_id: str, ts: float, amount: float, partition: int, offset: int
    ) -> tuple[tuple[float, ...], bool]:
        """``(card_features(state, ts, amount), learnt)``: the features from the card's
        state before this transaction, then :meth:`learn_one` (one lookup of the card:
        this is the score agent's per-transaction path).

        >>> cards = CardStates(table_data={}, changelog_topic="cl", send=None)
        >>> cards.featurize_and_learn("c1", 100.0, 9.5, 0, 5)[1]
        True
        >>> cards.featurize_and_learn("c1", 100.0, 9.5, 0, 5)  # a replayed offset
        ((2.0, 9.5, 2.0, 9.5, 2.0, 9.5, 0.0, 1.0), False)
        """
        entry = self._live.get(card_id) or self._adopt(card_id)
        features = card_features(entry.state, ts, amount)
        return features, self._apply(entry, card_id, ts, amount, partition, offset)

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
            entry = live[card_id]  # the state's arrays go out as lists (to_dict)
            value = {**entry.value, **entry.state.to_dict()}
            out.append((partition, dumps(card_id), dumps(value)))
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
            data[card_id] = live[card_id].value
            del dirty[card_id]
        self.flushes += 1
        return len(messages)

    def forget(self) -> None:
        """Drop the working copy (after a flush, when partitions are revoked)."""
        self._live.clear()
        self._dirty.clear()

    def __len__(self) -> int:
        return len(self._live)
