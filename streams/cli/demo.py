"""``riskstream demo``: run the whole system end to end and print a summary."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from streams.settings import get_settings


def register(app: typer.Typer) -> None:
    """Add ``riskstream demo``."""

    @app.command()
    def demo(
        rate: Annotated[float, typer.Option(help="Transactions per second.", min=1)] = 1000.0,
        days: Annotated[int, typer.Option(help="Simulated days streamed live.", min=10)] = 20,
        customers: Annotated[int, typer.Option(help="Simulated customers.", min=100)] = 1000,
    ) -> None:
        """Start Kafka, Valkey and a worker; stream, label a new pattern, adapt; stop all."""
        from streams.demo.run import DemoConfig, run_demo

        config = DemoConfig(rate=rate, days=days, customers=customers, terminals=customers * 2)
        raise typer.Exit(run_demo(get_settings(), config, Console()))
