"""A worker whose card-state restore stalls restarts its reading and goes on scoring.

In a CI run on 2026-12-03 the survivor of a ``kill -9`` waited 90 s in Faust's restore
of the card-state changelog with no event received, and a third of the stream went
unscored. Here a real worker (real Kafka, real Valkey) restores a real changelog while a
``sitecustomize`` module (:data:`DROP_CHANGELOG_EVENTS`, on the worker's PYTHONPATH only)
drops each changelog event on its first delivery: the consumer's position moves past
them, and Faust alone waits forever with the same log lines as that CI run. The worker's
watchdog (``streams/recovery_watch.py``) must see the stall, seek back, finish the
restore, and score what arrives afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import wait_all_scored, wait_until
from pipeline_helpers import WorkerProcess, pipeline_settings, read_topic, wire_source

from streams.producer import produce_transactions
from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.faults]

#: Written to the test's tmp folder as ``sitecustomize.py`` (never imported by pytest),
#: after ``DROPS = n``: each changelog event is dropped on its first ``n`` deliveries.
DROP_CHANGELOG_EVENTS = """
from collections import Counter

from mode.utils import queues

_deliver = queues.FlowControlQueue.put_nowait_enhanced
_dropped = Counter()


def _drop(self, value, **kwargs):
    message = getattr(value, "message", None)
    topic = getattr(message, "topic", "") or ""
    if topic.endswith("card-state-changelog"):
        seen = (topic, message.partition, message.offset)
        if _dropped[seen] < DROPS:
            _dropped[seen] += 1
            return False
    return _deliver(self, value, **kwargs)


queues.FlowControlQueue.put_nowait_enhanced = _drop
"""


def wait_for(what: str, worker: WorkerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what.encode() in worker.log_path.read_bytes():
            return
        assert worker.alive(), worker.tail()
        time.sleep(0.5)
    raise AssertionError(f"{what!r} not in the worker log after {timeout} s:\n{worker.tail()}")


def write_changelog(s: Settings, rows: list[tuple[dict[str, Any], int | None]], tmp: Path) -> None:
    """A healthy worker scores ``rows``: their card state goes to the changelog."""
    writer = WorkerProcess(s, tmp / "writer.log")
    try:
        writer.wait_ready()
        asyncio.run(produce_transactions(s, rows))
        scored = asyncio.run(read_topic(s, s.topic_scores, until=len(rows), timeout_s=60))
        assert len(scored) >= len(rows)
    finally:
        writer.stop()


def restorer(s: Settings, tmp: Path, drops: int = 1) -> WorkerProcess:
    """A new worker that restores that state and loses every changelog event ``drops``
    times."""
    inject = tmp / "inject"
    inject.mkdir(exist_ok=True)
    (inject / "sitecustomize.py").write_text(f"DROPS = {drops}\n" + DROP_CHANGELOG_EVENTS)
    pythonpath = os.pathsep.join([str(inject), os.environ.get("PYTHONPATH", "")])
    return WorkerProcess(s, tmp / "restorer.log", PYTHONPATH=pythonpath)


def score_the_rest(
    s: Settings, worker: WorkerProcess, source: list[Any], later: list[Any]
) -> tuple[set[str], set[str]]:
    """Produce ``later``; (every tx_id of ``source``, the ids scored), the worker alive."""
    asyncio.run(produce_transactions(s, later))
    wanted = {tx["tx_id"] for tx, _ in source}
    ids = {v["tx_id"] for v in wait_all_scored(s, wanted, [worker], timeout=60)}
    assert worker.alive(), worker.tail()
    return wanted, ids


def test_a_stalled_restore_is_restarted_and_the_worker_scores_on(
    settings: Any, tiny_model: Path, tmp_path: Path
) -> None:
    s = pipeline_settings(settings, tiny_model, recovery_stall_s=3.0)
    source = wire_source(3_000, seed=23)
    first, later = source[:2_000], source[2_000:]
    write_changelog(s, first, tmp_path)
    worker = restorer(s, tmp_path)
    try:
        wait_for("card-state restore made no progress", worker, timeout=90)
        wait_for("restarting the restore's reading (1 of", worker, timeout=10)
        wait_for("Done reading from changelog topics", worker, timeout=60)
        worker.wait_ready()
        assert worker.metric("riskstream_table_recovery_restarts_total") >= 1

        # it scores on: every transaction of the rest of the stream gets its score
        wanted, ids = score_the_rest(s, worker, source, later)
    finally:
        worker.stop()
    assert wanted <= ids, f"{len(wanted - ids)} transactions never scored"
    log = worker.log_path.read_text(errors="replace")
    # the stall report names the lagging partitions and where every task waited
    report = log[log.index("card-state restore made no progress") :]
    assert re.search(r"card-state-changelog\[\d\] applied -?\d+ of \d+", report)
    assert "fetcher running" in report
    assert "Recovery._slurp_changelogs" in report  # the restore's task, and where it waits


def test_a_restore_that_stalls_again_is_restarted_again(
    settings: Any, tiny_model: Path, tmp_path: Path
) -> None:
    # Every event lost twice: the first restart's re-read is lost too, so the second
    # try is the one that must work (and the count of tries starts again afterwards).
    s = pipeline_settings(settings, tiny_model, recovery_stall_s=3.0)
    source = wire_source(1_500, seed=31)
    first, later = source[:1_000], source[1_000:]
    write_changelog(s, first, tmp_path)
    worker = restorer(s, tmp_path, drops=2)
    try:
        wait_for("restarting the restore's reading (2 of", worker, timeout=120)
        wait_for("Done reading from changelog topics", worker, timeout=60)
        worker.wait_ready()
        assert worker.metric("riskstream_table_recovery_restarts_total") == 2
        # out of the degraded state once the restore is done (the watcher looks every 2 s)
        assert wait_until(
            lambda: worker.sample("riskstream_degraded", component="table_recovery") == 0, 10
        )
        wanted, ids = score_the_rest(s, worker, source, later)
    finally:
        worker.stop()
    assert wanted <= ids, f"{len(wanted - ids)} transactions never scored"
    log = worker.log_path.read_text(errors="replace")
    assert "restarting the restore's reading (3 of" not in log


def test_without_restarts_a_stalled_restore_stops_the_worker_with_a_reason(
    settings: Any, tiny_model: Path, tmp_path: Path
) -> None:
    # The same fault, no restart allowed: Faust does not get out of it by itself, and
    # the worker exits (for its supervisor to restart it) instead of idling unscored.
    s = pipeline_settings(settings, tiny_model, recovery_stall_s=3.0, recovery_max_restarts=0)
    write_changelog(s, wire_source(1_000, seed=29), tmp_path)
    worker = restorer(s, tmp_path)
    try:
        assert wait_until(lambda: not worker.alive(), 90, step=0.5), (
            "the stalled worker kept running"
        )
        assert worker.proc.returncode != 0
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert "card-state restore stalled after 0 restarts" in log
    assert "Done reading from changelog topics" not in log
    assert "restarting the restore's reading" not in log
