"""Decisions and the wire bytes of ``scores`` and ``alerts`` records, per micro-batch.

Building a ``faust.Record`` and running :func:`streams.records.encode` for every
transaction costs more than the rest of the scoring. These functions write the same
JSON straight from the batch's arrays with one ``orjson.dumps`` per record; a unit test
holds their output equal to ``encode(Score(...))`` / ``encode(Alert(...))`` and
parseable by ``parse_score`` / ``parse_alert``.

>>> decisions(np.array([0.1, 0.5, 0.8, 0.95]), review=0.5, alert=0.8)
['allow', 'review', 'block', 'block']
>>> explanation_dicts([("t9", 1, 0.5)])
[{'case_id': 't9', 'label': 1, 'weight': 0.5}]
>>> alert_reason(0.93, 0.8, [("t9", 1, 0.5), ("t4", 0, 0.2)])
'score 0.930 >= 0.80; most similar: t9 (fraud, 50%), t4 (legit, 20%)'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from streams.records import SCHEMA_VERSION

Why = Sequence[tuple[str, int, float]]


def decisions(scores: np.ndarray, *, review: float, alert: float) -> list[str]:
    """``block`` at or above ``alert``, ``review`` at or above ``review``, else ``allow``."""
    index = (scores >= review).astype(np.int8) + (scores >= alert).astype(np.int8)
    names = ("allow", "review", "block")
    return [names[i] for i in index.tolist()]


def explanation_dicts(why: Why) -> list[dict[str, Any]]:
    """The ``explanation`` array of a score record."""
    return [{"case_id": str(c), "label": int(lab), "weight": float(w)} for c, lab, w in why]


def alert_reason(score: float, threshold: float, why: Why) -> str:
    """One line an analyst reads: the score, the threshold and the nearest labelled cases."""
    text = f"score {score:.3f} >= {threshold:.2f}"
    if why:
        cases = ", ".join(f"{c} ({'fraud' if lab else 'legit'}, {w:.0%})" for c, lab, w in why)
        text += f"; most similar: {cases}"
    return text


def score_value(
    *,
    tx_id: str,
    card_id: str,
    score: float,
    decision: str,
    model_version: str,
    scored_at: float,
    latency_ms: float,
    explanation: list[dict[str, Any]],
) -> dict[str, Any]:
    """The ``scores`` record as a dict, fields in :class:`~streams.records.Score` order."""
    return {
        "tx_id": tx_id,
        "card_id": card_id,
        "score": score,
        "decision": decision,
        "model_version": model_version,
        "scored_at": scored_at,
        "latency_ms": latency_ms,
        "explanation": explanation,
        "schema_version": SCHEMA_VERSION,
    }


def alert_value(score: dict[str, Any], *, amount: float, reason: str) -> dict[str, Any]:
    """The ``alerts`` record for a score dict, fields in :class:`~streams.records.Alert` order."""
    out = score.copy()  # one C-level copy; then move the two trailing fields behind
    explanation = out.pop("explanation")
    out.pop("schema_version", None)
    out["amount"] = amount
    out["reason"] = reason
    out["explanation"] = explanation
    out["schema_version"] = SCHEMA_VERSION
    return out


def dumps(value: dict[str, Any]) -> bytes:
    """Compact JSON bytes, as :func:`streams.records.encode` writes them."""
    return orjson.dumps(value)
