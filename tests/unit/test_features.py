"""Features: the stream's online pieces and the offline builder agree; definitions hold."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from models.features import (
    DAY_SECONDS,
    FEATURE_NAMES,
    CardState,
    FeatureSchema,
    FeatureTransform,
    assemble_vector,
    build_features,
    card_features,
    day_index,
    epoch_seconds,
    features_for_transaction,
    terminal_features,
    tx_features,
)

T0 = 1_522_540_800.0  # 2018-04-01 00:00 UTC


def synthetic_transactions(n: int = 3000, n_days: int = 70, seed: int = 0) -> pd.DataFrame:
    """Transactions with ties, sub-second times, zero amounts, and a free-feature column."""
    rng = np.random.default_rng(seed)
    secs = np.sort(rng.uniform(0, n_days * DAY_SECONDS, n))
    secs[10:20] = secs[10]  # identical timestamps, processed in input order
    secs = np.round(secs, 3)
    amount = np.round(rng.gamma(2.0, 30.0, n), 2)
    amount[::97] = 0.0
    frame = pd.DataFrame(
        {
            "tx_id": np.arange(n, dtype=np.int64),
            "ts": pd.to_datetime(T0 + secs, unit="s"),
            "card_id": rng.integers(0, 25, n),
            "terminal_id": rng.integers(0, 12, n),
            "amount": amount,
            "is_fraud": (rng.random(n) < 0.08).astype(np.int8),
            "risk_score": rng.normal(size=n),
        }
    )
    return frame.sample(frac=1.0, random_state=seed)  # the builder must not need sorted input


def online_vectors(df: pd.DataFrame, schema: FeatureSchema) -> tuple[np.ndarray, np.ndarray]:
    """Drive the stream's pieces over ``df`` in time order; returns (float64 raw, float32)."""
    ts_all = epoch_seconds(df["ts"])
    order = np.argsort(ts_all, kind="stable")
    cards: dict[int, CardState] = defaultdict(CardState)
    tx_by_day: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    fraud_by_day: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    raw = np.zeros((len(df), schema.n_features))
    vec = np.zeros((len(df), schema.n_features), dtype=np.float32)
    rows = df.to_dict("records")
    for i in order:
        r, ts = rows[i], float(ts_all[i])
        state = CardState.from_dict(json.loads(json.dumps(cards[r["card_id"]].to_dict())))
        card = card_features(state, ts, r["amount"])
        state.learn_one(ts, r["amount"])
        cards[r["card_id"]] = state
        day = day_index(ts)
        term = terminal_features(tx_by_day[r["terminal_id"]], fraud_by_day[r["terminal_id"]], day)
        # the stream counts the tx now and its label whenever it arrives: windows end at day-8
        tx_by_day[r["terminal_id"]][day] += 1
        fraud_by_day[r["terminal_id"]][day] += int(r["is_fraud"])
        free = {"risk_score": r["risk_score"]}
        timef = tx_features(ts, r["amount"])
        vec[i] = assemble_vector(card, term, timef, free, schema)
        raw[i] = [*timef, *card[:6], *term, *card[6:], r["risk_score"]]
    return raw, vec


def test_online_pieces_match_offline_builder_to_1e6() -> None:
    df = synthetic_transactions()
    schema = FeatureSchema.with_extras(["risk_score"])
    raw, vec = online_vectors(df, schema)
    off64 = build_features(df, extra_feature_names=["risk_score"], dtype=np.float64)
    off32 = build_features(df, extra_feature_names=["risk_score"])
    assert off64.names == schema.names
    np.testing.assert_allclose(raw, off64.values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(vec, off32.values, rtol=1e-6, atol=1e-6)
    # the windows are not trivially empty
    assert off64.column("terminal_risk_30d").max() > 0
    assert off64.column("card_count_30d").max() > 10


def test_features_for_transaction_is_the_same_online_step() -> None:
    df = synthetic_transactions(n=800, n_days=50, seed=4).sort_values("ts", kind="stable")
    schema = FeatureSchema.with_extras(["risk_score"])
    cards: dict[int, CardState] = defaultdict(CardState)
    tx_by_day: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    fraud_by_day: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    out = []
    for r, ts in zip(df.to_dict("records"), epoch_seconds(df["ts"]), strict=True):
        term = r["terminal_id"]
        out.append(
            features_for_transaction(
                cards[r["card_id"]],
                tx_by_day[term],
                fraud_by_day[term],
                float(ts),
                r["amount"],
                {"risk_score": r["risk_score"]},
                schema,
            )
        )
        tx_by_day[term][day_index(ts)] += 1
        fraud_by_day[term][day_index(ts)] += int(r["is_fraud"])
    offline = build_features(df, extra_feature_names=["risk_score"]).values
    np.testing.assert_allclose(np.stack(out), offline, rtol=1e-6, atol=1e-6)


def test_simulator_frame_online_matches_offline() -> None:
    from models.datasets import SimulatorConfig, simulate

    df = simulate(SimulatorConfig(n_customers=30, n_terminals=60, n_days=50, seed=3))
    schema = FeatureSchema()
    df = df.assign(risk_score=0.0)
    raw, _ = online_vectors(df, FeatureSchema.with_extras(["risk_score"]))
    off = build_features(df, dtype=np.float64)
    np.testing.assert_allclose(raw[:, : schema.n_features], off.values, rtol=0, atol=1e-6)


def test_card_windows_include_current_and_exclude_boundary() -> None:
    state = CardState([T0, T0 + 10.0], [10.0, 20.0])
    feats = card_features(state, T0 + DAY_SECONDS, 30.0)
    # T0 is exactly 1 day before: outside the 1-day window, inside the 7-day one
    assert feats[:4] == (2.0, 25.0, 3.0, 20.0)
    assert feats[6] == DAY_SECONDS - 10.0
    assert feats[7] == pytest.approx(30.0 / 15.0)
    assert card_features(CardState(), T0, 5.0)[6:] == (30 * DAY_SECONDS, 1.0)


def test_card_state_memory_is_bounded_and_json_serializable() -> None:
    state = CardState()
    for i in range(200):
        state.learn_one(T0 + i * DAY_SECONDS / 2, float(i))
    assert len(state) == 60  # 30 days of two a day
    assert list(state.ts) == sorted(state.ts)
    state.learn_one(state.ts[-1] - 3600.0, 1.0)  # late arrival lands in time order
    assert list(state.ts) == sorted(state.ts) and len(state) == 61
    again = CardState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again.ts == state.ts and again.amounts == state.amounts


def test_terminal_window_is_label_delayed() -> None:
    day = 100
    tx = {day - 8: 2, day - 7: 50, day - 38: 7, day - 37: 3}
    fraud = {day - 8: 1, day - 7: 50, day - 37: 3}
    c1, r1, c7, r7, c30, r30 = terminal_features(tx, fraud, day)
    assert (c1, r1) == (2.0, 0.5)  # day-7 is not yet labelled, day-8 is
    assert (c7, r7) == (2.0, 0.5)
    assert (c30, r30) == (5.0, 0.8)  # day-37 in, day-38 out
    assert terminal_features({}, {}, day) == (0.0,) * 6


def test_time_flags() -> None:
    saturday_5am = 1_522_540_800.0 - DAY_SECONDS + 5 * 3600  # 2018-03-31 was a Saturday
    assert tx_features(saturday_5am, 1.0) == (1.0, 1.0, 1.0)
    assert tx_features(T0 + 6 * 3600, 1.0)[1:] == (1.0, 0.0)  # Sunday 06:00 is not night
    assert tx_features(T0 + DAY_SECONDS + 7 * 3600, 1.0)[1:] == (0.0, 0.0)


def test_labels_frame_overrides_is_fraud_and_free_features_default_to_zero() -> None:
    df = synthetic_transactions(n=400, n_days=40)
    no_labels = pd.DataFrame({"tx_id": [], "label": []})
    ff = build_features(df, labels=no_labels, extra_feature_names=["absent"])
    assert ff.column("terminal_risk_30d").max() == 0.0
    assert (ff.column("absent") == 0).all()
    with_maps = df.assign(features=[{"m": 2.0}] * len(df)).drop(columns="risk_score")
    assert (build_features(with_maps, extra_feature_names=["m"]).column("m") == 2.0).all()
    vec = assemble_vector(
        card_features(CardState(), T0, 1.0),
        terminal_features({}, {}, 0),
        tx_features(T0, 1.0),
        {"m": float("nan")},
        FeatureSchema.with_extras(["m", "n"]),
    )
    assert vec[-2:].tolist() == [0.0, 0.0]


def test_rows_keep_input_order() -> None:
    df = synthetic_transactions(n=300, n_days=20)
    ff = build_features(df)
    assert ff.tx_id.tolist() == df["tx_id"].tolist()
    assert ff.column("amount").tolist() == df["amount"].astype(np.float32).tolist()
    assert FEATURE_NAMES[:3] == ("amount", "is_weekend", "is_night")


def test_feature_transform_roundtrip_and_checks() -> None:
    X = build_features(synthetic_transactions(n=500, n_days=30)).values
    tr = FeatureTransform.fit(X, names=FEATURE_NAMES)
    Z = tr.transform(X)
    assert Z.dtype == np.float32
    assert np.allclose(Z.mean(axis=0), 0, atol=1e-4)
    assert FeatureTransform.from_dict(json.loads(json.dumps(tr.to_dict()))) == tr
    with pytest.raises(ValueError):
        tr.transform(X[:, :5])
    bad = tr.to_dict() | {"std": [0.0] * len(FEATURE_NAMES)}
    with pytest.raises(ValueError):
        FeatureTransform.from_dict(bad)


def _card_features_by_definition(
    times: list[float], amounts: list[float], ts: float, amount: float
) -> tuple[float, ...]:
    """The card features straight from the definitions, summing the whole history."""
    seen = [(t, a) for t, a in zip(times, amounts, strict=True) if t <= ts]
    out: list[float] = []
    for w in (1, 7, 30):
        inside = [a for t, a in seen if t > ts - w * DAY_SECONDS]
        out += [len(inside) + 1.0, (sum(inside) + amount) / (len(inside) + 1)]
    gap = min(ts - seen[-1][0], 30 * DAY_SECONDS) if seen else 30 * DAY_SECONDS
    prev = [a for t, a in seen if t > ts - 30 * DAY_SECONDS]
    ratio = amount / max(sum(prev) / len(prev), 0.01) if prev else 1.0
    return (*out, gap, ratio)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_running_card_windows_equal_the_definition(seed: int) -> None:
    """The running sums of CardState (usual case) and its slice sums (out-of-order times,
    replays scored but not learnt, restarts from the table value) give the definition."""
    rng = np.random.default_rng(seed)
    state, t = CardState(), T0
    gaps = [600.0, 3 * 3600.0, DAY_SECONDS, 7 * DAY_SECONDS, 30 * DAY_SECONDS, 0.0]
    paths = {"running": 0, "out_of_order": 0, "restart": 0}
    longest = 0
    for _ in range(1500):
        r = rng.random()
        if r < 0.05:  # late arrival
            ts = t - float(rng.uniform(0, 3 * DAY_SECONDS))
            paths["out_of_order"] += 1
        else:
            t += float(rng.exponential(gaps[int(rng.integers(len(gaps)))]))
            ts = t
            paths["running"] += 1
        amount = float([0.0, round(rng.gamma(2.0, 30.0), 2), rng.uniform(0, 1e6)][int(r * 30) % 3])
        expected = _card_features_by_definition(state.ts, state.amounts, ts, amount)
        got = card_features(state, ts, amount)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9)
        longest = max(longest, len(state))
        if rng.random() < 0.9:  # else a replay: scored again, already learnt
            state.learn_one(ts, amount)
        if rng.random() < 0.03:
            state = CardState.from_dict(json.loads(json.dumps(state.to_dict())))
            paths["restart"] += 1
    assert min(paths.values()) > 10 and longest > 25
