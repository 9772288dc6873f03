"""Where produce→score latency goes, summarized in the worker's log now and then.

The ``latency_ms`` of a score record is one number: the input record's Kafka timestamp
(when the producer appended it) to the moment the batch's records were written. This
splits it in three, per transaction, for the last ``every_s`` seconds:

* ``fetch``: timestamp → the consumer handed the fetched records over (producer linger,
  broker, fetch long-poll, and the main loop being busy before it read the fetch);
* ``queue``: → the micro-batch's processing started (waiting for the batches ahead of
  it: the runner processes one at a time);
* ``work``: → scored (validate, features, terminal fetch, model).

One ``INFO`` line per period, e.g. ``produce→score breakdown (2,000 tx, 40 batches):
fetch p50 3.1 / p99 9.8 ms, queue ...``. It costs a few numpy calls per micro-batch.

>>> t = LatencyBreakdown(every_s=0.0)
>>> t.fetched(10.0)
>>> t.add(np.array([9_990.0, 9_995.0]), started=10.001, scored=10.004)
>>> t.summary()["work"]["p50"], t.summary()["fetch"]["p99"]
(3.0, 9.95)
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PARTS = ("fetch", "queue", "work", "total")


class LatencyBreakdown:
    """Collects per-transaction latency parts; :meth:`maybe_log` writes their percentiles."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._fetched_at: float | None = None
        self._parts: dict[str, list[np.ndarray]] = {p: [] for p in PARTS}
        self._batches = 0
        self._since = time.monotonic()

    def fetched(self, now: float | None = None) -> None:
        """The consumer handed over a fetch (epoch seconds; default now)."""
        self._fetched_at = time.time() if now is None else now

    def add(self, stamps_ms: np.ndarray, *, started: float, scored: float) -> None:
        """A micro-batch: its records' Kafka timestamps (ms), when processing began and
        when it was scored (epoch seconds). Records without a timestamp are left out."""
        stamps = stamps_ms[stamps_ms > 0] / 1000.0
        if not stamps.size:
            return
        fetched = self._fetched_at if self._fetched_at is not None else started
        fetched = min(fetched, started)
        self._parts["fetch"].append(np.maximum(fetched - stamps, 0.0))
        self._parts["queue"].append(np.full(stamps.size, started - fetched))
        self._parts["work"].append(np.full(stamps.size, scored - started))
        self._parts["total"].append(scored - stamps)
        self._batches += 1

    def summary(self) -> dict[str, Any]:
        """Percentiles (ms) of each part since the last :meth:`reset`."""
        out: dict[str, Any] = {"batches": self._batches}
        for part, chunks in self._parts.items():
            if not chunks:
                return {"batches": 0}
            ms = np.concatenate(chunks) * 1000.0
            out["n"] = int(ms.size)
            out[part] = {
                q: round(float(np.percentile(ms, v)), 2)
                for q, v in (("p50", 50), ("p99", 99), ("max", 100))
            }
        return out

    def reset(self) -> None:
        """Start a new period."""
        self._parts = {p: [] for p in PARTS}
        self._batches = 0
        self._since = time.monotonic()

    def maybe_log(self) -> None:
        """Log the summary and start a new period once ``every_s`` have passed."""
        if time.monotonic() - self._since < self.every_s:
            return
        s = self.summary()
        if s["batches"]:
            parts = ", ".join(
                f"{p} p50 {s[p]['p50']} / p99 {s[p]['p99']} / max {s[p]['max']} ms" for p in PARTS
            )
            log.info("produce→score breakdown (%d tx, %d batches): %s", s["n"], s["batches"], parts)
        self.reset()
