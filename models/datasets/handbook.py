"""The three fraud scenarios of the fraud-detection handbook (ANCHORS.md), as configs.

Every scenario is a frozen dataclass with a ``code`` (the value of the frame's
``scenario`` column) and ``apply(tx, world, rng) -> TxBatch``. The simulator applies
scenarios in the order of ``SimulatorConfig.scenarios``; a later scenario overwrites the
``scenario`` code of a transaction an earlier one marked. With the default order (1, 2, 3)
that is the handbook's precedence: 3 over 2 over 1.

Compromise windows include the day of compromise: a terminal compromised on day ``d``
makes its transactions of days ``d .. d + 27`` fraudulent. This is what reproduces the
reference counts (2 terminals x sum over days of min(28, 183 - d) x 0.959 tx per terminal
and day = 9,099 expected, 9,099 in the reference run).

Examples
--------
>>> from models.datasets.world import TxBatch, build_world, stream_rng
>>> world = build_world(n_customers=3, n_terminals=4, n_days=2, radius=200.0, seed=0)
>>> tx = TxBatch.build(card=[0, 1], terminal=[0, 1], seconds=[10, 20], amount=[300.0, 5.0])
>>> AmountThreshold().apply(tx, world, stream_rng(0)).scenario.tolist()
[1, 0]
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from models.datasets.world import TxBatch, World, active_days


def _mark(tx: TxBatch, rows: np.ndarray, code: int) -> TxBatch:
    """A copy of ``tx`` where ``rows`` (mask or indices) are fraud of scenario ``code``."""
    is_fraud = tx.is_fraud.copy()
    scenario = tx.scenario.copy()
    is_fraud[rows] = 1
    scenario[rows] = code
    return replace(tx, is_fraud=is_fraud, scenario=scenario)


@dataclass(frozen=True)
class AmountThreshold:
    """Handbook scenario 1: every transaction above ``threshold`` is fraud.

    A baseline pattern any model must catch (978 frauds in the reference run).

    Parameters
    ----------
    threshold : float
        Amounts strictly above it are fraud.
    code : int
        Value written to the ``scenario`` column.
    """

    threshold: float = 220.0
    code: int = 1

    def apply(self, tx: TxBatch, world: World, rng: np.random.Generator) -> TxBatch:
        """Mark the transactions above the threshold."""
        return _mark(tx, tx.amount > self.threshold, self.code)


@dataclass(frozen=True)
class CompromisedTerminals:
    """Handbook scenario 2: compromised terminals (skimmers, phishing merchants).

    On each active day ``terminals_per_day`` distinct random terminals are compromised;
    all their transactions from that day through ``window_days - 1`` days later are fraud.
    Only label-delayed terminal risk features can find them.

    Parameters
    ----------
    terminals_per_day : int
        Terminals compromised each day.
    window_days : int
        Length of the compromise, the day of compromise included.
    start_day, end_day : int, int or None
        Compromises happen on days ``[start_day, end_day)``; ``None`` = until the end.
    code : int
        Value written to the ``scenario`` column.
    """

    terminals_per_day: int = 2
    window_days: int = 28
    start_day: int = 0
    end_day: int | None = None
    code: int = 2

    def apply(self, tx: TxBatch, world: World, rng: np.random.Generator) -> TxBatch:
        """Mark the transactions made at a terminal during its compromise window."""
        compromised = np.zeros((world.n_terminals, world.n_days), dtype=bool)
        for day in active_days(self.start_day, self.end_day, world.n_days):
            terminals = rng.choice(world.n_terminals, size=self.terminals_per_day, replace=False)
            compromised[terminals, day : day + self.window_days] = True
        return _mark(tx, compromised[tx.terminal, tx.day], self.code)


@dataclass(frozen=True)
class CompromisedCustomers:
    """Handbook scenario 3: leaked card credentials used in card-not-present payments.

    On each active day ``customers_per_day`` distinct random customers are compromised.
    Their transactions over the window (the day of compromise included) are pooled, and
    ``floor(share * pool size)`` of them, chosen at random, get ``amount * amount_factor``
    and become fraud. Unlike the reference code, a transaction picked on two overlapping
    days is multiplied once, not twice.

    Parameters
    ----------
    customers_per_day : int
        Customers compromised each day.
    window_days : int
        Length of the compromise, the day of compromise included.
    share : float
        Fraction of the pooled transactions that become fraud.
    amount_factor : float
        Multiplier applied to the fraudulent amounts.
    start_day, end_day : int, int or None
        Compromises happen on days ``[start_day, end_day)``; ``None`` = until the end.
    code : int
        Value written to the ``scenario`` column.
    """

    customers_per_day: int = 3
    window_days: int = 14
    share: float = 1.0 / 3.0
    amount_factor: float = 5.0
    start_day: int = 0
    end_day: int | None = None
    code: int = 3

    def apply(self, tx: TxBatch, world: World, rng: np.random.Generator) -> TxBatch:
        """Multiply and mark a share of each compromised customer's transactions."""
        n_days = world.n_days
        key = tx.card * n_days + tx.day
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        picked: list[np.ndarray] = []
        for day in active_days(self.start_day, self.end_day, n_days):
            customers = rng.choice(world.n_customers, size=self.customers_per_day, replace=False)
            last = min(day + self.window_days, n_days)
            lo = np.searchsorted(sorted_key, customers * n_days + day, side="left")
            hi = np.searchsorted(sorted_key, customers * n_days + last, side="left")
            pool = np.concatenate([order[a:b] for a, b in zip(lo, hi, strict=True)])
            # A tiny epsilon keeps floor(9 * (1/3)) at 3 despite binary floating point.
            n_fraud = int(pool.size * self.share + 1e-9)
            if n_fraud:
                picked.append(rng.choice(pool, size=n_fraud, replace=False))
        if not picked:
            return tx
        rows = np.unique(np.concatenate(picked))
        amount = tx.amount.copy()
        amount[rows] = np.round(amount[rows] * self.amount_factor, 2)
        return _mark(replace(tx, amount=amount), rows, self.code)


HANDBOOK_SCENARIOS = (AmountThreshold(), CompromisedTerminals(), CompromisedCustomers())
"""The reference run's scenarios, in the handbook's order of precedence."""
