"""All three evaluation reports, end to end, at the small scale (slow: a few minutes).

No Kafka or Redis needed: the evaluation is pure ``models``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from models.evaluation import run_protocol

pytestmark = pytest.mark.slow

FEWSHOT_MODELS = (
    "matching_network",
    "matching_network+fomaml",
    "matching_network+reptile",
    "transfer_finetune",
    "logistic_regression",
    "random_forest",
)
HANDBOOK_KEYS = {
    "auc_roc",
    "average_precision",
    "card_precision_at_100",
    "precision",
    "recall",
    "f1",
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("reports")
    out = {}
    for name in ("handbook", "fewshot", "transfer"):
        folder = root / name
        returned = run_protocol(name, folder, scale="small")
        out[name] = (folder, returned)
    return out


def _is_rate(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0


@pytest.mark.parametrize("name", ["handbook", "fewshot", "transfer"])
def test_each_report_writes_markdown_json_and_plots(
    reports: dict[str, tuple[Path, dict[str, Any]]], name: str
) -> None:
    folder, returned = reports[name]
    on_disk = json.loads((folder / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(returned))  # the file is what was returned
    text = (folder / "report.md").read_text()
    assert f"riskstream evaluate {name} --scale small" in text
    assert returned["plots"]
    for plot in returned["plots"]:
        png = (folder / plot).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000


def test_handbook_report_has_every_model_with_the_fixed_names(
    reports: dict[str, tuple[Path, dict[str, Any]]],
) -> None:
    _, r = reports["handbook"]
    expected = {
        "logistic_regression",
        "linear_svm",
        "random_forest",
        "gradient_boosting",
        "xgboost",
        "river_logistic_regression",
        "half_space_trees",
        "matching_network",
        "prototypical_network",
        "siamese_network",
        "mlp",
    }
    assert set(r["models"]) == expected
    for row in r["models"].values():
        assert set(row) == HANDBOOK_KEYS
        assert all(_is_rate(v) for v in row.values())
    # Every supervised model learns something on the simulated frauds.
    assert r["models"]["random_forest"]["auc_roc"] > 0.6
    assert r["models"]["matching_network"]["auc_roc"] > 0.6
    assert r["split"]["test_window"] == ["2018-08-08", "2018-08-14"]
    assert r["split"]["test_transactions_removed_known_compromised"] > 0
    assert {d["history_days"] for d in r["details"].values()} == {r["split"]["history_days"]}
    text = (reports["handbook"][0] / "report.md").read_text()
    assert "XGBoost, tuned" in text and "0.687" in text  # the published rows are quoted


def test_fewshot_report_shape_and_spread(reports: dict[str, tuple[Path, dict[str, Any]]]) -> None:
    _, r = reports["fewshot"]
    assert set(r["scenarios"]) == {"4", "5"}
    for block in r["scenarios"].values():
        assert set(block["k"]) == {"1", "5", "10", "20"}
        for cell in block["k"].values():
            assert set(FEWSHOT_MODELS) <= set(cell)
            for entry in cell.values():
                assert _is_rate(entry["recall_at_1pct_fpr"])
                assert _is_rate(entry["average_precision"])
                assert entry["std"] >= 0.0
                assert len(entry["per_seed"]) == len(r["seeds"])
    assert r["population"]["evaluation_frauds_by_scenario"]["4"] > 0


def test_transfer_report_compares_scratch_transfer_and_meta(
    reports: dict[str, tuple[Path, dict[str, Any]]],
) -> None:
    _, r = reports["transfer"]
    rows = set(r["table"][str(r["labels_per_target"][0])])
    assert {
        "scratch_random_forest",
        "transfer_finetune_mlp",
        "meta_matching_network_refresh",
    } <= rows
    for per_row in r["table"].values():
        for entry in per_row.values():
            assert _is_rate(entry["average_precision"]) and _is_rate(entry["auc_roc"])


def test_same_seed_same_report(
    reports: dict[str, tuple[Path, dict[str, Any]]], tmp_path: Path
) -> None:
    _, first = reports["handbook"]
    again = run_protocol("handbook", tmp_path / "again", scale="small")
    assert again["models"] == first["models"]
