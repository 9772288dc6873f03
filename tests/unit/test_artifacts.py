"""Artifacts: safetensors + JSON round-trips, and every refusal."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save as st_save

from models.artifacts import (
    META_FILE,
    WEIGHTS_FILE,
    Artifact,
    ArtifactError,
    SupportSet,
    load_artifact,
    save_artifact,
    sha256_hex,
    weights_from_bytes,
    weights_to_bytes,
)
from models.encoder import Encoder
from models.features import FEATURE_NAMES, FeatureSchema, FeatureTransform
from models.matching import MatchingNetwork

F = len(FEATURE_NAMES)


def make_parts() -> tuple[MatchingNetwork, FeatureTransform, SupportSet, dict[str, Any]]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = MatchingNetwork(Encoder(F, hidden=(8,), emb_dim=4), temperature=0.07)
    X = rng.gamma(2.0, 10.0, size=(40, F)).astype(np.float32)
    transform = FeatureTransform.fit(X, names=FEATURE_NAMES)
    support = SupportSet.build(
        X[:10],
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        [f"tx{i}" for i in range(10)],
        group=[0, 0, 1] + [0] * 7,
    )
    meta = {
        "version": "v7",
        "parent": "v6",
        "metrics": {"auc": 0.9},
        "training_config": {"seed": 1},
    }
    return model, transform, support, meta


def _blob_with(tensors: dict[str, np.ndarray], meta_blob: bytes) -> bytes:
    """A safetensors blob with ``tensors`` and the metadata header of ``meta_blob``."""
    header_len = int.from_bytes(meta_blob[:8], "little")
    header = json.loads(meta_blob[8 : 8 + header_len])
    return bytes(st_save(tensors, metadata=header["__metadata__"]))


def _tensors(blob: bytes) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    return {k: v.copy() for k, v in load(blob).items()}


def test_directory_roundtrip_keeps_weights_support_and_metadata(tmp_path: Path) -> None:
    model, transform, support, meta = make_parts()
    save_artifact(model, transform, support, meta, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [META_FILE, WEIGHTS_FILE]
    art = load_artifact(tmp_path)
    assert art.version == "v7" and art.meta["parent"] == "v6"
    assert art.meta["sha256"] == sha256_hex((tmp_path / WEIGHTS_FILE).read_bytes())
    assert art.meta["metrics"] == {"auc": 0.9} and art.meta["training_config"] == {"seed": 1}
    assert art.meta["created_at"].endswith("Z")
    assert art.schema == FeatureSchema()
    assert art.transform == transform
    assert art.support.case_ids == support.case_ids
    assert np.array_equal(art.support.x, support.x) and np.array_equal(art.support.y, support.y)
    assert np.array_equal(art.support.group, support.group) and art.support.n_groups == 2
    for (k, a), b in zip(model.state_dict().items(), art.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    q = torch.randn(3, F)
    sx, sy = torch.from_numpy(support.x), torch.from_numpy(support.y)
    assert torch.allclose(model(q, sx, sy), art.model(q, sx, sy))


def test_bytes_roundtrip_and_hash_check() -> None:
    model, transform, support, meta = make_parts()
    blob = weights_to_bytes(model, transform, support, meta)
    art = weights_from_bytes(blob, expected_sha256=sha256_hex(blob))
    assert art.version == "v7" and len(art.support) == 10
    assert load_artifact(blob).meta["sha256"] == sha256_hex(blob)
    again = Artifact.build(art.model, art.transform, art.support, art.meta).to_bytes()
    assert weights_from_bytes(again).version == "v7"
    with pytest.raises(ArtifactError, match="sha256"):
        weights_from_bytes(blob, expected_sha256="0" * 64)


def test_refuses_pickle_files_and_pickle_bytes(tmp_path: Path) -> None:
    model, transform, support, meta = make_parts()
    save_artifact(model, transform, support, meta, tmp_path)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    with pytest.raises(ArtifactError, match="pickle"):
        load_artifact(tmp_path)
    with pytest.raises(ArtifactError, match="pickle"):
        load_artifact(pickle.dumps(model.state_dict()))
    other = tmp_path / "other"
    other.mkdir()
    (other / WEIGHTS_FILE).write_bytes(pickle.dumps({"w": 1}))
    (other / META_FILE).write_text(
        json.dumps({"sha256": sha256_hex((other / WEIGHTS_FILE).read_bytes())})
    )
    with pytest.raises(ArtifactError, match="pickle"):
        load_artifact(other)


def test_refuses_a_wrong_hash_or_edited_metadata(tmp_path: Path) -> None:
    model, transform, support, meta = make_parts()
    save_artifact(model, transform, support, meta, tmp_path)
    weights = tmp_path / WEIGHTS_FILE
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF  # flip bits in the last tensor's data
    weights.write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(tmp_path)
    save_artifact(model, transform, support, meta, tmp_path)
    doc = json.loads((tmp_path / META_FILE).read_text())
    doc["metrics"]["auc"] = 0.99
    (tmp_path / META_FILE).write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="differs"):
        load_artifact(tmp_path)
    with pytest.raises(ArtifactError, match="expected"):
        load_artifact(tmp_path, expected_sha256="f" * 64)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_refuses_non_finite_values(value: float) -> None:
    model, transform, support, meta = make_parts()
    blob = weights_to_bytes(model, transform, support, meta)
    tensors = _tensors(blob)
    tensors["model.encoder.net.0.weight"][0, 0] = value
    with pytest.raises(ArtifactError, match="non-finite"):
        weights_from_bytes(_blob_with(tensors, blob))


def test_refuses_wrong_shape_wrong_dtype_and_missing_tensors() -> None:
    model, transform, support, meta = make_parts()
    blob = weights_to_bytes(model, transform, support, meta)
    name = "model.encoder.net.0.weight"
    t = _tensors(blob)
    t[name] = np.zeros((9, F), dtype=np.float32)
    with pytest.raises(ArtifactError, match="shape"):
        weights_from_bytes(_blob_with(t, blob))
    t = _tensors(blob)
    t[name] = t[name].astype(np.float64)
    with pytest.raises(ArtifactError, match="dtype"):
        weights_from_bytes(_blob_with(t, blob))
    t = _tensors(blob)
    del t["support.y"]
    with pytest.raises(ArtifactError, match="missing"):
        weights_from_bytes(_blob_with(t, blob))
    t = _tensors(blob)
    t["support.x"] = np.zeros((10, F + 1), dtype=np.float32)
    with pytest.raises(ArtifactError, match="shape"):
        weights_from_bytes(_blob_with(t, blob))


def test_refuses_truncated_garbage_and_incomplete_directories(tmp_path: Path) -> None:
    model, transform, support, meta = make_parts()
    blob = weights_to_bytes(model, transform, support, meta)
    for bad in (blob[:4], blob[: len(blob) // 2], b"\x00" * 64, b"not a model at all"):
        with pytest.raises(ArtifactError):
            weights_from_bytes(bad)
    with pytest.raises(ArtifactError, match="no artifact"):
        load_artifact(tmp_path / "missing")
    (tmp_path / WEIGHTS_FILE).write_bytes(blob)
    with pytest.raises(ArtifactError, match="needs"):
        load_artifact(tmp_path)
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="JSON"):
        load_artifact(tmp_path)
