"""Few-shot adaptation end to end: real Kafka, real Valkey, two ``riskstream worker`` processes.

The story of issue 5, run once per module (``run`` fixture), then checked piece by piece:

1. A matching network is meta-trained on simulated days *before* a card-testing pattern
   (scenario 4, never seen in training) starts; two workers load it.
2. Phase 1 streams those days and the first three days of the new pattern: the workers
   score it with the base model (recall on it is measured per ``model_version``).
3. Analysts label 10 of those card-testing transactions as fraud (``labels`` topic).
4. Phase 2 streams the following days while the adaptation agent (one worker, by Redis
   lock) adapts, validates and publishes a signed version; both workers verify and swap
   it between batches. Label→live is what the workers report.
5. A forged, a truncated, a NaN and a wrong-shape update are published; each worker
   refuses each, and phase 3 (the last transactions) is still scored by the adapted model.

Recall after adaptation counts only transactions scored by the adapted version. The few-
shot goal of issue 4 (recall >= 0.8 at 1 % FPR, or at the alert threshold if its FPR is at
most 1 %) is checked in its own test, on this module's world (simulation seed 11: 0.90 at
1 % FPR with the default ``pattern`` adaptation in session 11, 0.88 with the refresh alone).
Other worlds are not all as kind: ``E2E_SEED=12`` (and so on) runs the same story on
another seed, and the goal test then says how far the adaptation fell short, if it did.
README "Model quality" has seeds 11-16 (0.79-0.91; 5 of 6 meet the goal), and
``bench/probe_fewshot_worlds.py`` replays them offline.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from adaptation_helpers import (
    cleanup,
    labelled_metric,
    make_settings,
    offline_scores,
    publish_bad_updates,
    send_labels,
    simulate_stream,
    train_base_model,
    wait_scored,
    worker_extra_env,
)
from aiokafka import AIOKafkaProducer
from pipeline_helpers import workers

from streams.adaptation import registry_of
from streams.adaptation_report import (
    VersionRecall,
    read_scores,
    recall_by_version,
    wait_for_live,
)
from streams.producer import kafka_client_kwargs, produce_transactions
from streams.redis_conn import connect_redis
from streams.settings import Settings

pytestmark = pytest.mark.integration
N_LABELS = 10
# 1,000 cards: the pattern compromises 3 cards a day (0.3 % of them; the handbook's
# account compromise is 0.06 % a day), and a week of traffic is ~14,000 transactions, the
# reference the pattern head is calibrated on. At 200 cards the new pattern was 1.5 % of
# all cards every day and a week of traffic 2,700 transactions.
N_CARDS = 1000
N_WORKERS = 2
PHASE_3 = 1000  # transactions held back until the bad updates were refused
PHASE_2_RATE = 2000  # tx/s after the labels: the adaptation happens while they stream
GOAL_RECALL = 0.8
SEED = int(os.environ.get("E2E_SEED", "11"))  # the simulated world (see the module doc)


@dataclass
class Run:
    """Everything measured by the scenario."""

    settings: Settings
    base_version: str
    adapted_version: str | None
    before: VersionRecall | None
    after: VersionRecall | None
    label_to_live_s: list[float]
    published_total: float
    rejected: list[dict[str, float]]
    expected_rejections: list[str]
    phase3_versions: set[str]
    workers_alive: bool
    base_offline_gap: float  # share of base-scored transactions whose stream score differs
    # from the same model's offline score (features built offline, no label history)
    timings: dict[str, float] = field(default_factory=dict)
    adapted_notes: dict[str, Any] = field(default_factory=dict)  # how the version was made

    def summary(self) -> dict[str, Any]:
        return {
            "adapted_version": self.adapted_version,
            "before": self.before.as_dict() if self.before else None,
            "after": self.after.as_dict() if self.after else None,
            "label_to_live_s": self.label_to_live_s,
            "rejected": self.rejected,
            "base_offline_gap": self.base_offline_gap,
            "timings_s": self.timings,
            "adapted_notes": self.adapted_notes,
        }


async def _publish_bad(settings: Settings, model_dir: Path) -> list[str]:
    client = connect_redis(settings)
    registry = registry_of(settings, client)
    producer = AIOKafkaProducer(**kafka_client_kwargs(settings))
    await producer.start()

    async def send(topic: str, key: bytes, value: bytes) -> None:
        await producer.send_and_wait(topic, value, key=key)

    try:
        return await publish_bad_updates(registry, model_dir, send)
    finally:
        await producer.stop()
        await client.aclose()


async def _notes(settings: Settings, version: str) -> dict[str, Any]:
    client = connect_redis(settings)
    try:
        return await registry_of(settings, client).notes(version)
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def run(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("adaptation-e2e")
    df, stream = simulate_stream(n_customers=N_CARDS, seed=SEED)
    model_dir = train_base_model(df, stream.start_day, tmp / "model")
    timings = {"train": time.monotonic() - started}
    s = make_settings(kafka_bootstrap, redis_url, tmp / "state", model_dir)
    client = redis.Redis.from_url(redis_url)
    rows = stream.rows
    phase1 = (rows.day < stream.start_day + 3).to_numpy()
    rest = np.flatnonzero(~phase1)
    phase2 = np.zeros(len(rows), dtype=bool)
    phase2[rest[:-PHASE_3]] = True
    phase3 = np.zeros(len(rows), dtype=bool)
    phase3[rest[-PHASE_3:]] = True
    seen_new = stream.new_frauds(phase1)
    # the analysts' 10 cases: spread over the pattern's first three days
    picks = np.linspace(0, len(seen_new) - 1, N_LABELS).round().astype(int)
    labelled = seen_new.tx_id.iloc[picks].tolist()
    try:
        with workers(s, tmp, N_WORKERS, **worker_extra_env()) as procs:
            for w in procs:
                w.wait_ready()
            timings["workers_ready"] = time.monotonic() - started
            # History a week at a time, each scored before the next: the two workers then
            # read complete terminal counts (windows end 8 days back), as in real time.
            sent = 0
            for week in stream.weeks(phase1):
                asyncio.run(produce_transactions(s, stream.records(week)))
                sent += int(week.sum())
                wait_scored(procs, sent)
            timings["phase1_scored"] = time.monotonic() - started

            async def label_then_stream() -> tuple[str | None, dict[str, Any], float]:
                labels_sent = await send_labels(s, labelled)
                # a steady stream, so that batches keep coming while the adaptation runs
                producing = asyncio.create_task(
                    produce_transactions(s, stream.records(phase2), rate=PHASE_2_RATE)
                )
                version, live = await wait_for_live(s, N_WORKERS, other_than="base", timeout_s=30.0)
                await producing
                return version, live, labels_sent

            adapted, live, labels_sent = asyncio.run(label_then_stream())
            if live:
                timings["label_to_last_live"] = (
                    max(i["live_at"] for i in live.values()) - labels_sent
                )
            wait_scored(procs, int(phase1.sum() + phase2.sum()))
            timings["phase2_scored"] = time.monotonic() - started
            expected = asyncio.run(_publish_bad(s, model_dir))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                rejected = [
                    labelled_metric(w, "riskstream_model_updates_rejected_total") for w in procs
                ]
                if all(all(r.get(k, 0) >= 1 for k in expected) for r in rejected):
                    break
                time.sleep(0.2)
            asyncio.run(produce_transactions(s, stream.records(phase3)))
            wait_scored(procs, len(rows))
            published = sum(w.metric("riskstream_adaptation_published_total") for w in procs)
            alive = all(w.alive() for w in procs)
        scores = asyncio.run(read_scores(s, idle_s=1.0))
        timings["total"] = time.monotonic() - started
        new_ids = set(stream.new_frauds().tx_id) - set(labelled)
        legit_ids = set(rows.tx_id[rows.is_fraud == 0])
        offline = dict(zip(rows.tx_id, offline_scores(df, model_dir), strict=True))
        gaps = [abs(r.score - offline[t]) for t, r in scores.items() if r.model_version == "base"]
        per_version = recall_by_version(scores, new_ids, legit_ids, threshold=s.alert_threshold)
        result = Run(
            settings=s,
            base_version="base",
            adapted_version=adapted,
            before=per_version.get("base"),
            after=per_version.get(adapted) if adapted else None,
            label_to_live_s=sorted(
                float(i.get("label_to_live_s", math.nan)) for i in live.values()
            ),
            published_total=published,
            rejected=rejected,
            expected_rejections=expected,
            phase3_versions={scores[t].model_version for t in rows.tx_id[phase3] if t in scores},
            workers_alive=alive,
            base_offline_gap=float(np.mean(np.asarray(gaps) > 1e-3)) if gaps else math.nan,
            timings={k: round(v, 1) for k, v in timings.items()},
            adapted_notes=asyncio.run(_notes(s, adapted)) if adapted else {},
        )
        print("\nadaptation e2e:", json.dumps(result.summary(), indent=1, default=str))
        yield result
    finally:
        cleanup(s, client)
        client.close()


def test_the_stream_scores_as_the_model_scores_offline(run: Run) -> None:
    """Recall measured in the stream is the model's: same features, same scores.

    A few (0.01-4 % measured) still differ: in a replay at full speed one worker may read
    a terminal's counts before the other's writes of those days landed. Replayed all at
    once, without the weekly pauses, about half of them differed, which this catches.
    """
    assert run.base_offline_gap <= 0.1, run.base_offline_gap


def test_the_new_pattern_is_missed_before_adaptation(run: Run) -> None:
    assert run.before is not None and run.before.n_fraud >= 20
    assert run.before.recall_at_threshold < 0.5
    assert run.before.recall_at_1pct_fpr < 0.5


def test_ten_labels_make_a_new_version_live_in_every_worker(run: Run) -> None:
    assert run.adapted_version is not None and run.adapted_version.startswith("adapt-")
    assert run.published_total == 1  # one leader adapted, once
    assert len(run.label_to_live_s) == N_WORKERS
    assert all(0 < t < 30 for t in run.label_to_live_s), run.label_to_live_s


def test_the_default_adaptation_fitted_a_pattern_head(run: Run) -> None:
    """The ``pattern`` default: the labels come from several cards, so a head is fitted;
    they all fall on weekdays within three days, so the line ignores the weekend flag."""
    notes = run.adapted_notes
    assert notes["strategy"] == "pattern" and "refused" not in notes, notes
    head = notes["pattern_head"]
    assert head["cards"] >= 3 and head["cases"] == N_LABELS
    assert "is_weekend" in head["ignored"]


def test_recall_is_measured_on_transactions_scored_after_the_swap(run: Run) -> None:
    assert run.after is not None and run.after.n_fraud >= 20
    assert run.after.version == run.adapted_version != run.base_version
    assert not math.isnan(run.after.recall_at_1pct_fpr)


def test_bad_updates_are_refused_and_the_adapted_model_keeps_scoring(run: Run) -> None:
    assert run.workers_alive
    assert run.expected_rejections == ["bad_signature", "truncated", "non_finite", "wrong_shape"]
    for per_worker in run.rejected:
        assert {k: per_worker.get(k, 0) for k in run.expected_rejections} == dict.fromkeys(
            run.expected_rejections, 1.0
        )
    assert run.phase3_versions == {run.adapted_version}


def test_few_shot_goal_after_ten_labels(run: Run) -> None:
    """Issue 4's goal, in the stream: recall >= 0.8 on the new pattern after 10 labels."""
    assert run.after is not None and run.before is not None
    # the goal is at 1 % FPR; recall at the alert threshold counts only when its FPR is too
    at_threshold = run.after.recall_at_threshold if run.after.fpr_at_threshold <= 0.01 else 0.0
    best = max(at_threshold, run.after.recall_at_1pct_fpr)
    assert best >= GOAL_RECALL, (
        f"few-shot goal not met in the world of seed {SEED}: recall on the new pattern "
        f"{run.after.recall_at_threshold:.2f} at the alert threshold "
        f"(FPR {run.after.fpr_at_threshold:.3f}) and "
        f"{run.after.recall_at_1pct_fpr:.2f} at 1% FPR after 10 labels "
        f"(before: {run.before.recall_at_threshold:.2f} / {run.before.recall_at_1pct_fpr:.2f})"
    )
