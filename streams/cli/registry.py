"""``riskstream model list`` and ``riskstream model rollback VERSION``.

``list`` shows every model version kept in Redis (newest last): parent, creation time,
validation metrics, how it was made, which is current and which workers score with it.
``rollback`` makes an older version current again and announces it on ``model-updates``
with a fresh signature; every worker verifies and swaps it like any update.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from streams.errors import RiskstreamError

_console = Console()


def _fmt_time(ts: float) -> str:
    """Local wall-clock time of ``ts``, with the date when it is not today.

    >>> len(_fmt_time(time.time())) == 8
    True
    """
    local = time.localtime(ts)
    if time.strftime("%Y-%m-%d", local) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", local)
    return time.strftime("%Y-%m-%d %H:%M:%S", local)


async def _with_registry(work: Any) -> Any:
    from streams.redis_conn import REDIS_ERRORS, connect_redis
    from streams.settings import get_settings, safe_url

    settings = get_settings()
    redis = connect_redis(settings)
    try:
        await redis.ping()  # before importing the registry (torch): an outage fails at once
        from streams.adaptation import registry_of

        return await work(settings, registry_of(settings, redis))
    except REDIS_ERRORS as exc:
        raise RiskstreamError(
            f"Redis is not reachable at {safe_url(settings.redis_url)} ({type(exc).__name__});"
            " is it running? `riskstream up` starts one"
        ) from None
    finally:
        await redis.aclose()


def _versions_table(rows: list[Any]) -> Table:
    table = Table(title="model versions (oldest first)")
    for column in ("", "version", "parent", "created", "validation AP", "made by", "workers"):
        table.add_column(column)
    for row in rows:
        ap = row.metrics.get("validation_ap")
        parent_ap = row.metrics.get("parent_validation_ap")
        shown_ap = (
            "" if ap is None else f"{ap:.3f}" + (f" (was {parent_ap:.3f})" if parent_ap else "")
        )
        made = row.notes.get("kind", "startup model")
        if made == "adaptation":
            made = f"{row.notes.get('strategy', '?')} ({row.notes.get('trigger', '?')})"
        table.add_row(
            "*" if row.current else "",
            row.version + ("" if row.has_weights else " (pruned)"),
            row.parent or "-",
            _fmt_time(row.created_at),
            shown_ap,
            made,
            str(len(row.workers)),
        )
    return table


def register(app: typer.Typer) -> None:
    """Add the ``riskstream model`` sub-commands."""
    model = typer.Typer(help="Model versions in Redis: list, rollback.", no_args_is_help=True)

    @model.command("list")
    def list_versions(
        json_out: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
    ) -> None:
        """List the model versions kept in Redis (* = current)."""

        async def work(settings: Any, registry: Any) -> list[Any]:
            return list(await registry.list_versions())

        rows = asyncio.run(_with_registry(work))
        if json_out:
            import orjson

            for row in rows:
                typer.echo(orjson.dumps(row.__dict__).decode())
            return
        if not rows:
            _console.print("no model versions yet: start a worker (`riskstream worker`)")
            return
        _console.print(_versions_table(rows))

    @model.command("rollback")
    def rollback(
        version: Annotated[str, typer.Argument(help="Version to make current again.")],
    ) -> None:
        """Make VERSION current again; every worker verifies and swaps it."""
        from streams.model_registry import RegistryError
        from streams.producer import start_producer

        async def work(settings: Any, registry: Any) -> Any:
            producer = await start_producer(settings)

            async def send(topic: str, key: bytes, value: bytes) -> None:
                await producer.send_and_wait(topic, value, key=key)

            try:
                return await registry.rollback(version, send)
            except RegistryError as exc:
                raise RiskstreamError(str(exc)) from None
            finally:
                await producer.stop()

        update = asyncio.run(_with_registry(work))
        _console.print(f"model [bold]{update.version}[/] is current again; workers swap it now")

    app.add_typer(model, name="model")
