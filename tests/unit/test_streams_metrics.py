"""streams/metrics.py: one registry, Prometheus naming, series from the start, batch cost.

(Named test_streams_metrics.py: tests/unit/test_metrics.py tests models/evaluation/metrics.py.)
"""

from __future__ import annotations

import math

import numpy as np
import prometheus_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from streams import metrics as metrics_module
from streams.metrics import (
    ADAPTATION_REJECTION_REASONS,
    CASE_LABELS,
    DECISIONS,
    DLQ_REASONS,
    DRIFT_DETECTORS,
    LATENCY_BUCKETS,
    METRICS,
    MODEL_UPDATE_REJECTION_REASONS,
    REGISTRY,
    BatchHistogram,
    RiskstreamMetrics,
    metric_names,
    metrics_payload,
)
from streams.records.errors import REASONS

# What issues 3, 5 and 6 ask for, by exposed name.
REQUIRED = {
    "riskstream_transactions_consumed_total",
    "riskstream_transactions_scored_total",
    "riskstream_dead_letter_total",
    "riskstream_alerts_total",
    "riskstream_produce_to_score_latency_seconds_bucket",
    "riskstream_batch_size_transactions_bucket",
    "riskstream_model_scoring_seconds_bucket",
    "riskstream_fraud_score_bucket",
    "riskstream_model_info",
    "riskstream_model_loaded_timestamp_seconds",
    "riskstream_adaptation_runs_total",
    "riskstream_adaptation_rejections_total",
    "riskstream_adaptation_duration_seconds_bucket",
    "riskstream_adaptation_validation_average_precision",
    "riskstream_label_to_live_seconds_bucket",
    "riskstream_drift_alarms_total",
    "riskstream_redis_cases",
    "riskstream_consumer_lag_messages",
    "riskstream_prequential_precision",
    "riskstream_prequential_recall",
    "riskstream_prequential_average_precision",
    "riskstream_degraded",
    "riskstream_labels_consumed_total",
    "riskstream_labels_pending",
    "riskstream_model_updates_received_total",
    "riskstream_model_updates_rejected_total",
    "riskstream_worker_info",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
}


@pytest.fixture
def m() -> RiskstreamMetrics:
    return RiskstreamMetrics(CollectorRegistry())


def families(m: RiskstreamMetrics) -> dict[str, prometheus_client.Metric]:
    return {f.name: f for f in m.registry.collect()}


def value(m: RiskstreamMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_every_required_metric_is_in_the_riskstream_registry(m: RiskstreamMetrics) -> None:
    assert REQUIRED <= metric_names(m.registry)
    assert REQUIRED <= metric_names(REGISTRY)


def test_riskstream_metrics_stay_out_of_the_global_default_registry() -> None:
    assert METRICS.registry is REGISTRY is not prometheus_client.REGISTRY
    default = {f.name for f in prometheus_client.REGISTRY.collect()}
    assert not {n for n in default if n.startswith("riskstream")}


def test_names_carry_prefix_help_and_units(m: RiskstreamMetrics) -> None:
    own = [f for f in m.registry.collect() if not f.name.startswith(("process_", "python_"))]
    assert len(own) >= 30
    for family in own:
        assert family.name.startswith("riskstream_"), family.name
        assert family.documentation.strip(), f"{family.name} has no help text"
        if family.type == "histogram" and family.name != "riskstream_fraud_score":
            assert family.name.endswith(("_seconds", "_transactions")), family.name
        if "timestamp" in family.name:
            assert family.name.endswith("_timestamp_seconds")
    exposed = {s.name for f in m.registry.collect() for s in f.samples}
    counters = [f.name for f in own if f.type == "counter"]
    assert counters and all(f"{c}_total" in metric_names(m.registry) for c in counters)
    assert not {n for n in exposed if n.endswith("_created")}, "created series are disabled"


def test_label_children_exist_at_zero_before_any_event(m: RiskstreamMetrics) -> None:
    assert set(DLQ_REASONS) == set(REASONS) and len(DLQ_REASONS) >= 10
    for reason in DLQ_REASONS:
        assert value(m, "riskstream_dead_letter_total", reason=reason) == 0
    for decision in DECISIONS:
        assert value(m, "riskstream_alerts_total", decision=decision) == 0
        assert value(m, "riskstream_decisions_total", decision=decision) == 0
    for detector in DRIFT_DETECTORS:
        assert value(m, "riskstream_drift_alarms_total", detector=detector) == 0
    for reason in MODEL_UPDATE_REJECTION_REASONS:
        assert value(m, "riskstream_model_updates_rejected_total", reason=reason) == 0
    for reason in ADAPTATION_REJECTION_REASONS:
        assert value(m, "riskstream_adaptation_rejections_total", reason=reason) == 0
    for label in CASE_LABELS:
        assert value(m, "riskstream_redis_cases", label=label) == 0
    assert value(m, "riskstream_degraded", component="redis") == 0
    assert value(m, "riskstream_model_info", version="none") == 1
    # "Not known yet" is NaN, not a misleading 0.
    assert math.isnan(value(m, "riskstream_prequential_recall") or 0.0)
    assert math.isnan(value(m, "riskstream_model_loaded_timestamp_seconds") or 0.0)
    # Every family but the per-partition lag (set once partitions are assigned) has a sample.
    empty = {f.name for f in m.registry.collect() if not f.samples}
    assert empty == {"riskstream_consumer_lag_messages"}


def test_a_scored_batch_updates_counters_and_histograms_once(m: RiskstreamMetrics) -> None:
    scores = np.array([0.01, 0.3, 0.55, 0.97])
    m.record_consumed(5)
    m.record_scored_batch(
        scores,
        latencies_s=[0.0009, 0.004, 0.02, 6.0],
        scoring_seconds=0.0004,
        decisions={"allow": 2, "review": 1, "block": 1},
        alerts={"block": 1},
    )
    m.record_dead_letter("not_json")
    assert value(m, "riskstream_transactions_consumed_total") == 5
    assert value(m, "riskstream_transactions_scored_total") == 4
    assert value(m, "riskstream_dead_letter_total", reason="not_json") == 1
    assert value(m, "riskstream_decisions_total", decision="allow") == 2
    assert value(m, "riskstream_alerts_total", decision="block") == 1
    assert value(m, "riskstream_batch_size_transactions_count") == 1
    assert value(m, "riskstream_batch_size_transactions_sum") == 5
    latency = "riskstream_produce_to_score_latency_seconds_bucket"
    assert value(m, latency, le="0.001") == 1
    assert value(m, latency, le="0.025") == 3
    assert value(m, latency, le="5.0") == 3
    assert value(m, latency, le="+Inf") == 4
    assert value(m, "riskstream_fraud_score_bucket", le="0.05") == 1
    assert value(m, "riskstream_fraud_score_bucket", le="0.6") == 3
    assert value(m, "riskstream_fraud_score_count") == 4
    assert value(m, "riskstream_fraud_score_sum") == pytest.approx(scores.sum())


def test_latency_buckets_are_fine_from_1ms_to_5s_and_hit_the_budget() -> None:
    assert LATENCY_BUCKETS[0] == 0.001 and LATENCY_BUCKETS[-1] == 5.0
    assert 0.025 in LATENCY_BUCKETS  # the p99 budget is a bucket edge: no interpolation there
    assert sum(b <= 0.05 for b in LATENCY_BUCKETS) >= 12
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-1.0, max_value=10.0, allow_nan=False, width=64),
        min_size=0,
        max_size=200,
    )
)
def test_batch_histogram_matches_prometheus_client_histogram(values: list[float]) -> None:
    registry = CollectorRegistry()
    reference = Histogram("ref_seconds", "Reference.", buckets=LATENCY_BUCKETS, registry=registry)
    ours = BatchHistogram("ours_seconds", "Ours.", LATENCY_BUCKETS)
    registry.register(ours)
    for v in values:
        reference.observe(v)
    ours.observe_many(values[: len(values) // 2])
    ours.observe_many(np.array(values[len(values) // 2 :]))

    def samples(prefix: str) -> dict[tuple[str, str], float]:
        return {
            (s.name.removeprefix(prefix), s.labels.get("le", "")): s.value
            for f in registry.collect()
            if f.name == prefix
            for s in f.samples
        }

    ref, got = samples("ref_seconds"), samples("ours_seconds")
    assert ref.keys() == got.keys()
    for key, expected in ref.items():
        assert got[key] == pytest.approx(expected, abs=1e-9), key


def test_batch_histogram_ignores_nan() -> None:
    h = BatchHistogram("h_seconds", "H.", (1.0,))
    h.observe_many([float("nan"), 0.5, float("nan")])
    assert h.snapshot() == ([1, 1], 0.5)


def test_consumer_lag_follows_the_assignment(m: RiskstreamMetrics) -> None:
    lag = "riskstream_consumer_lag_messages"
    m.set_consumer_lag({("transactions", 0): 10, ("transactions", 1): 4})
    assert value(m, lag, topic="transactions", partition="1") == 4
    m.set_consumer_lag({("transactions", 0): 7})  # partition 1 revoked by a rebalance
    assert value(m, lag, topic="transactions", partition="0") == 7
    assert value(m, lag, topic="transactions", partition="1") is None


def test_model_adaptation_and_label_events(m: RiskstreamMetrics) -> None:
    m.record_model_loaded("v7", loaded_at=1_700_000_000.0)
    assert value(m, "riskstream_model_info", version="v7") == 1
    assert value(m, "riskstream_model_info", version="none") is None
    assert value(m, "riskstream_model_loaded_timestamp_seconds") == 1_700_000_000.0
    m.record_model_update()
    m.record_model_update(rejected_reason="bad_signature")
    assert value(m, "riskstream_model_updates_received_total") == 2
    assert value(m, "riskstream_model_updates_rejected_total", reason="bad_signature") == 1
    m.record_adaptation("new_cases", 0.3, candidate_ap=0.7, current_ap=0.6)
    m.record_adaptation("timer", 0.2, candidate_ap=0.5, current_ap=0.7, rejected_reason="ap_drop")
    assert value(m, "riskstream_adaptation_runs_total", trigger="new_cases") == 1
    assert value(m, "riskstream_adaptation_published_total") == 1
    assert value(m, "riskstream_adaptation_rejections_total", reason="ap_drop") == 1
    assert value(m, "riskstream_adaptation_duration_seconds_count") == 2
    assert value(m, "riskstream_adaptation_validation_average_precision", model="candidate") == 0.5
    m.record_label_to_live(0.9)
    assert value(m, "riskstream_label_to_live_seconds_bucket", le="1.0") == 1
    m.record_drift("prequential_error")
    assert value(m, "riskstream_drift_alarms_total", detector="prequential_error") == 1
    m.record_labels(12, pending=3)
    m.set_case_counts({"fraud": 11, "legit": 90})
    m.set_prequential(0.8, 0.5, 0.66, window_labels=250)
    m.set_degraded("redis", True)
    assert value(m, "riskstream_labels_consumed_total") == 12
    assert value(m, "riskstream_labels_pending") == 3
    assert value(m, "riskstream_redis_cases", label="fraud") == 11
    assert value(m, "riskstream_prequential_precision") == 0.8
    assert value(m, "riskstream_prequential_window_labels") == 250
    assert value(m, "riskstream_degraded", component="redis") == 1


def test_payload_is_valid_exposition_with_process_metrics() -> None:
    text = metrics_payload().decode()
    parsed = {f.name for f in text_string_to_metric_families(text)}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= parsed
    assert "riskstream_produce_to_score_latency_seconds" in parsed
    assert metrics_module.CONTENT_TYPE.startswith("text/plain")


def test_worker_info_names_the_worker(m: RiskstreamMetrics) -> None:
    m.set_worker_info(worker_id="w-1", app_id="riskstream")
    info = next(s for s in families(m)["riskstream_worker"].samples)
    assert info.labels["worker_id"] == "w-1" and info.labels["app_id"] == "riskstream"
    assert info.labels["hostname"] and info.labels["version"]


def _emitted_reason_codes() -> set[str]:
    """Reason codes written as literals where streams/ raises a RecordError (or picks one)."""
    import ast
    from pathlib import Path

    def literals(node: ast.expr) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.IfExp):  # reason = "a" if ... else "b"
            return literals(node.body) | literals(node.orelse)
        return set()

    root = Path(metrics_module.__file__).resolve().parent
    codes: set[str] = set()
    for path in root.rglob("*.py"):
        if path == root / "records" / "errors.py":  # the table itself, not an emitter
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name == "RecordError":
                    codes |= literals(node.args[0])
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "reason" for t in node.targets
            ):
                codes |= literals(node.value)
    return codes


def test_dlq_reason_children_are_exactly_the_codes_the_records_emit() -> None:
    emitted = _emitted_reason_codes()
    assert emitted == set(REASONS), emitted ^ set(REASONS)
    assert DLQ_REASONS == tuple(REASONS)  # same codes, in the table's order
    m = RiskstreamMetrics(CollectorRegistry(), process=False)
    family = next(f for f in m.registry.collect() if f.name == "riskstream_dead_letter")
    children = {s.labels["reason"] for s in family.samples if s.name.endswith("_total")}
    assert children == set(REASONS)


def test_the_worker_serves_the_one_content_type_prometheus_client_uses() -> None:
    from prometheus_client.exposition import choose_encoder

    from streams import app as app_module

    assert app_module.METRICS_CONTENT_TYPE is metrics_module.CONTENT_TYPE
    # What prometheus_client answers for generate_latest when nothing is negotiated.
    encoder, content_type = choose_encoder("")
    assert encoder is prometheus_client.generate_latest
    assert content_type == metrics_module.CONTENT_TYPE
