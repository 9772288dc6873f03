"""The encoder: a small MLP mapping a standardized feature vector to a unit-length embedding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812


class Encoder(nn.Module):
    """``Linear → ReLU`` blocks then a final ``Linear``, L2-normalized.

    Parameters
    ----------
    in_dim
        Number of input features.
    hidden
        Widths of the hidden layers.
    emb_dim
        Embedding size.
    dropout
        Dropout after each hidden layer while training (none when scoring).

    >>> import torch
    >>> enc = Encoder(17, hidden=(8,), emb_dim=4)
    >>> z = enc(torch.zeros(3, 17))
    >>> tuple(z.shape), bool(torch.allclose(z.norm(dim=1), torch.ones(3)))
    ((3, 4), True)
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (64,),
        emb_dim: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_dim = int(in_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.emb_dim = int(emb_dim)
        self.dropout = float(dropout)
        layers: list[nn.Module] = []
        width = self.in_dim
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if self.dropout > 0:
                layers.append(nn.Dropout(self.dropout))
            width = h
        layers.append(nn.Linear(width, self.emb_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Unit-length embeddings ``[N, emb_dim]`` of ``x[N, in_dim]``."""
        return F.normalize(self.net(x), dim=-1, eps=1e-8)

    def config(self) -> dict[str, Any]:
        """Constructor arguments, for the artifact."""
        return {
            "in_dim": self.in_dim,
            "hidden": list(self.hidden),
            "emb_dim": self.emb_dim,
            "dropout": self.dropout,
        }

    def numpy_layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(W.T, b), ...]`` float32 copies of the linear layers, for numpy scoring."""
        return [
            (
                m.weight.detach().cpu().numpy().T.astype(np.float32).copy(),
                m.bias.detach().cpu().numpy().astype(np.float32).copy(),
            )
            for m in self.net
            if isinstance(m, nn.Linear)
        ]


def numpy_embed(layers: Sequence[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    """The encoder's forward pass in numpy (ReLU between layers, L2-normalized output).

    >>> import torch
    >>> enc = Encoder(5, hidden=(4,), emb_dim=3)
    >>> x = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    >>> ref = enc(torch.from_numpy(x)).detach().numpy()
    >>> bool(np.allclose(numpy_embed(enc.numpy_layers(), x), ref, atol=1e-5))
    True
    """
    h = x
    last = len(layers) - 1
    for i, (w, b) in enumerate(layers):
        h = h @ w
        h += b
        if i < last:
            np.maximum(h, 0.0, out=h)
    norm = np.sqrt(np.einsum("ij,ij->i", h, h))
    np.maximum(norm, 1e-8, out=norm)
    h /= norm[:, None]
    return h
