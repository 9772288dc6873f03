"""``riskstream up`` / ``down`` / ``status`` / ``config``.

``up`` starts Kafka and Valkey in the background (or reuses them) and records where they
are, so every other command finds them with no flags; ``down`` stops them; ``status``
shows addresses, PIDs and health; ``config`` prints the effective settings, secrets masked.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from streams.errors import RiskstreamError
from streams.services.process import ServiceStartError

if TYPE_CHECKING:
    from streams.services.runner import ServiceStatus
from streams.services.state import read_state
from streams.settings import Settings, env_field_names, get_settings

_out = Console()
_err = Console(stderr=True)


def load_settings() -> Settings:
    """The process settings; an invalid value is a one-line error naming its variable."""
    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ()))
        where = f"RISKSTREAM_{field.upper()}" if field else "settings"
        raise RiskstreamError(f"invalid {where}: {first.get('msg', exc)}") from None


def _status_table(rows: list[ServiceStatus]) -> Table:
    table = Table(title="riskstream services", title_justify="left")
    for column in ("service", "source", "address", "pid", "health", "log"):
        table.add_column(column, overflow="fold")
    for row in rows:
        health = f"[green]{row.detail}[/]" if row.healthy else f"[red]{row.detail}[/]"
        table.add_row(
            row.name, row.source, row.address, str(row.pid or "-"), health, row.log or "-"
        )
    return table


def up() -> None:
    """Start Kafka and Valkey in the background (reusing running ones), create the topics."""
    from streams.services.runner import services_up

    settings = load_settings()
    started = time.monotonic()
    _err.print("starting Kafka and Valkey (the first run fetches the Kafka jars)…")
    try:
        _, rows = services_up(settings)
    except ServiceStartError as exc:
        if exc.log_tail:
            _err.print(exc.log_tail, style="dim", highlight=False, markup=False)
        raise
    _out.print(_status_table(rows))
    for row in rows:
        if not row.healthy:
            raise RiskstreamError(f"{row.name} at {row.address} is {row.detail}")
    _err.print(
        f"ready in {time.monotonic() - started:.1f} s; state in {settings.state_file}"
        " (every riskstream command uses it; `riskstream down` stops the services)"
    )


def down(
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for a clean shutdown before SIGKILL.")
    ] = 60.0,
) -> None:
    """Stop the Kafka and Valkey that `riskstream up` started (by their recorded PIDs)."""
    from streams.services.runner import services_down

    for line in services_down(load_settings(), timeout=timeout):
        _out.print(line, highlight=False)


def status() -> None:
    """Show the services' addresses, PIDs and health."""
    from streams.services.runner import services_status

    _out.print(_status_table(services_status(load_settings())))


# The fields streams.settings takes from the state file (the services' addresses).
_STATE_FIELDS = frozenset({"kafka_bootstrap_servers", "redis_url"})


def _sources(settings: Settings) -> dict[str, str]:
    explicit = env_field_names()
    from_state = _STATE_FIELDS & set(read_state(settings.state_file).get("settings") or {})
    return {
        name: "env" if name in explicit else "state file" if name in from_state else "default"
        for name in settings.masked()
    }


def config(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON keyed by the settings' field names.")
    ] = False,
) -> None:
    """Print the effective settings (secrets masked) and where each value comes from."""
    settings = load_settings()
    values = settings.masked()
    if as_json:
        typer.echo(json.dumps(values, indent=2, sort_keys=True, default=str))
        return
    sources = _sources(settings)
    table = Table(title="riskstream settings", title_justify="left")
    table.add_column("setting (RISKSTREAM_<NAME>)")
    table.add_column("value", overflow="fold")
    table.add_column("from")
    for name, value in values.items():
        table.add_row(name, "-" if value is None else str(value), sources[name])
    _out.print(table)


def register(app: typer.Typer) -> None:
    """Add ``up``, ``down``, ``status`` and ``config`` to the ``riskstream`` command."""
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
    app.command("config")(config)
