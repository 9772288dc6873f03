"""Where one worker's CPU goes while it drains a backlog at full rate (py-spy).

Starts Kafka and Valkey for the run, preloads ``--tx`` transactions, starts one
``riskstream worker`` (batch consume mode), and records it with ``py-spy record`` (raw,
collapsed stacks, all threads, idle samples left out) from 10 % to 90 % of the backlog.
Prints the top frames by self time and by inclusive time (% of the samples) and writes
the collapsed stacks, gzipped, to ``bench/results/profile/<name>.collapsed.txt.gz``
(``zcat`` them into any collapsed-stack flame-graph tool, or speedscope) with the summary
in ``<name>.top.txt``. Not part of ``make bench``.

    .venv/bin/python -m bench.profile_pipeline [--tx 150000] [--rate 250] [--top 25]
        [--name worker] [--code DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gzip
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.bench_pipeline import REPO, RESULTS, WorkerProcess, model_dir, services, source
from streams.producer import produce_transactions
from streams.services.topics import ensure_topics
from streams.settings import Settings

PY_SPY = Path(sys.executable).with_name("py-spy")


def summarize(collapsed: Path, top: int) -> str:
    """Top frames of a py-spy raw (collapsed) profile, by self and by inclusive samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    samples = _samples(collapsed)
    total = sum(n for _, n in samples)
    for frames, n in samples:
        own[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += n
    lines = [f"{total} samples", "", "by component (% of samples):"]
    lines += [f"  {share:5.1f}  {name}" for name, share in by_component(samples)]
    lines += ["", f"top {top} by self time (% of samples):"]
    lines += [f"  {100 * n / total:5.1f}  {frame}" for frame, n in own.most_common(top)]
    lines += ["", f"top {top} by inclusive time (% of samples; start-up frames left out):"]
    nested = [(f, n) for f, n in inclusive.most_common() if n < 0.85 * total][:top]
    lines += [f"  {100 * n / total:5.1f}  {frame}" for frame, n in nested]
    return "\n".join(lines)


# Components of the score path, each named by the frames that belong to it; a sample
# counts for the deepest component on its stack.
COMPONENTS = (
    ("parse + validate", ("ScorePipeline._validate",)),
    ("card features + state", ("card_features", "CardStates.get", "CardStates.learn_one")),
    ("terminal features (cache, Redis refetch)", ("TerminalStore.",)),
    ("model scoring (matching net, explanations)", ("ScorePipeline._score_rows",)),
    ("score records + scored-vector entries", ("ScorePipeline._emit",)),
    ("Redis writes + alert claims + alerts", ("BatchWriter._run",)),
    ("card-state changelog flush", ("CardStates.flush",)),
    ("dead letters", ("ScorePipeline._dead_letter",)),
    ("Kafka fetch + record unpacking (aiokafka)", ("aiokafka/consumer/",)),
    ("Kafka produce (aiokafka)", ("aiokafka/producer/",)),
    ("Kafka connections (aiokafka)", ("aiokafka/",)),
    ("/metrics page", ("metrics_payload",)),
    ("feature-row assembly + batch loop", ("ScorePipeline._score (", "feature_row", "tx_features")),
    ("Redis client (RESP packing, replies)", ("redis/", "streams/resp.py")),
    (
        "event loops + asyncio/Faust glue",
        ("Worker.execute_from_commandline", "ServiceThread._start_thread"),
    ),
    ("offset acks + commits", ("ack_records", "Consumer.commit", "_commit")),
)


def by_component(samples: list[tuple[list[str], int]]) -> list[tuple[str, float]]:
    """Share of the samples per :data:`COMPONENTS` entry (the rest: event loop, Faust)."""
    counts: collections.Counter[str] = collections.Counter()
    total = sum(n for _, n in samples)
    for frames, n in samples:
        name = "event loop, Faust/mode, other"
        for frame in reversed(frames):
            hit = next((c for c, marks in COMPONENTS if any(m in frame for m in marks)), None)
            if hit is not None:
                name = hit
                break
        counts[name] += n
    return [(name, 100 * n / total) for name, n in counts.most_common()]


def _samples(collapsed: Path) -> list[tuple[list[str], int]]:
    """``(frames, count)`` per stack of a py-spy raw profile (plain or gzipped)."""
    raw = collapsed.read_bytes()
    text = (gzip.decompress(raw) if collapsed.suffix == ".gz" else raw).decode()
    out = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            out.append((stack.split(";"), int(count)))
    return out


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"; keep the thread frames as they are
    name, _, where = frame.partition(" (")
    if not where:
        return frame
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", str(REPO) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tx", type=int, default=150_000)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--name", default="worker", help="output file stem")
    parser.add_argument("--model", type=Path, default=None, help="model artifact folder")
    parser.add_argument(
        "--paced",
        type=int,
        default=0,
        help="instead of a backlog, send --tx transactions at this many tx/s into the running "
        "worker (stamped now, as the latency benchmark does) and profile that",
    )
    parser.add_argument(
        "--code",
        type=Path,
        default=None,
        help="run the worker on another copy of streams/ and models/ (e.g. the last commit's, "
        "from `git archive HEAD streams models | tar -x -C DIR`), for a before/after profile",
    )
    args = parser.parse_args(argv)
    out_dir = RESULTS / "profile"
    out_dir.mkdir(parents=True, exist_ok=True)
    collapsed = out_dir / f"{args.name}.collapsed.txt"
    with tempfile.TemporaryDirectory(prefix="rs-prof-") as tmp, services(Path(tmp)) as (k, r):
        root = Path(tmp)
        model, _ = model_dir(root, args.model)
        s = Settings(
            kafka_bootstrap_servers=k,
            redis_url=r,
            model_path=model,
            state_dir=root / "state",
            app_id="prof",
            web_port=0,
        )
        ensure_topics(s)
        if not args.paced:
            asyncio.run(produce_transactions(s, source(args.tx)))
        redis.Redis.from_url(r).flushdb()
        extra = {"PYTHONPATH": str(args.code.resolve())} if args.code else {}
        worker = WorkerProcess(s, root / "worker.log", **extra)
        spy = None
        try:
            worker.wait_ready(timeout=120)
            if args.paced:
                return _profile_paced(args, s, worker, collapsed, out_dir)
            started = time.monotonic()
            while worker.metric("riskstream_transactions_scored_total") < 0.1 * args.tx:
                if time.monotonic() - started > 300:
                    raise RuntimeError("worker did not start scoring")
                time.sleep(0.05)
            spy = subprocess.Popen(  # noqa: S603
                [str(PY_SPY), "record", "--pid", str(worker.pid), "--rate", str(args.rate)]
                + ["--format", "raw", "--threads", "--nonblocking", "-o", str(collapsed)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            cpu0, t0 = _cpu_s(worker.pid), time.monotonic()
            n0 = worker.metric("riskstream_transactions_scored_total")
            while (n := worker.metric("riskstream_transactions_scored_total")) < 0.9 * args.tx:
                time.sleep(0.5)  # a scrape costs the worker CPU: poll gently
            cpu1, t1 = _cpu_s(worker.pid), time.monotonic()
        finally:
            if spy is not None:
                spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
                spy.wait(timeout=60)
            worker.stop()
    print(f"load average: {os.getloadavg()}")
    print(
        f"profiled {n - n0:.0f} tx in {t1 - t0:.1f} s: {(n - n0) / (t1 - t0):,.0f} tx/s, "
        f"{1e6 * (cpu1 - cpu0) / (n - n0):.1f} us CPU/tx (py-spy on: slower than unprofiled)"
    )
    text = summarize(collapsed, args.top)
    (out_dir / f"{args.name}.top.txt").write_text(text + "\n")
    packed = collapsed.with_name(collapsed.name + ".gz")  # ~25x smaller, for the repo
    packed.write_bytes(gzip.compress(collapsed.read_bytes()))
    collapsed.unlink()
    print(text)
    return 0


def _profile_paced(
    args: argparse.Namespace, s: Settings, worker: WorkerProcess, collapsed: Path, out_dir: Path
) -> int:
    """Profile the worker while ``args.tx`` transactions arrive at ``args.paced`` tx/s."""
    rows = [({**tx, "tx_id": f"paced-{tx['tx_id']}"}, None) for tx, _ in source(args.tx)]
    spy = subprocess.Popen(  # noqa: S603
        [str(PY_SPY), "record", "--pid", str(worker.pid), "--rate", str(args.rate)]
        + ["--format", "raw", "--threads", "--nonblocking", "-o", str(collapsed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        cpu0, n0 = _cpu_s(worker.pid), worker.metric("riskstream_transactions_scored_total")
        asyncio.run(produce_transactions(s, rows, rate=args.paced, stamp_now=True))
        deadline = time.monotonic() + 60
        while worker.metric("riskstream_transactions_scored_total") < n0 + args.tx:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        n = worker.metric("riskstream_transactions_scored_total") - n0
        cpu = _cpu_s(worker.pid) - cpu0
    finally:
        spy.send_signal(2)
        spy.wait(timeout=60)
    print(f"load average: {os.getloadavg()}")
    print(f"paced {args.paced} tx/s: {n:.0f} tx scored, {1e6 * cpu / max(n, 1):.1f} us CPU/tx")
    text = summarize(collapsed, args.top)
    (out_dir / f"{args.name}.top.txt").write_text(text + "\n")
    packed = collapsed.with_name(collapsed.name + ".gz")
    packed.write_bytes(gzip.compress(collapsed.read_bytes()))
    collapsed.unlink()
    print(text)
    return 0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
