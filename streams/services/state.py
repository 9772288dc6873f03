"""The services state file that ``riskstream up`` writes and every other command reads.

``<state_dir>/services.json``::

    {"settings": {"kafka_bootstrap_servers": "127.0.0.1:40123",
                  "redis_url": "redis://127.0.0.1:40456/0"},
     "kafka":  {"pid": 1234, "port": 40123, "controller_port": 40124,
                "data_dir": "...", "log": ".../server.log", "started_at": 1.7e9},
     "valkey": {"pid": 1240, "port": 40456, "data_dir": "...", "log": "...", ...}}

``settings`` is what :mod:`streams.settings` reads as defaults, so commands find the
services with no flags; the other sections let ``down`` and ``status`` find the processes.

Examples
--------
>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "services.json"
>>> read_state(path)
{}
>>> write_state(path, {"kafka": {"pid": 1, "port": 9092}})
>>> read_state(path)["kafka"]["port"]
9092
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streams.services.process import pid_alive, pid_cwd

State = dict[str, Any]


def read_state(path: Path) -> State:
    """The recorded state, or ``{}`` if there is none (or it is unreadable)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(path: Path, state: State) -> None:
    """Replace the state file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def state_lock(path: Path) -> Iterator[None]:
    """Serialize ``up``/``down`` runs that share one state file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def recorded_process_alive(record: dict[str, Any] | None, data_dir: Path) -> bool:
    """Whether the PID in ``record`` still runs *our* service.

    The process must work in ``data_dir`` (services are started there), so a PID reused by
    an unrelated process is never mistaken for, or stopped as, the service.

    >>> recorded_process_alive({"pid": os.getpid()}, Path.cwd())
    True
    >>> recorded_process_alive({"pid": os.getpid()}, Path("/no/such/folder"))
    False
    >>> recorded_process_alive(None, Path.cwd())
    False
    """
    if not record or not isinstance(record.get("pid"), int):
        return False
    pid = int(record["pid"])
    return pid_alive(pid) and pid_cwd(pid) == data_dir.resolve()
