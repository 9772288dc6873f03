"""The score agent: ``transactions`` in micro-batches through the score pipeline.

The agent is what subscribes the worker to ``transactions``. In ``stream`` consume
mode it iterates Faust's stream with ``take_events(max_batch, within=max_wait_s)`` and
runs each micro-batch to completion (processed, state flushed, outputs delivered)
before Faust acknowledges it. In the default ``batch`` mode the app's consumer hands
whole fetched batches to the same :class:`~streams.runner.BatchRunner` instead (see
:mod:`streams.consumer`), and this loop stays idle.

A timer flushes card state and acknowledges settled offsets when the stream is idle.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from streams.pipeline import RawRecord

if TYPE_CHECKING:  # pragma: no cover
    from streams.app import Riskstream

log = logging.getLogger(__name__)


def record_of(message: Any) -> RawRecord:
    """A Faust ``Message`` as the pipeline's input record (timestamp in ms).

    >>> from faust.types import Message
    >>> m = Message("tx", 2, 41, 1.5, 0, None, b"c1", b"{}", None)
    >>> record_of(m)
    RawRecord(topic='tx', partition=2, offset=41, timestamp=1500, key=b'c1', value=b'{}')
    """
    stamp = message.timestamp
    return RawRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp=int(stamp * 1000) if stamp else None,
        key=message.key,
        value=message.value,
    )


def register(rs: Riskstream) -> Any:
    """Add the score agent and its idle-flush timer to ``rs.app``; returns the agent."""
    app, settings = rs.app, rs.settings

    @app.agent(rs.topics.transactions, name="score", concurrency=1)
    async def score(stream: Any) -> None:
        async for events in stream.take_events(settings.max_batch, within=settings.max_wait_s):
            await rs.runner.run_and_settle([record_of(event.message) for event in events])

    @app.timer(max(settings.state_flush_interval_s, 0.05), name="score-settle")
    async def settle() -> None:
        await rs.runner.tick()

    return score
