"""What the demo shows: a consumer of ``scores`` and ``alerts`` that keeps live figures.

It reads the output topics like any downstream system would, and knows the simulation's
ground truth (which scenario each ``tx_id`` belongs to) so it can report recall on the
new fraud pattern per model version.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

import numpy as np
from aiokafka import AIOKafkaConsumer
from rich.console import Group
from rich.table import Table

from streams.producer import kafka_client_kwargs
from streams.records import RecordError, parse_alert, parse_score
from streams.settings import Settings


@dataclass
class VersionStats:
    """Outcome on the new scenario for transactions scored by one model version."""

    scored: int = 0
    new_frauds: int = 0
    new_caught: int = 0
    legit: int = 0
    legit_alerted: int = 0

    @property
    def recall(self) -> float:
        return self.new_caught / self.new_frauds if self.new_frauds else float("nan")

    @property
    def false_positive_rate(self) -> float:
        return self.legit_alerted / self.legit if self.legit else float("nan")


@dataclass
class Watch:
    """Live figures from the output topics."""

    scenario_of: dict[str, int]
    new_scenario: int
    alert_threshold: float
    live_from: int = 0  # tx_ids below this are warm-up history, left out of the outcome
    started: float = field(default_factory=time.monotonic)
    scored: int = 0
    alerts: int = 0
    live_scored: int = 0
    live_alerts: int = 0
    warmup_alerts: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    seen: set[str] = field(default_factory=set)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=20000))
    recent_alerts: deque[tuple[str, str, float, float, str]] = field(
        default_factory=lambda: deque(maxlen=8)
    )
    by_version: dict[str, VersionStats] = field(default_factory=lambda: defaultdict(VersionStats))
    first_seen_version: dict[str, float] = field(default_factory=dict)
    decisions: Counter[str] = field(default_factory=Counter)
    rate_window: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=50))
    new_scenario_scored: list[tuple[str, str, float]] = field(default_factory=list)

    def on_score(self, raw: bytes) -> None:
        try:
            score = parse_score(raw)
        except RecordError:
            return
        if score.tx_id in self.seen:
            self.duplicates += 1
            return
        self.seen.add(score.tx_id)
        self.scored += 1
        self.decisions[score.decision] += 1
        self.first_seen_version.setdefault(score.model_version, time.monotonic())
        if int(score.tx_id) < self.live_from:
            # Warm-up history is produced as fast as possible: its queueing delay says
            # nothing about the live latency, and its cards start with no history.
            self.warmup_alerts += int(score.score >= self.alert_threshold)
            return
        self.latencies_ms.append(score.latency_ms)
        self.live_scored += 1
        self.live_alerts += int(score.score >= self.alert_threshold)
        stats = self.by_version[score.model_version]
        stats.scored += 1
        scenario = self.scenario_of.get(score.tx_id, 0)
        flagged = score.score >= self.alert_threshold
        if scenario == self.new_scenario:
            stats.new_frauds += 1
            stats.new_caught += int(flagged)
            self.new_scenario_scored.append((score.tx_id, score.model_version, score.score))
        elif scenario == 0:
            stats.legit += 1
            stats.legit_alerted += int(flagged)

    def on_alert(self, raw: bytes) -> None:
        try:
            alert = parse_alert(raw)
        except RecordError:
            return
        self.alerts += 1
        reason = alert.reason or ", ".join(f"{e.case_id}" for e in alert.explanation[:2])
        self.recent_alerts.appendleft(
            (alert.tx_id, alert.card_id, alert.amount, alert.score, reason)
        )

    def rate(self) -> float:
        now = time.monotonic()
        self.rate_window.append((now, self.scored))
        t0, n0 = self.rate_window[0]
        return (self.scored - n0) / (now - t0) if now > t0 else 0.0

    def latency_percentiles(self) -> tuple[float, float]:
        if not self.latencies_ms:
            return float("nan"), float("nan")
        values = np.fromiter(self.latencies_ms, dtype=np.float64)
        p50, p99 = np.percentile(values, [50, 99])
        return float(p50), float(p99)

    def render(self, phase: str) -> Group:
        p50, p99 = self.latency_percentiles()
        head = Table.grid(padding=(0, 3))
        for _ in range(6):
            head.add_column()
        head.add_row(
            f"[bold]{phase}[/]",
            f"scored [bold]{self.scored:,}[/]",
            f"[bold]{self.rate():,.0f}[/] tx/s",
            (
                f"live latency p50 [bold]{p50:.1f}[/] ms  p99 [bold]{p99:.1f}[/] ms"
                if self.latencies_ms
                else "live latency -"
            ),
            f"alerts [bold red]{self.alerts:,}[/]",
            f"models {', '.join(self.by_version) or '-'}",
        )
        recent = Table(title="latest alerts", expand=True)
        for column in ("tx", "card", "amount", "score", "top reasons"):
            recent.add_column(column)
        for tx_id, card, amount, score, reason in self.recent_alerts:
            recent.add_row(tx_id, card, f"{amount:,.2f}", f"{score:.3f}", reason)
        return Group(head, recent)


async def consume_outputs(settings: Settings, watch: Watch, stop: asyncio.Event) -> None:
    """Read ``scores`` and ``alerts`` from the beginning into ``watch`` until ``stop``."""
    consumer = AIOKafkaConsumer(
        settings.topic_scores,
        settings.topic_alerts,
        settings.topic_dlq,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        **kafka_client_kwargs(settings),
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, messages in batches.items():
                if tp.topic == settings.topic_dlq:
                    watch.dead_letters += len(messages)
                    continue
                handle = watch.on_score if tp.topic == settings.topic_scores else watch.on_alert
                for message in messages:
                    if message.value is not None:
                        handle(message.value)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
