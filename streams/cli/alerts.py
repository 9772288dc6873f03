"""``riskstream alerts`` (tail the alerts topic) and ``riskstream label`` (send verdicts).

``alerts`` shows one row per ``tx_id``: the consumer side is idempotent too, so an
alert delivered twice (a worker crash, Redis down) is shown once. A readable table by
default, ``--json`` for JSON lines; Ctrl-C stops it cleanly.

``label TX_ID --fraud|--legit`` or ``label --file labels.csv`` (columns ``tx_id`` and
``label``: 1/0, fraud/legit, true/false) produce :class:`~streams.records.Label` records
keyed by ``tx_id`` to the labels topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from streams.errors import RiskstreamError
from streams.producer import kafka_client_kwargs, start_producer
from streams.records import Alert, Label, RecordError, encode, parse_alert
from streams.settings import Settings, get_settings

SEEN_CAP = 1_000_000  # tx_ids remembered for de-duplication
ROWS_SHOWN = 25
_TRUE = {"1", "fraud", "true", "yes", "y"}
_FALSE = {"0", "legit", "false", "no", "n"}


class SeenIds:
    """Bounded memory of ``tx_id``s already shown (oldest forgotten first).

    >>> seen = SeenIds(cap=2)
    >>> [seen.first_time(t) for t in ["a", "a", "b", "c", "a"]]
    [True, False, True, True, True]
    """

    def __init__(self, cap: int = SEEN_CAP) -> None:
        self.cap = cap
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, tx_id: str) -> bool:
        """Whether ``tx_id`` is new (and remember it)."""
        if tx_id in self._ids:
            return False
        self._ids[tx_id] = None
        if len(self._ids) > self.cap:
            self._ids.popitem(last=False)
        return True


async def tail_alerts(
    settings: Settings,
    on_alert: Callable[[Alert], None],
    *,
    from_beginning: bool = False,
    stop: asyncio.Event | None = None,
    limit: int | None = None,
    idle_timeout_s: float | None = None,
    on_invalid: Callable[[RecordError], None] | None = None,
) -> int:
    """Call ``on_alert`` once per new ``tx_id`` on the alerts topic; returns how many.

    Reads every partition (no consumer group, nothing committed), from the end or from
    the beginning, until ``stop`` is set, ``limit`` alerts were shown, or nothing came
    for ``idle_timeout_s``.
    """
    stop = stop or asyncio.Event()
    topics = await _existing_topics(settings)
    if settings.topic_alerts not in topics:
        raise RiskstreamError(f"no topic {settings.topic_alerts!r}: is a worker running?")
    # No group: every partition is assigned, nothing is committed.
    consumer = AIOKafkaConsumer(
        settings.topic_alerts,
        **kafka_client_kwargs(settings),
        group_id=None,
        enable_auto_commit=False,
        # where to start when the partitions get their first position
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await _start(consumer, settings)
    seen = SeenIds()
    shown = 0
    try:
        tps = sorted(consumer.assignment())
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        last = time.monotonic()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=250, max_records=1000)
            if batch:
                last = time.monotonic()
            for records in batch.values():
                for record in records:
                    try:
                        alert = parse_alert(record.value or b"")
                    except RecordError as err:
                        if on_invalid is not None:
                            on_invalid(err)
                        continue
                    if seen.first_time(alert.tx_id):
                        on_alert(alert)
                        shown += 1
                        if limit is not None and shown >= limit:
                            return shown
            if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                break
        return shown
    finally:
        await consumer.stop()


async def _start(client: Any, settings: Settings) -> None:
    try:
        await asyncio.wait_for(client.start(), 10.0)
    except (TimeoutError, KafkaError, OSError) as exc:
        with contextlib.suppress(Exception):
            await client.stop()
        raise RiskstreamError(
            f"Kafka is not reachable at {settings.kafka_bootstrap_servers} ({exc!r})"
        ) from None


async def _existing_topics(settings: Settings) -> set[str]:
    client = AIOKafkaConsumer(**kafka_client_kwargs(settings), group_id=None)
    await _start(client, settings)
    try:
        return set(await client.topics())
    finally:
        await client.stop()


def alert_row(alert: Alert) -> list[str]:
    """Table cells of one alert: time, tx, card, amount, score, decision, top reasons."""
    when = datetime.fromtimestamp(alert.scored_at, tz=UTC).strftime("%H:%M:%S")
    reasons = ", ".join(
        f"{e.case_id} ({'fraud' if e.label else 'legit'} {e.weight:.0%})"
        for e in alert.explanation[:3]
    )
    return [
        when,
        alert.tx_id,
        alert.card_id,
        f"{alert.amount:,.2f}",
        f"{alert.score:.3f}",
        alert.decision,
        reasons or alert.reason,
    ]


def alert_table(alerts: Iterable[Alert], total: int) -> Table:
    """The live view: the most recent alerts, newest last."""
    table = Table(title=f"alerts (unique tx): {total}", expand=False)
    for name, justify in (
        ("time (UTC)", "left"),
        ("tx", "left"),
        ("card", "left"),
        ("amount", "right"),
        ("score", "right"),
        ("decision", "left"),
        ("top reasons (nearest labelled cases)", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for alert in alerts:
        style = "bold red" if alert.decision == "block" else None
        table.add_row(*alert_row(alert), style=style)
    return table


def _run_until_interrupted(main: Callable[[asyncio.Event], Any]) -> Any:
    """Run ``main(stop)``; Ctrl-C / SIGTERM set ``stop`` so it ends cleanly."""

    async def runner() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    return asyncio.run(runner())


def parse_label_value(text: str) -> int:
    """``1``/``fraud``/``true`` → 1, ``0``/``legit``/``false`` → 0.

    >>> parse_label_value("Fraud"), parse_label_value("0")
    (1, 0)
    """
    value = text.strip().lower()
    if value in _TRUE:
        return 1
    if value in _FALSE:
        return 0
    raise RiskstreamError(f"label must be 1/0, fraud/legit or true/false, got {text!r}")


def read_labels_file(path: Path) -> list[tuple[str, int]]:
    """``(tx_id, label)`` rows of a CSV file with ``tx_id`` and ``label`` columns."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise RiskstreamError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not rows or not {"tx_id", "label"} <= set(rows[0]):
        raise RiskstreamError(f"{path} needs a header with tx_id and label columns")
    out = []
    for n, row in enumerate(rows, start=2):
        tx_id = (row.get("tx_id") or "").strip()
        if not tx_id:
            raise RiskstreamError(f"{path}:{n}: empty tx_id")
        try:
            out.append((tx_id, parse_label_value(row.get("label") or "")))
        except RiskstreamError as exc:
            raise RiskstreamError(f"{path}:{n}: {exc}") from None
    return out


async def send_labels(settings: Settings, labels: list[tuple[str, int]], source: str) -> int:
    """Produce one :class:`Label` per ``(tx_id, label)`` and wait until all are delivered."""
    producer = await start_producer(settings)
    try:
        futures = []
        for tx_id, label in labels:
            record = Label(tx_id=tx_id, label=label, source=source, labelled_at=time.time())
            futures.append(
                await producer.send(settings.topic_labels, encode(record), key=tx_id.encode())
            )
        await asyncio.gather(*futures)
    except KafkaError as exc:
        raise RiskstreamError(f"sending labels failed: {exc}") from None
    finally:
        await producer.stop()
    return len(labels)


def register(app: typer.Typer) -> None:
    """Add ``riskstream alerts`` and ``riskstream label``."""

    @app.command()
    def alerts(
        json_lines: Annotated[
            bool, typer.Option("--json", help="JSON lines, not a table.")
        ] = False,
        from_beginning: Annotated[
            bool, typer.Option("--from-beginning", help="Replay the topic from its start.")
        ] = False,
        limit: Annotated[int | None, typer.Option(help="Stop after this many alerts.")] = None,
        idle_timeout: Annotated[
            float | None, typer.Option(help="Stop after this many seconds with no alert.")
        ] = None,
    ) -> None:
        """Tail the alerts topic: one row per transaction; Ctrl-C to stop."""
        settings = get_settings()
        err = Console(stderr=True)

        def invalid(error: RecordError) -> None:
            err.print(f"[yellow]skipped an invalid alert record:[/] {error}", highlight=False)

        if json_lines:

            def print_json(alert: Alert) -> None:
                sys.stdout.write(encode(alert).decode() + "\n")
                sys.stdout.flush()

            try:
                _run_until_interrupted(
                    lambda stop: tail_alerts(
                        settings,
                        print_json,
                        from_beginning=from_beginning,
                        stop=stop,
                        limit=limit,
                        idle_timeout_s=idle_timeout,
                        on_invalid=invalid,
                    )
                )
            except BrokenPipeError:  # e.g. `riskstream alerts --json | head`: a normal end
                with contextlib.suppress(OSError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return

        recent: list[Alert] = []
        total = 0
        console = Console()
        with Live(alert_table([], 0), console=console, auto_refresh=False) as live:

            def show(alert: Alert) -> None:
                nonlocal total
                total += 1
                recent.append(alert)
                del recent[:-ROWS_SHOWN]
                live.update(alert_table(recent, total), refresh=True)

            _run_until_interrupted(
                lambda stop: tail_alerts(
                    settings,
                    show,
                    from_beginning=from_beginning,
                    stop=stop,
                    limit=limit,
                    idle_timeout_s=idle_timeout,
                    on_invalid=invalid,
                )
            )

    @app.command()
    def label(
        tx_id: Annotated[str | None, typer.Argument(help="The transaction to label.")] = None,
        fraud: Annotated[bool, typer.Option("--fraud", help="It was fraud.")] = False,
        legit: Annotated[bool, typer.Option("--legit", help="It was legitimate.")] = False,
        file: Annotated[
            Path | None, typer.Option("--file", help="CSV with tx_id,label columns.")
        ] = None,
        source: Annotated[str, typer.Option(help="Who labelled it.")] = "analyst",
    ) -> None:
        """Send analyst verdicts to the labels topic (one tx, or a CSV file)."""
        if (tx_id is None) == (file is None):
            raise RiskstreamError("give either a TX_ID or --file labels.csv")
        if file is not None:
            if fraud or legit:
                raise RiskstreamError("--fraud/--legit go with a TX_ID, not with --file")
            labels = read_labels_file(file)
        else:
            if fraud == legit:
                raise RiskstreamError("say --fraud or --legit")
            labels = [(str(tx_id), 1 if fraud else 0)]
        n = asyncio.run(send_labels(get_settings(), labels, source))
        frauds = sum(label for _, label in labels)
        typer.echo(f"sent {n} label(s) ({frauds} fraud, {n - frauds} legit)")
