"""Checks a worker runs on a model update before it may score with it.

In order, each failure naming a reason code of the ``riskstream_model_updates_rejected_total``
metric:

1. ``bad_signature``: the HMAC-SHA256 of the record is not the one of the signing key;
2. ``missing_weights``: nothing at the record's ``location``;
3. ``truncated``: the blob is shorter than its safetensors header says (or has no header);
4. ``bad_hash``: the sha256 of the blob is not the record's;
5. ``wrong_shape``: a tensor's dtype is not float32, or the model tensors or the feature
   schema differ from the model the worker runs (a swap must be drop-in);
6. ``non_finite``: a NaN or infinite value;
7. ``error``: anything else the artifact loader refuses (its message is the detail), or
   weights whose embedded version is not the record's.

Everything runs on bytes and returns the loaded :class:`~models.artifacts.Artifact`; no
pickle is ever involved (the blob is safetensors, parsed by the ``safetensors`` library).

Examples
--------
>>> blob = b"\\x02\\x00\\x00\\x00\\x00\\x00\\x00\\x00{}"
>>> declared_size(blob), declared_size(b"junk")
(10, None)
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load

from models.artifacts import (
    PATTERN_KEYS,
    Artifact,
    ArtifactError,
    sha256_hex,
    weights_from_bytes,
)
from streams.records import ModelUpdate, verify_model_update

_DTYPE = "F32"


class UpdateRejected(Exception):
    """A model update that must not be loaded; ``reason`` is a metric label value."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Reference:
    """What a drop-in replacement must match: tensor shapes and feature names.

    >>> ref = Reference({"model.w": (2, 3)}, ("amount", "is_night"))
    >>> ref.n_features
    2
    """

    shapes: dict[str, tuple[int, ...]]
    feature_names: tuple[str, ...]

    @property
    def n_features(self) -> int:
        """Length of the feature vectors the model takes."""
        return len(self.feature_names)

    @classmethod
    def of_scorer(cls, scorer: Any) -> Reference | None:
        """The reference of a :class:`models.scorer.Scorer` (``None`` for anything else)."""
        model, schema = getattr(scorer, "model", None), getattr(scorer, "schema", None)
        if model is None or schema is None or not hasattr(model, "state_dict"):
            return None
        shapes = {f"model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}
        return cls(shapes, tuple(schema.names))


def declared_size(blob: bytes) -> int | None:
    """Total size the safetensors header announces (``None``: no readable header)."""
    header = _header(blob)
    if header is None:
        return None
    n = struct.unpack("<Q", blob[:8])[0]
    ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    return 8 + n + max(ends, default=0)


def _header(blob: bytes) -> dict[str, Any] | None:
    if len(blob) < 8:
        return None
    n = struct.unpack("<Q", blob[:8])[0]
    if n <= 0 or 8 + n > len(blob):
        return None
    try:
        header = json.loads(blob[8 : 8 + n])
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def check_signature(update: ModelUpdate, key: str) -> None:
    """Raise ``bad_signature`` unless ``update`` is signed with ``key``."""
    if not verify_model_update(update, key):
        raise UpdateRejected("bad_signature", f"HMAC of update {update.version!r} does not match")


def check_blob(update: ModelUpdate, blob: bytes | None) -> dict[str, Any]:
    """Presence, completeness and hash of the weights; returns the safetensors header."""
    if blob is None:
        raise UpdateRejected("missing_weights", f"no weights at {update.location!r}")
    size = declared_size(blob)
    if size is None or len(blob) < size:
        shown = "no readable header" if size is None else f"{len(blob)} of {size} bytes"
        raise UpdateRejected("truncated", f"weights of {update.version!r} are incomplete: {shown}")
    if sha256_hex(blob) != update.sha256.lower():
        raise UpdateRejected("bad_hash", f"sha256 of the weights is not {update.sha256[:16]}...")
    return _header(blob) or {}


def check_shapes(header: dict[str, Any], reference: Reference | None) -> None:
    """dtype of every tensor, and shapes/features against the running model."""
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, info in tensors.items():
        # a pattern head's tail tables are float64 (they must stay strictly monotone)
        wanted = "F64" if name in PATTERN_KEYS else _DTYPE
        if info.get("dtype") != wanted:
            raise UpdateRejected(
                "wrong_shape", f"tensor {name!r} is {info.get('dtype')}, not {wanted}"
            )
    if reference is None:
        return
    shapes = {k: tuple(v["shape"]) for k, v in tensors.items() if k.startswith("model.")}
    if shapes != reference.shapes:
        diff = sorted(
            k
            for k in set(shapes) | set(reference.shapes)
            if shapes.get(k) != reference.shapes.get(k)
        )
        raise UpdateRejected(
            "wrong_shape", f"model tensors differ from the running model: {diff[:4]}"
        )
    support = tensors.get("support.x", {}).get("shape", [])
    if len(support) != 2 or int(support[1]) != reference.n_features:
        raise UpdateRejected(
            "wrong_shape", f"support.x has shape {support}, expected [S, {reference.n_features}]"
        )
    # fraud-pattern groups of the support (one per case; scorers weigh each group alone)
    group = tensors.get("support.group", {}).get("shape", [])
    if list(group) != [int(support[0])]:
        raise UpdateRejected(
            "wrong_shape", f"support.group has shape {group}, expected [{int(support[0])}]"
        )


def check_finite(blob: bytes) -> None:
    """Every value of every tensor is finite."""
    try:
        tensors = st_load(blob)
    except Exception as exc:  # safetensors raises its own error types
        raise UpdateRejected("truncated", f"unreadable safetensors data: {exc}") from None
    for name, arr in tensors.items():
        if not np.isfinite(arr).all():
            raise UpdateRejected("non_finite", f"tensor {name!r} has NaN or infinite values")


def verify_update(
    update: ModelUpdate, blob: bytes | None, key: str, reference: Reference | None = None
) -> Artifact:
    """Run every check on ``update`` and its weights ``blob``; return the loaded artifact.

    Raises
    ------
    UpdateRejected
        The first check that fails, with its reason code and a one-line detail.
    """
    check_signature(update, key)
    header = check_blob(update, blob)
    if blob is None:  # check_blob refused it already; this tells the type checker
        raise UpdateRejected("missing_weights", update.location)
    check_shapes(header, reference)
    check_finite(blob)
    try:
        artifact = weights_from_bytes(blob, expected_sha256=update.sha256)
    except ArtifactError as exc:
        raise UpdateRejected("error", str(exc)) from None
    if artifact.version != update.version:
        raise UpdateRejected(
            "error", f"weights are version {artifact.version!r}, update says {update.version!r}"
        )
    if reference is not None and tuple(artifact.schema.names) != reference.feature_names:
        raise UpdateRejected("wrong_shape", "feature schema differs from the running model")
    return artifact
