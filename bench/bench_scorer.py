"""Scorer speed: microseconds per transaction at batch 1, 32 and 256 (numpy forward pass).

Usage: ``.venv/bin/python -m bench.bench_scorer [--artifact artifacts/default]``.
Prints a table and writes ``bench/results/scorer.json`` (key ``score_us_per_tx``: per
batch size, the median µs/tx over at least 5 timed rounds, with its spread).
Never asserts on time. Runs single-threaded (BLAS and torch), as a stream worker should.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_limits

from bench.stats import spread
from models.artifacts import SupportSet, load_artifact
from models.encoder import Encoder
from models.features import FEATURE_NAMES, FeatureTransform
from models.matching import MatchingNetwork
from models.scorer import Scorer

BATCHES = (1, 32, 256)
COMMAND = "python -m bench.bench_scorer"
RESULTS = Path(__file__).parent / "results" / "scorer.json"


def stand_in_scorer(n_support: int = 2000) -> Scorer:
    """Random weights of the default shape, when no artifact exists yet."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    X = rng.gamma(2.0, 10.0, size=(n_support, len(FEATURE_NAMES))).astype(np.float32)
    net = MatchingNetwork(Encoder(len(FEATURE_NAMES), hidden=(64, 64), emb_dim=32))
    y = (np.arange(n_support) < n_support // 5).astype(np.float32)
    support = SupportSet.build(X, y, [str(i) for i in range(n_support)])
    return Scorer(net, FeatureTransform.fit(X, names=FEATURE_NAMES), support, version="stand-in")


def time_per_tx(fn: object, batches: list[np.ndarray], min_seconds: float) -> dict[str, Any]:
    """µs per transaction of ``fn(batch)`` over rounds (at least 5): median and spread."""
    call = fn  # callable taking one batch
    for b in batches[:3]:
        call(b)  # type: ignore[operator]
    rounds: list[float] = []
    deadline = time.perf_counter() + min_seconds
    while time.perf_counter() < deadline or len(rounds) < 5:
        n = 0
        start = time.perf_counter()
        for b in batches:
            call(b)  # type: ignore[operator]
            n += len(b)
        rounds.append((time.perf_counter() - start) / n * 1e6)
    return spread(rounds, digits=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifact", type=Path, default=Path("artifacts/default"))
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if (args.artifact / "meta.json").is_file():
        scorer = Scorer.from_artifact(load_artifact(args.artifact))
        source = str(args.artifact)
    else:
        scorer = stand_in_scorer()
        source = "random stand-in (no artifact found)"
    rng = np.random.default_rng(1)
    pool = scorer.support.x[rng.integers(0, len(scorer.support), 8192)]
    pool = pool * rng.uniform(0.8, 1.2, size=pool.shape).astype(np.float32)
    results: dict[str, dict[str, Any]] = {"score_us_per_tx": {}, "score_only_us_per_tx": {}}
    with threadpool_limits(limits=1):
        for b in BATCHES:
            batches = [pool[i : i + b] for i in range(0, min(len(pool), 64 * b), b)]
            results["score_us_per_tx"][str(b)] = time_per_tx(
                scorer.score_batch, batches, args.seconds
            )
            results["score_only_us_per_tx"][str(b)] = time_per_tx(
                scorer.score_only, batches, args.seconds
            )
    results["score_us_per_tx"]["command"] = COMMAND
    results["score_only_us_per_tx"]["command"] = COMMAND
    table = Table(title=f"scorer: support {len(scorer.support)}, top_k {scorer.top_k}, {source}")
    table.add_column("batch", justify="right")
    table.add_column("µs/tx (scores + explanations)", justify="right")
    table.add_column("µs/tx (scores only)", justify="right")
    table.add_column("tx/s (with explanations)", justify="right")
    for b in BATCHES:
        us = results["score_us_per_tx"][str(b)]
        only = results["score_only_us_per_tx"][str(b)]
        table.add_row(
            str(b),
            f"{us['median']:.1f} [{us['min']:.1f}-{us['max']:.1f}]",
            f"{only['median']:.1f} [{only['min']:.1f}-{only['max']:.1f}]",
            f"{1e6 / us['median']:,.0f}",
        )
    Console().print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        **results,
        "support_size": len(scorer.support),
        "top_k": scorer.top_k,
        "artifact": source,
        "version": scorer.version,
        "goal_us_per_tx_at_256": 20.0,
        "threads": 1,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
