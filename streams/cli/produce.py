"""``riskstream produce``: stream simulated or replayed transactions into Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from models.datasets import SimulatorConfig, scenarios_for_codes, simulate
from models.datasets.replay import ColumnMap, WireTable, from_simulation, read_file
from streams.errors import RiskstreamError
from streams.producer import ProduceStats, Record, produce_transactions
from streams.settings import get_settings

_console = Console()


def _parse_codes(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RiskstreamError(
            f"--scenarios takes comma-separated codes like 1,2,3, got {text!r}"
        ) from None


def load_source(
    replay: Path | None,
    mapping: str,
    time_format: str,
    base_date: str,
    config: SimulatorConfig,
) -> WireTable:
    """The replayed file, or else the simulated transactions of ``config``."""
    if replay is None:
        return from_simulation(simulate(config))
    if not replay.exists():
        raise RiskstreamError(f"--replay: no such file {replay}")
    try:
        columns = ColumnMap.parse(mapping, time_format=time_format, base_date=base_date)
        return read_file(replay, columns)
    except (ValueError, TypeError, OSError) as exc:
        raise RiskstreamError(f"--replay {replay.name}: {exc}") from None


def _run(
    load: Callable[[], WireTable],
    label_source: str,
    rate: float | None,
    limit: int | None,
    labels_delay: float | None,
    stamp_now: bool,
) -> ProduceStats:
    columns = (
        TextColumn("[bold]produce"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    bar = Progress(*columns, console=_console)
    task = bar.add_task("produce", total=None)

    def records() -> Iterator[Record]:
        # Loaded once Kafka answered: an unreachable broker fails fast, before a long load.
        with _console.status("loading transactions"):
            table = load()
        total = len(table) if limit is None else min(len(table), max(limit, 0))
        bar.reset(task, total=total)  # elapsed time counts from here, not from loading
        bar.start()
        yield from table.records()

    def progress(sent: int) -> None:
        bar.update(task, completed=sent)

    try:
        return asyncio.run(
            produce_transactions(
                get_settings(),
                records(),
                rate=rate,
                limit=limit,
                labels_delay=labels_delay,
                progress=progress,
                stamp_now=stamp_now,
                label_source=label_source,
            )
        )
    finally:
        if bar.live.is_started:
            bar.stop()


def produce(
    replay: Annotated[
        Path | None, typer.Option(help="CSV/Parquet file to replay instead of simulating.")
    ] = None,
    map_: Annotated[
        str,
        typer.Option(
            "--map",
            help="Column mapping for --replay: KEY=COLUMN,... with KEY in id, time, card, "
            "terminal, amount, label, features (features=V1;V2, default: every other "
            "numeric column). Example: time=Time,amount=Amount,label=Class",
        ),
    ] = "amount=amount",
    time_format: Annotated[
        str, typer.Option(help="Replay time column: auto, epoch, epoch_ms, iso or offset.")
    ] = "auto",
    base_date: Annotated[
        str, typer.Option(help="Origin (UTC) of --time-format offset times.")
    ] = "2018-04-01",
    customers: Annotated[int, typer.Option(help="Simulated customers (= cards).")] = 5000,
    terminals: Annotated[int, typer.Option(help="Simulated terminals.")] = 10_000,
    days: Annotated[int, typer.Option(help="Simulated days from 2018-04-01.")] = 183,
    seed: Annotated[int, typer.Option(help="Simulation seed (same seed, same data).")] = 0,
    scenarios: Annotated[
        str,
        typer.Option(
            help="Fraud scenario codes: 1 amount>220, 2 compromised terminals, 3 compromised "
            "customers, 4 card testing, 5 account takeover."
        ),
    ] = "1,2,3",
    scenario_start_day: Annotated[
        int, typer.Option(help="Day on which scenarios 4 and 5 start.")
    ] = 0,
    rate: Annotated[
        float | None, typer.Option(help="Target tx/s (default: as fast as possible).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after N transactions.")] = None,
    labels_delay: Annotated[
        float | None,
        typer.Option(help="Also send labels, this many wall-clock seconds after each tx."),
    ] = None,
    ts: Annotated[
        str, typer.Option("--ts", help="Record ts: 'event' (simulated/file time) or 'now'.")
    ] = "event",
) -> None:
    """Stream simulated (default) or replayed transactions into the transactions topic."""
    if ts not in ("event", "now"):
        raise RiskstreamError(f"--ts must be 'event' or 'now', got {ts!r}")
    if time_format not in ("auto", "epoch", "epoch_ms", "iso", "offset"):
        raise RiskstreamError(f"--time-format: unknown format {time_format!r}")
    try:
        config = SimulatorConfig(
            n_customers=customers,
            n_terminals=terminals,
            n_days=days,
            seed=seed,
            scenarios=scenarios_for_codes(_parse_codes(scenarios), scenario_start_day),
        )
    except ValueError as exc:
        raise RiskstreamError(f"--scenarios: {exc}") from None
    if replay is not None and not replay.is_file():
        raise RiskstreamError(f"--replay: no such file {replay}")
    label_source = "simulator" if replay is None else "replay"
    stats = _run(
        lambda: load_source(replay, map_, time_format, base_date, config),
        label_source,
        rate,
        limit,
        labels_delay,
        stamp_now=ts == "now",
    )
    _console.print(stats.summary(), highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``produce`` to the ``riskstream`` command."""
    app.command("produce")(produce)
