"""The simulated world: customer and terminal profiles, and the columnar transaction batch.

Shared by the simulator and every fraud scenario. Everything here is plain numpy so that a
million transactions cost a few array operations, never a Python loop per transaction.

Examples
--------
>>> world = build_world(n_customers=20, n_terminals=50, n_days=3, radius=20.0, seed=1)
>>> world.n_customers, world.n_terminals, world.n_days
(20, 50, 3)
>>> bool((world.terminals_of(0) >= 0).all())
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SECONDS_PER_DAY = 86_400
GRID_SIZE = 100.0

# Independent random streams, so that switching a scenario on never changes the base data.
STREAM_CUSTOMERS = 1
STREAM_TERMINALS = 2
STREAM_TRANSACTIONS = 3
STREAM_SCENARIO = 100

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def stream_rng(seed: int, *stream: int) -> np.random.Generator:
    """A generator for one named random stream of a simulation seed.

    >>> float(stream_rng(0, 1).random()) == float(stream_rng(0, 1).random())
    True
    >>> float(stream_rng(0, 1).random()) == float(stream_rng(0, 2).random())
    False
    """
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


@dataclass(frozen=True)
class World:
    """Customer and terminal profiles plus, per customer, the terminals it uses.

    Attributes
    ----------
    customer_xy, terminal_xy : arrays of shape (n, 2)
        Locations on the 100 x 100 grid.
    mean_amount, std_amount, mean_tx_per_day : arrays of shape (n_customers,)
        The customer's spending habits (handbook definitions).
    terminal_indptr, terminal_indices : int arrays
        CSR lists of the terminals strictly closer than ``radius``: customer ``c`` uses
        ``terminal_indices[terminal_indptr[c] : terminal_indptr[c + 1]]``.
    """

    n_days: int
    radius: float
    customer_xy: FloatArray
    mean_amount: FloatArray
    std_amount: FloatArray
    mean_tx_per_day: FloatArray
    terminal_xy: FloatArray
    terminal_indptr: IntArray
    terminal_indices: IntArray

    @property
    def n_customers(self) -> int:
        """Number of customers (= cards)."""
        return int(self.customer_xy.shape[0])

    @property
    def n_terminals(self) -> int:
        """Number of terminals."""
        return int(self.terminal_xy.shape[0])

    @property
    def terminal_counts(self) -> IntArray:
        """How many terminals each customer can use."""
        return np.diff(self.terminal_indptr)

    def terminals_of(self, customer: int) -> IntArray:
        """Terminal ids within ``radius`` of ``customer``."""
        return self.terminal_indices[
            self.terminal_indptr[customer] : self.terminal_indptr[customer + 1]
        ]

    def far_terminals(
        self, customers: IntArray, min_distance: float, rng: np.random.Generator
    ) -> IntArray:
        """One random terminal per customer at least ``min_distance`` away from its home.

        Rejection sampling: only the rows still too close are redrawn. If a customer has
        no terminal that far (tiny grids), its farthest terminal is used instead.
        """
        customers = np.asarray(customers, dtype=np.int64)
        out = rng.integers(0, self.n_terminals, size=customers.size)
        for _ in range(64):
            delta = self.terminal_xy[out] - self.customer_xy[customers]
            close = np.hypot(delta[:, 0], delta[:, 1]) < min_distance
            if not close.any():
                return out
            out[close] = rng.integers(0, self.n_terminals, size=int(close.sum()))
        for i in np.flatnonzero(close):
            delta = self.terminal_xy - self.customer_xy[customers[i]]
            out[i] = int(np.argmax(np.hypot(delta[:, 0], delta[:, 1])))
        return out

    def terminals_near(self, terminal: int, radius: float) -> IntArray:
        """Terminals strictly within ``radius`` of ``terminal`` (itself included)."""
        delta = self.terminal_xy - self.terminal_xy[terminal]
        return np.flatnonzero(np.hypot(delta[:, 0], delta[:, 1]) < radius).astype(np.int64)


def _terminals_within(
    customer_xy: FloatArray, terminal_xy: FloatArray, radius: float, chunk: int = 256
) -> tuple[IntArray, IntArray]:
    """CSR (indptr, indices) of terminals strictly within ``radius`` of each customer.

    Chunked brute force: 5,000 x 10,000 pairs take well under a second and keep the
    peak memory at a few tens of MB.
    """
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    r2 = radius * radius
    for start in range(0, customer_xy.shape[0], chunk):
        block = customer_xy[start : start + chunk]
        dx = block[:, 0:1] - terminal_xy[None, :, 0]
        dy = block[:, 1:2] - terminal_xy[None, :, 1]
        r, c = np.nonzero(dx * dx + dy * dy < r2)
        rows.append(r.astype(np.int64) + start)
        cols.append(c.astype(np.int64))
    row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    indices = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    counts = np.bincount(row, minlength=customer_xy.shape[0])
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, indices


def build_world(n_customers: int, n_terminals: int, n_days: int, radius: float, seed: int) -> World:
    """Draw the profiles of the handbook simulator (ANCHORS.md).

    Customers: location uniform on the grid, ``mean_amount ~ U(5, 100)``,
    ``std_amount = mean_amount / 2``, ``mean_tx_per_day ~ U(0, 4)``. Terminals: location
    uniform on the grid. Customers and terminals have their own random streams, so the
    terminals do not change with the number of customers.
    """
    rc = stream_rng(seed, STREAM_CUSTOMERS)
    customer_xy = rc.uniform(0.0, GRID_SIZE, size=(n_customers, 2))
    mean_amount = rc.uniform(5.0, 100.0, size=n_customers)
    mean_tx_per_day = rc.uniform(0.0, 4.0, size=n_customers)
    terminal_xy = stream_rng(seed, STREAM_TERMINALS).uniform(0.0, GRID_SIZE, size=(n_terminals, 2))
    indptr, indices = _terminals_within(customer_xy, terminal_xy, radius)
    return World(
        n_days=n_days,
        radius=radius,
        customer_xy=customer_xy,
        mean_amount=mean_amount,
        std_amount=mean_amount / 2.0,
        mean_tx_per_day=mean_tx_per_day,
        terminal_xy=terminal_xy,
        terminal_indptr=indptr,
        terminal_indices=indices,
    )


@dataclass(frozen=True)
class TxBatch:
    """Transactions as parallel columns; ``seconds`` counts from the simulation start.

    >>> a = TxBatch.build(card=[0], terminal=[1], seconds=[5], amount=[1.0])
    >>> b = a.concat(TxBatch.build(card=[2], terminal=[3], seconds=[9], amount=[2.0], scenario=4))
    >>> b.card.tolist(), b.is_fraud.tolist(), b.scenario.tolist(), b.day.tolist()
    ([0, 2], [0, 1], [0, 4], [0, 0])
    """

    card: IntArray
    terminal: IntArray
    seconds: IntArray
    amount: FloatArray
    is_fraud: npt.NDArray[np.int8]
    scenario: npt.NDArray[np.int8]

    @classmethod
    def build(
        cls,
        card: npt.ArrayLike,
        terminal: npt.ArrayLike,
        seconds: npt.ArrayLike,
        amount: npt.ArrayLike,
        scenario: int = 0,
    ) -> TxBatch:
        """Columns from array-likes; ``scenario > 0`` marks every row as fraud of that code."""
        n = np.asarray(card).size
        return cls(
            card=np.asarray(card, dtype=np.int64),
            terminal=np.asarray(terminal, dtype=np.int64),
            seconds=np.asarray(seconds, dtype=np.int64),
            amount=np.round(np.asarray(amount, dtype=np.float64), 2).astype(np.float64),
            is_fraud=np.full(n, 1 if scenario else 0, dtype=np.int8),
            scenario=np.full(n, scenario, dtype=np.int8),
        )

    def __len__(self) -> int:
        return int(self.card.size)

    @property
    def day(self) -> IntArray:
        """Day index of each transaction (0 = the start date)."""
        return self.seconds // SECONDS_PER_DAY

    def concat(self, other: TxBatch) -> TxBatch:
        """Rows of ``self`` followed by the rows of ``other``."""
        return TxBatch(
            card=np.concatenate([self.card, other.card]),
            terminal=np.concatenate([self.terminal, other.terminal]),
            seconds=np.concatenate([self.seconds, other.seconds]),
            amount=np.concatenate([self.amount, other.amount]),
            is_fraud=np.concatenate([self.is_fraud, other.is_fraud]),
            scenario=np.concatenate([self.scenario, other.scenario]),
        )

    def within(self, n_days: int) -> TxBatch:
        """Only the rows inside the simulated period ``[0, n_days)``."""
        keep = (self.seconds >= 0) & (self.seconds < n_days * SECONDS_PER_DAY)
        return TxBatch(
            card=self.card[keep],
            terminal=self.terminal[keep],
            seconds=self.seconds[keep],
            amount=self.amount[keep],
            is_fraud=self.is_fraud[keep],
            scenario=self.scenario[keep],
        )


def active_days(start_day: int, end_day: int | None, n_days: int) -> range:
    """Days ``[start_day, end_day)`` clipped to the simulated period.

    >>> list(active_days(2, None, 5)), list(active_days(-1, 2, 5)), list(active_days(4, 9, 3))
    ([2, 3, 4], [0, 1], [])
    """
    end = n_days if end_day is None else min(end_day, n_days)
    return range(max(start_day, 0), max(end, 0))
