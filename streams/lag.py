"""Consumer lag of this worker: how far behind the log end each of its partitions is.

Every ``LAG_INTERVAL_S`` a Faust timer (:func:`install`) asks the consumer which
partitions of the watched topics (``transactions`` and ``labels``) it owns, reads their
high-water marks from the broker and sets ``riskstream_consumer_lag_messages`` to
``highwater - committed`` per partition, the figure ``kafka-consumer-groups`` shows.
Before the first commit of a fresh assignment the consumer's fetch position stands in
for the committed offset. Partitions revoked by a rebalance drop out of the gauge
(:meth:`~streams.metrics.RiskstreamMetrics.set_consumer_lag` replaces the whole set).

The broker is asked (``end_offsets``), not the fetcher's cached high-water mark: a
paused or backed-up partition is not fetched, and its cached mark would freeze exactly
when the lag matters.

Examples
--------
>>> from faust.types import TP
>>> partition_lags(
...     assigned=[TP("transactions", 0), TP("transactions", 1), TP("table-changelog", 0)],
...     highwaters={TP("transactions", 0): 120, TP("transactions", 1): 40},
...     committed={TP("transactions", 0): 100, TP("transactions", 1): None},
...     positions={TP("transactions", 1): 38},
...     topics={"transactions"},
... )
{('transactions', 0): 20.0, ('transactions', 1): 2.0}
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from faust.types import TP

from streams.metrics import RiskstreamMetrics

if TYPE_CHECKING:  # pragma: no cover
    from streams.app import Riskstream

log = logging.getLogger(__name__)

#: Seconds between two lag readings (one ListOffsets request per reading).
LAG_INTERVAL_S = 2.0
#: Longest wait for the broker's answer; a slow broker skips one reading, no more.
LAG_TIMEOUT_S = 5.0

LagKey = tuple[str, int]


def partition_lags(
    assigned: Iterable[TP],
    highwaters: Mapping[TP, int | None],
    committed: Mapping[TP, int | None],
    positions: Mapping[TP, int | None],
    topics: Collection[str],
) -> dict[LagKey, float]:
    """``{(topic, partition): messages behind}`` for the assigned partitions of ``topics``.

    The reference offset is the committed one, else the fetch position; a partition
    with neither, or with no known high-water mark, is left out (unknown is not 0).
    A negative difference (a commit that raced the high-water reading) counts as 0.

    >>> partition_lags([TP("t", 0)], {TP("t", 0): 5}, {}, {}, {"t"})
    {}
    """
    out: dict[LagKey, float] = {}
    for tp in sorted(assigned):
        if tp.topic not in topics:
            continue
        end = highwaters.get(tp)
        done = committed.get(tp)
        if done is None:
            done = positions.get(tp)
        if end is None or done is None:
            continue
        out[(tp.topic, tp.partition)] = float(max(0, end - done))
    return out


async def read_lags(consumer: Any, topics: Collection[str]) -> dict[LagKey, float]:
    """Ask a started Faust consumer for the lag of its partitions of ``topics``."""
    assigned = [tp for tp in consumer.assignment() if tp.topic in topics]
    if not assigned:
        return {}
    highwaters: Mapping[TP, int | None] = await consumer.highwaters(*assigned)
    # Faust's own bookkeeping of the offsets it committed (next offset to read).
    committed: Mapping[TP, int | None] = {tp: consumer._committed_offset.get(tp) for tp in assigned}
    positions: dict[TP, int | None] = {}
    for tp in assigned:
        if committed[tp] is None:
            positions[tp] = await consumer.position(tp)
    return partition_lags(assigned, highwaters, committed, positions, topics)


class LagReporter:
    """Reads the consumer's lag and exports it; one :meth:`update` per timer tick."""

    def __init__(self, consumer: Any, metrics: RiskstreamMetrics, topics: Collection[str]):
        self.consumer = consumer
        self.metrics = metrics
        self.topics = frozenset(topics)

    async def update(self, timeout_s: float = LAG_TIMEOUT_S) -> dict[LagKey, float] | None:
        """Export the current lags; None (gauge untouched) if they could not be read."""
        try:
            lags = await asyncio.wait_for(read_lags(self.consumer, self.topics), timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a rebalance or broker hiccup: next tick tries again
            log.debug("consumer lag not read: %r", exc)
            return None
        self.metrics.set_consumer_lag(lags)
        return lags


def install(rs: Riskstream, interval_s: float = LAG_INTERVAL_S) -> None:
    """Register the ``consumer-lag`` timer on the worker's app."""
    app, settings = rs.app, rs.settings
    topics = (settings.topic_transactions, settings.topic_labels)

    @app.timer(interval_s, name="consumer-lag")  # type: ignore[misc]
    async def consumer_lag() -> None:
        await LagReporter(app.consumer, rs.metrics, topics).update()
