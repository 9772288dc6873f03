"""Transaction data sets: the handbook simulator with extra fraud scenarios, and file replay.

>>> from models.datasets import SimulatorConfig, simulate
>>> len(simulate(SimulatorConfig(n_customers=5, n_terminals=10, n_days=2, radius=50))) > 0
True
"""

from models.datasets.handbook import (
    HANDBOOK_SCENARIOS,
    AmountThreshold,
    CompromisedCustomers,
    CompromisedTerminals,
)
from models.datasets.scenarios import (
    SCENARIO_NAMES,
    AccountTakeover,
    CardTesting,
    Scenario,
    new_scenarios,
    scenarios_for_codes,
)
from models.datasets.simulator import Profiles, SimulatorConfig, simulate, simulate_profiles

__all__ = [
    "HANDBOOK_SCENARIOS",
    "SCENARIO_NAMES",
    "AccountTakeover",
    "AmountThreshold",
    "CardTesting",
    "CompromisedCustomers",
    "CompromisedTerminals",
    "Profiles",
    "Scenario",
    "SimulatorConfig",
    "new_scenarios",
    "scenarios_for_codes",
    "simulate",
    "simulate_profiles",
]
