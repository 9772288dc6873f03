"""How every benchmark figure is reported: the median of repeats, with its spread.

>>> s = spread([3.0, 1.0, 2.0], command="python -m bench.x")
>>> s["median"], s["min"], s["max"], s["iqr"]
(2.0, 1.0, 3.0, [1.5, 2.5])
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np


def spread(
    values: Sequence[float], *, command: str | None = None, digits: int = 2
) -> dict[str, Any]:
    """Median, min, max and interquartile range of repeated measurements (and the runs)."""
    runs = [round(float(v), digits) for v in values]
    q1, q3 = np.percentile(np.asarray(values, dtype=float), [25, 75]).tolist()
    out: dict[str, Any] = {
        "median": round(float(statistics.median(values)), digits),
        "min": min(runs),
        "max": max(runs),
        "iqr": [round(q1, digits), round(q3, digits)],
        "runs": runs,
    }
    if command is not None:
        out["command"] = command
    return out
