"""``riskstream train`` and ``riskstream evaluate PROTOCOL``.

(``riskstream model list|rollback`` are registered by the adaptation concern.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from streams.errors import RiskstreamError

_console = Console()
PROTOCOLS = ("handbook", "fewshot", "transfer")


def _train(
    out: Path,
    scale: str,
    seed: int,
    episodes: int | None,
    history_days: int,
    cold_start_days: int,
    validate: bool,
) -> dict[str, Any]:
    from models.default_model import default_config, train_default
    from models.training import SCALES

    if scale not in SCALES:
        raise RiskstreamError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    n = default_config(seed, episodes).n_episodes
    runs = 2 if validate else 1
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    started = time.perf_counter()
    with Progress(*columns, console=_console) as bar:
        task = bar.add_task("preparing", total=n * runs, loss=float("nan"))
        ema: list[float] = []

        def progress(i: int, metrics: dict[str, float]) -> None:
            loss = metrics.get("query_loss", float("nan"))
            ema.append(loss if not ema else 0.98 * ema[-1] + 0.02 * loss)
            bar.update(task, advance=1, loss=ema[-1])

        def stage(text: str) -> None:
            bar.update(task, description=text)
            ema.clear()

        art = train_default(
            scale,
            seed=seed,
            n_episodes=episodes,
            history_days=history_days,
            cold_start_days=cold_start_days,
            validate=validate,
            progress=progress,
            stage=stage,
        )
    art.save(out)
    return {"artifact": art, "seconds": time.perf_counter() - started}


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``evaluate`` to the ``riskstream`` command."""

    @app.command()
    def train(
        out: Annotated[Path, typer.Option(help="Artifact directory to write.")] = Path(
            "artifacts/default"
        ),
        scale: Annotated[str, typer.Option(help="Simulation scale: tiny, small, handbook.")] = (
            "handbook"
        ),
        seed: Annotated[int, typer.Option(help="Seed of the simulation and training.")] = 0,
        episodes: Annotated[
            int | None, typer.Option(help="Meta-training episodes (default: tuned value).")
        ] = None,
        history_days: Annotated[int, typer.Option(help="Days of training history.")] = 56,
        cold_start_days: Annotated[
            int,
            typer.Option(
                help="First days of the simulation (no card/terminal history yet) also trained on."
            ),
        ] = 28,
        validate: Annotated[
            bool, typer.Option(help="Also train on the validation split and record its metrics.")
        ] = True,
    ) -> None:
        """Meta-train the matching network on simulated data and save a scoring artifact."""
        if history_days < 1 or cold_start_days < 0:
            raise RiskstreamError("--history-days must be >= 1 and --cold-start-days >= 0")
        result = _train(out, scale, seed, episodes, history_days, cold_start_days, validate)
        art = result["artifact"]
        table = Table(title=f"model {art.version} → {out}")
        table.add_column("field")
        table.add_column("value", justify="right")
        for name, value in art.meta["metrics"].items():
            table.add_row(name, f"{value:.4f}")
        table.add_row("support (fraud / total)", f"{art.support.n_fraud} / {len(art.support)}")
        table.add_row("wall time", f"{result['seconds']:.1f} s")
        _console.print(table)

    @app.command()
    def evaluate(
        protocol: Annotated[str, typer.Argument(help="handbook, fewshot or transfer.")],
        out: Annotated[
            Path | None, typer.Option(help="Report folder (default reports/PROTOCOL).")
        ] = None,
        scale: Annotated[
            str, typer.Option(help="Protocol scale: full (alias handbook) or small.")
        ] = ("handbook"),
    ) -> None:
        """Run an evaluation protocol; writes report.md, report.json and plots."""
        if protocol not in PROTOCOLS:
            raise RiskstreamError(f"PROTOCOL must be one of {', '.join(PROTOCOLS)}")
        try:
            from models.evaluation import run_protocol  # type: ignore[attr-defined,unused-ignore]
        except ImportError:
            raise RiskstreamError("the evaluation package is not installed yet") from None
        folder = out or Path("reports") / protocol
        try:
            report = run_protocol(protocol, folder, scale)
        except ValueError as exc:  # unknown scale or protocol: a user mistake
            raise RiskstreamError(str(exc)) from None
        _console.print(f"[green]wrote[/] {folder}/report.md, report.json")
        if isinstance(report, dict) and "models" in report:
            table = Table(title=f"{protocol} protocol")
            table.add_column("model")
            for col in ("auc_roc", "average_precision", "card_precision_at_100"):
                table.add_column(col, justify="right")
            for name, row in report["models"].items():
                table.add_row(
                    name,
                    *(
                        f"{row.get(c, float('nan')):.3f}"
                        for c in ("auc_roc", "average_precision", "card_precision_at_100")
                    ),
                )
            _console.print(table)
