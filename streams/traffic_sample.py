"""Recent traffic for the pattern head: a random sample of the scored feature vectors.

The score agent keeps every transaction's vector in Redis for the labels agent
(:mod:`streams.scored_store`); about 99 % of that traffic is legit, which makes it the
reference a new pattern's labelled cases are told apart from. ``HRANDFIELD`` draws the
sample server side, newest bucket first, one round trip per bucket.

Buckets follow the wall clock, so a replay of weeks of history lands in one bucket; the
sample is therefore also cut to the last ``max_age_s`` of *event* time (the newest
transaction's time minus ``max_age_s``): the reference is recent behaviour, never a
deployment's cold first days.
"""

from __future__ import annotations

import numpy as np
import orjson

from streams.scored_store import ScoredStore, decode_entry

OVERSAMPLE = 3  # entries drawn per wanted row, so the event-time cut still leaves enough


def _ts_and_vector(raw: bytes) -> tuple[float, np.ndarray]:
    """Event time and vector of an entry, without decoding the rest of its header."""
    if raw[:1] == b"{":  # an older JSON entry
        entry = decode_entry(raw)
        return float(entry["ts"]), np.asarray(entry["x"], dtype=np.float32)
    header, _, vector = raw.partition(b"\n")
    return float(orjson.loads(header)[1]), np.frombuffer(vector, dtype=np.float32)


async def recent_traffic(
    store: ScoredStore,
    n_rows: int,
    n_features: int,
    *,
    max_age_s: float = float("inf"),
    now: float | None = None,
) -> np.ndarray:
    """Up to ``n_rows`` distinct recent vectors ``[N, n_features]`` (float32).

    Vectors of another length (scored under a different feature schema) are skipped, and
    so are those more than ``max_age_s`` of event time older than the newest one drawn.
    """
    ts: list[float] = []
    rows: list[np.ndarray] = []
    for key in store.live_keys(now):
        if len(rows) >= OVERSAMPLE * n_rows:
            break
        reply = await store.redis.hrandfield(key, OVERSAMPLE * n_rows - len(rows), withvalues=True)
        for raw in reply[1::2]:
            t, x = _ts_and_vector(raw)
            if x.shape[0] == n_features:
                ts.append(t)
                rows.append(x)
    if not rows:
        return np.zeros((0, n_features), dtype=np.float32)
    times = np.asarray(ts)
    recent = np.flatnonzero(times >= times.max() - max_age_s)[:n_rows]
    return np.stack([rows[i] for i in recent]).astype(np.float32, copy=False)
