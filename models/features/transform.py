"""Feature standardization fitted offline and saved in the model artifact."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.features.definitions import FeatureSchema

#: Heavy-tailed built-ins that are compressed with sign(x)·log1p(|x|) before scaling.
DEFAULT_LOG_FEATURES: tuple[str, ...] = (
    "amount",
    "card_count_1d",
    "card_mean_amount_1d",
    "card_count_7d",
    "card_mean_amount_7d",
    "card_count_30d",
    "card_mean_amount_30d",
    "terminal_count_1d",
    "terminal_count_7d",
    "terminal_count_30d",
    "seconds_since_last_tx",
    "amount_over_card_mean",
)


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: monotone, defined everywhere, near-linear around 0.

    >>> signed_log1p(np.array([-1.0, 0.0, np.e - 1])).round(6).tolist()
    [-0.693147, 0.0, 1.0]
    """
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass(frozen=True)
class FeatureTransform:
    """Optional signed-log on some columns, then ``(x - mean) / std``; float32 out.

    >>> X = np.array([[1.0, 10.0], [3.0, 30.0]], dtype=np.float32)
    >>> tr = FeatureTransform.fit(X, names=("a", "b"), log_features=())
    >>> tr.transform(X).tolist()
    [[-1.0, -1.0], [1.0, 1.0]]
    >>> FeatureTransform.from_dict(tr.to_dict()) == tr
    True
    """

    names: tuple[str, ...]
    log_mask: tuple[bool, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        names: Sequence[str] | None = None,
        log_features: Sequence[str] = DEFAULT_LOG_FEATURES,
    ) -> FeatureTransform:
        """Statistics of ``X`` (rows = transactions); constant columns get std 1."""
        X = np.asarray(X, dtype=np.float64)
        names = tuple(names) if names is not None else FeatureSchema().names[: X.shape[1]]
        if len(names) != X.shape[1]:
            raise ValueError(f"{len(names)} names for {X.shape[1]} columns")
        mask = np.array([n in set(log_features) for n in names], dtype=bool)
        Z = np.where(mask, signed_log1p(X), X)
        mean = Z.mean(axis=0) if len(Z) else np.zeros(X.shape[1])
        std = Z.std(axis=0) if len(Z) else np.ones(X.shape[1])
        std = np.where(std > 1e-12, std, 1.0)
        return cls(
            names=names,
            log_mask=tuple(bool(m) for m in mask),
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
        )

    @property
    def n_features(self) -> int:
        """Number of input columns."""
        return len(self.names)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(log_mask, mean, std)`` as arrays (float32 stats) for fast scoring."""
        return (
            np.asarray(self.log_mask, dtype=bool),
            np.asarray(self.mean, dtype=np.float32),
            np.asarray(self.std, dtype=np.float32),
        )

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Standardized float32 copy of ``X[N, F]``."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected [N, {self.n_features}] features, got {X.shape}")
        mask, mean, std = self.arrays()
        Z = X.copy()
        if mask.any():
            Z[:, mask] = signed_log1p(Z[:, mask])
        return ((Z - mean) / std).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the artifact metadata (floats round-trip exactly)."""
        return {
            "names": list(self.names),
            "log_mask": list(self.log_mask),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureTransform:
        """Inverse of :meth:`to_dict`; checks the lengths agree and the stats are finite."""
        names = tuple(str(n) for n in data["names"])
        mask = tuple(bool(m) for m in data["log_mask"])
        mean = tuple(float(m) for m in data["mean"])
        std = tuple(float(s) for s in data["std"])
        if not len(names) == len(mask) == len(mean) == len(std):
            raise ValueError("feature transform fields have different lengths")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and min(std, default=1) > 0):
            raise ValueError("feature transform statistics must be finite, std > 0")
        return cls(names=names, log_mask=mask, mean=mean, std=std)
