"""Markdown and plot of the transfer report (the numbers come from :mod:`.transfer`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from models.evaluation.report import fmt, md_table  # noqa: E402

GROUPS = {
    "scratch_logistic_regression": "from scratch",
    "scratch_random_forest": "from scratch",
    "scratch_mlp": "from scratch",
    "source_only_mlp": "source only",
    "source_only_matching_network": "source only",
    "transfer_finetune_mlp": "transfer",
    "meta_matching_network_refresh": "meta-learned",
    "meta_matching_network+fomaml": "meta-learned",
    "meta_matching_network_source_and_target_support": "meta-learned",
}


def plot(out_dir: Path, report: dict[str, Any]) -> str:
    """``transfer_ap.png``: target AP (mean ± std) against the number of target frauds."""
    ns = report["labels_per_target"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in report["table"][str(ns[0])]:
        mean = [report["table"][str(n)][row]["average_precision"] for n in ns]
        std = [report["table"][str(n)][row]["average_precision_std"] for n in ns]
        style = "--" if GROUPS.get(row) in {"from scratch", "source only"} else "-"
        ax.errorbar(ns, mean, yerr=std, label=row, marker="o", capsize=3, ls=style, lw=1.2)
    ax.set(xscale="log", xlabel="labelled target frauds L (+ 20 L legit)", ylabel="target AP")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "transfer_ap.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _reading(report: dict[str, Any]) -> list[str]:
    """Per L: the best row of each group, so scratch vs transfer vs meta reads at a glance."""
    lines = []
    for n in report["labels_per_target"]:
        cell = report["table"][str(n)]
        best: dict[str, tuple[str, float]] = {}
        for row, entry in cell.items():
            group = GROUPS.get(row, "other")
            if group not in best or entry["average_precision"] > best[group][1]:
                best[group] = (row, entry["average_precision"])
        ranked = sorted(best.items(), key=lambda kv: -kv[1][1])
        lines.append(
            f"- L = {n}: " + " > ".join(f"{group} ({row} {fmt(ap)})" for group, (row, ap) in ranked)
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report's text: one table per metric, rows grouped as scratch / transfer / meta."""
    ns = report["labels_per_target"]
    c = report["counts"]
    text = [
        "# Transfer protocol: source region → target region with few labels",
        "",
        f"Regenerate: `{report['command']}` (seeds {report['seeds']}; "
        f"{report['elapsed_seconds']} s wall, {report['cpu_seconds']} s CPU for this run).",
        "",
        f"- Source: {report['source']}; {c['source_train_transactions']:,} transactions / "
        f"{c['source_train_frauds']:,} frauds over the {report['history_days']}-day history "
        f"{report['split']['train_window'][0]} .. {report['split']['train_window'][1]}.",
        f"- Target: {report['target']}, drawn per seed from its own history "
        f"({c['target_history_transactions']:,} transactions / "
        f"{c['target_history_frauds']:,} frauds, all other labels hidden).",
        f"- Test: the target's cards in the handbook test window "
        f"{report['split']['test_window'][0]} .. {report['split']['test_window'][1]} "
        f"without known-compromised cards: {c['target_test_transactions']:,} transactions / "
        f"{c['target_test_frauds']} frauds (CP@100 of a perfect ranking: "
        f"{fmt(report['perfect_ranking_card_precision_at_100'])}).",
        "- Rows: *from scratch* = trained on the target sample only; *source only* = "
        "trained on the source, no target label used; *transfer* = the source MLP "
        f"fine-tuned {report['adaptation_steps']['transfer']} Adam steps on the target sample; "
        "*meta-learned* = the matching network meta-trained on the source, its support set "
        "replaced by the target sample (no gradient step), or with "
        f"{report['adaptation_steps']['fomaml']} first-order MAML steps on it, or the target "
        "sample added to its source support. "
        f"Baseline hyperparameters: {report['baseline_params']} (defaults, not tuned here).",
        "- Both halves of the grid come from the same distributions: this measures what "
        "source data is worth when target labels are scarce, not robustness to a shift.",
        "",
    ]
    for metric, title in (
        ("average_precision", "average precision"),
        ("auc_roc", "ROC AUC"),
        ("card_precision_at_100", "CP@100"),
        ("recall_at_1pct_fpr", "recall at 1 % FPR"),
    ):
        rows = [
            [GROUPS.get(row, ""), row]
            + [
                f"{fmt(report['table'][str(n)][row][metric])} ± "
                f"{fmt(report['table'][str(n)][row][metric + '_std'])}"
                for n in ns
            ]
            for row in report["table"][str(ns[0])]
        ]
        text += [
            f"## Target {title} (mean ± std over seeds)",
            "",
            md_table(["group", "model", *[f"L = {n}" for n in ns]], rows),
            "",
        ]
    text += ["## Reading (average precision)", "", *_reading(report), ""]
    text += [f"Plot: `{report['plots'][0]}`", ""]
    return "\n".join(text)
