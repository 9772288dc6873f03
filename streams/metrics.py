"""Every Prometheus metric riskstream exports, in one registry of its own.

Agents record through :data:`METRICS`, the one :class:`RiskstreamMetrics` of the process;
the worker's web view serves :func:`metrics_payload` with :data:`CONTENT_TYPE` at
``/metrics``. Metric cost is paid per micro-batch, never per message: counters take
``inc(n)`` once per batch and the per-message histograms (latency, score) take a whole
array in :meth:`BatchHistogram.observe_many` (one ``numpy.searchsorted`` per batch).

Label children for every known reason, decision, detector and component exist at 0 from
the start, so dashboards and alert rules see their series before the first event.

Examples
--------
>>> m = RiskstreamMetrics(CollectorRegistry())
>>> m.record_consumed(3)
>>> m.record_scored_batch(scores=[0.1, 0.6, 0.95], latencies_s=[0.002, 0.004, 0.03],
...                       scoring_seconds=0.001, decisions={"allow": 1, "review": 1, "block": 1},
...                       alerts={"block": 1})
>>> m.registry.get_sample_value("riskstream_transactions_scored_total")
3.0
>>> m.registry.get_sample_value("riskstream_produce_to_score_latency_seconds_bucket",
...                             {"le": "0.005"})
2.0
>>> b"riskstream_alerts_total" in metrics_payload(m.registry)
True
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import metadata

import numpy as np
import numpy.typing as npt
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.records.errors import REASONS

# `_created` series double the exposition for nothing the dashboards or rules use.
disable_created_metrics()

# What :func:`metrics_payload` writes (``generate_latest`` with legacy names): the classic
# text format, 0.0.4. prometheus_client itself answers with this type unless a scraper
# negotiates 1.0.0 (UTF-8 names); every riskstream name is a legacy one, so 0.0.4 suits
# Prometheus 2.x and 3.x alike. The worker's /metrics page serves this constant.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
PREFIX = "riskstream_"

# Known label values; each gets a child at 0 at start. Other values still work.
DECISIONS = ("allow", "review", "block")
# The closed set of dead-letter reason codes of the wire records (bounded label values).
DLQ_REASONS = tuple(REASONS)
DRIFT_DETECTORS = ("score_distribution", "prequential_error")
CASE_LABELS = ("fraud", "legit")
DEGRADED_COMPONENTS = ("redis", "table_recovery")
ADAPTATION_TRIGGERS = ("new_cases", "timer", "drift", "manual")
ADAPTATION_REJECTION_REASONS = (
    "ap_drop",
    "alert_rate",
    "too_few_cases",
    "invalid_weights",
    "error",
)
MODEL_UPDATE_REJECTION_REASONS = (
    "bad_signature",
    "bad_hash",
    "truncated",
    "non_finite",
    "wrong_shape",
    "missing_weights",
    "stale_version",
    "error",
)

# Produce→score latency: fine steps around the 25 ms p99 budget (ANCHORS.md), up to 5 s.
LATENCY_BUCKETS = (
    0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02,
    0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 3.0, 5.0,
)  # fmt: skip
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 0.05 .. 1.0
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
SCORING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
ADAPTATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
LABEL_TO_LIVE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class BatchHistogram(Collector):
    """An unlabelled histogram that takes a whole batch of observations at once.

    ``prometheus_client.Histogram.observe`` costs a lock and a bucket scan per value;
    this takes one vectorized bucket count per batch and exposes the same
    ``_bucket``/``_sum``/``_count`` series.

    >>> h = BatchHistogram("demo_seconds", "Demo.", buckets=(0.1, 1.0))
    >>> h.observe_many([0.0625, 0.1, 0.5, 7.0]); h.observe(0.25)
    >>> h.snapshot()
    ([2, 4, 5], 7.9125)
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        bounds = sorted(float(b) for b in buckets if not math.isinf(float(b)))
        self.name = name
        self.documentation = documentation
        self._bounds = np.array([*bounds, math.inf])
        self._labels = [_le(b) for b in self._bounds]
        self._counts = np.zeros(len(self._bounds), dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.observe_many((value,))

    def observe_many(self, values: npt.ArrayLike) -> None:
        """Record every value of ``values`` (NaN values are ignored)."""
        arr = np.asarray(values, dtype=np.float64).ravel()
        arr = arr[~np.isnan(arr)]
        if arr.size == 0:
            return
        # First bucket whose upper bound is >= value: Prometheus' `le` semantics.
        index = np.searchsorted(self._bounds, arr, side="left")
        counts = np.bincount(index, minlength=len(self._bounds))
        total = float(arr.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def snapshot(self) -> tuple[list[int], float]:
        """Cumulative bucket counts (last is the total count) and the sum."""
        with self._lock:
            return np.cumsum(self._counts).tolist(), self._sum

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        cumulative, total = self.snapshot()
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=[(le, float(n)) for le, n in zip(self._labels, cumulative, strict=True)],
            sum_value=total,
        )


def _le(bound: float) -> str:
    """Bucket label as prometheus_client writes it (``0.005``, ``1.0``, ``+Inf``)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _package_version() -> str:
    try:
        return metadata.version("riskstream")
    except metadata.PackageNotFoundError:
        return "unknown"


class RiskstreamMetrics:
    """The typed set of riskstream metrics, registered into ``registry``.

    Attributes are the metric objects themselves (``METRICS.scored.inc(n)`` works); the
    ``record_*``/``set_*`` methods bundle what one event of the pipeline updates.
    ``process=False`` leaves out the process/platform/GC collectors (for tests that
    build many instances).
    """

    def __init__(self, registry: CollectorRegistry, *, process: bool = True) -> None:
        self.registry = registry
        if process:
            ProcessCollector(registry=registry)  # process_cpu_seconds_total, ..._bytes
            PlatformCollector(registry=registry)  # python_info
            GCCollector(registry=registry)  # python_gc_*
        c, g, h, bh = self._counter, self._gauge, self._histogram, self._batch_histogram

        # --- transactions ---------------------------------------------------------
        self.worker_info = Info("riskstream_worker", "This worker process.", registry=registry)
        self.consumed = c("transactions_consumed_total", "Messages taken from `transactions`.")
        self.scored = c("transactions_scored_total", "Transactions scored (one record each).")
        self.dead_lettered = c("dead_letter_total", "Messages sent to a DLQ, by reason.", "reason")
        self.decisions = c("decisions_total", "Score records by decision.", "decision")
        self.alerts = c("alerts_total", "Alert records emitted, by decision.", "decision")
        self.latency = bh(
            "produce_to_score_latency_seconds",
            "From the transaction's Kafka timestamp to its score record.",
            LATENCY_BUCKETS,
        )
        self.score = bh("fraud_score", "Distribution of fraud scores (0..1).", SCORE_BUCKETS)
        self.batch_size = h(
            "batch_size_transactions", "Messages per micro-batch taken.", BATCH_SIZE_BUCKETS
        )
        self.scoring_time = h(
            "model_scoring_seconds", "Model time to score one micro-batch.", SCORING_BUCKETS
        )
        self.consumer_lag = g(
            "consumer_lag_messages",
            "Messages behind the high-water mark, per assigned partition.",
            "topic",
            "partition",
        )
        self.degraded = g(
            "degraded", "1 while a dependency is down and the worker runs degraded.", "component"
        )
        self.recovery_restarts = c(
            "table_recovery_restarts_total",
            "Card-state restores restarted because they stopped making progress.",
        )

        # --- model ----------------------------------------------------------------
        self.model_info = Info("riskstream_model", "The model version in use.", registry=registry)
        self.model_loaded = g(
            "model_loaded_timestamp_seconds", "UNIX time the model in use was loaded (NaN: none)."
        )
        self.model_updates_received = c(
            "model_updates_received_total", "Records read from the model-updates topic."
        )
        self.model_updates_rejected = c(
            "model_updates_rejected_total", "Model updates refused here, by reason.", "reason"
        )

        # --- labels, adaptation, drift --------------------------------------------
        self.labels_consumed = c("labels_consumed_total", "Label records consumed.")
        self.labels_pending = g("labels_pending", "Labels waiting for their transaction.")
        self.cases = g("redis_cases", "Labelled cases in the Redis store, per class.", "label")
        self.adaptation_runs = c("adaptation_runs_total", "Adaptation runs, by trigger.", "trigger")
        self.adaptation_published = c(
            "adaptation_published_total", "Adaptation runs whose candidate was published."
        )
        self.adaptation_rejections = c(
            "adaptation_rejections_total", "Adaptation candidates not published.", "reason"
        )
        self.adaptation_duration = h(
            "adaptation_duration_seconds", "Wall time of one adaptation run.", ADAPTATION_BUCKETS
        )
        self.validation_ap = g(
            "adaptation_validation_average_precision",
            "Held-out average precision at the last adaptation (candidate vs current).",
            "model",
        )
        self.label_to_live = bh(
            "label_to_live_seconds",
            "From the label that triggered an adaptation to its weights live here.",
            LABEL_TO_LIVE_BUCKETS,
        )
        self.drift_alarms = c("drift_alarms_total", "Drift detector alarms.", "detector")
        # Separate gauges, not one with a `metric` label: averaging them means nothing.
        window = "over the sliding window of labelled transactions (NaN: too few labels)."
        self.prequential_precision = g("prequential_precision", f"Precision {window}")
        self.prequential_recall = g("prequential_recall", f"Recall {window}")
        self.prequential_ap = g("prequential_average_precision", f"Average precision {window}")
        self.prequential_window = g(
            "prequential_window_labels", "Labelled transactions in the prequential window."
        )
        self._precreate()

    # Constructors that prefix the name and bind the registry.
    def _counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(PREFIX + name, doc, labels, registry=self.registry)

    def _gauge(self, name: str, doc: str, *labels: str) -> Gauge:
        return Gauge(PREFIX + name, doc, labels, registry=self.registry)

    def _histogram(self, name: str, doc: str, buckets: Sequence[float]) -> Histogram:
        return Histogram(PREFIX + name, doc, buckets=buckets, registry=self.registry)

    def _batch_histogram(self, name: str, doc: str, buckets: Sequence[float]) -> BatchHistogram:
        hist = BatchHistogram(PREFIX + name, doc, buckets)
        self.registry.register(hist)
        return hist

    def _precreate(self) -> None:
        # Series exist at 0 (or NaN for "not known yet") before the first event.
        self._dlq = {r: self.dead_lettered.labels(r) for r in DLQ_REASONS}
        self._decisions = {d: self.decisions.labels(d) for d in DECISIONS}
        self._alerts = {d: self.alerts.labels(d) for d in DECISIONS}
        for values, metric in (
            (DEGRADED_COMPONENTS, self.degraded),
            (CASE_LABELS, self.cases),
            (ADAPTATION_TRIGGERS, self.adaptation_runs),
            (ADAPTATION_REJECTION_REASONS, self.adaptation_rejections),
            (MODEL_UPDATE_REJECTION_REASONS, self.model_updates_rejected),
            (DRIFT_DETECTORS, self.drift_alarms),
        ):
            for value in values:
                metric.labels(value)
        for name in ("candidate", "current"):
            self.validation_ap.labels(name).set(math.nan)
        for gauge in (self.prequential_precision, self.prequential_recall, self.prequential_ap):
            gauge.set(math.nan)
        self.model_loaded.set(math.nan)
        self.model_info.info({"version": "none"})
        self.set_worker_info()
        self._lag_keys: set[tuple[str, str]] = set()

    # --- recording API (one call per batch / event) -------------------------------
    def set_worker_info(self, worker_id: str = "", app_id: str = "", score_path: str = "") -> None:
        """Describe this worker (hostname, pid, package version, ids, and whether it
        scores with the compiled kernels: ``score_path`` ``native`` or ``python``)."""
        self.worker_info.info(
            {
                "worker_id": worker_id or f"{socket.gethostname()}-{os.getpid()}",
                "app_id": app_id,
                "hostname": socket.gethostname(),
                "version": _package_version(),
                "score_path": score_path,
            }
        )

    def record_consumed(self, n: int) -> None:
        """One micro-batch of ``n`` messages was taken from the transactions topic."""
        self.consumed.inc(n)
        self.batch_size.observe(n)

    def record_scored_batch(
        self,
        scores: npt.ArrayLike,
        latencies_s: npt.ArrayLike,
        scoring_seconds: float,
        decisions: Mapping[str, int] | None = None,
        alerts: Mapping[str, int] | None = None,
    ) -> None:
        """A micro-batch was scored and its records emitted."""
        arr = np.asarray(scores, dtype=np.float64)
        self.scored.inc(arr.size)
        self.score.observe_many(arr)
        self.latency.observe_many(latencies_s)
        self.scoring_time.observe(scoring_seconds)
        for decision, n in (decisions or {}).items():
            if n:
                (self._decisions.get(decision) or self.decisions.labels(decision)).inc(n)
        for decision, n in (alerts or {}).items():
            if n:
                (self._alerts.get(decision) or self.alerts.labels(decision)).inc(n)

    def record_dead_letter(self, reason: str, n: int = 1) -> None:
        """``n`` messages went to the DLQ with reason code ``reason``."""
        (self._dlq.get(reason) or self.dead_lettered.labels(reason)).inc(n)

    def set_consumer_lag(self, lags: Mapping[tuple[str, int], float]) -> None:
        """Replace the lag of every partition this worker owns (drops revoked ones).

        The worker's ``consumer-lag`` timer (:mod:`streams.lag`) calls this every 2 s.
        """
        keys = {(topic, str(partition)) for topic, partition in lags}
        for gone in self._lag_keys - keys:
            self.consumer_lag.remove(*gone)
        for (topic, partition), lag in lags.items():
            self.consumer_lag.labels(topic, str(partition)).set(lag)
        self._lag_keys = keys

    def set_degraded(self, component: str, degraded: bool) -> None:
        """Mark ``component`` (e.g. ``redis``) as unavailable or back."""
        self.degraded.labels(component).set(1.0 if degraded else 0.0)

    def record_model_loaded(self, version: str, loaded_at: float | None = None) -> None:
        """This worker now scores with ``version``."""
        self.model_info.info({"version": version})
        self.model_loaded.set(time.time() if loaded_at is None else loaded_at)

    def record_model_update(self, rejected_reason: str | None = None) -> None:
        """A model-updates record was read; ``rejected_reason`` when it was refused."""
        self.model_updates_received.inc()
        if rejected_reason is not None:
            self.model_updates_rejected.labels(rejected_reason).inc()

    def record_labels(self, n: int, pending: int | None = None) -> None:
        """``n`` label records consumed; ``pending`` labels still wait for their tx."""
        self.labels_consumed.inc(n)
        if pending is not None:
            self.labels_pending.set(pending)

    def set_case_counts(self, counts: Mapping[str, int]) -> None:
        """Cases in the Redis store per class (``{"fraud": n, "legit": m}``)."""
        for label, n in counts.items():
            self.cases.labels(label).set(n)

    def record_adaptation(
        self,
        trigger: str,
        duration_s: float,
        candidate_ap: float,
        current_ap: float,
        rejected_reason: str | None = None,
    ) -> None:
        """One adaptation run finished: published, or rejected for ``rejected_reason``."""
        self.adaptation_runs.labels(trigger).inc()
        self.adaptation_duration.observe(duration_s)
        self.validation_ap.labels("candidate").set(candidate_ap)
        self.validation_ap.labels("current").set(current_ap)
        if rejected_reason is None:
            self.adaptation_published.inc()
        else:
            self.adaptation_rejections.labels(rejected_reason).inc()

    def record_label_to_live(self, seconds: float) -> None:
        """New weights went live here ``seconds`` after the label that triggered them."""
        self.label_to_live.observe(seconds)

    def record_drift(self, detector: str) -> None:
        """Detector ``detector`` raised an alarm."""
        self.drift_alarms.labels(detector).inc()

    def set_prequential(
        self, precision: float, recall: float, average_precision: float, window_labels: int
    ) -> None:
        """Quality over the sliding window of labelled transactions."""
        self.prequential_precision.set(precision)
        self.prequential_recall.set(recall)
        self.prequential_ap.set(average_precision)
        self.prequential_window.set(window_labels)


def metrics_payload(registry: CollectorRegistry | None = None) -> bytes:
    """The text exposition of ``registry`` (default: the process registry)."""
    return generate_latest(REGISTRY if registry is None else registry)


def metric_names(registry: CollectorRegistry | None = None) -> set[str]:
    """Every series name the registry can expose, with its type's suffixes.

    Families with no child yet (e.g. consumer lag before partitions are assigned) are
    included, so dashboards and rules can be checked against the full set.

    >>> sorted(n for n in metric_names() if n.startswith("riskstream_fraud_score"))
    ['riskstream_fraud_score_bucket', 'riskstream_fraud_score_count', 'riskstream_fraud_score_sum']
    """
    reg = REGISTRY if registry is None else registry
    suffixes = {
        "counter": ("_total",),
        "info": ("_info",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
    }
    names: set[str] = set()
    for family in reg.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


REGISTRY = CollectorRegistry(auto_describe=True)
METRICS = RiskstreamMetrics(REGISTRY)
