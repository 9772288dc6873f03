"""Notices when Faust's table recovery stops making progress, and restarts its reading.

After a rebalance a worker restores the card state of its new partitions from the
table's changelog before it scores them (:mod:`streams.tables`); until the restore
reaches each changelog partition's high-water mark, those partitions' transactions wait.
In one CI run (2026-12-03) the survivor of a ``kill -9`` sat in that restore for 90 s
with *no* changelog event received for any partition, though the changelog held
~2,700 records: a third of the stream went unscored, silently. Faust only logs "No event
received for active tp" every 5 s and waits forever.

:class:`RecoveryProgress` decides, from the number of changelog records still to read,
when a restore has stalled; :func:`watch_recovery` looks every 2 s from the moment the
app starts (the first restore, at start, can stall too). On a stall,
:func:`check_restore` logs the lagging partitions, the consumer's flow state
(:func:`describe`) and where every asyncio task waits (:func:`task_stacks`), and
:func:`restart_reading` makes the consumer read again from where the restore stands: it
seeks the lagging changelog partitions back to the last offset applied (Faust skips
records it has seen), resumes them, and resumes flow and the fetcher if a rebalance left
them stopped, or its fetcher task if that one's loop has ended. After
``max_restarts`` tries without progress the worker crashes on purpose, so that its
supervisor restarts it, instead of keeping its partitions unscored.

What lost the events in that CI run is not known. Dropping each changelog event once
(``tests/integration/faults/test_recovery_stall.py``) gives exactly its log lines, and
the restart fixes that case; for any other cause, the logged report is where to look.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

Verdict = Literal["ok", "stalled", "give_up"]


@dataclass
class RecoveryProgress:
    """Tracks the records a restore still has to read; says when it stopped moving.

    Parameters
    ----------
    stall_s
        Seconds without progress after which a restore counts as stalled.
    max_restarts
        Stalls in a row (restarts that did not help) before giving up.

    Examples
    --------
    >>> p = RecoveryProgress(stall_s=10, max_restarts=2)
    >>> p.observe(in_recovery=True, remaining=500, now=0.0)
    'ok'
    >>> p.observe(in_recovery=True, remaining=200, now=8.0)  # moving
    'ok'
    >>> p.observe(in_recovery=True, remaining=200, now=18.5)  # 10.5 s without progress
    'stalled'
    >>> p.observe(in_recovery=True, remaining=200, now=29.0)  # the restart did not help
    'stalled'
    >>> p.observe(in_recovery=True, remaining=200, now=39.5)
    'give_up'
    >>> p.observe(in_recovery=False, remaining=0, now=40.0)  # done: start over
    'ok'
    """

    stall_s: float
    max_restarts: int
    _remaining: int | None = None
    _since: float = 0.0
    restarts: int = 0

    def observe(self, *, in_recovery: bool, remaining: int, now: float) -> Verdict:
        """One look at the restore: ``remaining`` records to read at time ``now``."""
        if not in_recovery or remaining <= 0:
            self._remaining, self.restarts = None, 0
            return "ok"
        if self._remaining is None or remaining < self._remaining:
            self._remaining, self._since, self.restarts = remaining, now, 0
            return "ok"
        if now - self._since < self.stall_s:
            return "ok"
        self._since = now  # the next verdict comes one more stall_s later
        if self.restarts >= self.max_restarts:
            return "give_up"
        self.restarts += 1
        return "stalled"


def behind(recovery: Any) -> dict[Any, tuple[int, int]]:
    """``{changelog tp: (last offset applied, high-water mark)}`` for tps not caught up."""
    remaining = recovery.active_remaining()
    return {
        tp: (recovery.active_offsets.get(tp, -1), recovery.active_highwaters[tp])
        for tp, n in remaining.items()
        if n > 0
    }


def describe(app: Any, lagging: dict[Any, tuple[int, int]]) -> str:
    """What the consumer looks like for the lagging changelog partitions (one line)."""
    consumer = app.consumer
    active = consumer._active_partitions or set()
    parts = []
    for tp, (seen, high) in sorted(lagging.items()):
        state = "active" if tp in active else "not-active"
        if tp in consumer._paused_partitions:
            state += ",paused"
        if tp in consumer._buffered_partitions:
            state += ",buffer-full"
        parts.append(f"{tp.topic}[{tp.partition}] applied {seen} of {high} ({state})")
    queue = app.tables.changelog_queue
    return (
        f"{'; '.join(parts)}; flow {'on' if consumer.flow_active else 'OFF'}, "
        f"flow control {'on' if app.flow_control.is_active() else 'SUSPENDED'}, "
        f"changelog queue {queue.qsize()}/{queue.maxsize}, "
        f"fetcher {app._fetcher.state}"
    )


def task_stacks(limit: int = 4) -> str:
    """Every asyncio task of this loop, with the innermost frames of its await chain (where
    it waits: ``asyncio.Task.get_stack`` only gives the outermost frame of a coroutine)."""
    lines = []
    for task in asyncio.all_tasks():
        frames = []
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None:
                break
            frames.append(frame)
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        where = " <- ".join(
            f"{f.f_code.co_name} ({f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno})"
            for f in reversed(frames[-limit:])
        )
        lines.append(f"  {task.get_name()}: {where or 'not started'}")
    return "\n".join(sorted(lines))


async def restart_reading(app: Any, lagging: dict[Any, tuple[int, int]]) -> None:
    """Seek the lagging changelog partitions back to the restore's position; resume all.

    Faust's fetcher task is only started again if its loop has ended: cancelling a live
    one during a rebalance crashes the worker (Faust's ``Fetcher._fetcher`` then calls
    a supervisor it does not have; tried in session 7).
    """
    consumer = app.consumer
    # Resuming flow control empties the changelog queue, so it goes before the seek.
    if not app.flow_control.is_active():
        app.flow_control.resume()
    # Faust's own restore seeks to the last applied offset and skips what it has seen.
    await consumer.seek_wait({tp: max(seen, 0) for tp, (seen, _) in lagging.items()})
    consumer.resume_partitions(set(lagging))
    if not consumer.flow_active:
        consumer.resume_flow()
    fetcher = app._fetcher
    if fetcher.state == "shutdown":  # its loop ended: what Faust does before a restart
        await fetcher.stop()
        fetcher.service_reset()
    await fetcher.maybe_start()


async def check_restore(app: Any, progress: RecoveryProgress, metrics: Any) -> None:
    """One look at the app's restore: restart its reading, or crash the app, if stalled."""
    recovery = app.tables.recovery
    in_recovery = bool(recovery.in_recovery)
    verdict = progress.observe(
        in_recovery=in_recovery,
        remaining=recovery.active_remaining_total() if in_recovery else 0,
        now=time.monotonic(),
    )
    metrics.set_degraded("table_recovery", progress.restarts > 0)
    if verdict == "ok":
        return
    lagging = behind(recovery)
    log.warning(
        "card-state restore made no progress for %.0f s: %s\n%s",
        progress.stall_s,
        describe(app, lagging),
        task_stacks(),
    )
    if verdict == "give_up":
        await app.crash(
            RuntimeError(f"card-state restore stalled after {progress.max_restarts} restarts")
        )
        return
    metrics.recovery_restarts.inc()
    log.warning(
        "restarting the restore's reading (%d of %d)", progress.restarts, progress.max_restarts
    )
    await restart_reading(app, lagging)


async def watch_recovery(
    app: Any, progress: RecoveryProgress, metrics: Any, every_s: float = 2.0
) -> None:
    """:func:`check_restore` every ``every_s`` seconds until the app stops; never raises."""
    while not app.should_stop:
        await asyncio.sleep(every_s)
        try:
            await check_restore(app, progress, metrics)
        except asyncio.CancelledError:
            raise
        except Exception:  # e.g. a rebalance meanwhile: the next look tries again
            log.exception("card-state restore check failed")
