"""Pipeline speed, measured in one run on one broker: workers against raw aiokafka.

* ``raw_consume_tx_per_s``: a bare aiokafka consumer (``getmany(5000)`` + ``orjson.loads``)
  reading the preloaded ``transactions`` topic: the stack's limit on this machine.
* ``scored_tx_per_s_1_worker``: one ``riskstream worker`` (default ``batch`` consume mode)
  draining the same backlog; also the ``stream`` mode (Faust ``take()``) for comparison,
  and two workers in one group.
* ``latency_ms_at_1k`` / ``_at_5k``: produce→score p50/p95/p99 (from each score record's
  ``latency_ms``: Kafka record timestamp → scored) with transactions paced at 1,000 and
  5,000 tx/s into an idle worker.

Kafka and Valkey are started for the run (real Apache Kafka, embedded Valkey) in a temp
folder, and stopped after. Prints a table; writes ``bench/results/pipeline.json``. Never
asserts on time.

    .venv/bin/python -m bench.bench_pipeline [--tx 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from pipeline_helpers import WorkerProcess, tiny_artifact  # noqa: E402

from models.datasets import SimulatorConfig, simulate  # noqa: E402
from models.datasets.replay import from_simulation  # noqa: E402
from streams.producer import kafka_client_kwargs, produce_transactions  # noqa: E402
from streams.services.kafka import KafkaBroker  # noqa: E402
from streams.services.topics import ensure_topics  # noqa: E402
from streams.services.valkey import EmbeddedValkey  # noqa: E402
from streams.settings import Settings  # noqa: E402

RESULTS = REPO / "bench" / "results"
console = Console()


@contextlib.contextmanager
def services(root: Path) -> Iterator[tuple[str, str]]:
    """A Kafka broker and a Valkey for this run only."""
    broker = KafkaBroker(root / "kafka", owned=True, full_jit=True)
    valkey = EmbeddedValkey(root / "valkey", owned=True)
    try:
        broker.start()
        valkey.start()
        yield broker.bootstrap_servers, valkey.url
    finally:
        valkey.stop()
        broker.stop()


def model_dir(root: Path, wanted: Path | None) -> tuple[Path, str]:
    """The model to score with: ``--model``, else ``artifacts/default`` if it loads."""
    from models.scorer import Scorer

    candidate = wanted or REPO / "artifacts" / "default"
    try:
        Scorer.from_artifact(candidate)
        return candidate, str(
            candidate.relative_to(REPO) if candidate.is_relative_to(REPO) else candidate
        )
    except Exception as exc:  # noqa: BLE001 - any unloadable artifact: say so, use the tiny one
        if wanted is not None:
            raise
        console.print(f"[yellow]{candidate} does not load ({exc}); using the tiny test model")
    return tiny_artifact(root / "tiny-model"), "tiny test model (artifacts/default unusable)"


def source(n: int, seed: int = 0) -> list[tuple[dict[str, Any], int | None]]:
    """``n`` handbook-like transactions (5,000 cards, 10,000 terminals)."""
    days = max(3, int(n / 5000 / 2.0) + 2)
    frame = simulate(SimulatorConfig(n_customers=5000, n_terminals=10_000, n_days=days, seed=seed))
    out = list(from_simulation(frame).records())[:n]
    if len(out) < n:
        raise SystemExit(f"simulation gave {len(out)} < {n} transactions")
    return out


async def raw_consume(s: Settings, n: int) -> tuple[float, float]:
    """``(tx/s, tx per CPU-second)`` of a bare aiokafka consumer reading ``n`` messages."""
    consumer = AIOKafkaConsumer(
        s.topic_transactions,
        **kafka_client_kwargs(s),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=1 << 20,
    )
    await consumer.start()
    try:
        await consumer.seek_to_beginning()
        seen, loads = 0, orjson.loads
        started, cpu = time.perf_counter(), time.process_time()
        deadline = time.monotonic() + 300
        while seen < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw consumer read only {seen}/{n}")
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                for record in records:
                    loads(record.value)
                seen += len(records)
        return n / (time.perf_counter() - started), n / (time.process_time() - cpu)
    finally:
        await consumer.stop()


def drain_rate(s: Settings, n: int, log_dir: Path, *, workers: int = 1) -> dict[str, float]:
    """Scored tx/s of ``workers`` fresh workers (own group) draining ``n`` queued messages."""
    redis.Redis.from_url(s.redis_url).flushdb()  # each run starts with an empty Redis
    procs = [WorkerProcess(s, log_dir / f"{s.app_id}-{i}.log") for i in range(workers)]
    samples: list[tuple[float, float, float]] = []
    try:
        for p in procs:
            p.wait_ready(timeout=120)
        deadline = time.monotonic() + max(120.0, n / 2000)
        while time.monotonic() < deadline:
            done = sum(p.metric("riskstream_transactions_scored_total") for p in procs)
            samples.append((time.monotonic(), done, sum(_cpu_s(p.pid) for p in procs)))
            if done >= n:
                break
            time.sleep(0.25)
        rss = [_rss_mb(p.pid) for p in procs]
    finally:
        for p in procs:
            p.stop()
    t = np.array([a for a, _, _ in samples])
    c = np.array([b for _, b, _ in samples])
    cpu = np.array([x for _, _, x in samples])
    if c[-1] < n:
        raise RuntimeError(f"{s.app_id}: only {c[-1]:.0f}/{n} scored; see {log_dir}")
    # steady state: between 10 % and 90 % of the backlog (no start-up, no tail)
    lo, hi = np.searchsorted(c, 0.1 * n), np.searchsorted(c, 0.9 * n)
    steady = (c[hi] - c[lo]) / (t[hi] - t[lo]) if hi > lo and t[hi] > t[lo] else float("nan")
    # CPU-time rate: what one uncontended core would do (the machine is shared)
    per_cpu = (c[hi] - c[lo]) / (cpu[hi] - cpu[lo]) if cpu[hi] > cpu[lo] else float("nan")
    first = t[np.argmax(c > 0)]
    return {
        "steady_tx_per_s": float(steady),
        "overall_tx_per_s": float(n / (t[-1] - first)),
        "tx_per_cpu_s": float(per_cpu),
        "rss_mb": float(max(rss)),
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def _latencies(s: Settings, tx_ids: set[str], timeout: float = 60.0) -> list[float]:
    consumer = AIOKafkaConsumer(
        s.topic_scores,
        **kafka_client_kwargs(s),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    out: list[float] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < len(tx_ids) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for record in records:
                    v = orjson.loads(record.value)
                    if v["tx_id"] in tx_ids:
                        out.append(float(v["latency_ms"]))
        return out
    finally:
        await consumer.stop()


def latency_at(s: Settings, rate: int, seconds: float, seed: int) -> dict[str, float]:
    """Produce→score percentiles with ``rate`` tx/s for ``seconds`` into a running worker."""
    rows = source(int(rate * seconds), seed=seed)
    rows = [({**tx, "tx_id": f"lat{rate}-{tx['tx_id']}"}, None) for tx, _ in rows]
    stats = asyncio.run(produce_transactions(s, rows, rate=rate, stamp_now=True))
    lat = np.array(asyncio.run(_latencies(s, {tx["tx_id"] for tx, _ in rows})))
    warm = lat[len(lat) // 10 :]  # the first second warms the worker's caches
    return {
        "achieved_rate": round(stats.rate, 1),
        "n": int(warm.size),
        "p50": round(float(np.percentile(warm, 50)), 2),
        "p95": round(float(np.percentile(warm, 95)), 2),
        "p99": round(float(np.percentile(warm, 99)), 2),
        "max": round(float(warm.max()), 2),
    }


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
        "runs": [round(v, 1) for v in values],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tx", type=int, default=200_000, help="backlog size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--no-stream-mode", action="store_true")
    parser.add_argument("--model", type=Path, default=None, help="model artifact folder")
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    with (
        tempfile.TemporaryDirectory(prefix="rs-bench-") as tmp,
        services(Path(tmp)) as (kafka, redis),
    ):
        root = Path(tmp)
        model, model_name = model_dir(root, args.model)
        base = Settings(
            kafka_bootstrap_servers=kafka,
            redis_url=redis,
            model_path=model,
            state_dir=root / "state",
            app_id="bench",
            web_port=0,
        )
        ensure_topics(base)
        console.print(f"preloading {args.tx:,} transactions ...")
        preload = asyncio.run(produce_transactions(base, source(args.tx)))
        raw_runs = [asyncio.run(raw_consume(base, args.tx)) for _ in range(args.repeats)]
        raw = [wall for wall, _ in raw_runs]
        raw_cpu = [per_cpu for _, per_cpu in raw_runs]
        console.print(f"raw aiokafka: {spread(raw)}")
        batch = []
        for r in range(args.repeats):
            s = base.model_copy(update={"app_id": f"bench-batch-{r}"})
            batch.append(drain_rate(s, args.tx, root))
            console.print(f"worker (batch mode) run {r}: {batch[-1]}")
        stream: list[dict[str, float]] = []
        if not args.no_stream_mode:
            s = base.model_copy(update={"app_id": "bench-stream", "consume_mode": "stream"})
            stream.append(drain_rate(s, args.tx, root))
            console.print(f"worker (stream mode, Faust take()): {stream[-1]}")
        two = drain_rate(base.model_copy(update={"app_id": "bench-two"}), args.tx, root, workers=2)
        console.print(f"two workers: {two}")
        lat_settings = base.model_copy(
            update={
                "app_id": "bench-latency",
                "topic_transactions": "bench-lat-transactions",
                "topic_scores": "bench-lat-scores",
                "topic_alerts": "bench-lat-alerts",
            }
        )
        ensure_topics(lat_settings)
        worker = WorkerProcess(lat_settings, root / "latency-worker.log")
        try:
            worker.wait_ready(timeout=120)
            time.sleep(2.0)
            lat = {
                rate: latency_at(lat_settings, rate, args.latency_seconds, seed=rate)
                for rate in (1000, 5000)
            }
        finally:
            worker.stop()
    one = spread([b["steady_tx_per_s"] for b in batch])
    one_cpu = spread([b["tx_per_cpu_s"] for b in batch])
    raw_s, raw_c = spread(raw), spread(raw_cpu)
    load = os.getloadavg()
    result = {
        "command": "python -m bench.bench_pipeline " + " ".join(argv or sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": [round(x, 2) for x in load],
        },
        "model": model_name,
        "backlog_tx": args.tx,
        "preload_tx_per_s": round(preload.rate, 1),
        "summary": {
            "scored_tx_per_s_1_worker": one["median"],
            "scored_tx_per_s_2_workers": round(two["steady_tx_per_s"], 1),
            "raw_consume_tx_per_s": raw_s["median"],
            "ratio_to_raw": round(one["median"] / raw_s["median"], 3),
            "latency_ms_at_1k": lat[1000],
            "latency_ms_at_5k": lat[5000],
        },
        "per_cpu_second": {  # contention-free view on a shared machine
            "scored_tx_per_cpu_s_1_worker": one_cpu["median"],
            "raw_consume_tx_per_cpu_s": raw_c["median"],
            "ratio_to_raw": round(one_cpu["median"] / raw_c["median"], 3),
            "worker_cpu_us_per_tx": round(1e6 / one_cpu["median"], 1),
        },
        "detail": {
            "raw_consume_tx_per_s": raw_s,
            "raw_consume_tx_per_cpu_s": raw_c,
            "batch_mode_1_worker": {"steady": one, "per_cpu_s": one_cpu, "runs": batch},
            "stream_mode_1_worker": stream,
            "batch_mode_2_workers": two,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title=f"pipeline ({args.tx:,} tx backlog, {model_name}; load {load[0]:.1f})")
    table.add_column("figure")
    table.add_column("wall clock", justify="right")
    table.add_column("per CPU-second", justify="right")
    table.add_row(
        "raw aiokafka consume (getmany + orjson)",
        f"{raw_s['median']:,.0f} tx/s",
        f"{raw_c['median']:,.0f} tx",
    )
    table.add_row(
        "1 worker, batch mode (steady)",
        f"{one['median']:,.0f} tx/s",
        f"{one_cpu['median']:,.0f} tx",
    )
    if stream:
        table.add_row(
            "1 worker, stream mode (Faust take)",
            f"{stream[0]['steady_tx_per_s']:,.0f} tx/s",
            f"{stream[0]['tx_per_cpu_s']:,.0f} tx",
        )
    table.add_row(
        "2 workers, batch mode",
        f"{two['steady_tx_per_s']:,.0f} tx/s",
        f"{two['tx_per_cpu_s']:,.0f} tx",
    )
    table.add_row(
        "ratio 1 worker / raw",
        f"{result['summary']['ratio_to_raw']:.3f}",
        f"{result['per_cpu_second']['ratio_to_raw']:.3f}",
    )
    for rate in (1000, 5000):
        l = lat[rate]  # noqa: E741
        table.add_row(
            f"produce→score at {rate:,}/s (p50/p95/p99 ms)",
            f"{l['p50']:.1f} / {l['p95']:.1f} / {l['p99']:.1f}",
            "",
        )
    console.print(table)
    console.print(f"wrote {RESULTS / 'pipeline.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
