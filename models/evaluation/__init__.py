"""Evaluation: the handbook protocol, few-shot and transfer reports, and their metrics.

``run_protocol(name, out_dir, scale)`` is what ``riskstream evaluate PROTOCOL`` calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROTOCOLS = ("handbook", "fewshot", "transfer")


def run_protocol(name: str, out_dir: Path, scale: str = "full") -> dict[str, Any]:
    """Run one protocol, write ``out_dir/report.md``, ``report.json`` and PNG plots.

    Parameters
    ----------
    name
        ``"handbook"``, ``"fewshot"`` or ``"transfer"``.
    out_dir
        Folder for the outputs (created), e.g. ``reports/handbook``.
    scale
        ``"full"`` (the handbook's 5,000-card world; alias ``"handbook"``) or ``"small"``
        (a 400-card world over the same dates, for tests).

    Returns
    -------
    dict
        The content of ``report.json``.

    >>> run_protocol("nope", Path("/tmp/x"))
    Traceback (most recent call last):
    ...
    ValueError: unknown protocol 'nope'; choose from handbook, fewshot, transfer
    """
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    from models.evaluation import data

    scale = data.canonical_scale(scale)
    import torch

    # Small networks on two shared cores: a second intra-op thread only adds contention.
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(name, Path(out_dir), scale)
    finally:
        torch.set_num_threads(threads_before)


def _run(name: str, out_dir: Path, scale: str) -> dict[str, Any]:
    if name == "handbook":
        from models.evaluation.handbook import run_handbook

        return run_handbook(out_dir, scale)
    if name == "fewshot":
        from models.evaluation.fewshot import run_fewshot

        return run_fewshot(out_dir, scale)
    from models.evaluation.transfer import run_transfer

    return run_transfer(out_dir, scale)
