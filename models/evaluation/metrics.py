"""Every evaluation metric of riskstream, defined once.

Threshold-free ranking metrics (ROC AUC, average precision, recall at a fixed false
positive rate), threshold metrics (precision, recall, F1) and the fraud handbook's
Card Precision@k, which ranks *cards* per day rather than transactions.

Scores are "higher = more suspicious"; they need not be probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

FloatArray = npt.NDArray[np.float64]


def _as_arrays(y_true: Any, scores: Any) -> tuple[npt.NDArray[np.int8], FloatArray]:
    y = np.asarray(y_true).astype(np.int8).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    return y, s


def _has_both_classes(y: npt.NDArray[np.int8]) -> bool:
    return bool(0 < int(y.sum()) < y.shape[0])


def auc_roc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve; NaN when only one class is present.

    >>> auc_roc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y, s = _as_arrays(y_true, scores)
    return float(roc_auc_score(y, s)) if _has_both_classes(y) else float("nan")


def average_precision(y_true: Any, scores: Any) -> float:
    """Average precision (area under the step-wise precision-recall curve).

    >>> round(average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    y, s = _as_arrays(y_true, scores)
    return float(average_precision_score(y, s)) if y.sum() > 0 else float("nan")


def recall_at_fpr(y_true: Any, scores: Any, max_fpr: float = 0.01) -> float:
    """Highest recall reachable while the false positive rate stays at or below ``max_fpr``.

    Ties are not split: a group of equal scores is flagged together or not at all.

    >>> recall_at_fpr([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.9, 0.8, 0.4], max_fpr=0.0)
    0.0
    >>> recall_at_fpr([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.9, 0.8, 0.4], max_fpr=0.25)
    1.0
    """
    y, s = _as_arrays(y_true, scores)
    if not _has_both_classes(y):
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def threshold_metrics(y_true: Any, scores: Any, threshold: float) -> dict[str, float]:
    """Precision, recall and F1 when every score ``>= threshold`` is flagged.

    >>> threshold_metrics([0, 1, 1, 0], [0.2, 0.9, 0.4, 0.7], 0.5)
    {'precision': 0.5, 'recall': 0.5, 'f1': 0.5}
    """
    y, s = _as_arrays(y_true, scores)
    flagged = s >= threshold
    tp = int(np.sum(flagged & (y == 1)))
    n_flagged = int(flagged.sum())
    n_pos = int(y.sum())
    precision = tp / n_flagged if n_flagged else 0.0
    recall = tp / n_pos if n_pos else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def best_f1_threshold(y_true: Any, scores: Any) -> float:
    """The score threshold with the highest F1; chosen on validation data, never on test.

    >>> best_f1_threshold([0, 0, 1, 1, 0], [0.1, 0.3, 0.6, 0.8, 0.7])
    0.6
    """
    y, s = _as_arrays(y_true, scores)
    if y.sum() == 0:
        return float(np.inf)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # Only the last position of each run of equal scores is a reachable cut.
    last_of_run = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp = np.cumsum(y_sorted)[last_of_run]
    flagged = np.arange(1, s.shape[0] + 1)[last_of_run]
    f1 = 2 * tp / (flagged + y.sum())
    return float(s_sorted[last_of_run][int(np.argmax(f1))])


def card_precision_at_k(
    days: Any,
    cards: Any,
    y_true: Any,
    scores: Any,
    k: int = 100,
    remove_detected: bool = True,
) -> float:
    """Card Precision@k per day, averaged over the days (the fraud handbook's CP@k).

    Each day, a card's risk is the maximum score of its transactions that day and it
    counts as compromised if any of them is a fraud. The ``k`` riskiest cards are
    "investigated"; CP@k of the day is the share of compromised cards among them (out
    of ``k``, even when fewer cards exist). With ``remove_detected``, a compromised card
    found on one day is taken out of the following days, as an investigator would block it.

    >>> days = [0, 0, 0, 0, 1, 1, 1]
    >>> cards = ["a", "a", "b", "c", "a", "b", "c"]
    >>> y = [0, 1, 0, 0, 1, 0, 1]
    >>> s = [0.9, 0.1, 0.8, 0.2, 0.9, 0.3, 0.2]
    >>> card_precision_at_k(days, cards, y, s, k=2)  # day 0: {a, b} -> 1/2; day 1: {b, c} -> 1/2
    0.5
    >>> card_precision_at_k(days, cards, y, s, k=2, remove_detected=False)  # day 1: {a, b}
    0.5
    """
    per_day = card_precision_per_day(days, cards, y_true, scores, k, remove_detected)
    return float(np.mean(per_day)) if per_day else float("nan")


def card_precision_per_day(
    days: Any,
    cards: Any,
    y_true: Any,
    scores: Any,
    k: int = 100,
    remove_detected: bool = True,
) -> list[float]:
    """The per-day values behind :func:`card_precision_at_k`, in day order.

    >>> card_precision_per_day([0, 0, 1], ["a", "b", "a"], [1, 0, 1], [0.5, 0.4, 0.9], k=1)
    [1.0, 0.0]
    """
    y, s = _as_arrays(y_true, scores)
    frame = pd.DataFrame({"day": np.asarray(days), "card": np.asarray(cards), "y": y, "s": s})
    per_card = frame.groupby(["day", "card"], sort=True).agg(s=("s", "max"), y=("y", "max"))
    detected: set[Any] = set()
    result: list[float] = []
    for _day, group in per_card.groupby(level="day", sort=True):
        cards_today = group.index.get_level_values("card")
        if detected:
            group = group[~cards_today.isin(list(detected))]
            cards_today = group.index.get_level_values("card")
        # Stable order on (-score, card) so ties never depend on hashing.
        order = np.lexsort((np.asarray(cards_today, dtype=str), -group["s"].to_numpy()))[:k]
        hits = group["y"].to_numpy()[order] == 1
        result.append(float(hits.sum()) / k)
        if remove_detected:
            detected.update(cards_today[order][hits].tolist())
    return result


def handbook_metrics(
    days: Any,
    cards: Any,
    y_true: Any,
    scores: Any,
    threshold: float,
) -> dict[str, float]:
    """The handbook report's row: AUC, AP, CP@100 and precision/recall/F1 at ``threshold``.

    >>> row = handbook_metrics([0, 0, 0], ["a", "b", "c"], [0, 1, 0], [0.1, 0.9, 0.2], 0.5)
    >>> row["auc_roc"], row["card_precision_at_100"], row["f1"]
    (1.0, 0.01, 1.0)
    """
    row = {
        "auc_roc": auc_roc(y_true, scores),
        "average_precision": average_precision(y_true, scores),
        "card_precision_at_100": card_precision_at_k(days, cards, y_true, scores, k=100),
    }
    row.update(threshold_metrics(y_true, scores, threshold))
    return row
