"""The simulated data every protocol evaluates on, at two scales.

``full`` is the handbook's reference world (5,000 cards, 10,000 terminals, 183 days from
2018-04-01); ``small`` is a 12x smaller world over the same dates (so every protocol
window exists) for tests. Features are :func:`models.features.build_features` over the
whole table, with the terminal-risk labels given explicitly: a protocol decides which
frauds are known (the few-shot protocol hides the new scenarios' frauds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from models.datasets import HANDBOOK_SCENARIOS, SimulatorConfig, simulate, simulate_profiles
from models.datasets.scenarios import new_scenarios
from models.features import FeatureFrame, build_features

SCALE_NAMES = ("full", "small")
#: Other names accepted for a scale (``riskstream train`` calls the full world "handbook").
SCALE_ALIASES = {"handbook": "full"}


def canonical_scale(scale: str) -> str:
    """``"full"`` or ``"small"``; raises ``ValueError`` for anything else.

    >>> canonical_scale("handbook"), canonical_scale("small")
    ('full', 'small')
    """
    name = SCALE_ALIASES.get(scale, scale)
    if name not in SCALE_NAMES:
        choices = ", ".join((*SCALE_NAMES, *SCALE_ALIASES))
        raise ValueError(f"unknown scale {scale!r}; choose from {choices}")
    return name


HANDBOOK_START = "2018-04-01"


@dataclass(frozen=True)
class Budget:
    """How much work a protocol does at one scale (the small scale is for tests)."""

    history_days: int = 28  # handbook report: set to the shipped model's window
    adaptation_history_days: int = 28  # few-shot and transfer reports (many refits)
    n_episodes: int | None = None  # None = the default model's meta-training length
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    transfer_seeds: tuple[int, ...] = (0, 1, 2)
    tune: bool = True  # small grids on the validation split; False = first grid point
    small_models: bool = False  # fewer trees / iterations
    extra: dict[str, Any] = field(default_factory=dict)


def simulator_config(scale: str, *, new_scenarios_from: str | None = None) -> SimulatorConfig:
    """Simulator settings of ``scale``; optionally with scenarios 4 and 5 from a date on.

    >>> simulator_config("small").n_customers
    400
    >>> [s.code for s in simulator_config("small", new_scenarios_from="2018-08-01").scenarios]
    [1, 2, 3, 4, 5]
    """
    scale = canonical_scale(scale)
    size: dict[str, int] = (
        {"n_customers": 5000, "n_terminals": 10_000, "n_days": 183}
        if scale == "full"
        else {"n_customers": 400, "n_terminals": 800, "n_days": 136}  # last day 2018-08-14
    )
    scenarios: tuple[Any, ...] = HANDBOOK_SCENARIOS
    if new_scenarios_from is not None:
        start_day = (pd.Timestamp(new_scenarios_from) - pd.Timestamp(HANDBOOK_START)).days
        scenarios = HANDBOOK_SCENARIOS + new_scenarios(start_day)
    return SimulatorConfig(start_date=HANDBOOK_START, seed=0, scenarios=scenarios, **size)


def budget(scale: str) -> Budget:
    """Work budget of ``scale``.

    >>> budget("small").seeds
    (0, 1)
    """
    from models.default_model import DEFAULT_HISTORY_DAYS

    if canonical_scale(scale) == "full":
        return Budget(history_days=DEFAULT_HISTORY_DAYS)
    return Budget(
        history_days=DEFAULT_HISTORY_DAYS,
        n_episodes=150,
        seeds=(0, 1),
        transfer_seeds=(0, 1),
        tune=False,
        small_models=True,
    )


@dataclass(frozen=True)
class EvalData:
    """Transactions, their features (row-aligned) and the customer profiles."""

    tx: pd.DataFrame
    features: FeatureFrame
    customers: pd.DataFrame
    config: SimulatorConfig
    known_fraud_scenarios: tuple[int, ...]

    @property
    def x(self) -> np.ndarray:
        """Raw feature matrix ``[N, F]`` (float32)."""
        return self.features.values

    @property
    def y(self) -> np.ndarray:
        """Fraud labels (int8)."""
        return self.tx["is_fraud"].to_numpy().astype(np.int8)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary of the data set."""
        counts = self.tx.groupby("scenario").size()
        return {
            "simulator": {
                "n_customers": self.config.n_customers,
                "n_terminals": self.config.n_terminals,
                "n_days": self.config.n_days,
                "start_date": self.config.start_date,
                "radius": self.config.radius,
                "seed": self.config.seed,
                "scenarios": [type(s).__name__ for s in self.config.scenarios],
            },
            "transactions": len(self.tx),
            "frauds": int(self.tx["is_fraud"].sum()),
            "transactions_by_scenario": {str(int(k)): int(v) for k, v in counts.items()},
            "terminal_risk_labels_from_scenarios": list(self.known_fraud_scenarios),
            "features": list(self.features.names),
        }


@lru_cache(maxsize=4)
def load(scale: str, new_scenarios_from: str | None = None) -> EvalData:
    """Simulate and featurize (cached per process, so protocols run together share it).

    Terminal risk only counts frauds of the handbook's scenarios 1-3: the new scenarios
    are unknown to the fraud team until someone labels them.
    """
    config = simulator_config(scale, new_scenarios_from=new_scenarios_from)
    tx = simulate(config)
    known = (1, 2, 3)
    labels = pd.DataFrame(
        {"tx_id": tx["tx_id"], "label": (tx["scenario"].isin(known)).astype(np.int8)}
    )
    features = build_features(tx, labels=labels)
    customers = simulate_profiles(config).customer_profiles
    return EvalData(tx, features, customers, config, known)
