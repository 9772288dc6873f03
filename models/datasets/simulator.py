"""The fraud-detection-handbook transaction simulator, vectorized with numpy.

Written from the description in ANCHORS.md (not from the handbook's code). Each
customer makes ``Poisson(mean_tx_per_day)`` payments a day at a time of day
``N(43,200 s, 20,000 s)`` (kept only inside the day), of an amount
``N(mean_amount, mean_amount / 2)`` (redrawn ``U(0, 2 mean_amount)`` when negative,
rounded to cents), at a terminal drawn uniformly among those within ``radius``. Then the
configured fraud scenarios label (and for some, add) transactions.

The same config (seed included) always gives the same frame. Customers, terminals, the
genuine transactions and every scenario draw from their own random streams, so switching
a scenario on or off leaves everything else unchanged.

Examples
--------
>>> frame = simulate(SimulatorConfig(n_customers=20, n_terminals=40, n_days=3))
>>> list(frame.columns)
['tx_id', 'ts', 'card_id', 'terminal_id', 'amount', 'is_fraud', 'scenario']
>>> bool(frame.ts.is_monotonic_increasing), frame.tx_id.iloc[0]
(True, np.int64(0))
>>> frame.equals(simulate(SimulatorConfig(n_customers=20, n_terminals=40, n_days=3)))
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from models.datasets.handbook import HANDBOOK_SCENARIOS
from models.datasets.scenarios import Scenario
from models.datasets.world import (
    SECONDS_PER_DAY,
    STREAM_SCENARIO,
    STREAM_TRANSACTIONS,
    TxBatch,
    World,
    build_world,
    stream_rng,
)

TIME_OF_DAY_MEAN_S = 43_200.0
TIME_OF_DAY_STD_S = 20_000.0
COLUMNS = ("tx_id", "ts", "card_id", "terminal_id", "amount", "is_fraud", "scenario")


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that determines a simulated data set.

    Parameters
    ----------
    n_customers, n_terminals, n_days : int
        Size of the world and length of the period (reference run: 5000, 10000, 183).
    start_date : str
        First simulated day (UTC midnight), ISO format.
    radius : float
        A customer uses the terminals strictly closer than this.
    seed : int
        Seed of every random stream.
    scenarios : tuple of scenario configs
        Applied in order; a later scenario overwrites the ``scenario`` code of rows an
        earlier one marked. Default: the handbook's three, so 3 > 2 > 1. Add the new
        ones with ``scenarios=HANDBOOK_SCENARIOS + new_scenarios(start_day)``: listed
        last, the rows they add keep their own code (4, 5), and the handbook scenarios
        never touch them (their amounts stay below 220 anyway).
    """

    n_customers: int = 5000
    n_terminals: int = 10_000
    n_days: int = 183
    start_date: str = "2018-04-01"
    radius: float = 5.0
    seed: int = 0
    scenarios: tuple[Scenario, ...] = field(default=HANDBOOK_SCENARIOS)


class Profiles(NamedTuple):
    """Customer and terminal profiles of a simulated world (for segments and plots)."""

    customer_profiles: pd.DataFrame
    terminal_profiles: pd.DataFrame


def _world(config: SimulatorConfig) -> World:
    return build_world(
        config.n_customers, config.n_terminals, config.n_days, config.radius, config.seed
    )


def simulate_profiles(config: SimulatorConfig) -> Profiles:
    """The profiles behind ``simulate(config)``; ``card_id`` in the frame is ``customer_id``.

    ``customer_profiles`` has ``customer_id, x, y, mean_amount, std_amount,
    mean_tx_per_day, n_terminals``; ``terminal_profiles`` has ``terminal_id, x, y``.

    >>> p = simulate_profiles(SimulatorConfig(n_customers=3, n_terminals=5, n_days=1))
    >>> list(p.customer_profiles.columns)
    ['customer_id', 'x', 'y', 'mean_amount', 'std_amount', 'mean_tx_per_day', 'n_terminals']
    >>> len(p.terminal_profiles)
    5
    """
    world = _world(config)
    customers = pd.DataFrame(
        {
            "customer_id": np.arange(world.n_customers, dtype=np.int64),
            "x": world.customer_xy[:, 0],
            "y": world.customer_xy[:, 1],
            "mean_amount": world.mean_amount,
            "std_amount": world.std_amount,
            "mean_tx_per_day": world.mean_tx_per_day,
            "n_terminals": world.terminal_counts,
        }
    )
    terminals = pd.DataFrame(
        {
            "terminal_id": np.arange(world.n_terminals, dtype=np.int64),
            "x": world.terminal_xy[:, 0],
            "y": world.terminal_xy[:, 1],
        }
    )
    return Profiles(customers, terminals)


def genuine_transactions(world: World, seed: int) -> TxBatch:
    """Every customer's own payments over the period, before any fraud scenario.

    All draws are made for all candidate transactions at once, then the ones whose time
    of day falls outside the day are dropped (as in the handbook). Customers without a
    terminal in reach make no payments.
    """
    rng = stream_rng(seed, STREAM_TRANSACTIONS)
    n_days = world.n_days
    per_day = rng.poisson(world.mean_tx_per_day[:, None], size=(world.n_customers, n_days))
    per_day[world.terminal_counts == 0] = 0
    slot = np.repeat(np.arange(per_day.size, dtype=np.int64), per_day.ravel())
    card, day = np.divmod(slot, n_days)
    n = slot.size

    # int() truncation towards zero, then keep only 0 < t < one day.
    time_of_day = rng.normal(TIME_OF_DAY_MEAN_S, TIME_OF_DAY_STD_S, size=n).astype(np.int64)
    mean = world.mean_amount[card]
    amount = rng.normal(mean, world.std_amount[card])
    negative = amount < 0
    amount[negative] = rng.uniform(0.0, 2.0 * mean[negative])
    # random() < 1, so the pick stays below the customer's terminal count.
    choice = (rng.random(n) * world.terminal_counts[card]).astype(np.int64)
    terminal = world.terminal_indices[world.terminal_indptr[card] + choice]

    keep = (time_of_day > 0) & (time_of_day < SECONDS_PER_DAY)
    return TxBatch.build(
        card=card[keep],
        terminal=terminal[keep],
        seconds=day[keep] * SECONDS_PER_DAY + time_of_day[keep],
        amount=amount[keep],
    )


def _scenario_rng(
    config: SimulatorConfig, scenarios: tuple[Scenario, ...], i: int
) -> np.random.Generator:
    """Stream of the ``i``-th scenario, keyed by its code and how many of that code came first."""
    code = scenarios[i].code
    occurrence = sum(1 for s in scenarios[:i] if s.code == code)
    return stream_rng(config.seed, STREAM_SCENARIO, code, occurrence)


def simulate(config: SimulatorConfig) -> pd.DataFrame:
    """Simulate transactions with fraud labels, sorted by time.

    Returns
    -------
    pandas.DataFrame
        ``tx_id`` int64 (0..N-1 in time order), ``ts`` datetime64[ns] (naive UTC),
        ``card_id`` int64 (the customer id), ``terminal_id`` int64, ``amount`` float64
        (rounded to cents), ``is_fraud`` int8, ``scenario`` int8 (0 genuine, else the
        code of the last scenario that marked the row).
    """
    world = _world(config)
    tx = genuine_transactions(world, config.seed)
    for i, scenario in enumerate(config.scenarios):
        tx = scenario.apply(tx, world, _scenario_rng(config, config.scenarios, i))

    order = np.argsort(tx.seconds, kind="stable")
    start = np.datetime64(config.start_date, "ns")
    ts = start + (tx.seconds[order] * 1_000_000_000).astype("timedelta64[ns]")
    return pd.DataFrame(
        {
            "tx_id": np.arange(len(tx), dtype=np.int64),
            "ts": pd.DatetimeIndex(ts).as_unit("ns"),
            "card_id": tx.card[order],
            "terminal_id": tx.terminal[order],
            "amount": tx.amount[order],
            "is_fraud": tx.is_fraud[order],
            "scenario": tx.scenario[order],
        },
        columns=list(COLUMNS),
    )
