"""The few-shot report: fraud scenarios no model has seen, and k labelled cases of each.

Protocol (dates at both scales):

* The world runs the handbook's scenarios 1-3 all along; scenarios 4 (card testing) and
  5 (account takeover) start on 2018-08-01, so every model's training history (the
  ``history_days`` ending 2018-07-31) holds none of them: they are held out of
  meta-training by construction, and terminal risk never counts them as frauds.
* Discovery week 2018-08-01 .. 08-07: per seed, ``k`` frauds of *each* new scenario are
  drawn as the labelled cases (nested: the 5 cases contain the 1, and so on).
* Evaluation week 2018-08-08 .. 08-14. For scenario S the population is S's frauds plus
  every legit transaction of the week; frauds of other scenarios are left out, and so are
  all transactions of the labelled cases' cards (an analyst would have blocked them).
* Metrics on that population: recall at 1 % false positive rate, and average precision.

Models, all from the same history plus the same labelled cases: the matching network
with the cases added to its support set as a new fraud pattern (no gradient step; the
stream's refresh), and for reference with the new task alone as support (cases against
the legit cases, as in an episode) or with the cases added without a pattern tag; plus
first-order MAML or Reptile steps on the new task before scoring; the refresh plus a
pattern head (a linear score of the cases against the discovery week's *unlabelled*
traffic, combined with the network's score through their tails on that traffic; see
:mod:`models.pattern_head`); a supervised network
pretrained on the history and fine-tuned on the same cases (transfer); logistic
regression and random forest retrained on the history plus the cases. Per seed the base
networks are retrained with that seed, and the labelled cases are drawn again.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from models.adaptation import FirstOrderMAML, PatternHeadStrategy, Reptile, TransferFineTune
from models.baselines import make_baseline
from models.datasets import SCENARIO_NAMES
from models.evaluation import data as eval_data
from models.evaluation.fewshot_report import markdown, plots
from models.evaluation.fitting import N_JOBS, fit_head, grid_for, score_head, support_scorer
from models.evaluation.metrics import average_precision, recall_at_fpr
from models.evaluation.report import write_report

NEW_SCENARIOS_FROM = "2018-08-01"
DISCOVERY = (date(2018, 8, 1), date(2018, 8, 7))
EVALUATION = (date(2018, 8, 8), date(2018, 8, 14))
HELD_OUT = (4, 5)
KS = (1, 5, 10, 20)
MODELS = (
    "matching_network",
    "matching_network_task_support",
    "matching_network_ungrouped_support",
    "matching_network+fomaml",
    "matching_network+reptile",
    "matching_network+pattern_head",
    "transfer_finetune",
    "logistic_regression",
    "random_forest",
)
ADAPT_STEPS = {"fomaml": 5, "reptile": 5, "transfer": 50}  # the strategies' defaults
MAX_FPR = 0.01


def _window(days: np.ndarray, window: tuple[date, date]) -> np.ndarray:
    lo, hi = (np.datetime64(d, "D") for d in window)
    return (days >= lo) & (days <= hi)


def run_fewshot(out_dir: Path, scale: str = "full") -> dict[str, Any]:
    """Run the protocol, write ``report.json``, ``report.md`` and plots; return the JSON."""
    from models.evaluation.protocol import transaction_days

    started, cpu_started = time.perf_counter(), time.process_time()
    plan = eval_data.budget(scale)
    data = eval_data.load(scale, NEW_SCENARIOS_FROM)
    tx, x, y = data.tx, data.x, data.y
    scenario = tx["scenario"].to_numpy()
    cards = tx["card_id"].to_numpy()
    days = transaction_days(tx["ts"])
    end = np.datetime64(DISCOVERY[0], "D")
    train = (days >= end - np.timedelta64(plan.adaptation_history_days, "D")) & (days < end)
    train &= ~np.isin(scenario, HELD_OUT)  # a no-op by construction; kept as the rule
    pools = {s: np.flatnonzero(_window(days, DISCOVERY) & (scenario == s)) for s in HELD_OUT}
    in_eval = _window(days, EVALUATION)
    # what the stream has scored lately: the discovery week, unlabelled (pattern head only)
    recent = np.flatnonzero(_window(days, DISCOVERY))
    lr_params = grid_for("logistic_regression", plan.small_models, tune=False)[0]
    rf_params = grid_for("random_forest", plan.small_models, tune=False)[0]

    # raw[s][k][model] -> list over seeds of (recall, ap)
    raw: dict[int, dict[int, dict[str, list[tuple[float, float]]]]] = {
        s: {k: {m: [] for m in MODELS} for k in (0, *KS)} for s in HELD_OUT
    }
    for seed in plan.seeds:
        mn = fit_head(
            tx, data.features, train, head="matching", seed=seed, n_episodes=plan.n_episodes
        )
        clf = fit_head(tx, data.features, train, head="mlp", seed=seed, n_episodes=plan.n_episodes)
        rng = np.random.default_rng([seed, 4242])
        orders = {s: rng.permutation(pool) for s, pool in pools.items()}
        for k in (0, *KS):
            chosen = np.concatenate([orders[s][:k] for s in HELD_OUT])
            blocked = np.isin(cards, cards[chosen])
            traffic = np.setdiff1d(recent, chosen)  # the labelled cases are not unlabelled
            scores = _score_all(
                mn,
                clf,
                x,
                y,
                train,
                chosen,
                in_eval & ~blocked,
                seed,
                lr_params,
                rf_params,
                traffic,
            )
            for s in HELD_OUT:
                pop = in_eval & ~blocked & ((scenario == s) | (y == 0))
                pop_in_eval = pop[in_eval & ~blocked]
                for name, sc in scores.items():
                    yy, ss = y[pop], sc[pop_in_eval]
                    raw[s][k][name].append(
                        (recall_at_fpr(yy, ss, MAX_FPR), average_precision(yy, ss))
                    )

    report = _summarize(raw, plan.seeds)
    report.update(
        {
            "protocol": "fewshot",
            "scale": scale,
            "command": "riskstream evaluate fewshot"
            + ("" if scale == "full" else f" --scale {scale}"),
            "held_out_scenarios": {str(s): SCENARIO_NAMES[s] for s in HELD_OUT},
            "windows": {
                "history": [
                    str(end - np.timedelta64(plan.adaptation_history_days, "D")),
                    str(end - 1),
                ],
                "discovery": [d.isoformat() for d in DISCOVERY],
                "evaluation": [d.isoformat() for d in EVALUATION],
            },
            "history_days": plan.adaptation_history_days,
            "seeds": list(plan.seeds),
            "adaptation_steps": ADAPT_STEPS,
            "baseline_params": {"logistic_regression": lr_params, "random_forest": rf_params},
            "population": _population_counts(in_eval, scenario, y, pools),
            "data": data.describe(),
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    report["plots"] = plots(out_dir, report, KS)
    report["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    report["cpu_seconds"] = round(time.process_time() - cpu_started, 1)
    write_report(out_dir, report, markdown(report, KS))
    return report


def _score_all(
    mn: Any,
    clf: Any,
    x: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    chosen: np.ndarray,
    evaluate: np.ndarray,
    seed: int,
    lr_params: dict[str, Any],
    rf_params: dict[str, Any],
    traffic: np.ndarray,
) -> dict[str, np.ndarray]:
    """Every model's scores on the ``evaluate`` rows after adapting to the ``chosen`` cases
    (``traffic``: rows of recent unlabelled transactions, for the pattern head)."""
    tr = mn.transform
    base_x, base_y = mn.support.x, mn.support.y.astype(np.float32)
    legit_x = base_x[base_y == 0]
    ones = np.ones(len(chosen), np.float32)
    # Refreshed support: the base support plus the new cases as their own fraud pattern
    # (group 1), so a few new cases are not outweighed by hundreds of older frauds.
    full_x = np.concatenate([base_x, x[chosen]])
    full_y = np.concatenate([base_y, ones])
    full_group = np.concatenate([np.zeros(len(base_y), np.int64), np.ones(len(chosen), np.int64)])
    # The new task alone, as in a meta-training episode: new cases against legit cases.
    task_x = np.concatenate([x[chosen], legit_x])
    task_y = np.concatenate([ones, np.zeros(len(legit_x), np.float32)])
    query = x[evaluate]
    out: dict[str, np.ndarray] = {
        "matching_network": support_scorer(mn.model, tr, full_x, full_y, full_group).score_only(
            query
        ),
        "matching_network_ungrouped_support": support_scorer(
            mn.model, tr, full_x, full_y, None
        ).score_only(query),
    }
    if len(chosen):
        task = support_scorer(mn.model, tr, task_x, task_y, None)
        out["matching_network_task_support"] = task.score_only(query)
        for name, strategy, steps in (
            ("matching_network+fomaml", FirstOrderMAML(), ADAPT_STEPS["fomaml"]),
            ("matching_network+reptile", Reptile(), ADAPT_STEPS["reptile"]),
        ):
            # Gradient steps on the new task, then scoring with the refreshed support.
            moved = strategy.adapt(mn.model, tr.transform(task_x), task_y, steps=steps, seed=seed)
            scorer = support_scorer(moved.model, tr, full_x, full_y, full_group)
            out[name] = scorer.score_only(query)
        # The refreshed support plus a pattern head fitted against the unlabelled traffic.
        pattern = PatternHeadStrategy(traffic=tr.transform(x[traffic])).adapt(
            mn.model, tr.transform(full_x), full_y, seed=seed, support_group=full_group
        )
        out["matching_network+pattern_head"] = pattern.predict_proba(tr.transform(query))
        tuned = TransferFineTune().adapt(
            clf.model,
            clf.transform.transform(task_x),
            task_y,
            steps=ADAPT_STEPS["transfer"],
            seed=seed,
        )
        out["transfer_finetune"] = tuned.predict_proba(clf.transform.transform(query))
    else:  # k = 0: nothing new to adapt to; every network scores with its history alone
        for name in (
            "matching_network_task_support",
            "matching_network+fomaml",
            "matching_network+reptile",
            "matching_network+pattern_head",
        ):
            out[name] = out["matching_network"]
        out["transfer_finetune"] = score_head(clf, query)
    rows = np.concatenate([np.flatnonzero(train), chosen])
    for name, params in (("logistic_regression", lr_params), ("random_forest", rf_params)):
        baseline = make_baseline(name, seed=seed, n_jobs=N_JOBS, **params)
        out[name] = baseline.fit(x[rows], y[rows]).score(query)
    return {name: np.asarray(s, dtype=np.float64) for name, s in out.items()}


def _population_counts(
    in_eval: np.ndarray, scenario: np.ndarray, y: np.ndarray, pools: dict[int, np.ndarray]
) -> dict[str, Any]:
    return {
        "evaluation_legit_transactions": int((in_eval & (y == 0)).sum()),
        "evaluation_frauds_by_scenario": {
            str(s): int((in_eval & (scenario == s)).sum()) for s in HELD_OUT
        },
        "discovery_frauds_by_scenario": {str(s): int(p.size) for s, p in pools.items()},
    }


def _summarize(
    raw: dict[int, dict[int, dict[str, list[tuple[float, float]]]]], seeds: tuple[int, ...]
) -> dict[str, Any]:
    """Means over seeds, with the sample standard deviation (``std`` = recall's)."""
    scenarios: dict[str, Any] = {}
    for s, per_k in raw.items():
        block: dict[str, Any] = {"name": SCENARIO_NAMES[s], "k": {}}
        for k, per_model in per_k.items():
            cell = {}
            for name, values in per_model.items():
                arr = np.asarray(values, dtype=np.float64)
                ddof = 1 if len(arr) > 1 else 0
                cell[name] = {
                    "recall_at_1pct_fpr": float(np.nanmean(arr[:, 0])),
                    "average_precision": float(np.nanmean(arr[:, 1])),
                    "std": float(np.nanstd(arr[:, 0], ddof=ddof)),
                    "recall_at_1pct_fpr_std": float(np.nanstd(arr[:, 0], ddof=ddof)),
                    "average_precision_std": float(np.nanstd(arr[:, 1], ddof=ddof)),
                    "per_seed": {
                        str(seed): {"recall_at_1pct_fpr": r, "average_precision": a}
                        for seed, (r, a) in zip(seeds, values, strict=True)
                    },
                }
            if k == 0:
                block["k0_reference"] = cell
            else:
                block["k"][str(k)] = cell
        scenarios[str(s)] = block
    return {"scenarios": scenarios}
