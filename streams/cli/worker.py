"""``riskstream worker``: run one Faust worker (score + labels agents, ``/metrics``).

Takes Faust's usual worker options (``--loglevel``, ``--logfile``, ``--web-port``,
``--web-host``); everything else comes from the settings (``RISKSTREAM_*``). Runs on
uvloop, and stops cleanly on SIGINT/SIGTERM (in-flight batch finished, state flushed,
offsets committed).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from streams.settings import Settings, get_settings


def worker_settings(base: Settings, **overrides: Any) -> Settings:
    """``base`` with the command-line overrides that were given (``None`` = not given).

    >>> worker_settings(Settings(), web_port=7001, model_path=None).web_port
    7001
    """
    update = {k: v for k, v in overrides.items() if v is not None}
    if not update:
        return base
    return Settings(**{**base.model_dump(), **update})  # validated like any settings


def run_worker(settings: Settings, *, loglevel: str, logfile: Path | None = None) -> None:
    """Build the app and run a Faust worker until it is stopped (does not return)."""
    import faust
    import uvloop

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # same speed, half the CPU (ANCHORS)
    import torch

    # The scorer's exp goes through torch (models/scorer.py): one intra-op thread, so a
    # block's exp never wakes a second, spinning OpenMP thread on the worker's cores.
    torch.set_num_threads(1)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())

    from streams.app import create_app
    from streams.services.topics import ensure_topics

    ensure_topics(settings)  # outputs need their topics before the first batch
    from streams.redis_conn import check_redis_credentials

    check_redis_credentials(settings)  # a wrong password stops here, in one line
    app = create_app(settings)
    worker = faust.Worker(
        app,
        loglevel=loglevel,
        logfile=str(logfile) if logfile else None,
        quiet=True,
        loop=asyncio.get_event_loop(),
    )
    worker.execute_from_commandline()


def register(app: typer.Typer) -> None:
    """Add ``riskstream worker``."""

    @app.command()
    def worker(
        loglevel: Annotated[
            str | None, typer.Option("--loglevel", "-l", help="critical|error|warning|info|debug")
        ] = None,
        logfile: Annotated[
            Path | None, typer.Option("--logfile", "-f", help="Log to this file.")
        ] = None,
        web_port: Annotated[
            int | None, typer.Option("--web-port", "-p", help="Port of /metrics (0: any free).")
        ] = None,
        web_host: Annotated[
            str | None, typer.Option("--web-host", "--web-bind", "-b", help="Bind address.")
        ] = None,
        consume_mode: Annotated[
            str | None, typer.Option("--consume-mode", help="batch (default) or stream.")
        ] = None,
        model: Annotated[
            Path | None, typer.Option("--model", help="Model artifact folder to start with.")
        ] = None,
    ) -> None:
        """Run a worker: score transactions, apply labels, serve /metrics."""
        base = get_settings()
        settings = worker_settings(
            base,
            web_port=web_port,
            web_host=web_host,
            consume_mode=consume_mode,
            model_path=model,
            log_level=loglevel,
        )
        if settings.web_port == 0:  # Faust needs a real port: pick a free one
            from streams.services.process import free_port

            settings = worker_settings(settings, web_port=free_port(settings.web_host))
            typer.echo(f"metrics on http://{settings.web_host}:{settings.web_port}/metrics")
        run_worker(settings, loglevel=settings.log_level, logfile=logfile)
