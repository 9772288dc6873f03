"""Online quality monitors: River drift detectors and the prequential window.

* :class:`DriftMonitor` feeds two River detectors (ADWIN by default, or PageHinkley):
  ``score_distribution`` watches the mean fraud score of each interval, read from the
  worker's score histogram (no cost on the scoring path), and ``prequential_error``
  watches ``|label - score|`` of each labelled transaction, the score being the one the
  transaction got when it was scored (test-then-train order, hence "prequential").
  An alarm is counted in ``riskstream_drift_alarms_total`` and handed to ``on_alarm``,
  which asks the adaptation agent to run.
* :class:`PrequentialWindow` keeps the last ``size`` labelled scores and exports
  precision and recall at the alert threshold and average precision.

Examples
--------
>>> from prometheus_client import CollectorRegistry
>>> from streams.metrics import RiskstreamMetrics
>>> alarms = []
>>> monitor = DriftMonitor(RiskstreamMetrics(CollectorRegistry(), process=False),
...                        on_alarm=alarms.append)
>>> flags = [monitor.learn_one(0, 0.02) for _ in range(300)]
>>> flags += [monitor.learn_one(1, 0.05) for _ in range(300)]
>>> any(flags), alarms[:1]
(True, ['prequential_error'])
>>> window = PrequentialWindow(size=4, threshold=0.5)
>>> for y, p in [(1, 0.9), (0, 0.7), (1, 0.2), (0, 0.1)]:
...     window.learn_one(y, p)
>>> window.report()
{'precision': 0.5, 'recall': 0.5, 'average_precision': 0.8333333333333333, 'window_labels': 4}
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from river import drift

from models.evaluation.metrics import average_precision
from streams.metrics import METRICS, RiskstreamMetrics

log = logging.getLogger(__name__)
DetectorName = Literal["adwin", "page_hinkley"]


def make_detector(kind: DetectorName = "adwin") -> Any:
    """A fresh River drift detector.

    >>> type(make_detector("page_hinkley")).__name__
    'PageHinkley'
    """
    if kind == "adwin":
        return drift.ADWIN(delta=0.002)
    if kind == "page_hinkley":
        return drift.PageHinkley()
    raise ValueError(f"unknown drift detector {kind!r}")


class DriftMonitor:
    """Drift of the score distribution and of the prequential error.

    Parameters
    ----------
    metrics
        Where alarms are counted.
    on_alarm
        Called with the detector's name on every alarm (errors are logged, not raised).
    kind
        ``"adwin"`` or ``"page_hinkley"``.
    min_interval_scores
        An interval with fewer scores than this is merged into the next one.
    """

    def __init__(
        self,
        metrics: RiskstreamMetrics = METRICS,
        *,
        on_alarm: Callable[[str], Any] | None = None,
        kind: DetectorName = "adwin",
        min_interval_scores: int = 50,
    ) -> None:
        self.metrics = metrics
        self.on_alarm = on_alarm
        self.kind = kind
        self.min_interval_scores = min_interval_scores
        self.score_detector = make_detector(kind)
        self.error_detector = make_detector(kind)
        self.alarms = {"score_distribution": 0, "prequential_error": 0}
        self._seen: tuple[float, float] | None = None  # (count, sum) of the score histogram

    def update(self, mean_score: float) -> bool:
        """Feed one interval's mean score; True on a drift alarm."""
        self.score_detector.update(float(mean_score))
        return self._check(self.score_detector, "score_distribution")

    def poll_scores(self) -> bool:
        """Feed the scores this worker produced since the last poll (one interval)."""
        cumulative, total = self.metrics.score.snapshot()
        count = float(cumulative[-1]) if cumulative else 0.0
        if self._seen is None:
            self._seen = (count, total)
            return False
        new = count - self._seen[0]
        if new < self.min_interval_scores:
            return False
        mean = (total - self._seen[1]) / new
        self._seen = (count, total)
        return self.update(mean)

    def learn_one(self, y: int, score: float) -> bool:
        """Feed one labelled transaction's prequential error; True on a drift alarm."""
        if not math.isfinite(score):
            return False
        self.error_detector.update(abs(int(y) - float(score)))
        return self._check(self.error_detector, "prequential_error")

    def _check(self, detector: Any, name: str) -> bool:
        if not detector.drift_detected:
            return False
        self.alarms[name] += 1
        self.metrics.record_drift(name)
        log.warning("drift alarm from %s (%s)", name, self.kind)
        if self.on_alarm is not None:
            try:
                self.on_alarm(name)
            except Exception:
                log.exception("drift alarm handler failed")
        return True


class PrequentialWindow:
    """Precision/recall at ``threshold`` and AP over the last ``size`` labelled scores."""

    def __init__(self, size: int = 1000, threshold: float = 0.8) -> None:
        self.threshold = threshold
        self._items: deque[tuple[int, float]] = deque(maxlen=size)

    def learn_one(self, y: int, score: float) -> None:
        """Add one labelled transaction with the score it had."""
        if math.isfinite(score):
            self._items.append((int(y), float(score)))

    def __len__(self) -> int:
        return len(self._items)

    def report(self) -> dict[str, float]:
        """``precision``, ``recall``, ``average_precision`` (NaN when undefined) and size."""
        nan = float("nan")
        out = {"precision": nan, "recall": nan, "average_precision": nan}
        if self._items:
            y = np.fromiter((i[0] for i in self._items), dtype=np.int64)
            p = np.fromiter((i[1] for i in self._items), dtype=np.float64)
            flagged = p >= self.threshold
            if flagged.any():
                out["precision"] = float(y[flagged].mean())
            if y.any():
                out["recall"] = float(flagged[y == 1].mean())
                out["average_precision"] = float(average_precision(y, p))
        return {**out, "window_labels": len(self._items)}

    def export(self, metrics: RiskstreamMetrics = METRICS) -> None:
        """Set the ``riskstream_prequential_*`` gauges."""
        r = self.report()
        metrics.set_prequential(
            r["precision"], r["recall"], r["average_precision"], int(r["window_labels"])
        )
