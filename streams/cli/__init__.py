"""The ``riskstream`` command. Each concern registers its subcommands from its own module.

A user mistake or an unreachable service ends with one readable line and a non-zero
exit status, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer
from pydantic import ValidationError
from rich.console import Console

from streams.errors import RiskstreamError

app = typer.Typer(
    name="riskstream",
    help="Event-driven fraud detection on Kafka with a few-shot matching network.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module defines ``register(app: typer.Typer) -> None``.
_COMMAND_MODULES = (
    "streams.cli.services",  # up, down, status, config
    "streams.cli.produce",  # produce
    "streams.cli.worker",  # worker
    "streams.cli.alerts",  # alerts, label
    "streams.cli.model",  # train, evaluate, model list/rollback
    "streams.cli.registry",  # model list, model rollback
    "streams.cli.demo",  # demo
)


@app.callback()
def _root() -> None:
    """Event-driven fraud detection on Kafka with a few-shot matching network."""


for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a concern not built yet must not break the others
        if exc.name != _name:
            raise
        continue
    _module.register(app)

_err = Console(stderr=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``riskstream`` console script."""
    try:
        app(args=argv, standalone_mode=True)
    except RiskstreamError as exc:
        _err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except ValidationError as exc:  # a bad RISKSTREAM_* value: name it, no traceback
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        _err.print(f"[bold red]error:[/] invalid setting {where}: {first['msg']}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
