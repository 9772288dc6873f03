"""The handbook protocol report: every model on the same train / delay / test split.

Every row trains on the same ``history_days`` ending 2018-07-31 and is tested on
2018-08-08 .. 08-14 without the cards known to be compromised. Hyperparameters and
decision thresholds come from the validation split (two weeks earlier); the test set is
scored once per model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from models.baselines import BASELINE_NAMES
from models.evaluation import data as eval_data
from models.evaluation.fitting import Fitted, fit_and_score_head, grid_for, tune_and_fit_baseline
from models.evaluation.metrics import handbook_metrics
from models.evaluation.plots import roc_pr_curves, score_histograms
from models.evaluation.protocol import handbook_split, transaction_days, validation_split
from models.evaluation.report import fmt, md_table, shortfall, write_report

HEADS = ("matching", "prototypical", "siamese", "mlp")
HEAD_ROW_NAMES = {
    "matching": "matching_network",
    "prototypical": "prototypical_network",
    "siamese": "siamese_network",
    "mlp": "mlp",
}
GOALS = {"auc_roc": 0.88, "average_precision": 0.72, "card_precision_at_100": 0.31}

#: The handbook's published test-set rows (ANCHORS.md), for reference; 7-day history.
PUBLISHED: dict[str, tuple[float, float, float]] = {
    "logistic regression (baseline)": (0.871, 0.606, 0.291),
    "decision tree, depth 2": (0.763, 0.496, 0.241),
    "random forest (baseline)": (0.867, 0.658, 0.287),
    "XGBoost (baseline)": (0.862, 0.639, 0.273),
    "logistic regression, tuned (prequential)": (0.868, 0.623, 0.297),
    "random forest, tuned": (0.870, 0.678, 0.299),
    "XGBoost, tuned": (0.869, 0.687, 0.303),
    "feed-forward network": (0.876, 0.675, 0.303),
    "LSTM": (0.876, 0.665, 0.297),
    "random classifier": (0.5, 0.007, 0.017),
}


def run_handbook(out_dir: Path, scale: str = "full") -> dict[str, Any]:
    """Fit every model, write ``report.json``, ``report.md`` and plots; return the JSON."""
    started, cpu_started = time.perf_counter(), time.process_time()
    plan = eval_data.budget(scale)
    data = eval_data.load(scale)
    tx, x, y = data.tx, data.x, data.y
    split = handbook_split(tx, history_days=plan.history_days)
    val = validation_split(tx, history_days=plan.history_days)
    names = tuple(data.features.names)
    fitted: list[Fitted] = []
    for name in BASELINE_NAMES:
        grid = grid_for(name, plan.small_models, plan.tune)
        fitted.append(
            tune_and_fit_baseline(
                name, x, y, val.train, val.test, split.train, split.test,
                grid=grid, feature_names=names,
            )
        )  # fmt: skip
    for head in HEADS:
        result = fit_and_score_head(
            tx, data.features, val.train, val.test, split.train, split.test,
            head=head, seed=0, n_episodes=plan.n_episodes,
        )  # fmt: skip
        result.name = HEAD_ROW_NAMES[head]
        fitted.append(result)

    days = transaction_days(tx["ts"])[split.test]
    cards = tx["card_id"].to_numpy()[split.test]
    y_test = y[split.test]
    models = {f.name: handbook_metrics(days, cards, y_test, f.scores, f.threshold) for f in fitted}
    ceiling = handbook_metrics(days, cards, y_test, y_test.astype(float), 0.5)
    report: dict[str, Any] = {
        "protocol": "handbook",
        "scale": scale,
        "command": _command(scale),
        "models": models,
        "details": {
            f.name: {
                "history_days": plan.history_days,
                "train_window": [d.isoformat() for d in split.train_window],
                "params": f.params,
                "threshold_from_validation": f.threshold,
                "validation_average_precision": f.validation.get("average_precision"),
                "fit_and_score_seconds": round(f.seconds, 1),
                "fit_and_score_cpu_seconds": round(f.cpu_seconds, 1),
                **f.info,
            }
            for f in fitted
        },
        "perfect_ranking": {"card_precision_at_100": ceiling["card_precision_at_100"]},
        "published_handbook_rows": {
            k: {"auc_roc": v[0], "average_precision": v[1], "card_precision_at_100": v[2]}
            for k, v in PUBLISHED.items()
        },
        "goals": {"matching_network": GOALS},
        "split": split.describe(y),
        "validation_split": val.describe(y),
        "data": data.describe(),
        "seeds": {"simulator": data.config.seed, "models": 0},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = {f.name: f.scores for f in fitted}
    roc_pr_curves(out_dir / "roc_pr_curves.png", y_test, curves)
    score_histograms(out_dir / "score_histograms.png", y_test, curves)
    report["plots"] = ["roc_pr_curves.png", "score_histograms.png"]
    report["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    report["cpu_seconds"] = round(time.process_time() - cpu_started, 1)
    write_report(out_dir, report, _markdown(report))
    return report


def _command(scale: str) -> str:
    suffix = "" if scale == "full" else f" --scale {scale}"
    return f"riskstream evaluate handbook{suffix}"


def _goal_lines(models: dict[str, dict[str, float]]) -> list[str]:
    mn = models.get("matching_network", {})
    lines = []
    for metric, goal in GOALS.items():
        value = float(mn.get(metric, float("nan")))
        lines.append(f"- {metric}: {fmt(value)} vs goal ≥ {goal} → **{shortfall(value, goal)}**")
    best_other = {
        metric: max(
            (row[metric] for name, row in models.items() if name != "matching_network"),
            default=float("nan"),
        )
        for metric in GOALS
    }
    ahead = [m for m in GOALS if mn.get(m, float("nan")) > best_other[m]]
    lines.append(
        "- ahead of every other row of this table on: "
        + (", ".join(ahead) if ahead else "none of AUC, AP, CP@100")
        + "; best other rows: "
        + ", ".join(f"{m} {fmt(v)}" for m, v in best_other.items())
    )
    return lines


def _tried_lines(r: dict[str, Any]) -> list[str]:
    d = r["details"]
    mn = d.get("matching_network", {})
    grids = "; ".join(
        f"{name}: " + ", ".join(f"{g['params']} → {fmt(g['val_average_precision'])}" for g in grid)
        for name, grid in ((n, d[n].get("grid", [])) for n in d)
        if len(grid) > 1
    )
    return [
        f"- One history window for every row: {r['split']['history_days']} days, the window of "
        "the shipped default model (`models.default_model.DEFAULT_HISTORY_DAYS`). An early "
        "probe on the validation split: 28 days instead of 7 raised random forest's AP from "
        "0.699 to 0.710 and logistic regression's from 0.641 to 0.653.",
        f"- Baseline grids, scored by validation AP (then refitted on the real window): {grids}.",
        "- HalfSpaceTrees (unsupervised) learns only from the last 25,000 legit training rows: "
        "it keeps the mass profile of its latest windows anyway.",
        f"- Networks: the default meta-training configuration ({mn.get('params')}), support "
        f"{mn.get('support')}; chosen by the model's owner on the validation split. Prototypical, "
        "Siamese and the supervised MLP use the same encoder, episodes and window.",
        "- Decision thresholds (precision / recall / F1): the F1-best threshold on validation.",
    ]


def _markdown(r: dict[str, Any]) -> str:
    split, val = r["split"], r["validation_split"]
    ours = [
        [
            name,
            row["auc_roc"],
            row["average_precision"],
            row["card_precision_at_100"],
            row["precision"],
            row["recall"],
            row["f1"],
            f"{r['details'][name]['history_days']} d",
            f"{r['details'][name]['fit_and_score_seconds']:.0f}",
            f"{r['details'][name]['fit_and_score_cpu_seconds']:.0f}",
        ]
        for name, row in sorted(r["models"].items(), key=lambda kv: -kv[1]["average_precision"])
    ]
    published = [[name, *vals, "7 d"] for name, vals in PUBLISHED.items()]
    window = f"{split['train_window'][0]} .. {split['train_window'][1]}"
    text = [
        "# Handbook protocol",
        "",
        f"Regenerate: `{r['command']}` (simulator seed {r['seeds']['simulator']}, model seed "
        f"{r['seeds']['models']}; {r['elapsed_seconds']} s wall, {r['cpu_seconds']} s CPU "
        "for this run; per row: validation fits included).",
        "",
        f"Train {window} ({split['train_transactions']:,} tx / {split['train_frauds']:,} "
        f"frauds; the last 7 days alone are the handbook's training window), 7-day delay, "
        f"test {split['test_window'][0]} .. {split['test_window'][1]} "
        f"({split['test_transactions']:,} tx / {split['test_frauds']} frauds after removing "
        f"{split['test_transactions_removed_known_compromised']:,} transactions of cards "
        "known to be compromised). Handbook reference counts: train 67,240 / 598 (7 days), "
        "test 58,264 / 385.",
        f"Hyperparameters and thresholds: validation split, train "
        f"{val['train_window'][0]} .. {val['train_window'][1]}, validate "
        f"{val['test_window'][0]} .. {val['test_window'][1]}; the test set is scored once.",
        "Precision / recall / F1 are at the threshold that maximized F1 on validation.",
        "",
        "## riskstream (every row: the same history window)",
        "",
        md_table(
            [
                "model",
                "AUC",
                "AP",
                "CP@100",
                "precision",
                "recall",
                "F1",
                "history",
                "wall s",
                "CPU s",
            ],
            ours,
        ),
        "",
        f"A perfect ranking scores CP@100 = {fmt(r['perfect_ranking']['card_precision_at_100'])}"
        " on this test set.",
        "",
        "## Goals for the matching network",
        "",
        *_goal_lines(r["models"]),
        f"- The goal's CP@100 was set against the handbook's draw, whose perfect ranking scores "
        f"0.397; here it scores {fmt(r['perfect_ranking']['card_precision_at_100'])}, so "
        "CP@100 ≥ 0.31 is an easier bar on this test set.",
        "",
        "## What was tried",
        "",
        *_tried_lines(r),
        "",
        "## The handbook's published rows (their data draw, 7-day history), for reference",
        "",
        md_table(["model (handbook)", "AUC", "AP", "CP@100", "history"], published),
        "",
        "The simulator here is written from the handbook's description, not its code, so its",
        "random draw differs (see the counts above): compare absolute numbers across the two",
        "tables with care; rows of the first table are strictly comparable with each other.",
        "",
        "Plots: `roc_pr_curves.png`, `score_histograms.png`.",
        "",
    ]
    return "\n".join(text)
