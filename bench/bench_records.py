"""Per-message cost of the wire records: parse + construct, encode, and the alternatives.

The score agent parses every transaction from raw bytes, so these microseconds are paid
20,000 times a second per worker. Prints a table and writes bench/results/records.json.
Never asserts on time.

    .venv/bin/python bench/bench_records.py [--number 20000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
import orjson
import pydantic

from streams.records import (
    Explanation,
    Label,
    RecordError,
    Score,
    Transaction,
    dead_letter,
    encode,
    parse_label,
    parse_score,
    parse_transaction,
)
from streams.records.schema import build

RESULTS = Path(__file__).resolve().parent / "results" / "records.json"

TX_FIELDS: dict[str, Any] = {
    "tx_id": "tx-000001234567",
    "ts": 1_700_000_000.123,
    "card_id": "card-004211",
    "terminal_id": "term-00932",
    "amount": 57.31,
    "currency": "EUR",
    "channel": "pos",
    "mcc": "5411",
    "country": "FR",
    "features": {"f1": 0.25, "f2": -1.5, "f3": 3.0, "f4": 0.0},
    "schema_version": 1,
}
TX = Transaction(**TX_FIELDS)
TX_RAW = encode(TX)
TX30 = Transaction(**{**TX_FIELDS, "features": {f"V{i}": i * 0.137 - 2.0 for i in range(30)}})
TX30_RAW = encode(TX30)
TX_INTS_RAW = TX_RAW.replace(b"57.31", b"57").replace(b"1700000000.123", b"1700000000")
TX_NEGATIVE_RAW = TX_RAW.replace(b"57.31", b"-57.31")
TX_NAN_RAW = TX_RAW.replace(b"57.31", b"NaN")
LABEL_RAW = encode(Label(tx_id="tx-000001234567", label=1, source="analyst", labelled_at=1.7e9))
SCORE_FIELDS: dict[str, Any] = {
    "tx_id": "tx-000001234567",
    "card_id": "card-004211",
    "score": 0.913,
    "decision": "block",
    "model_version": "v17",
    "scored_at": 1_700_000_000.2,
    "latency_ms": 4.2,
    "schema_version": 1,
}
EXPLAIN = [Explanation(case_id=f"tx-{i}", label=1, weight=0.3) for i in range(3)]
SCORE = Score(**SCORE_FIELDS, explanation=EXPLAIN)
SCORE_RAW = encode(SCORE)


class TxValidated(faust.Record, serializer="json", include_metadata=False, validation=True):
    """Faust's own validation and coercion switched on, for comparison only."""

    tx_id: str
    ts: float
    card_id: str
    terminal_id: str
    amount: float
    currency: str | None = None
    channel: str | None = None
    mcc: str | None = None
    country: str | None = None
    features: dict[str, float] = {}
    schema_version: int = 1


class TxPydantic(pydantic.BaseModel):
    """A pydantic model of the same shape, for comparison only (strict: no str->float)."""

    model_config = pydantic.ConfigDict(strict=True, frozen=True)
    tx_id: str
    ts: float
    card_id: str
    terminal_id: str
    amount: float = pydantic.Field(ge=0)
    currency: str | None = None
    channel: str | None = None
    mcc: str | None = None
    country: str | None = None
    features: dict[str, float] = {}
    schema_version: int = 1


def _catch(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        try:
            return fn()
        except RecordError as err:
            return err

    return run


def cases() -> list[tuple[str, str, Callable[[], object]]]:
    """(group, name, zero-argument callable) for every measured operation."""
    err = RecordError("not_json", "unexpected character")
    return [
        ("floor", "orjson.loads (transaction, 4 features)", lambda: orjson.loads(TX_RAW)),
        ("floor", "orjson.dumps (plain dict)", lambda: orjson.dumps(TX_FIELDS)),
        ("parse", "parse_transaction (4 features)", lambda: parse_transaction(TX_RAW)),
        ("parse", "parse_transaction (30 features)", lambda: parse_transaction(TX30_RAW)),
        ("parse", "parse_transaction (ints: full checker)", lambda: parse_transaction(TX_INTS_RAW)),
        ("parse", "parse_label", lambda: parse_label(LABEL_RAW)),
        ("parse", "parse_score (3 explanations)", lambda: parse_score(SCORE_RAW)),
        ("reject", "negative_amount", _catch(lambda: parse_transaction(TX_NEGATIVE_RAW))),
        ("reject", "non_finite (NaN token)", _catch(lambda: parse_transaction(TX_NAN_RAW))),
        ("reject", "not_json", _catch(lambda: parse_transaction(b"{garbage"))),
        (
            "reject",
            "dead_letter + encode",
            lambda: encode(dead_letter(b"{garbage", err, topic="t", partition=1, offset=2)),
        ),
        ("encode", "encode(Transaction)", lambda: encode(TX)),
        ("encode", "encode(Score, 3 explanations)", lambda: encode(SCORE)),
        ("encode", "encode(Score, validate=True)", lambda: encode(SCORE, validate=True)),
        ("construct", "Transaction(**kw)  faust __init__", lambda: Transaction(**TX_FIELDS)),
        ("construct", "Transaction.construct(**kw)", lambda: Transaction.construct(**TX_FIELDS)),
        (
            "construct",
            "build(Transaction, dict)  parser path",
            lambda: build(Transaction, dict(TX_FIELDS)),
        ),
        ("construct", "faust validation=True + validate", lambda: TxValidated(**TX_FIELDS)),
        (
            "construct",
            "Score(**kw)  faust __init__",
            lambda: Score(**SCORE_FIELDS, explanation=EXPLAIN),
        ),
        (
            "construct",
            "Score.construct(**kw)",
            lambda: Score.construct(**SCORE_FIELDS, explanation=EXPLAIN),
        ),
        ("alternative", "Transaction.loads  faust's own decode", lambda: Transaction.loads(TX_RAW)),
        (
            "alternative",
            "pydantic model_validate_json (no faust)",
            lambda: TxPydantic.model_validate_json(TX_RAW),
        ),
    ]


def measure(fn: Callable[[], object], number: int, repeat: int) -> tuple[float, float]:
    """(median, min) microseconds per call over ``repeat`` runs of ``number`` calls."""
    runs = [t / number * 1e6 for t in timeit.repeat(fn, number=number, repeat=repeat)]
    return statistics.median(runs), min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--number", type=int, default=20_000, help="calls per timing run")
    parser.add_argument("--repeat", type=int, default=7, help="timing runs per case")
    args = parser.parse_args()

    assert parse_transaction(TX_RAW) == TX and parse_score(SCORE_RAW) == SCORE  # sanity, not time
    load_before = os.getloadavg()
    rows = []
    print(f"{'group':<12}{'operation':<44}{'median µs':>10}{'min µs':>9}{'ops/s (median)':>16}")
    for group, name, fn in cases():
        fn()  # warm up caches and lazy imports
        median, best = measure(fn, args.number, args.repeat)
        rows.append(
            {
                "group": group,
                "name": name,
                "us_median": median,
                "us_min": best,
                "ops_per_s": 1e6 / median,
            }
        )
        print(f"{group:<12}{name:<44}{median:>10.2f}{best:>9.2f}{1e6 / median:>16,.0f}")
    meta = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "faust": faust.__version__,
        "orjson": orjson.__version__,
        "number": args.number,
        "repeat": args.repeat,
        "tx_bytes": len(TX_RAW),
        "tx30_bytes": len(TX30_RAW),
        "score_bytes": len(SCORE_RAW),
    }
    print(
        f"load average before/after: {load_before[0]:.2f} / {meta['loadavg_after'][0]:.2f} "
        f"on {meta['cpus']} CPUs (shared machine: compare rows within one run)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        orjson.dumps({"meta": meta, "results": rows}, option=orjson.OPT_INDENT_2).decode()
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
