"""The worker's Kafka consumer runs on the worker's event loop, not in a thread of its own.

``streams.consumer.InLoopServiceThread`` replaces mode's thread with a task; these tests
hold it to mode's life cycle on a toy service (no Kafka), and check that the worker's
consumer is built on it. The integration suites run it against real Kafka (rebalances,
``kill -9``, broker restarts).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams.consumer import BatchConsumer, InLoopConsumerThread, InLoopServiceThread


class Toy(InLoopServiceThread):
    """Records where and in which order mode calls it."""

    def __init__(self, *, fail_start: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_start = fail_start
        self.events: list[tuple[str, int]] = []

    async def on_start(self) -> None:
        if self.fail_start:
            raise OSError("port in use")
        self.events.append(("start", threading.get_ident()))

    async def on_thread_stop(self) -> None:
        await super().on_thread_stop()
        self.events.append(("thread_stop", threading.get_ident()))

    async def add(self, a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b


async def test_runs_mode_life_cycle_on_the_callers_loop_and_thread() -> None:
    loop = asyncio.get_running_loop()
    threads_before = threading.active_count()
    toy = Toy(loop=loop)
    await toy.start()
    assert toy.thread_loop is loop and toy.parent_loop is loop
    assert toy.events == [("start", threading.get_ident())]  # started before start() returned
    assert threading.active_count() == threads_before  # no thread was made
    # what Faust passes to call_thread: coroutine functions and plain ones
    assert await toy.call_thread(toy.add, 2, b=3) == 5
    assert await toy.call_thread(lambda: "plain") == "plain"
    with pytest.raises(ZeroDivisionError):
        await toy.call_thread(lambda: 1 / 0)

    bystander = asyncio.ensure_future(asyncio.sleep(30))  # another task of the worker
    await toy.stop()
    assert toy.events[-1] == ("thread_stop", threading.get_ident())
    assert toy._shutdown.is_set() and toy._serving is not None and toy._serving.done()
    assert not bystander.cancelled()  # mode's thread sweep would have cancelled it
    bystander.cancel()


async def test_a_service_that_fails_to_start_raises_from_start() -> None:
    toy = Toy(loop=asyncio.get_running_loop(), fail_start=True)
    with pytest.raises(OSError, match="port in use"):
        await toy.start()
    with pytest.raises(RuntimeError, match="started twice"):
        await toy.start()


def test_the_worker_consumer_is_the_in_loop_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # the in-loop base must come first, so its start/call_thread win over mode's
    mro = InLoopConsumerThread.__mro__
    assert mro.index(InLoopServiceThread) < mro.index(AIOKafkaConsumerThread)
    made: list[tuple[Any, ...]] = []
    monkeypatch.setattr(InLoopConsumerThread, "__init__", lambda *a, **_: made.append(a))
    consumer = object.__new__(BatchConsumer)  # only the factory method is exercised
    consumer.loop = consumer.beacon = None  # type: ignore[misc, assignment]
    thread = consumer._new_consumer_thread()
    assert isinstance(thread, InLoopConsumerThread) and made == [(thread, consumer)]
