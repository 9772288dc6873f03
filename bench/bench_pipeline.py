"""Pipeline speed, measured in one run on one broker: workers against raw aiokafka.

* ``raw_consume_tx_per_s``: a bare aiokafka consumer (``getmany(5000)`` + ``orjson.loads``)
  reading the preloaded ``transactions`` topic: the stack's limit on this machine.
* ``scored_tx_per_s_1_worker``: one ``riskstream worker`` (default ``batch`` consume mode)
  draining the whole backlog (steady rate between 10 % and 90 % of it), and
  ``worker_rss_mb_after_1m_tx``: that worker's RSS once it scored the backlog (1,000,000
  transactions by default). ``ratio_to_raw``: each worker repeat over the raw repeat
  measured next to it.
* ``python_path_tx_per_s_1_worker``: the same drain with ``RISKSTREAM_NATIVE=false``
  (the score path's Python references instead of its compiled kernels), alternated with
  the runs above: what ``streams/native`` is worth, measured in the same run.
* ``scored_tx_per_s_2_workers``: two workers in one group, until ``--two-tx`` are scored;
  also one run of the ``stream`` mode (Faust ``take()``) for comparison.
* ``latency_ms_at_1k`` / ``_at_5k``: produce→score p50/p95/p99 (from each score record's
  ``latency_ms``: Kafka record timestamp → scored) with transactions paced at 1,000 and
  5,000 tx/s into an idle worker (timestamps are the send time, as in a live stream).

Every figure is the median of ``--repeats`` runs with its spread (min, max, IQR, runs)
and the command that measures it. Kafka and Valkey are started for the run (real Apache
Kafka, embedded Valkey) in a temp folder, and stopped after. Prints a table; writes
``bench/results/pipeline.json``. Never asserts on time.

    .venv/bin/python -m bench.bench_pipeline [--tx 1000000] [--repeats 3]
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

from bench.stats import spread  # noqa: E402
from models.datasets import SimulatorConfig, simulate  # noqa: E402
from models.datasets.replay import from_simulation  # noqa: E402
from streams.producer import kafka_client_kwargs, produce_transactions  # noqa: E402
from streams.services.kafka import KafkaBroker  # noqa: E402
from streams.services.topics import ensure_topics  # noqa: E402
from streams.services.valkey import EmbeddedValkey  # noqa: E402
from streams.settings import Settings  # noqa: E402

RESULTS = REPO / "bench" / "results"
PARTS = ("drain", "python", "stream", "two", "latency")
#: the ``python`` part: the same drain with the compiled kernels off (their references)
PYTHON_PATH = {"RISKSTREAM_NATIVE": "false"}
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
    out = list(source_iter(n, seed))
    if len(out) < n:
        raise SystemExit(f"simulation gave {len(out)} < {n} transactions")
    return out


def source_iter(n: int, seed: int = 0) -> Iterator[tuple[dict[str, Any], int | None]]:
    """:func:`source` as a generator (a million dicts need not sit in memory at once)."""
    # ~2 tx per customer and day on average: simulate ~10 % more days than that needs
    days = max(3, int(n / 5000 / 1.8) + 2)
    frame = simulate(SimulatorConfig(n_customers=5000, n_terminals=10_000, n_days=days, seed=seed))
    if len(frame) < n:
        raise SystemExit(f"simulation gave {len(frame)} < {n} transactions")
    for i, row in enumerate(from_simulation(frame).records()):
        if i >= n:
            return
        yield row


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


WORKER_ENV: dict[str, str] = {}  # extra environment of every worker (``--code``)


def drain_rate(
    s: Settings, n: int, log_dir: Path, *, workers: int = 1, env: dict[str, str] | None = None
) -> dict[str, float]:
    """Scored tx/s of ``workers`` fresh workers (own group) draining ``n`` queued messages."""
    redis.Redis.from_url(s.redis_url).flushdb()  # each run starts with an empty Redis
    procs = [
        WorkerProcess(s, log_dir / f"{s.app_id}-{i}.log", **{**WORKER_ENV, **(env or {})})
        for i in range(workers)
    ]
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
            time.sleep(1.0)  # a scrape costs the worker CPU: poll gently
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
    rows = [({**tx, "tx_id": f"lat{rate}-{seed}-{tx['tx_id']}"}, None) for tx, _ in rows]
    stats, raw = asyncio.run(_produce_and_watch(s, rows, rate))
    lat = np.array(asyncio.run(_latencies(s, {tx["tx_id"] for tx, _ in rows})))
    warm = lat[len(lat) // 10 :]  # the first second warms the worker's caches
    raw_warm = np.array(raw[len(raw) // 10 :] or [np.nan])
    return {
        "achieved_rate": round(stats.rate, 1),
        "n": int(warm.size),
        "p50": round(float(np.percentile(warm, 50)), 2),
        "p95": round(float(np.percentile(warm, 95)), 2),
        "p99": round(float(np.percentile(warm, 99)), 2),
        "max": round(float(warm.max()), 2),
        # the same records' timestamp → a bare aiokafka consumer has them: the floor that
        # producer, broker and fetch set on this machine, whatever the worker does
        "raw_consumer_p50": round(float(np.percentile(raw_warm, 50)), 2),
        "raw_consumer_p99": round(float(np.percentile(raw_warm, 99)), 2),
    }


async def _produce_and_watch(
    s: Settings, rows: list[tuple[dict[str, Any], int | None]], rate: int
) -> tuple[Any, list[float]]:
    """Produce ``rows`` at ``rate`` while a bare consumer (no group) records, per record,
    the ms from its Kafka timestamp to the moment it got it."""
    consumer = AIOKafkaConsumer(
        s.topic_transactions,
        **kafka_client_kwargs(s),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="latest",
    )
    await consumer.start()
    await consumer.seek_to_end()
    lags: list[float] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set() or len(lags) < len(rows):
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.time() * 1000.0
            for records in batch.values():
                lags.extend([now - r.timestamp for r in records])
            if done.is_set() and not batch:
                return

    watcher = asyncio.ensure_future(watch())
    try:
        stats = await produce_transactions(s, rows, rate=rate, stamp_now=True)
    finally:
        done.set()
        await watcher
        await consumer.stop()
    return stats, lags


def _latency_figure(runs: list[dict[str, float]], command: str) -> dict[str, Any]:
    """Median and spread of each percentile over the repeats."""
    out: dict[str, Any] = {
        q: spread([r[q] for r in runs]) for q in ("p50", "p95", "p99", "achieved_rate")
    }
    out["n_per_run"] = runs[0]["n"]
    out["command"] = command
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tx", type=int, default=1_000_000, help="backlog size")
    parser.add_argument("--two-tx", type=int, default=300_000, help="scored by 2 workers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--model", type=Path, default=None, help="model artifact folder")
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="comma-separated subset of drain,stream,two,latency (default: all)",
    )
    parser.add_argument(
        "--code",
        type=Path,
        default=None,
        help="run the workers on another copy of streams/ and models/ (before/after)",
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if args.code:
        WORKER_ENV["PYTHONPATH"] = str(args.code.resolve())
    command = "python -m bench.bench_pipeline " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    command = command.strip()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    started = time.monotonic()
    load_start = os.getloadavg()
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
        preload = asyncio.run(produce_transactions(base, source_iter(args.tx)))
        raw_runs: list[tuple[float, float]] = []
        batch: list[dict[str, float]] = []
        python: list[dict[str, float]] = []
        for r in range(args.repeats if "drain" in parts else 0):
            # raw and worker alternate: each ratio compares runs made next to each other
            raw_runs.append(asyncio.run(raw_consume(base, args.tx)))
            console.print(f"raw aiokafka run {r}: {raw_runs[-1][0]:,.0f} tx/s")
            s = base.model_copy(update={"app_id": f"bench-batch-{r}"})
            batch.append(drain_rate(s, args.tx, root))
            console.print(f"worker (batch mode) run {r}: {batch[-1]}")
            if "python" in parts:  # alternated with the runs above: the same conditions
                s = base.model_copy(update={"app_id": f"bench-python-{r}"})
                python.append(drain_rate(s, args.tx, root, env=PYTHON_PATH))
                console.print(f"worker, Python score path, run {r}: {python[-1]}")
        stream: list[dict[str, float]] = []
        if "stream" in parts:
            s = base.model_copy(update={"app_id": "bench-stream", "consume_mode": "stream"})
            stream.append(drain_rate(s, min(args.two_tx, args.tx), root))
            console.print(f"worker (stream mode, Faust take()): {stream[-1]}")
        two = []
        for r in range(args.repeats if "two" in parts else 0):
            s = base.model_copy(update={"app_id": f"bench-two-{r}"})
            two.append(drain_rate(s, min(args.two_tx, args.tx), root, workers=2))
            console.print(f"two workers run {r}: {two[-1]}")
        lat: dict[int, list[dict[str, float]]] = {1000: [], 5000: []}
        if "latency" in parts:
            lat = latencies(base, root, args.repeats, args.latency_seconds)
    summary: dict[str, Any] = {}
    per_cpu: dict[str, Any] = {}
    if batch:
        raw = [wall for wall, _ in raw_runs]
        raw_cpu = [cpu for _, cpu in raw_runs]
        rates = [b["steady_tx_per_s"] for b in batch]
        cpu_rates = [b["tx_per_cpu_s"] for b in batch]
        summary["scored_tx_per_s_1_worker"] = spread(rates, command=command, digits=1)
        summary["raw_consume_tx_per_s"] = spread(raw, command=command, digits=1)
        summary["ratio_to_raw"] = spread(
            [a / b for a, b in zip(rates, raw, strict=True)], command=command, digits=4
        )
        rss = spread([b["rss_mb"] for b in batch], command=command, digits=1)
        if args.tx >= 1_000_000:
            summary["worker_rss_mb_after_1m_tx"] = {**rss, "after_tx": args.tx}
        per_cpu = {  # contention-free view on a shared machine
            "scored_tx_per_cpu_s_1_worker": spread(cpu_rates, digits=1),
            "raw_consume_tx_per_cpu_s": spread(raw_cpu, digits=1),
            "ratio_to_raw": spread(
                [a / b for a, b in zip(cpu_rates, raw_cpu, strict=True)], digits=4
            ),
            "worker_cpu_us_per_tx": round(1e6 / statistics.median(cpu_rates), 1),
            "worker_rss_mb_after_backlog": {**rss, "after_tx": args.tx},
        }
    if python:
        rates = [b["steady_tx_per_s"] for b in python]
        summary["python_path_tx_per_s_1_worker"] = spread(rates, command=command, digits=1)
        summary["python_path_ratio_to_raw"] = spread(
            [a / b for a, b in zip(rates, raw, strict=True)], command=command, digits=4
        )
        per_cpu["python_path_cpu_us_per_tx"] = round(
            1e6 / statistics.median([b["tx_per_cpu_s"] for b in python]), 1
        )
    if two:
        summary["scored_tx_per_s_2_workers"] = spread(
            [t["steady_tx_per_s"] for t in two], command=command, digits=1
        )
    if lat[1000]:
        summary["latency_ms_at_1k"] = _latency_figure(lat[1000], command)
        summary["latency_ms_at_5k"] = _latency_figure(lat[5000], command)
    load = os.getloadavg()
    result = {
        "command": command,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            # the build matters: a pyenv build without PGO/LTO ran the worker ~19 % slower
            "python_executable": os.path.realpath(sys.executable),
            "load_average_at_start": [round(x, 2) for x in load_start],
            "load_average_at_end": [round(x, 2) for x in load],
        },
        "seconds": round(time.monotonic() - started, 1),
        "model": model_name,
        "worker_code": str(args.code) if args.code else "this checkout",
        "backlog_tx": args.tx,
        "preload_tx_per_s": round(preload.rate, 1),
        "summary": summary,
        "per_cpu_second": per_cpu,
        "detail": {
            "batch_mode_1_worker": batch,
            "python_path_1_worker": python,
            "stream_mode_1_worker": stream,
            "batch_mode_2_workers": two,
            "latency_runs": {str(k): v for k, v in lat.items()},
            "latency_breakdown_log": BREAKDOWN,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    # a partial or other-code run must not stand in for the full one in make bench's summary
    name = "pipeline" if parts >= set(PARTS) and not args.code else "pipeline-partial"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print_table(result, model_name, stream)
    console.print(f"wrote {RESULTS / f'{name}.json'}")
    return 0


def latencies(
    base: Settings, root: Path, repeats: int, seconds: float
) -> dict[int, list[dict[str, float]]]:
    """Produce→score percentiles at 1,000 and 5,000 tx/s, ``repeats`` times each."""
    lat_settings = base.model_copy(
        update={
            "app_id": "bench-latency",
            "topic_transactions": "bench-lat-transactions",
            "topic_scores": "bench-lat-scores",
            "topic_alerts": "bench-lat-alerts",
        }
    )
    ensure_topics(lat_settings)
    worker = WorkerProcess(lat_settings, root / "latency-worker.log", **WORKER_ENV)
    lat: dict[int, list[dict[str, float]]] = {1000: [], 5000: []}
    try:
        worker.wait_ready(timeout=120)
        time.sleep(2.0)
        for r in range(repeats):
            for rate in lat:
                lat[rate].append(latency_at(lat_settings, rate, seconds, r))
                console.print(f"latency at {rate}/s run {r}: {lat[rate][-1]}")
    finally:
        worker.stop()
        # the worker logs where the time went every 10 s (streams.timing): keep those lines
        log_text = (root / "latency-worker.log").read_text(errors="replace")
        BREAKDOWN[:] = [line for line in log_text.splitlines() if "score breakdown" in line]
        for line in BREAKDOWN:
            console.print(line[line.index("produce") :], markup=False, highlight=False)
    return lat


BREAKDOWN: list[str] = []  # the latency worker's produce→score breakdown log lines


def _fig(f: dict[str, Any], fmt: str = "{:,.0f}") -> str:
    return f"{fmt.format(f['median'])} [{fmt.format(f['min'])}-{fmt.format(f['max'])}]"


def print_table(result: dict[str, Any], model_name: str, stream: list[dict[str, float]]) -> None:
    """The medians with their [min-max] over the repeats."""
    summary, per_cpu = result["summary"], result["per_cpu_second"]
    load = result["machine"]["load_average_at_end"]
    table = Table(
        title=f"pipeline ({result['backlog_tx']:,} tx backlog, {model_name}; load {load[0]:.1f})"
    )
    table.add_column("figure (median [min-max])")
    table.add_column("wall clock", justify="right")
    table.add_column("per CPU-second", justify="right")
    if "scored_tx_per_s_1_worker" in summary:
        table.add_row(
            "raw aiokafka consume (getmany + orjson), tx/s",
            _fig(summary["raw_consume_tx_per_s"]),
            _fig(per_cpu["raw_consume_tx_per_cpu_s"]),
        )
        table.add_row(
            "1 worker, batch mode (steady), tx/s",
            _fig(summary["scored_tx_per_s_1_worker"]),
            _fig(per_cpu["scored_tx_per_cpu_s_1_worker"]),
        )
    if "python_path_tx_per_s_1_worker" in summary:
        table.add_row(
            "1 worker, Python score path (RISKSTREAM_NATIVE=false), tx/s",
            _fig(summary["python_path_tx_per_s_1_worker"]),
            f"{per_cpu['python_path_cpu_us_per_tx']} µs CPU/tx",
        )
    if stream:
        table.add_row(
            "1 worker, stream mode (Faust take), one run",
            f"{stream[0]['steady_tx_per_s']:,.0f}",
            f"{stream[0]['tx_per_cpu_s']:,.0f}",
        )
    if "scored_tx_per_s_2_workers" in summary:
        table.add_row("2 workers, batch mode, tx/s", _fig(summary["scored_tx_per_s_2_workers"]), "")
    if "ratio_to_raw" in summary:
        table.add_row(
            "ratio 1 worker / raw",
            _fig(summary["ratio_to_raw"], "{:.3f}"),
            _fig(per_cpu["ratio_to_raw"], "{:.3f}"),
        )
    for key, rate in (("latency_ms_at_1k", 1000), ("latency_ms_at_5k", 5000)):
        if key in summary:
            lat = summary[key]
            table.add_row(
                f"produce→score at {rate:,}/s, p50 / p95 / p99 ms",
                " / ".join(_fig(lat[q], "{:.1f}") for q in ("p50", "p95", "p99")),
                "",
            )
    if per_cpu:
        rss = per_cpu["worker_rss_mb_after_backlog"]
        table.add_row(f"worker RSS after {rss['after_tx']:,} tx, MB", _fig(rss), "")
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
