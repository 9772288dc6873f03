"""Writing a protocol's outputs: ``report.json``, ``report.md`` and the plots' folder.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     p = write_report(Path(d), {"models": {"lr": {"auc_roc": 0.5}}}, "# title\\n")
...     sorted(x.name for x in p.iterdir())
['report.json', 'report.md']
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(out_dir: Path, data: dict[str, Any], markdown: str) -> Path:
    """Write ``report.json`` (sorted keys, stable diffs) and ``report.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_clean(data), indent=2, sort_keys=True, allow_nan=False)
    (out_dir / "report.json").write_text(text + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(markdown, encoding="utf-8")
    return out_dir


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats rounded, missing values as a dash.

    >>> fmt(0.87149), fmt(float("nan")), fmt(None), fmt(12)
    ('0.871', '–', '–', '12')
    """
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table.

    >>> print(md_table(["a", "b"], [[1, 0.5]]))
    | a | b |
    |---|---|
    | 1 | 0.500 |
    """
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def shortfall(value: float, goal: float) -> str:
    """``met (+x)`` or ``short by x`` against a goal (higher is better).

    >>> shortfall(0.85, 0.88), shortfall(0.9, 0.88)
    ('short by 0.030', 'met (+0.020)')
    """
    if not math.isfinite(value):
        return "not measured"
    diff = value - goal
    return f"met (+{diff:.3f})" if diff >= 0 else f"short by {-diff:.3f}"
