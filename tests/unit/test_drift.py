"""Drift detectors (River) and the prequential window."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streams.drift import DriftMonitor, PrequentialWindow
from streams.metrics import RiskstreamMetrics


def _metrics() -> RiskstreamMetrics:
    return RiskstreamMetrics(CollectorRegistry(), process=False)


@pytest.mark.parametrize("kind", ["adwin", "page_hinkley"])
def test_score_distribution_alarm_on_a_shift_only(kind: str) -> None:
    metrics = _metrics()
    alarms: list[str] = []
    monitor = DriftMonitor(metrics, on_alarm=alarms.append, kind=kind, min_interval_scores=10)
    rng = np.random.default_rng(0)
    monitor.poll_scores()  # the first poll only takes the histogram's starting point
    for interval in range(300):
        level = 0.05 if interval < 150 else 0.6  # a new pattern lifts the scores
        metrics.score.observe_many(np.clip(rng.normal(level, 0.02, size=50), 0, 1))
        monitor.poll_scores()
        if interval == 149:
            assert alarms == []  # no alarm while the stream is stationary
    assert alarms and set(alarms) == {"score_distribution"}
    counted = metrics.registry.get_sample_value(
        "riskstream_drift_alarms_total", {"detector": "score_distribution"}
    )
    assert counted == monitor.alarms["score_distribution"] >= 1


def test_small_intervals_are_merged() -> None:
    metrics = _metrics()
    monitor = DriftMonitor(metrics, min_interval_scores=100)
    fed: list[float] = []
    monitor.update = lambda mean: bool(fed.append(mean))  # type: ignore[method-assign]
    monitor.poll_scores()
    metrics.score.observe_many([0.2] * 60)
    monitor.poll_scores()
    assert fed == []  # 60 scores: too few for an interval
    metrics.score.observe_many([0.8] * 60)
    monitor.poll_scores()
    assert fed == [pytest.approx(0.5)]  # the 120 scores since the start point, as one mean


def test_prequential_error_alarm_when_frauds_start_being_missed() -> None:
    monitor = DriftMonitor(_metrics())
    flags = [monitor.learn_one(0, 0.02) for _ in range(500)]
    assert not any(flags)
    flags = [monitor.learn_one(1, 0.05) for _ in range(200)]
    assert any(flags) and monitor.alarms["prequential_error"] >= 1
    assert monitor.learn_one(1, math.nan) is False  # a missing score is skipped


def test_prequential_window_metrics() -> None:
    window = PrequentialWindow(size=3, threshold=0.5)
    assert math.isnan(window.report()["average_precision"])
    for y, p in [(0, 0.9), (1, 0.8), (1, 0.3), (0, 0.1)]:  # the first one slides out
        window.learn_one(y, p)
    report = window.report()
    assert report["window_labels"] == 3
    assert report["precision"] == 1.0 and report["recall"] == 0.5
    metrics = _metrics()
    window.export(metrics)
    assert metrics.registry.get_sample_value("riskstream_prequential_recall") == 0.5
    assert metrics.registry.get_sample_value("riskstream_prequential_window_labels") == 3
