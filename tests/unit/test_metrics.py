"""models/evaluation/metrics.py against examples computed by hand.

(streams/metrics.py, the Prometheus registry, is tested in test_streams_metrics.py.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.evaluation.metrics import (
    auc_roc,
    average_precision,
    best_f1_threshold,
    card_precision_at_k,
    card_precision_per_day,
    handbook_metrics,
    recall_at_fpr,
    threshold_metrics,
)

Y = [0, 0, 1, 1]
S = [0.1, 0.4, 0.35, 0.8]


def test_auc_counts_correctly_ordered_pairs() -> None:
    # Pairs (fraud, legit): 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes -> 3/4.
    assert auc_roc(Y, S) == pytest.approx(0.75)
    # A tie counts one half.
    assert auc_roc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)


def test_average_precision_is_mean_precision_at_each_fraud() -> None:
    # Ranking: 0.8 (F), 0.4 (L), 0.35 (F), 0.1 (L): precisions at the frauds 1/1 and 2/3.
    assert average_precision(Y, S) == pytest.approx((1 + 2 / 3) / 2)


def test_one_class_gives_nan_not_an_exception() -> None:
    assert math.isnan(auc_roc([0, 0], [0.1, 0.2]))
    assert math.isnan(average_precision([0, 0], [0.1, 0.2]))
    assert math.isnan(recall_at_fpr([1, 1], [0.1, 0.2]))


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="length"):
        auc_roc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        average_precision([0, 1], [0.1, float("nan")])


def test_recall_at_one_percent_fpr_on_two_hundred_legit() -> None:
    legit = np.linspace(0.0, 0.5, 200)  # the two highest legit scores are 0.4975 and 0.5
    frauds = np.array([0.9, 0.8, 0.499, 0.2])
    y = np.r_[np.zeros(200), np.ones(4)]
    s = np.r_[legit, frauds]
    # FPR <= 1 % allows 2 legit flagged: threshold 0.4975 catches 0.9, 0.8, 0.499 -> 3/4.
    assert recall_at_fpr(y, s, 0.01) == pytest.approx(0.75)
    # FPR 0 allows no legit: only scores above 0.5 -> 2/4.
    assert recall_at_fpr(y, s, 0.0) == pytest.approx(0.5)


def test_tied_scores_are_flagged_together() -> None:
    # Everything tied: flagging any fraud flags every legit too, so nothing is reachable.
    assert recall_at_fpr([0] * 99 + [1], [0.3] * 100, 0.01) == 0.0


def test_threshold_metrics_by_hand() -> None:
    # Flagged: 0.9 (F), 0.7 (L), 0.6 (F); missed fraud 0.2. P = 2/3, R = 2/3, F1 = 2/3.
    m = threshold_metrics([1, 0, 1, 1, 0], [0.9, 0.7, 0.6, 0.2, 0.1], 0.5)
    assert m == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
    nothing = threshold_metrics([1, 0], [0.1, 0.2], 0.9)
    assert nothing == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_best_f1_threshold_picks_the_f1_maximizing_cut() -> None:
    y = [1, 0, 1, 1, 0]
    s = [0.9, 0.7, 0.6, 0.2, 0.1]
    # Cuts: 0.9 -> F1 .5; 0.7 -> .4; 0.6 -> 2*2/(3+3)=.667; 0.2 -> 2*3/(4+3)=.857; 0.1 -> .75.
    assert best_f1_threshold(y, s) == pytest.approx(0.2)
    # Ties: only the whole group of equal scores can be cut.
    assert best_f1_threshold([1, 0, 0], [0.5, 0.5, 0.1]) == pytest.approx(0.5)


def _cp_example() -> tuple[list[int], list[str], list[int], list[float]]:
    # Day 0: cards a (fraud, max 0.9), b (legit 0.8), c (fraud 0.7), d (legit 0.1).
    # Day 1: a (fraud 0.95), b (legit 0.6), c (legit 0.5), e (fraud 0.4).
    days = [0, 0, 0, 0, 0, 1, 1, 1, 1]
    cards = ["a", "a", "b", "c", "d", "a", "b", "c", "e"]
    y = [0, 1, 0, 1, 0, 1, 0, 0, 1]
    s = [0.9, 0.2, 0.8, 0.7, 0.1, 0.95, 0.6, 0.5, 0.4]
    return days, cards, y, s


def test_card_precision_ranks_cards_by_their_max_score_per_day() -> None:
    days, cards, y, s = _cp_example()
    # k=2, no removal. Day 0: top {a .9, b .8} -> a compromised -> 1/2.
    # Day 1: top {a .95, b .6} -> 1/2. Mean 0.5.
    assert card_precision_per_day(days, cards, y, s, k=2, remove_detected=False) == [0.5, 0.5]


def test_card_precision_removes_cards_detected_on_earlier_days() -> None:
    days, cards, y, s = _cp_example()
    # Day 0 detects a; day 1 without a: top {b .6, c .5} -> 0/2.
    assert card_precision_per_day(days, cards, y, s, k=2) == [0.5, 0.0]
    # k=3: day 0 top {a, b, c} -> 2/3, detects a and c; day 1 {b, e} -> 1/3.
    assert card_precision_at_k(days, cards, y, s, k=3) == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_card_precision_divides_by_k_even_with_fewer_cards() -> None:
    assert card_precision_at_k([0, 0], ["a", "b"], [1, 0], [0.9, 0.1], k=100) == 0.01


def test_perfect_ranking_reaches_the_compromised_card_ceiling() -> None:
    rng = np.random.default_rng(0)
    days = np.repeat(np.arange(3), 500)
    cards = rng.integers(0, 300, size=1500)
    y = (rng.random(1500) < 0.05).astype(int)
    per_day = card_precision_per_day(days, cards, y, y.astype(float), k=100)
    detected: set[int] = set()
    for d in range(3):
        today = set(cards[(days == d) & (y == 1)].tolist()) - detected
        assert per_day[d] == pytest.approx(min(len(today), 100) / 100)
        detected |= today


def test_handbook_row_has_the_report_names() -> None:
    row = handbook_metrics([0, 0, 0, 0], ["a", "b", "c", "d"], Y, S, threshold=0.5)
    assert set(row) == {
        "auc_roc",
        "average_precision",
        "card_precision_at_100",
        "precision",
        "recall",
        "f1",
    }
    assert row["auc_roc"] == pytest.approx(0.75)
    assert row["card_precision_at_100"] == pytest.approx(0.02)  # both frauds' cards in the top
    assert row["precision"] == 1.0 and row["recall"] == 0.5
