"""The numpy batch scorer agrees with the torch model and explains with support cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts import ArtifactError, SupportSet, save_artifact, weights_to_bytes
from models.encoder import Encoder
from models.features import FEATURE_NAMES, FeatureTransform
from models.heads import PrototypicalHead
from models.matching import MatchingNetwork
from models.scorer import Scorer

F = len(FEATURE_NAMES)


def parts(
    fce: bool = False, temperature: float = 0.1
) -> tuple[MatchingNetwork, FeatureTransform, SupportSet, np.ndarray]:
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    X = rng.gamma(2.0, 10.0, size=(300, F)).astype(np.float32)
    net = MatchingNetwork(
        Encoder(F, hidden=(16,), emb_dim=8), temperature=temperature, fce=fce
    ).eval()
    tr = FeatureTransform.fit(X, names=FEATURE_NAMES)
    y = (np.arange(40) < 8).astype(np.float32)
    support = SupportSet.build(X[:40], y, [f"case-{i}" for i in range(40)])
    return net, tr, support, X[40:]


def torch_scores(
    net: MatchingNetwork, tr: FeatureTransform, support: SupportSet, X: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        q = torch.from_numpy(tr.transform(X))
        sx, sy = torch.from_numpy(tr.transform(support.x)), torch.from_numpy(support.y)
        return net(q, sx, sy).numpy(), net.attention(q, sx, sy).numpy()


@pytest.mark.parametrize("fce", [False, True])
def test_scores_and_explanations_match_the_torch_model(fce: bool) -> None:
    net, tr, support, X = parts(fce)
    scorer = Scorer(net, tr, support, version="v1", top_k=3)
    scores, why = scorer.score_batch(X[:64])
    ref, att = torch_scores(net, tr, support, X[:64])
    np.testing.assert_allclose(scores, ref, atol=1e-5)
    np.testing.assert_allclose(scorer.score_only(X[:64]), ref, atol=1e-5)
    assert len(why) == 64
    for row, expl in enumerate(why):
        assert len(expl) == 3
        weights = [w for _, _, w in expl]
        assert weights == sorted(weights, reverse=True)
        best = np.argsort(-att[row])[:3]
        np.testing.assert_allclose(weights, att[row][best], atol=1e-5)
        for (case_id, label, _), j in zip(expl, best, strict=True):
            assert case_id == f"case-{j}" and label == int(support.y[j])


@pytest.mark.parametrize(("temperature", "shifted"), [(0.1, True), (0.015, False)])
def test_bound_shift_and_row_max_shift_give_the_torch_models_scores(
    temperature: float, shifted: bool
) -> None:
    # τ = 0.015 spans 133 in logits: past the bound shift's limit, so each row's max is used
    net, tr, support, X = parts(temperature=temperature)
    scorer = Scorer(net, tr, support, version="v1", top_k=2)
    assert (scorer._shifted is not None) is shifted
    ref, att = torch_scores(net, tr, support, X[:64])
    scores, top, weights = scorer.score_batch_top(X[:64])
    np.testing.assert_allclose(scores, ref, atol=1e-5)
    np.testing.assert_allclose(weights, np.take_along_axis(att, top, axis=1), atol=1e-5)
    assert (top[:, 0] == att.argmax(axis=1)).all()


def test_single_vector_empty_batch_and_no_explanations() -> None:
    net, tr, support, X = parts()
    scorer = Scorer(net, tr, support, top_k=0)
    scores, why = scorer.score_batch(X[0])
    assert scores.shape == (1,) and why == [[]]
    empty, none = scorer.score_batch(np.zeros((0, F), dtype=np.float32))
    assert empty.shape == (0,) and none == []


def test_with_support_reembeds_once_and_leaves_the_original() -> None:
    net, tr, support, X = parts()
    scorer = Scorer(net, tr, support, version="v1")
    before = scorer.score_only(X[:20])
    swapped = scorer.with_support(X[100:110], [1] * 5 + [0] * 5, [f"new-{i}" for i in range(10)])
    assert swapped.version == "v1" and len(swapped.support) == 10
    np.testing.assert_array_equal(scorer.score_only(X[:20]), before)
    new_support = SupportSet.build(X[100:110], [1] * 5 + [0] * 5, [f"new-{i}" for i in range(10)])
    np.testing.assert_allclose(
        swapped.score_only(X[:20]), torch_scores(net, tr, new_support, X[:20])[0], atol=1e-5
    )
    assert all(c.startswith("new-") for c, _, _ in swapped.score_batch(X[:2])[1][0])


def test_from_artifact_directory_and_bytes(tmp_path: Path) -> None:
    net, tr, support, X = parts()
    meta = {"version": "v3"}
    save_artifact(net, tr, support, meta, tmp_path)
    from_dir = Scorer.from_artifact(tmp_path)
    from_bytes = Scorer.from_artifact(weights_to_bytes(net, tr, support, meta))
    assert from_dir.version == from_bytes.version == "v3"
    np.testing.assert_allclose(from_dir.score_only(X[:10]), from_bytes.score_only(X[:10]))
    assert from_dir.schema.n_features == F


def test_refuses_non_matching_heads_and_empty_support() -> None:
    _, tr, support, _ = parts()
    proto = PrototypicalHead(Encoder(F, hidden=(4,), emb_dim=2))
    with pytest.raises(ArtifactError, match="matching"):
        Scorer(proto, tr, support)  # type: ignore[arg-type]
    net = parts()[0]
    empty = SupportSet.build(np.zeros((0, F)), [], [])
    with pytest.raises(ArtifactError, match="empty"):
        Scorer(net, tr, empty)


def test_fraud_groups_match_the_torch_model_and_lift_a_small_new_pattern() -> None:
    net, tr, support, X = parts()
    new_x = X[:3] * 1.0
    group = np.r_[np.zeros(len(support)), np.ones(3)].astype(int)
    grown = support.concat(SupportSet.build(new_x, [1, 1, 1], ["n0", "n1", "n2"], [1, 1, 1]))
    assert grown.n_groups == 2 and np.array_equal(grown.group, group)
    flat = Scorer(net, tr, SupportSet.build(grown.x, grown.y, grown.case_ids), top_k=2)
    grouped = Scorer(net, tr, grown, top_k=2)
    with torch.no_grad():
        ref = net(
            torch.from_numpy(tr.transform(X[:50])),
            torch.from_numpy(tr.transform(grown.x)),
            torch.from_numpy(grown.y),
            support_group=torch.from_numpy(grown.group),
        ).numpy()
    scores, why = grouped.score_batch(X[:50])
    np.testing.assert_allclose(scores, ref, atol=1e-5)
    # the new pattern's own cases score higher once it is a group of its own
    assert (grouped.score_only(X[:3]) > flat.score_only(X[:3])).all()
    assert why[0][0][0] == "n0"
    swapped = flat.with_support(grown.x, grown.y, grown.case_ids, grown.group)
    np.testing.assert_allclose(swapped.score_only(X[:50]), scores, atol=1e-6)


def test_shipped_default_artifact_loads_and_scores() -> None:
    default = Path(__file__).resolve().parents[2] / "artifacts" / "default"
    scorer = Scorer.from_artifact(default)
    assert scorer.schema.n_features == F and len(scorer.support) > 100
    assert {"val_auc_roc", "val_average_precision"} <= set(load_meta_metrics(default))
    x = scorer.support.x[:8]
    scores, why = scorer.score_batch(x)
    assert np.all((scores >= 0) & (scores <= 1)) and len(why[0]) == 3


def load_meta_metrics(directory: Path) -> dict[str, float]:
    import json

    return dict(json.loads((directory / "meta.json").read_text())["metrics"])


def test_large_batches_are_scored_in_blocks_like_small_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import models.scorer as scorer_module

    net, tr, support, X = parts()
    scorer = Scorer(net, tr, support, version="v1", top_k=3)
    one_by_one = [scorer.score_batch_top(X[i : i + 1]) for i in range(len(X))]
    monkeypatch.setattr(scorer_module, "_BLOCK_BYTES", 4 * len(support) * 50)  # 50-row blocks
    scores, top, weights = scorer.score_batch_top(X)  # 260 rows: 6 blocks, the last short
    assert scores.shape == (len(X),) and top.shape == weights.shape == (len(X), 3)
    np.testing.assert_allclose(scores, [s[0] for s, _, _ in one_by_one], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(weights, [w[0] for _, _, w in one_by_one], rtol=1e-5, atol=1e-7)
    assert (top == np.array([t[0] for _, t, _ in one_by_one])).mean() > 0.99  # ties aside
    ref, _ = torch_scores(net, tr, support, X)
    np.testing.assert_allclose(scores, ref, atol=1e-5)
