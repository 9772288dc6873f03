"""``riskstream demo``: the whole system end to end on embedded Kafka and Valkey.

The story it shows, in about a minute of streaming:

1. simulated card traffic flows through a real worker; the handbook's fraud patterns
   are caught by the shipped model;
2. a fraud pattern the model has never seen (card testing) starts mid-stream and the
   alerts miss it;
3. the demo plays the analyst: it labels 10 of those cases (and 10 legit ones);
4. the worker adapts few-shot, publishes signed weights and hot-swaps them;
5. the next cases of the new pattern are caught. A before/after table and a summary
   close the run, and everything that was started is stopped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich.console import Console
from rich.live import Live
from rich.table import Table

from models.datasets import SimulatorConfig, simulate
from models.datasets.handbook import HANDBOOK_SCENARIOS
from models.datasets.replay import from_simulation
from models.datasets.scenarios import CardTesting
from streams.demo.services import embedded_services, worker_process
from streams.demo.watch import Watch, consume_outputs
from streams.producer import produce_transactions, start_producer
from streams.records import Label, encode
from streams.settings import Settings

NEW_SCENARIO = 4  # card testing: never in the default model's training data
MALFORMED = (b"not json", b"{}", b'{"schema_version": 1, "tx_id": "x"}', b"[1,2]", b"\xff\xfe")


@dataclass(frozen=True)
class DemoConfig:
    """Size and pace of the demo stream."""

    customers: int = 1000
    terminals: int = 2000
    warmup_days: int = 30  # streamed as fast as possible: the cards' and terminals' history
    days: int = 20  # then streamed at ``rate``: the part the live view is about
    new_pattern_day: int = 36
    new_pattern_cards_per_day: int = 8
    rate: float = 1000.0
    labels: int = 10
    seed: int = 7
    timeout_s: float = 240.0


def run_demo(base: Settings, config: DemoConfig, console: Console) -> int:
    """Run the demo; returns the exit status (0 when every transaction was scored)."""
    root = base.state_dir / "demo"
    console.print(f"[bold]riskstream demo[/] — services and logs in {root}")
    with embedded_services(base, root) as settings:
        console.print(f"Kafka {settings.kafka_bootstrap_servers}, Redis {settings.redis_url}")
        with worker_process(settings, "worker-1") as worker:
            console.print(f"worker pid {worker.process.pid}, metrics {worker.metrics_url}")
            return asyncio.run(_stream(settings, config, console))


async def _stream(settings: Settings, config: DemoConfig, console: Console) -> int:
    scenarios = (
        *HANDBOOK_SCENARIOS,
        CardTesting(
            start_day=config.new_pattern_day, cards_per_day=config.new_pattern_cards_per_day
        ),
    )
    frame = simulate(
        SimulatorConfig(
            n_customers=config.customers,
            n_terminals=config.terminals,
            n_days=config.warmup_days + config.days,
            seed=config.seed,
            scenarios=scenarios,
        )
    )
    scenario_of = dict(zip(frame["tx_id"].astype(str), frame["scenario"].astype(int), strict=True))
    start = frame["ts"].min().normalize() + pd.Timedelta(days=config.warmup_days)
    live_from = int(frame.loc[frame["ts"] >= start, "tx_id"].min())
    watch = Watch(scenario_of, NEW_SCENARIO, settings.alert_threshold, live_from=live_from)
    stop = asyncio.Event()
    reader = asyncio.create_task(consume_outputs(settings, watch, stop))
    # Labels are held back: the analyst's labels are the only ones this demo sends.
    records = [(tx, None) for tx, _ in from_simulation(frame).records()]
    console.print(f"warm-up: {live_from:,} transactions of history, as fast as possible")
    await produce_transactions(settings, records[:live_from])
    expected = len(frame)
    phase = "warm-up: the worker scores the history"
    labelled_at: float | None = None
    first_version: str | None = None
    producing: asyncio.Task[Any] | None = None
    deadline = time.monotonic() + config.timeout_s
    with Live(watch.render(phase), console=console, refresh_per_second=4) as live:
        while time.monotonic() < deadline:
            if producing is None:
                # Live traffic starts once the history is scored, so the live latency is
                # the worker's, not the backlog's.
                await asyncio.sleep(0.25)
                live.update(watch.render(phase))
                if watch.scored < live_from:
                    continue
                phase = f"live: {len(records) - live_from:,} transactions at {config.rate:,.0f}/s"
                producing = asyncio.create_task(
                    produce_transactions(settings, records[live_from:], rate=config.rate)
                )
                await _send_malformed(settings)
            await asyncio.sleep(0.25)
            if first_version is None and watch.by_version:
                first_version = next(iter(watch.by_version))
            missed = [t for t, v, s in watch.new_scenario_scored if v == first_version]
            if labelled_at is None and len(missed) >= config.labels * 2:
                labelled_at = await _label_cases(settings, watch, missed, config.labels)
                phase = f"labelled {config.labels} new-pattern cases: adapting"
            if labelled_at is not None and len(watch.by_version) > 1:
                phase = "adapted: new weights live"
            live.update(watch.render(phase))
            if producing.done() and watch.scored >= expected:
                break
    stop.set()
    await reader
    if producing is not None and not producing.done():
        producing.cancel()
    _print_report(console, watch, expected, labelled_at, first_version)
    return 0 if watch.scored >= expected and watch.duplicates == 0 else 1


async def _send_malformed(settings: Settings) -> None:
    """A few bad messages, to show that they land in the dead-letter topic, not a crash."""
    producer = await start_producer(settings)
    try:
        for payload in MALFORMED:
            await producer.send_and_wait(settings.topic_transactions, payload, key=b"bad")
    finally:
        await producer.stop()


async def _label_cases(settings: Settings, watch: Watch, missed: list[str], n: int) -> float:
    """The analyst labels ``n`` new-pattern frauds and ``n`` recent legit transactions."""
    frauds = missed[:n]
    legit = [t for t in list(watch.seen)[-5000:] if watch.scenario_of.get(t) == 0][:n]
    producer = await start_producer(settings)
    now = time.time()
    try:
        for tx_id, label in [*((t, 1) for t in frauds), *((t, 0) for t in legit)]:
            record = Label(tx_id=tx_id, label=label, source="analyst", labelled_at=now)
            await producer.send(settings.topic_labels, encode(record), key=tx_id.encode())
        await producer.flush()
    finally:
        await producer.stop()
    return time.monotonic()


def _print_report(
    console: Console,
    watch: Watch,
    expected: int,
    labelled_at: float | None,
    first_version: str | None,
) -> None:
    p50, p99 = watch.latency_percentiles()
    before_after = Table(title="the new fraud pattern (card testing), before and after labelling")
    for column in (
        "model version",
        "new-pattern tx",
        "caught",
        "recall",
        "legit FPR",
        "live after",
    ):
        before_after.add_column(column, justify="right")
    for version, stats in watch.by_version.items():
        live_after = "-"
        if labelled_at is not None and version != first_version:
            live_after = f"{watch.first_seen_version[version] - labelled_at:.1f} s after labels"
        before_after.add_row(
            version,
            f"{stats.new_frauds:,}",
            f"{stats.new_caught:,}",
            f"{stats.recall:.2f}",
            f"{stats.false_positive_rate:.3%}",
            live_after,
        )
    console.print(before_after)
    summary = Table(title="summary")
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    summary.add_row("transactions produced", f"{expected:,}")
    summary.add_row("scored (distinct tx_id)", f"{watch.scored:,}")
    summary.add_row("duplicate scores", f"{watch.duplicates:,}")
    summary.add_row("malformed sent / dead-lettered", f"{len(MALFORMED)} / {watch.dead_letters}")
    summary.add_row("alerts (all)", f"{watch.alerts:,}")
    live_rate = watch.live_alerts / watch.live_scored if watch.live_scored else float("nan")
    warmup = watch.scored - watch.live_scored
    warmup_rate = watch.warmup_alerts / warmup if warmup else float("nan")
    summary.add_row(
        "alert rate: warm-up (cold cards) / live",
        f"{warmup_rate:.1%} / {live_rate:.1%}",
    )
    summary.add_row("decisions", ", ".join(f"{k} {v:,}" for k, v in watch.decisions.items()))
    summary.add_row("live produce→score latency p50 / p99", f"{p50:.1f} ms / {p99:.1f} ms")
    summary.add_row("model versions seen", ", ".join(watch.by_version))
    console.print(summary)
    if watch.scored < expected:
        console.print(f"[red]only {watch.scored:,} of {expected:,} transactions were scored[/]")
