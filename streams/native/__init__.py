"""Compiled twins of the score path's per-transaction steps, and the switch between them.

The score agent's per-transaction Python (parsing, card and terminal features, record
bytes, Redis command packing) cost ~2/3 of a worker's CPU with no single hot spot
(``docs/PERFORMANCE.md``). Each step here is a Cython kernel with the same inputs and
outputs as a Python reference that stays in the code as the definition and the fallback:

===================================  ================================================
kernel                               Python reference
===================================  ================================================
``_records.validate_batch``          :func:`streams.score_columns.validate_batch`
``_records.score_records``           :func:`streams.outputs.score_record_bytes`
``_records.scored_entries``          :func:`streams.scored_store.encode_entries`
``_records.pack_commands``           :func:`streams.resp.pack_commands`
``_cards.NativeCard``                :class:`streams.tables.TableCard`
``_cards.featurize_and_learn``       :func:`streams.tables.featurize_and_learn_batch`
``_terminals.NativeTerminalCounts``  :class:`streams.terminal_counts.TerminalCounts`
``_terminals.*`` (the rest)          :mod:`streams.terminal_store`'s per-row loops
===================================  ================================================

Tests hold every pair equal (``tests/unit/test_native_*.py``, hypothesis included). The
kernels are built by ``pip install -e .`` (``setup.py``); without a C compiler the
build leaves them out and :data:`AVAILABLE` is False, and a build older than its
sources (edited ``.pyx``, no rebuild) is refused with the reason in :data:`MISSING`
instead of scoring with stale code. ``RISKSTREAM_NATIVE=false`` turns them off.

>>> AVAILABLE in (True, False)
True
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

_HERE = Path(__file__).parent
_KERNELS = ("_records", "_cards", "_terminals")


def source_sha(folder: Path = _HERE) -> str | None:
    """sha256 of the kernels' sources in ``folder`` (``setup.py``'s), None without them."""
    sources = sorted([*folder.glob("*.pyx"), *folder.glob("*.pxi")])
    if not sources:
        return None
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _load() -> tuple[dict[str, ModuleType], str | None]:
    modules: dict[str, ModuleType] = {}
    try:
        for name in _KERNELS:
            modules[name] = importlib.import_module(f"streams.native.{name}")
    except ImportError as exc:
        return {}, f"not built ({exc}); run `make bootstrap` (needs a C compiler)"
    wanted = source_sha()
    for name, module in modules.items():
        built = getattr(module, "SOURCE_SHA", None)
        if wanted is not None and built != wanted:
            return {}, f"{name} is older than its sources; run `make bootstrap` to rebuild"
    try:
        _check_constants(modules)
    except ImportError as exc:
        return {}, str(exc)
    return modules, None


def _check_constants(modules: dict[str, ModuleType]) -> None:
    """The definitions the kernels were compiled with are still the Python side's."""
    from models.features import definitions as d
    from streams.records import schema

    modules["_records"]._check_constants(
        schema.MAX_EPOCH_SECONDS, schema.MAX_AMOUNT, schema.SCHEMA_VERSION
    )
    modules["_cards"]._check_constants(
        d.CARD_WINDOWS_DAYS, d.CARD_HISTORY_SECONDS, d.GAP_CAP_SECONDS, d.MEAN_FLOOR, d.DAY_SECONDS
    )
    # 3: the position of ``counts`` in streams.terminal_store._Cached (checked there)
    modules["_terminals"]._check_constants(d.TERMINAL_WINDOWS_DAYS, d.LABEL_DELAY_DAYS, 3)


_MODULES, MISSING = _load()
#: Whether the compiled kernels are importable and built from the sources beside them.
AVAILABLE: bool = bool(_MODULES)


def kernel(name: str) -> Any:
    """The compiled module ``name`` (``"_records"``, ...); raises when unavailable."""
    if not AVAILABLE:
        raise RuntimeError(f"streams.native: {MISSING}")
    return _MODULES[name]


_active = AVAILABLE


def configure(enabled: bool) -> bool:
    """Score with the kernels (when :data:`AVAILABLE`) or the Python references, for the
    whole process; returns whether the kernels are used. Components read it when they
    are built (``RISKSTREAM_NATIVE`` reaches here through the app)."""
    global _active
    _active = bool(enabled) and AVAILABLE
    return _active


def active() -> bool:
    """Whether components built from now on use the kernels."""
    return _active
