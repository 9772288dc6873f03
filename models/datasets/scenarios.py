"""Fraud scenarios the handbook lacks: the "never seen before" patterns for few-shot work.

Both scenarios *add* the fraudster's transactions to the stream (the genuine card holder
keeps paying as usual), start on a chosen day and are switched on by listing them in
``SimulatorConfig.scenarios``. They are built so that a stream can see them through the
per-card features (count and mean amount windows, time since the last transaction,
amount relative to the card's mean, label-delayed terminal risk), while no single
handbook feature gives them away: amounts stay below the scenario-1 threshold (220), and
the terminals are fresh, so terminal risk knows nothing about them at first.

Examples
--------
>>> from models.datasets.simulator import SimulatorConfig, simulate
>>> config = SimulatorConfig(n_customers=50, n_terminals=100, n_days=6, seed=3,
...                          scenarios=new_scenarios(start_day=2))
>>> frame = simulate(config)
>>> sorted(set(frame.scenario.tolist()) - {0})
[4, 5]
>>> bool((frame.ts[frame.scenario >= 4] >= "2018-04-03").all())
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.datasets.handbook import (
    HANDBOOK_SCENARIOS,
    AmountThreshold,
    CompromisedCustomers,
    CompromisedTerminals,
)
from models.datasets.world import SECONDS_PER_DAY, IntArray, TxBatch, World, active_days

SCENARIO_NAMES = {
    0: "legit",
    1: "amount_threshold",
    2: "compromised_terminals",
    3: "compromised_customers",
    4: "card_testing",
    5: "account_takeover",
}
"""Names of the ``scenario`` codes, for reports and the CLI."""


def _victims(world: World, days: range, per_day: int, rng: np.random.Generator) -> IntArray:
    """``per_day`` distinct cards for each day, among cards that have terminals to use."""
    eligible = np.flatnonzero(world.terminal_counts > 0)
    k = min(per_day, eligible.size)
    if not days or k == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([rng.choice(eligible, size=k, replace=False) for _ in days])


def _high_amount(
    mean: np.ndarray, factor: tuple[float, float], ceiling: float, rng: np.random.Generator
) -> np.ndarray:
    """``mean * U(factor)``, but never above a random value in ``[0.7, 1] * ceiling``.

    High for the card, unremarkable for the population: a card spending 10 on average
    gets 15-40, a card spending 90 gets 150-219, and nothing crosses the scenario-1 line.
    """
    wanted = mean * rng.uniform(factor[0], factor[1], size=mean.size)
    return np.minimum(wanted, rng.uniform(0.7 * ceiling, ceiling, size=mean.size))


def _group_offsets(sizes: IntArray) -> tuple[IntArray, IntArray]:
    """For groups of ``sizes`` rows: each row's group and its position inside the group."""
    group = np.repeat(np.arange(sizes.size), sizes)
    starts = np.cumsum(sizes) - sizes
    return group, np.arange(group.size) - starts[group]


@dataclass(frozen=True)
class CardTesting:
    """Scenario 4, card testing: a stolen card number is validated, then cashed out.

    On each active day ``cards_per_day`` cards are compromised. At a random time of that
    day a bot makes a burst of ``probes`` tiny payments (``probe_amount``, e.g. 0.5-3)
    seconds to minutes apart (exponential gaps of mean ``probe_gap_s``) at one terminal
    the card never used (outside its radius). Between ``cashout_delay_s`` later, one or
    two cash-outs follow at other unused terminals, each ``cashout_factor`` times the
    card's mean amount but below ``max_amount``. Every probe and cash-out is fraud.

    What gives it away in a stream: several transactions within minutes (time since last
    transaction, 1-day count), amounts far below the card's mean, then one far above it.
    Tiny amounts alone do not: about 3 % of genuine payments are below 3.

    Parameters
    ----------
    start_day, end_day : int, int or None
        Cards are compromised on days ``[start_day, end_day)``; ``None`` = until the end.
    cards_per_day : int
        Cards compromised each active day.
    probes : (int, int)
        Inclusive range of the number of probes per burst.
    probe_amount : (float, float)
        Range of a probe's amount.
    probe_gap_s : float
        Mean seconds between probes (plus one second minimum).
    cashouts : (int, int)
        Inclusive range of the number of cash-outs after a burst.
    cashout_delay_s : (float, float)
        Range of seconds from the last probe to each cash-out.
    cashout_factor : (float, float)
        Range of a cash-out's amount relative to the card's mean amount.
    max_amount : float
        Ceiling of a cash-out, below the scenario-1 threshold.
    code : int
        Value written to the ``scenario`` column.
    """

    start_day: int = 0
    end_day: int | None = None
    cards_per_day: int = 2
    probes: tuple[int, int] = (3, 8)
    probe_amount: tuple[float, float] = (0.5, 3.0)
    probe_gap_s: float = 45.0
    cashouts: tuple[int, int] = (1, 2)
    cashout_delay_s: tuple[float, float] = (600.0, 10_800.0)
    cashout_factor: tuple[float, float] = (2.0, 4.0)
    max_amount: float = 219.0
    code: int = 4

    def apply(self, tx: TxBatch, world: World, rng: np.random.Generator) -> TxBatch:
        """Append the bursts and cash-outs of every compromised card."""
        days = active_days(self.start_day, self.end_day, world.n_days)
        cards = _victims(world, days, self.cards_per_day, rng)
        if cards.size == 0:
            return tx
        day = np.repeat(np.asarray(days, dtype=np.int64), cards.size // len(days))
        start = day * SECONDS_PER_DAY + rng.integers(0, SECONDS_PER_DAY, size=cards.size)
        probe_terminal = world.far_terminals(cards, world.radius, rng)

        n_probes = rng.integers(self.probes[0], self.probes[1] + 1, size=cards.size)
        event, position = _group_offsets(n_probes)
        gaps = 1.0 + rng.exponential(self.probe_gap_s, size=event.size)
        gaps[position == 0] = 0.0
        elapsed = np.cumsum(gaps)
        elapsed -= elapsed[np.cumsum(n_probes) - n_probes][event]
        probe_seconds = start[event] + elapsed.astype(np.int64)
        last_probe = probe_seconds[np.cumsum(n_probes) - 1]
        probes = TxBatch.build(
            card=cards[event],
            terminal=probe_terminal[event],
            seconds=probe_seconds,
            amount=rng.uniform(*self.probe_amount, size=event.size),
            scenario=self.code,
        )

        n_cash = rng.integers(self.cashouts[0], self.cashouts[1] + 1, size=cards.size)
        cash_event, _ = _group_offsets(n_cash)
        delay = rng.uniform(*self.cashout_delay_s, size=cash_event.size).astype(np.int64)
        cash_cards = cards[cash_event]
        cashouts = TxBatch.build(
            card=cash_cards,
            terminal=world.far_terminals(cash_cards, world.radius, rng),
            seconds=last_probe[cash_event] + delay,
            amount=_high_amount(
                world.mean_amount[cash_cards], self.cashout_factor, self.max_amount, rng
            ),
            scenario=self.code,
        )
        return tx.concat(probes.concat(cashouts).within(world.n_days))


@dataclass(frozen=True)
class AccountTakeover:
    """Scenario 5, account takeover: someone far away starts spending on the card.

    On each active day ``cards_per_day`` cards are taken over for ``duration_days``
    days (inclusive range, the day of takeover included). The fraudster lives at least
    ``min_distance`` from the card holder (the other side of the grid) and pays at the
    terminals around their own home, ``Poisson(tx_per_day)`` times a day (at least once
    in all), on their own schedule (time of day shifted by ``hour_shift_h``), with
    amounts ``amount_factor`` times the card's mean, below ``max_amount``. The genuine
    holder keeps paying at home meanwhile.

    What gives it away in a stream: more transactions per day than the card's history
    (shorter times since the last one), amounts above the card's mean, an evening-heavy
    time of day, and later the risk of the fraudster's terminals. Each of these alone
    overlaps with genuine behaviour, and the handbook's night flag (00-06 h) sees the
    same share as for genuine payments with the default 6 h shift.

    Parameters
    ----------
    start_day, end_day : int, int or None
        Takeovers start on days ``[start_day, end_day)``; ``None`` = until the end.
    cards_per_day : int
        Cards taken over each active day.
    duration_days : (int, int)
        Inclusive range of a takeover's length in days.
    tx_per_day : float
        Mean number of fraudulent transactions per day of takeover.
    min_distance : float
        Least distance between the card holder's home and the fraudster's.
    amount_factor : (float, float)
        Range of an amount relative to the card's mean amount.
    max_amount : float
        Ceiling of an amount, below the scenario-1 threshold.
    hour_shift_h : float
        Shift of the fraudster's time of day against the genuine N(12 h, 5.6 h).
    code : int
        Value written to the ``scenario`` column.
    """

    start_day: int = 0
    end_day: int | None = None
    cards_per_day: int = 1
    duration_days: tuple[int, int] = (2, 4)
    tx_per_day: float = 4.0
    min_distance: float = 40.0
    amount_factor: tuple[float, float] = (1.5, 4.0)
    max_amount: float = 219.0
    hour_shift_h: float = 6.0
    code: int = 5

    def apply(self, tx: TxBatch, world: World, rng: np.random.Generator) -> TxBatch:
        """Append the fraudster's transactions for every taken-over card."""
        days = active_days(self.start_day, self.end_day, world.n_days)
        cards = _victims(world, days, self.cards_per_day, rng)
        if cards.size == 0:
            return tx
        first_day = np.repeat(np.asarray(days, dtype=np.int64), cards.size // len(days))
        home = world.far_terminals(cards, self.min_distance, rng)
        areas = [world.terminals_near(int(t), world.radius) for t in home]

        duration = rng.integers(self.duration_days[0], self.duration_days[1] + 1, size=cards.size)
        slot_event, slot_offset = _group_offsets(duration)
        per_slot = rng.poisson(self.tx_per_day, size=slot_event.size)
        first_slot = np.cumsum(duration) - duration
        silent = np.bincount(slot_event, weights=per_slot, minlength=cards.size) == 0
        per_slot[first_slot[silent]] = 1  # every takeover shows at least once

        slot = np.repeat(np.arange(slot_event.size), per_slot)
        event = slot_event[slot]
        day = first_day[event] + slot_offset[slot]
        centre = SECONDS_PER_DAY / 2 + self.hour_shift_h * 3600.0
        time_of_day = np.mod(rng.normal(centre, 20_000.0, size=slot.size), SECONDS_PER_DAY)
        sizes = np.array([a.size for a in areas], dtype=np.int64)
        pick = (rng.random(slot.size) * sizes[event]).astype(np.int64)
        terminal = np.array([areas[e][p] for e, p in zip(event, pick, strict=True)], np.int64)
        fraud = TxBatch.build(
            card=cards[event],
            terminal=terminal,
            seconds=day * SECONDS_PER_DAY + time_of_day.astype(np.int64),
            amount=_high_amount(
                world.mean_amount[cards[event]], self.amount_factor, self.max_amount, rng
            ),
            scenario=self.code,
        )
        return tx.concat(fraud.within(world.n_days))


def new_scenarios(start_day: int = 0) -> tuple[CardTesting, AccountTakeover]:
    """Scenarios 4 and 5 with their defaults, both starting on ``start_day``.

    >>> [s.code for s in new_scenarios(30)], new_scenarios(30)[0].start_day
    ([4, 5], 30)
    """
    return CardTesting(start_day=start_day), AccountTakeover(start_day=start_day)


Scenario = (
    AmountThreshold | CompromisedTerminals | CompromisedCustomers | CardTesting | AccountTakeover
)
"""Any scenario config the simulator accepts."""


def scenarios_for_codes(codes: list[int], start_day: int = 0) -> tuple[Scenario, ...]:
    """Default scenario configs for the given codes, in code order (the CLI's ``--scenarios``).

    ``start_day`` applies to the new scenarios (4, 5); the handbook ones start on day 0.

    >>> [type(s).__name__ for s in scenarios_for_codes([5, 1])]
    ['AmountThreshold', 'AccountTakeover']
    """
    by_code: dict[int, Scenario] = {s.code: s for s in HANDBOOK_SCENARIOS}
    by_code.update({s.code: s for s in new_scenarios(start_day)})
    unknown = sorted(set(codes) - set(by_code))
    if unknown:
        raise ValueError(f"unknown scenario code(s) {unknown}; known: {sorted(by_code)}")
    return tuple(by_code[c] for c in sorted(set(codes)))
