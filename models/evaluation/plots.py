"""PNG plots of the reports (matplotlib, Agg backend: no display needed).

>>> import tempfile, numpy as np
>>> y = np.array([0, 0, 1, 1]); s = {"m": np.array([0.1, 0.6, 0.4, 0.9])}
>>> with tempfile.TemporaryDirectory() as d:
...     paths = [roc_pr_curves(Path(d) / "c.png", y, s), score_histograms(Path(d) / "h.png", y, s)]
...     [p.stat().st_size > 0 for p in paths]
[True, True]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def roc_pr_curves(path: Path, y: np.ndarray, scores: Mapping[str, np.ndarray]) -> Path:
    """ROC (log-scaled FPR, where fraud teams operate) and precision-recall curves."""
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(12, 5))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax_roc.plot(np.maximum(fpr, 1e-5), tpr, label=name, lw=1.2)
        precision, recall, _ = precision_recall_curve(y, s)
        ax_pr.plot(recall, precision, label=name, lw=1.2)
    ax_roc.set(xscale="log", xlim=(1e-4, 1), xlabel="false positive rate (log)", ylabel="recall")
    ax_roc.axvline(0.01, color="grey", ls=":", lw=1)
    ax_roc.set_title("ROC")
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax_pr.set_title("Precision-recall")
    ax_pr.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


def score_histograms(path: Path, y: np.ndarray, scores: Mapping[str, np.ndarray]) -> Path:
    """Score distributions of frauds and legit transactions, one panel per model."""
    names = list(scores)
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        s = np.asarray(scores[name], dtype=np.float64)
        bins = np.linspace(float(s.min()), float(s.max()) + 1e-12, 40)
        ax.hist(s[y == 0], bins=bins, density=True, alpha=0.6, label="legit")
        ax.hist(s[y == 1], bins=bins, density=True, alpha=0.6, label="fraud")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    return _save(fig, path)


def fewshot_curves(
    path: Path,
    ks: Sequence[int],
    curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    metric: str,
) -> Path:
    """One panel per scenario: mean ± std of ``metric`` against k, one line per model.

    ``curves[scenario][model] = (means, stds)``, both aligned with ``ks``.
    """
    scenarios = list(curves)
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6 * len(scenarios), 4.5), squeeze=False)
    for ax, scenario in zip(axes.ravel(), scenarios, strict=True):
        for model, (mean, std) in curves[scenario].items():
            m, sd = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
            ax.errorbar(ks, m, yerr=sd, label=model, marker="o", capsize=3, lw=1.2)
            ax.fill_between(ks, m - sd, m + sd, alpha=0.08)
        ax.set(xscale="log", xlabel="k labelled cases of the new scenario", ylabel=metric)
        ax.set_xticks(list(ks), [str(k) for k in ks])
        ax.set_ylim(0, 1.02)
        ax.set_title(f"scenario {scenario}")
        ax.legend(fontsize=7)
    return _save(fig, path)
