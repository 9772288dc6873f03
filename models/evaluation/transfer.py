"""The transfer report: pretrain on a source domain, adapt with few target labels, apply.

Domains are regions of the simulated grid: the source is every card whose holder lives
in the west half (x < 50), the target the east half. Both share the handbook windows:
history = the ``history_days`` ending 2018-07-31, test = 2018-08-08 .. 08-14 without the
cards known to be compromised, restricted to the domain's cards.

The source has all its labels. The target is "newly onboarded": per seed, only ``L``
labelled frauds and ``20 L`` labelled legit transactions, drawn from its history. Rows:

* from scratch on the target sample: logistic regression, random forest, an MLP;
* source only (no target label): the MLP and the matching network trained on the source;
* transfer: the source MLP fine-tuned on the target sample;
* meta-learned: the source matching network with its support set replaced by the target
  sample (no gradient step), with first-order MAML steps on it, or with the target sample
  added to its source support.

The two halves of the grid are drawn from the same distributions, so this measures what
source data is worth when target labels are scarce, not robustness to a shifted domain.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from models.adaptation import FirstOrderMAML, TransferFineTune
from models.baselines import make_baseline
from models.evaluation import data as eval_data
from models.evaluation.fitting import N_JOBS, fit_head, grid_for, score_head, support_scorer
from models.evaluation.metrics import (
    auc_roc,
    average_precision,
    card_precision_at_k,
    recall_at_fpr,
)
from models.evaluation.protocol import handbook_split, transaction_days
from models.evaluation.transfer_report import markdown, plot

LABELS_PER_TARGET = (10, 50, 200)
LEGIT_PER_FRAUD = 20
ADAPT_STEPS = {"transfer": 50, "fomaml": 5}
ROWS = (
    "scratch_logistic_regression",
    "scratch_random_forest",
    "scratch_mlp",
    "source_only_mlp",
    "source_only_matching_network",
    "transfer_finetune_mlp",
    "meta_matching_network_refresh",
    "meta_matching_network+fomaml",
    "meta_matching_network_source_and_target_support",
)
METRICS = ("auc_roc", "average_precision", "card_precision_at_100", "recall_at_1pct_fpr")


def run_transfer(out_dir: Path, scale: str = "full") -> dict[str, Any]:
    """Run the protocol, write ``report.json``, ``report.md`` and a plot; return the JSON."""
    started = time.perf_counter()
    cpu_started = time.process_time()
    plan = eval_data.budget(scale)
    data = eval_data.load(scale)
    tx, x, y = data.tx, data.x, data.y
    west = data.customers.set_index("customer_id")["x"] < 50.0
    is_source = west.reindex(tx["card_id"]).fillna(False).to_numpy(dtype=bool)
    split = handbook_split(tx, history_days=plan.adaptation_history_days)
    source_train = split.train & is_source
    target_hist = np.flatnonzero(split.train & ~is_source)
    test = split.test & ~is_source
    days = transaction_days(tx["ts"])[test]
    cards = tx["card_id"].to_numpy()[test]
    y_test = y[test]

    def metrics(scores: np.ndarray) -> dict[str, float]:
        return {
            "auc_roc": auc_roc(y_test, scores),
            "average_precision": average_precision(y_test, scores),
            "card_precision_at_100": card_precision_at_k(days, cards, y_test, scores),
            "recall_at_1pct_fpr": recall_at_fpr(y_test, scores, 0.01),
        }

    raw: dict[int, dict[str, list[dict[str, float]]]] = {
        n: {r: [] for r in ROWS} for n in LABELS_PER_TARGET
    }
    lr_params = grid_for("logistic_regression", plan.small_models, tune=False)[0]
    rf_params = grid_for("random_forest", plan.small_models, tune=False)[0]
    for seed in plan.transfer_seeds:
        ne = plan.n_episodes
        mn = fit_head(tx, data.features, source_train, head="matching", seed=seed, n_episodes=ne)
        mlp = fit_head(tx, data.features, source_train, head="mlp", seed=seed, n_episodes=ne)
        source_only = {
            "source_only_mlp": metrics(score_head(mlp, x[test])),
            "source_only_matching_network": metrics(score_head(mn, x[test])),
        }
        rng = np.random.default_rng([seed, 777])
        fraud_pool = rng.permutation(target_hist[y[target_hist] == 1])
        legit_pool = rng.permutation(target_hist[y[target_hist] == 0])
        for n in LABELS_PER_TARGET:
            sample = np.concatenate([fraud_pool[:n], legit_pool[: LEGIT_PER_FRAUD * n]])
            mask = np.zeros(len(tx), dtype=bool)
            mask[sample] = True
            for name, result in source_only.items():
                raw[n][name].append(result)
            for name, params in (("logistic_regression", lr_params), ("random_forest", rf_params)):
                model = make_baseline(name, seed=seed, n_jobs=N_JOBS, **params)
                fitted = model.fit(x[sample], y[sample])
                raw[n][f"scratch_{name}"].append(metrics(fitted.score(x[test])))
            scratch = fit_head(tx, data.features, mask, head="mlp", seed=seed, n_episodes=ne)
            raw[n]["scratch_mlp"].append(metrics(score_head(scratch, x[test])))
            for name, scores in _adapted_scores(mn, mlp, x, y, sample, test, seed).items():
                raw[n][name].append(metrics(scores))

    table = {
        str(n): {row: _mean_std(values) for row, values in per_row.items()}
        for n, per_row in raw.items()
    }
    ceiling = card_precision_at_k(days, cards, y_test, y_test.astype(float))
    report: dict[str, Any] = {
        "protocol": "transfer",
        "scale": scale,
        "command": "riskstream evaluate transfer"
        + ("" if scale == "full" else f" --scale {scale}"),
        "source": "west half of the grid (card holder x < 50), all labels",
        "target": "east half of the grid (x >= 50), L labelled frauds + 20 L legit",
        "table": table,
        "labels_per_target": list(LABELS_PER_TARGET),
        "legit_per_fraud": LEGIT_PER_FRAUD,
        "adaptation_steps": ADAPT_STEPS,
        "baseline_params": {"logistic_regression": lr_params, "random_forest": rf_params},
        "counts": {
            "source_train_transactions": int(source_train.sum()),
            "source_train_frauds": int(y[source_train].sum()),
            "target_history_transactions": int(target_hist.size),
            "target_history_frauds": int(y[target_hist].sum()),
            "target_test_transactions": int(test.sum()),
            "target_test_frauds": int(y_test.sum()),
        },
        "perfect_ranking_card_precision_at_100": ceiling,
        "split": split.describe(y),
        "seeds": list(plan.transfer_seeds),
        "history_days": plan.adaptation_history_days,
        "data": data.describe(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    report["plots"] = [plot(out_dir, report)]
    report["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    report["cpu_seconds"] = round(time.process_time() - cpu_started, 1)
    from models.evaluation.report import write_report

    write_report(out_dir, report, markdown(report))
    return report


def _adapted_scores(
    mn: Any, mlp: Any, x: np.ndarray, y: np.ndarray, sample: np.ndarray, test: np.ndarray, seed: int
) -> dict[str, np.ndarray]:
    """Source models adapted to the target sample, scored on the target test rows."""
    sy = y[sample].astype(np.float32)
    stepped = FirstOrderMAML().adapt(
        mn.model, mn.transform.transform(x[sample]), sy, steps=ADAPT_STEPS["fomaml"], seed=seed
    )
    tuned = TransferFineTune().adapt(
        mlp.model, mlp.transform.transform(x[sample]), sy, steps=ADAPT_STEPS["transfer"], seed=seed
    )
    out = {
        "meta_matching_network_refresh": support_scorer(
            mn.model, mn.transform, x[sample], sy
        ).score_only(x[test]),
        "meta_matching_network+fomaml": support_scorer(
            stepped.model, mn.transform, x[sample], sy
        ).score_only(x[test]),
        "meta_matching_network_source_and_target_support": support_scorer(
            mn.model,
            mn.transform,
            np.concatenate([mn.support.x, x[sample]]),
            np.concatenate([mn.support.y, sy]),
        ).score_only(x[test]),
        "transfer_finetune_mlp": tuned.predict_proba(mlp.transform.transform(x[test])),
    }
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def _mean_std(values: list[dict[str, float]]) -> dict[str, float]:
    if not values:
        raise ValueError("a transfer row has no result")
    out: dict[str, float] = {}
    for metric in METRICS:
        arr = np.asarray([v[metric] for v in values], dtype=np.float64)
        out[metric] = float(np.nanmean(arr))
        out[f"{metric}_std"] = float(np.nanstd(arr, ddof=1 if len(arr) > 1 else 0))
    return out
