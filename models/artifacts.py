"""Model artifacts: safetensors weights + JSON metadata, never pickle.

A directory artifact holds exactly ``weights.safetensors`` and ``meta.json``. The
safetensors blob carries the model's tensors, the support set (``support.x``,
``support.y``) and the metadata (in its header, ``__metadata__["riskstream"]``); the same
blob is what goes into Redis (:func:`weights_to_bytes`). ``meta.json`` repeats the
metadata for people and adds ``sha256`` of the weights file.

Loading checks, each failing with an :class:`ArtifactError` that says what is wrong:
the bytes are safetensors (not pickle / a torch zip), the sha256, every tensor's dtype
(float32) and shape against the model rebuilt from the metadata, finite values, and a
consistent support set and feature schema.

An adapted artifact may also carry a *pattern head* (:mod:`models.pattern_head`): the
``pattern.*`` arrays, float64 because its tail tables must stay strictly monotone. They
are checked like the rest (names, shapes, finite values, monotone tables).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from models.features.definitions import FeatureSchema
from models.features.transform import FeatureTransform
from models.heads import model_from_config
from models.matching import FewShotModel
from models.pattern_head import PatternHead

FORMAT = "riskstream-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "meta.json"
_META_KEY = "riskstream"
#: The arrays of a pattern head (:meth:`models.pattern_head.PatternHead.to_arrays`).
PATTERN_KEYS = (
    "pattern.weight",
    "pattern.bias_w",
    "pattern.base_tail",
    "pattern.pattern_tail",
    "pattern.combined_tail",
)
_PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".joblib", ".npy"}


class ArtifactError(ValueError):
    """An artifact that must not be loaded; the message names the problem."""


@dataclass(frozen=True)
class SupportSet:
    """Labelled cases the matching network attends over: raw features, labels, case ids,
    and a fraud-pattern group per case (0 for all by default; legit cases ignore it).

    >>> s = SupportSet.build(np.zeros((3, 3)), [1, 1, 0], ["a", "b", "c"], group=[0, 1, 0])
    >>> len(s), s.n_fraud, s.n_groups
    (3, 2, 2)
    """

    x: np.ndarray
    y: np.ndarray
    case_ids: tuple[str, ...]
    group: np.ndarray

    @classmethod
    def build(cls, x: Any, y: Any, case_ids: Any, group: Any = None) -> SupportSet:
        """Validate and copy to float32 arrays, string ids and int64 groups."""
        xa = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        ya = np.asarray(y, dtype=np.float32).reshape(-1)
        ids = tuple(str(c) for c in case_ids)
        if xa.ndim != 2 or not (xa.shape[0] == ya.shape[0] == len(ids)):
            raise ValueError(f"support shapes disagree: x {xa.shape}, y {ya.shape}, {len(ids)} ids")
        if not (np.isfinite(xa).all() and np.isin(ya, (0.0, 1.0)).all()):
            raise ValueError("support features must be finite and labels 0/1")
        ga = np.zeros(len(ids), np.int64) if group is None else np.asarray(group).reshape(-1)
        if ga.shape != ya.shape or not np.all(np.isfinite(ga)) or np.any(ga != np.round(ga)):
            raise ValueError("support groups must be one integer per case")
        return cls(xa, ya, ids, ga.astype(np.int64))

    @property
    def n_groups(self) -> int:
        """Number of distinct fraud groups."""
        return int(np.unique(self.group[self.y > 0.5]).size)

    def concat(self, other: SupportSet) -> SupportSet:
        """Both supports' cases (e.g. the base support plus a new pattern's group)."""
        return SupportSet.build(
            np.concatenate([self.x, other.x]),
            np.concatenate([self.y, other.y]),
            self.case_ids + other.case_ids,
            np.concatenate([self.group, other.group]),
        )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_fraud(self) -> int:
        """Number of fraud cases."""
        return int(self.y.sum())


@dataclass(frozen=True)
class Artifact:
    """A loaded model with everything needed to score."""

    model: FewShotModel
    transform: FeatureTransform
    support: SupportSet
    meta: dict[str, Any]
    pattern_head: PatternHead | None = None

    @classmethod
    def build(
        cls,
        model: FewShotModel,
        transform: FeatureTransform,
        support: SupportSet,
        meta: dict[str, Any],
        pattern_head: PatternHead | None = None,
    ) -> Artifact:
        """An in-memory artifact with complete metadata (version, schema, config...)."""
        full = _full_meta(model, transform, support, meta)
        return cls(model, transform, support, full, pattern_head)

    def save(self, directory: str | Path) -> Path:
        """:func:`save_artifact` of this artifact."""
        return save_artifact(
            self.model, self.transform, self.support, self.meta, directory, self.pattern_head
        )

    def to_bytes(self) -> bytes:
        """:func:`weights_to_bytes` of this artifact."""
        return weights_to_bytes(
            self.model, self.transform, self.support, self.meta, self.pattern_head
        )

    @property
    def version(self) -> str:
        """The artifact's version string."""
        return str(self.meta["version"])

    @property
    def schema(self) -> FeatureSchema:
        """Feature schema of the vectors the model takes."""
        return FeatureSchema.from_dict(self.meta["feature_schema"])


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _tensors(
    model: FewShotModel, support: SupportSet, head: PatternHead | None = None
) -> dict[str, np.ndarray]:
    out = {f"model.{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    out["support.x"] = support.x
    out["support.y"] = support.y
    out["support.group"] = support.group
    tensors = {k: np.array(v, dtype=np.float32, order="C") for k, v in out.items()}
    if head is not None:
        tensors |= {k: np.array(v, np.float64, order="C") for k, v in head.to_arrays().items()}
    return tensors


def _full_meta(
    model: FewShotModel, transform: FeatureTransform, support: SupportSet, meta: dict[str, Any]
) -> dict[str, Any]:
    schema = meta.get("feature_schema")
    if isinstance(schema, FeatureSchema):
        schema = schema.to_dict()
    if schema is None:
        schema = FeatureSchema.with_extras(transform.names[len(FeatureSchema().names) :]).to_dict()
    created = str(meta.get("created_at") or _now())
    version = meta.get("version") or "v" + created.replace("-", "").replace(":", "")[:15]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": str(version),
        "parent": meta.get("parent"),
        "created_at": created,
        "model": model.config(),
        "feature_schema": schema,
        "transform": transform.to_dict(),
        "support_case_ids": list(support.case_ids),
        "training_config": meta.get("training_config", {}),
        "metrics": {k: float(v) for k, v in dict(meta.get("metrics", {})).items()},
        "notes": meta.get("notes", ""),
    }


def weights_to_bytes(
    model: FewShotModel,
    transform: FeatureTransform,
    support: SupportSet,
    meta: dict[str, Any],
    pattern_head: PatternHead | None = None,
) -> bytes:
    """The artifact as one safetensors blob (metadata in its header), e.g. for Redis."""
    full = _full_meta(model, transform, support, meta)
    tensors = _tensors(model, support, pattern_head)
    return bytes(st_save(tensors, metadata={_META_KEY: json.dumps(full)}))


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of bytes.

    >>> sha256_hex(b"")[:8]
    'e3b0c442'
    """
    return hashlib.sha256(data).hexdigest()


def save_artifact(
    model: FewShotModel,
    transform: FeatureTransform,
    support: SupportSet,
    meta: dict[str, Any],
    directory: str | Path,
    pattern_head: PatternHead | None = None,
) -> Path:
    """Write ``weights.safetensors`` + ``meta.json`` into ``directory``; returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    blob = weights_to_bytes(model, transform, support, meta, pattern_head)
    (directory / WEIGHTS_FILE).write_bytes(blob)
    full = _header_meta(blob)
    full["sha256"] = sha256_hex(blob)
    (directory / META_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return directory


def _header_meta(blob: bytes) -> dict[str, Any]:
    n = struct.unpack("<Q", blob[:8])[0] if len(blob) >= 8 else 0
    if n <= 0 or 8 + n > len(blob) or blob[8:9] != b"{":
        if blob[:1] == b"\x80" or blob[:4] == b"PK\x03\x04":
            raise ArtifactError("not a safetensors file: looks like a pickle / torch.save archive")
        raise ArtifactError("not a safetensors file: bad or truncated header")
    try:
        header = json.loads(blob[8 : 8 + n])
        meta = json.loads(header["__metadata__"][_META_KEY])
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"not a riskstream safetensors artifact: {exc}") from None
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError("unknown artifact format or format version")
    return dict(meta)


def weights_from_bytes(data: bytes, expected_sha256: str | None = None) -> Artifact:
    """Load an artifact from a safetensors blob, checking ``expected_sha256`` when given."""
    if expected_sha256 is not None and sha256_hex(data) != expected_sha256.lower():
        raise ArtifactError("sha256 mismatch: the weights are not the ones announced")
    meta = _header_meta(data)
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise ArtifactError(f"corrupt safetensors data: {exc}") from None
    artifact = _assemble(tensors, meta)
    artifact.meta["sha256"] = sha256_hex(data)
    return artifact


def _assemble(tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> Artifact:
    for name, arr in tensors.items():
        wanted = np.float64 if name in PATTERN_KEYS else np.float32
        if arr.dtype != wanted:
            kind = wanted.__name__
            raise ArtifactError(f"tensor {name!r} has dtype {arr.dtype}, expected {kind}")
        if not np.isfinite(arr).all():
            raise ArtifactError(f"tensor {name!r} has non-finite values (NaN or inf)")
    try:
        model = model_from_config(meta["model"])
        transform = FeatureTransform.from_dict(meta["transform"])
        schema = FeatureSchema.from_dict(meta["feature_schema"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"bad artifact metadata: {exc}") from None
    expected = {f"model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}
    s = len(meta.get("support_case_ids", []))
    expected["support.x"] = (s, schema.n_features)
    expected["support.y"] = (s,)
    expected["support.group"] = (s,)
    head = _pattern_head(tensors, schema.n_features)
    if head is not None:
        expected |= {k: tuple(tensors[k].shape) for k in PATTERN_KEYS}
    if set(tensors) != set(expected):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise ArtifactError(f"tensor names differ from the model: missing {missing}, extra {extra}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ArtifactError(
                f"tensor {name!r} has shape {tensors[name].shape}, expected {shape}"
            )
    if transform.n_features != schema.n_features or model.encoder.in_dim != schema.n_features:
        raise ArtifactError("feature schema, transform and encoder input sizes disagree")
    state = {
        k[len("model.") :]: torch.from_numpy(v.copy())
        for k, v in tensors.items()
        if k[:6] == "model."
    }
    model.load_state_dict(state)
    model.eval()
    try:
        support = SupportSet.build(
            tensors["support.x"],
            tensors["support.y"],
            meta["support_case_ids"],
            tensors["support.group"],
        )
    except ValueError as exc:
        raise ArtifactError(f"bad support set: {exc}") from None
    return Artifact(model, transform, support, meta, head)


def _pattern_head(tensors: dict[str, np.ndarray], n_features: int) -> PatternHead | None:
    """The pattern head of an artifact's tensors, or None; all its arrays or none."""
    present = [k for k in PATTERN_KEYS if k in tensors]
    if not present:
        return None
    if len(present) != len(PATTERN_KEYS):
        missing = sorted(set(PATTERN_KEYS) - set(present))
        raise ArtifactError(f"incomplete pattern head: missing {missing}")
    arrays = {k: tensors[k] for k in PATTERN_KEYS}
    if arrays["pattern.weight"].shape != (n_features,) or arrays["pattern.bias_w"].shape != (2,):
        raise ArtifactError("bad pattern head: weight or bias has the wrong shape")
    for name in PATTERN_KEYS[2:]:
        table = arrays[name]
        if table.ndim != 2 or table.shape[0] != 2 or table.shape[1] < 2:
            raise ArtifactError(f"bad pattern head: {name} is not a [2, K>=2] table")
        # a tail table maps scores to tail probabilities: both strictly monotone
        if not (np.all(np.diff(table[0]) > 0) and np.all(np.diff(table[1]) < 0)):
            raise ArtifactError(f"bad pattern head: {name} is not strictly monotone")
    return PatternHead.from_arrays(arrays)


def load_artifact(source: str | Path | bytes, expected_sha256: str | None = None) -> Artifact:
    """Load a directory artifact (or a blob, see :func:`weights_from_bytes`)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return weights_from_bytes(bytes(source), expected_sha256)
    directory = Path(source)
    if not directory.is_dir():
        raise ArtifactError(f"no artifact directory at {directory}")
    risky = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES)
    if risky:
        raise ArtifactError(f"refusing pickle-capable files in the artifact: {', '.join(risky)}")
    weights, meta_path = directory / WEIGHTS_FILE, directory / META_FILE
    if not weights.is_file() or not meta_path.is_file():
        raise ArtifactError(f"an artifact needs {WEIGHTS_FILE} and {META_FILE} in {directory}")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise ArtifactError(f"{META_FILE} is not valid JSON: {exc}") from None
    blob = weights.read_bytes()
    sha = str(meta.get("sha256", ""))
    if not sha:
        raise ArtifactError(f"{META_FILE} has no sha256 of the weights")
    if expected_sha256 is not None and sha.lower() != expected_sha256.lower():
        raise ArtifactError("sha256 in meta.json differs from the one expected")
    artifact = weights_from_bytes(blob, expected_sha256=sha)
    if meta != artifact.meta:
        raise ArtifactError(f"{META_FILE} differs from the metadata inside {WEIGHTS_FILE}")
    return artifact
