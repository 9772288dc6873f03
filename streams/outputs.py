"""Decisions and the wire bytes of ``scores`` and ``alerts`` records, per micro-batch.

Building a ``faust.Record`` and running :func:`streams.records.encode` for every
transaction costs more than the rest of the scoring. These functions write the same
JSON straight from the batch's arrays with one ``orjson.dumps`` per record; a unit test
holds their output equal to ``encode(Score(...))`` / ``encode(Alert(...))`` and
parseable by ``parse_score`` / ``parse_alert``.

>>> [DECISION_NAMES[c] for c in decision_codes(np.array([0.1, 0.5, 0.8, 0.95]),
...                                             review=0.5, alert=0.8)]
['allow', 'review', 'block', 'block']
>>> explanation_dicts([("t9", 1, 0.5)])
[{'case_id': 't9', 'label': 1, 'weight': 0.5}]
>>> alert_reason(0.93, 0.8, [("t9", 1, 0.5), ("t4", 0, 0.2)])
'score 0.930 >= 0.80; most similar: t9 (fraud, 50%), t4 (legit, 20%)'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union, cast

import numpy as np
import orjson

from streams import native
from streams.records import SCHEMA_VERSION

Why = Sequence[tuple[str, int, float]]
ExplanationValue = Union[list[dict[str, Any]], orjson.Fragment]  # noqa: UP007 - a runtime alias


class BatchExplanations:
    """The top-k explanations of a scored batch: per row, support indices and weights.

    Built from the scorer's arrays (:meth:`models.scorer.Scorer.score_batch_top`), or from
    per-row ``(case_id, label, weight)`` lists (:meth:`from_tuples`, any scorer).
    :meth:`json_rows` writes the ``explanation`` arrays of many rows in bulk: the
    weights go through one ``orjson.dumps``, and each support case's
    ``{"case_id":…,"label":…,"weight":`` prefix is serialized once per support set.

    >>> ex = BatchExplanations([[1, 0]], [[0.5, 0.25]], ["a", "b"], [0, 1])
    >>> ex.row(0)
    [('b', 1, 0.5), ('a', 0, 0.25)]
    >>> ex.json_rows([0]) == [orjson.dumps(explanation_dicts(ex.row(0)))]
    True
    """

    __slots__ = ("_top", "_weights", "arrays", "case_ids", "labels")

    _prefixes: tuple[int, Sequence[Any], list[bytes]] | None = None  # the last support's

    def __init__(
        self,
        top: Sequence[Sequence[int]] | np.ndarray,
        weights: Sequence[Sequence[float]] | np.ndarray,
        case_ids: Sequence[Any],
        labels: Sequence[int],
    ) -> None:
        #: ``(top [B, k] int64, weights [B, k] float64)`` when built from the scorer's
        #: arrays (every row the same ``k``): what the compiled record writer reads
        self.arrays: tuple[np.ndarray, np.ndarray] | None = None
        if isinstance(top, np.ndarray) and isinstance(weights, np.ndarray):
            self.arrays = (
                np.ascontiguousarray(top, dtype=np.int64),
                np.ascontiguousarray(weights, dtype=np.float64),
            )
        self._top: Any = top
        self._weights: Any = weights
        self.case_ids = case_ids
        self.labels = labels

    @property
    def top(self) -> Sequence[Sequence[int]]:
        """Per row, the support indices of its explanation, heaviest first."""
        if isinstance(self._top, np.ndarray):
            self._top = self._top.tolist()
        return cast(Sequence[Sequence[int]], self._top)

    @property
    def weights(self) -> Sequence[Sequence[float]]:
        """Per row, the normalized attention weights of :attr:`top`."""
        if isinstance(self._weights, np.ndarray):
            self._weights = np.asarray(self._weights, dtype=np.float64).tolist()
        return cast(Sequence[Sequence[float]], self._weights)

    @classmethod
    def from_tuples(cls, why: Sequence[Why]) -> BatchExplanations:
        """From per-row ``(case_id, label, weight)`` lists (rows may differ in length)."""
        ids: list[Any] = []
        labels: list[int] = []
        top: list[list[int]] = []
        weights: list[list[float]] = []
        for row in why:
            top.append(list(range(len(ids), len(ids) + len(row))))
            weights.append([float(w) for _, _, w in row])
            ids += [c for c, _, _ in row]
            labels += [int(lab) for _, lab, _ in row]
        return cls(top, weights, ids, labels)

    def row(self, j: int) -> list[tuple[str, int, float]]:
        """Row ``j`` as ``(case_id, label, weight)``, heaviest first."""
        ids, labels = self.case_ids, self.labels
        if self.arrays is not None:  # one row of the arrays, not the whole batch as lists
            top, weights = self.arrays[0][j].tolist(), self.arrays[1][j].tolist()
        else:
            top, weights = self.top[j], self.weights[j]
        return [(ids[i], labels[i], w) for i, w in zip(top, weights)]  # noqa: B905

    def case_prefixes(self) -> list[bytes]:
        """Each support case's ``{"case_id":…,"label":…,"weight":`` (cached per support)."""
        ids = self.case_ids
        cached = BatchExplanations._prefixes
        if cached is not None and cached[0] == id(ids) and cached[1] is ids:
            return cached[2]
        prefixes = [
            b'{"case_id":' + orjson.dumps(str(c)) + b',"label":%d,"weight":' % int(lab)
            for c, lab in zip(ids, self.labels, strict=True)
        ]
        BatchExplanations._prefixes = (id(ids), ids, prefixes)  # holds ids: the id stays valid
        return prefixes

    def json_rows(self, rows: Sequence[int]) -> list[bytes]:
        """The ``explanation`` JSON arrays of ``rows``, as :func:`explanation_dicts` +
        ``orjson.dumps`` would write them."""
        if not len(rows):
            return []
        rows = rows.tolist() if isinstance(rows, np.ndarray) else list(rows)
        prefixes = self.case_prefixes()
        if self.arrays is not None:  # only these rows of the arrays become lists
            top = self.arrays[0][rows].tolist()
            chosen = self.arrays[1][rows].tolist()
        else:
            top = [self.top[j] for j in rows]
            chosen = [self.weights[j] for j in rows]
        # one dumps for all weights: b"[[w,w],[w]]" -> per row b"w,w"
        texts = orjson.dumps(chosen)[2:-2].split(b"],[")
        out: list[bytes] = []
        for idx, text in zip(top, texts, strict=True):
            if idx:
                parts = [prefixes[i] + w for i, w in zip(idx, text.split(b","), strict=True)]
                out.append(b"[" + b"},".join(parts) + b"}]")
            else:
                out.append(b"[]")
        return out


DECISION_NAMES = ("allow", "review", "block")  # by decision code


def decision_codes(scores: np.ndarray, *, review: float, alert: float) -> np.ndarray:
    """Per score, the index in :data:`DECISION_NAMES` (int8): ``block`` at or above
    ``alert``, ``review`` at or above ``review``, else ``allow``.

    >>> decision_codes(np.array([0.1, 0.5, 0.8]), review=0.5, alert=0.8).tolist()
    [0, 1, 2]
    """
    return (scores >= review).astype(np.int8) + (scores >= alert).astype(np.int8)


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
    explanation: ExplanationValue,
) -> dict[str, Any]:
    """The ``scores`` record as a dict, fields in :class:`~streams.records.Score` order.

    ``explanation`` is the list of dicts, or its JSON already written
    (``orjson.Fragment`` of :meth:`BatchExplanations.json_rows`)."""
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


def score_values(
    *,
    tx_ids: Sequence[str],
    card_ids: Sequence[str],
    scores: Sequence[float],
    decisions: Sequence[str],
    model_version: str,
    scored_at: float,
    latencies_ms: Sequence[float],
    explanations: Sequence[bytes],
) -> list[dict[str, Any]]:
    """:func:`score_value` of every record of a batch (one comprehension, no call per
    record); ``explanations`` are the rows of :meth:`BatchExplanations.json_rows`.

    >>> v = score_values(tx_ids=["t1"], card_ids=["c1"], scores=[0.5], decisions=["review"],
    ...                  model_version="m", scored_at=1.0, latencies_ms=[2.0],
    ...                  explanations=[b"[]"])
    >>> dumps(v[0]) == dumps(score_value(tx_id="t1", card_id="c1", score=0.5,
    ...     decision="review", model_version="m", scored_at=1.0, latency_ms=2.0,
    ...     explanation=orjson.Fragment(b"[]")))
    True
    """
    fragment, version = orjson.Fragment, SCHEMA_VERSION
    return [
        {
            "tx_id": tx_id,
            "card_id": card_id,
            "score": score,
            "decision": decision,
            "model_version": model_version,
            "scored_at": scored_at,
            "latency_ms": latency_ms,
            "explanation": fragment(explanation),
            "schema_version": version,
        }
        for tx_id, card_id, score, decision, latency_ms, explanation in zip(
            tx_ids, card_ids, scores, decisions, latencies_ms, explanations, strict=True
        )
    ]


def score_record_bytes(
    *,
    tx_ids: list[str],
    card_ids: list[str],
    scores: np.ndarray,
    decisions: np.ndarray,
    model_version: str,
    scored_at: float,
    latencies_ms: np.ndarray,
    why: BatchExplanations,
    rows: Sequence[int],
) -> tuple[list[bytes], list[bytes]]:
    """Kafka keys and values of a batch's ``scores`` records: the JSON of
    :func:`score_values` (``scores`` and ``latencies_ms`` float64, ``decisions`` codes,
    explanations of ``why``'s ``rows``). The Python reference of
    ``streams.native._records.score_records``.

    >>> why = BatchExplanations(np.array([[1]]), np.array([[0.75]]), ["a", "b"], [0, 1])
    >>> keys, values = score_record_bytes(
    ...     tx_ids=["t1"], card_ids=["c1"], scores=np.array([0.5]),
    ...     decisions=np.array([1], dtype=np.int8), model_version="m", scored_at=1.0,
    ...     latencies_ms=np.array([2.0]), why=why, rows=[0])
    >>> keys, orjson.loads(values[0])["explanation"]
    ([b't1'], [{'case_id': 'b', 'label': 1, 'weight': 0.75}])
    """
    values = score_values(
        tx_ids=tx_ids,
        card_ids=card_ids,
        scores=np.asarray(scores, dtype=np.float64).tolist(),
        decisions=[DECISION_NAMES[d] for d in decisions.tolist()],
        model_version=model_version,
        scored_at=scored_at,
        latencies_ms=np.asarray(latencies_ms, dtype=np.float64).tolist(),
        explanations=why.json_rows(rows),
    )
    return [tx_id.encode() for tx_id in tx_ids], [dumps(value) for value in values]


_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def score_record_bytes_native(
    *,
    tx_ids: list[str],
    card_ids: list[str],
    scores: np.ndarray,
    decisions: np.ndarray,
    model_version: str,
    scored_at: float,
    latencies_ms: np.ndarray,
    why: BatchExplanations,
    rows: Sequence[int],
) -> tuple[list[bytes], list[bytes]]:
    """:func:`score_record_bytes` by the compiled writer (the same bytes): orjson formats
    the batch's numbers in bulk, the kernel lays the records out around them. Ragged
    explanations (a scorer without arrays) take the reference."""
    if why.arrays is None:
        return score_record_bytes(
            tx_ids=tx_ids,
            card_ids=card_ids,
            scores=scores,
            decisions=decisions,
            model_version=model_version,
            scored_at=scored_at,
            latencies_ms=latencies_ms,
            why=why,
            rows=rows,
        )
    top, weights = why.arrays
    index = np.asarray(rows, dtype=np.intp)
    return cast(
        tuple[list[bytes], list[bytes]],
        native.kernel("_records").score_records(
            tx_ids,
            card_ids,
            orjson.dumps(np.ascontiguousarray(scores, dtype=np.float64), option=_NUMPY),
            np.ascontiguousarray(decisions, dtype=np.int8),
            orjson.dumps(model_version),
            orjson.dumps(scored_at),
            orjson.dumps(np.ascontiguousarray(latencies_ms, dtype=np.float64), option=_NUMPY),
            np.ascontiguousarray(top[index]),
            orjson.dumps(np.ascontiguousarray(weights[index]), option=_NUMPY),
            why.case_prefixes(),
        ),
    )


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
