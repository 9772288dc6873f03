"""The score pipeline's own CPU cost per transaction, without Kafka or Redis (cProfile).

Runs :class:`streams.pipeline.ScorePipeline` in this process on handbook-like
transactions in micro-batches of ``--batch``, with the unit tests' in-memory Redis and
producer (``tests/unit/streams_fakes.py``) and the real model (``artifacts/default``), so
the figure is the pipeline's Python and numpy work alone: what a code change saves
shows here without the noise of a broker, a Redis server and a shared machine. Prints
µs per transaction (median of ``--repeats``), then the top functions by cumulative and
by own time. Not part of ``make bench``.

    .venv/bin/python -m bench.profile_inprocess [--tx 60000] [--batch 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy is imported, as a worker
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "unit"))

import torch  # noqa: E402
from streams_fakes import FakeEmitter, FakeRedis  # noqa: E402

from bench.bench_pipeline import source  # noqa: E402
from streams.alert_dedupe import AlertClaims  # noqa: E402
from streams.app import tune_gc  # noqa: E402
from streams.pipeline import RawRecord, ScorePipeline  # noqa: E402
from streams.records import Transaction, encode  # noqa: E402
from streams.redis_conn import RedisGuard  # noqa: E402
from streams.runtime import ScorerRuntime, load_scorer  # noqa: E402
from streams.scored_store import ScoredStore  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.tables import CardStates  # noqa: E402
from streams.terminal_store import TerminalStore  # noqa: E402


def pipeline(settings: Settings, scorer: Any) -> ScorePipeline:
    """A score pipeline over in-memory Redis and producer."""
    redis, emitter = FakeRedis(), FakeEmitter()
    return ScorePipeline(
        settings,
        runtime=ScorerRuntime(scorer),
        cards=CardStates({}, "cl", emitter.send_many),
        terminals=TerminalStore(redis, prefix="p:", cache_ttl_s=settings.terminal_cache_ttl_s),
        scored=ScoredStore(redis, prefix="p:", ttl_s=settings.feature_ttl_s),
        claims=AlertClaims(settings, prefix="p:"),
        emitter=emitter,  # type: ignore[arg-type]
        redis=redis,
        guard=RedisGuard(),
    )


async def run(p: ScorePipeline, records: list[RawRecord], batch: int) -> float:
    """Seconds of process CPU to score ``records`` (flushes card state like the runner)."""
    started = time.process_time()
    for i in range(0, len(records), batch):
        p.cards.next_batch()
        futures = await p.process(records[i : i + batch])
        await asyncio.gather(*futures)
        await p.cards.flush(limit=500)
    await p.cards.flush()
    return time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tx", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--model", type=Path, default=REPO / "artifacts" / "default", help="model artifact folder"
    )
    args = parser.parse_args(argv)
    settings = Settings(app_id="inproc", model_path=args.model)
    scorer = load_scorer(settings)
    tune_gc()  # as a worker does once it started
    # one torch thread, as a worker (streams/cli/worker.py): a second, spinning OpenMP
    # thread after each torch call took CPU from this one (32 -> 44 µs/tx measured here)
    torch.set_num_threads(1)
    now = int(time.time() * 1000)
    records = [
        RawRecord("transactions", 0, i, now, tx["card_id"].encode(), encode(Transaction(**tx)))
        for i, (tx, _) in enumerate(source(args.tx))
    ]
    runs = [
        1e6 * asyncio.run(run(pipeline(settings, scorer), records, args.batch)) / len(records)
        for _ in range(args.repeats)
    ]
    print(f"load average {os.getloadavg()}")
    print(f"pipeline CPU per tx: median {statistics.median(runs):.1f} us, runs {runs}")
    profile = cProfile.Profile()
    profile.enable()
    asyncio.run(run(pipeline(settings, scorer), records, args.batch))
    profile.disable()
    stats = pstats.Stats(profile)
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
