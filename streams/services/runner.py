"""``riskstream up`` / ``down`` / ``status``: the background Kafka and Valkey of a developer.

``up`` starts what is not running (detached, so it outlives the command), records PIDs and
addresses in the state file and creates the project's topics; running again reuses what
runs. A service whose address is set explicitly through the environment
(``RISKSTREAM_KAFKA_BOOTSTRAP_SERVERS`` / ``RISKSTREAM_REDIS_URL``) is external: it is
checked, never started or stopped. ``down`` stops recorded processes by PID only.

Examples
--------
>>> import tempfile
>>> s = Settings(state_dir=tempfile.mkdtemp())
>>> services_down(s)[0].startswith("nothing to stop")
True
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.services.kafka import KafkaBroker
from streams.services.process import port_is_free, stop_process
from streams.services.state import read_state, recorded_process_alive, state_lock, write_state
from streams.services.topics import admin_client, ensure_topics
from streams.services.valkey import EmbeddedValkey, ping
from streams.settings import Settings, env_field_names

KAFKA, VALKEY = "kafka", "valkey"
_ADDRESS_FIELD = {KAFKA: "kafka_bootstrap_servers", VALKEY: "redis_url"}


@dataclass(frozen=True)
class ServiceStatus:
    """One row of ``riskstream status``."""

    name: str
    source: str  # "embedded" (started by up), "external" (set in the environment), "default"
    address: str
    pid: int | None
    healthy: bool
    detail: str
    log: str | None = None


def _data_dir(settings: Settings, name: str) -> Path:
    # The process `up` started works in this folder, and no other process does.
    return settings.state_dir / name


def _port(wanted: int, record: dict[str, Any] | None) -> int:
    """An explicit port setting, else the port of the previous run if free (stable address)."""
    if wanted:
        return wanted
    previous = int((record or {}).get("port") or 0)
    return previous if previous and port_is_free(previous) else 0


def _start_kafka(settings: Settings, record: dict[str, Any] | None) -> dict[str, Any]:
    controller = int((record or {}).get("controller_port") or 0)
    broker = KafkaBroker(
        _data_dir(settings, KAFKA),
        port=_port(settings.kafka_port, record),
        controller_port=controller if controller and port_is_free(controller) else 0,
        owned=False,
        settings=settings,
        full_jit=True,
    )
    broker.start()
    return {
        "pid": broker.pid,
        "port": broker.port,
        "controller_port": broker.controller_port,
        "address": broker.bootstrap_servers,
        "data_dir": str(broker.data_dir),
        "log": str(broker.log_path),
        "started_at": time.time(),
        "start_seconds": round(broker.start_seconds or 0.0, 2),
    }


def _start_valkey(settings: Settings, record: dict[str, Any] | None) -> dict[str, Any]:
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    server = EmbeddedValkey(
        _data_dir(settings, VALKEY),
        port=_port(settings.redis_port, record),
        password=password,
        owned=False,
        persist=True,
    )
    server.start()
    return {
        "pid": server.pid,
        "port": server.port,
        "address": server.url,
        "data_dir": str(server.data_dir),
        "log": str(server.log_path),
        "started_at": time.time(),
    }


def services_up(settings: Settings) -> tuple[Settings, list[ServiceStatus]]:
    """Start (or reuse) Kafka and Valkey, record them, create the topics.

    Returns the settings pointing at the services, and their status rows.
    """
    path = settings.state_file
    explicit = env_field_names()
    with state_lock(path):
        state = read_state(path)
        addresses: dict[str, str] = dict(state.get("settings") or {})
        for name, start in ((KAFKA, _start_kafka), (VALKEY, _start_valkey)):
            field = _ADDRESS_FIELD[name]
            record = state.get(name) or (state.get("previous") or {}).get(name)
            if field in explicit:  # external: the environment says where it is
                if not recorded_process_alive(record, _data_dir(settings, name)):
                    state.pop(name, None)
                    addresses.pop(field, None)
            elif not recorded_process_alive(record, _data_dir(settings, name)):
                state[name] = start(settings, record)
                addresses[field] = state[name]["address"]
            state["settings"] = addresses
            # Record each service as soon as it runs, so `down` can stop it even if the
            # next one fails to start.
            write_state(path, state)
    effective = settings.model_copy(
        update={f: v for f, v in addresses.items() if f not in explicit}
    )
    ensure_topics(effective)
    return effective, services_status(effective)


def services_down(settings: Settings, timeout: float = 60.0) -> list[str]:
    """Stop the services ``up`` recorded (by PID, after checking it is still ours)."""
    path = settings.state_file
    messages = []
    with state_lock(path):
        state = read_state(path)
        for name in (VALKEY, KAFKA):
            record = state.pop(name, None)
            if not record:
                continue
            # Remember the ports so the next `up` offers the same addresses when it can.
            ports = {k: record[k] for k in ("port", "controller_port") if k in record}
            state.setdefault("previous", {})[name] = ports
            (state.get("settings") or {}).pop(_ADDRESS_FIELD[name], None)
            pid = record.get("pid")
            if recorded_process_alive(record, _data_dir(settings, name)):
                graceful = stop_process(int(record["pid"]), timeout=timeout)
                how = "stopped" if graceful else f"killed after {timeout:g} s"
                messages.append(f"{name}: {how} (pid {pid})")
            else:
                messages.append(f"{name}: was not running (pid {pid} is gone or not ours)")
        write_state(path, state)
    return messages or [f"nothing to stop: no services recorded in {path}"]


def _kafka_healthy(settings: Settings) -> bool:
    try:
        with admin_client(settings, timeout_s=3.0) as admin:
            admin.list_topics()
    except Exception:  # noqa: BLE001 - any failure is "unhealthy" in a status table
        return False
    return True


def _redis_healthy(settings: Settings) -> bool:
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return ping(settings.redis_url, password, timeout=2.0)


def services_status(settings: Settings) -> list[ServiceStatus]:
    """Address, PID and health of Kafka and Redis as the settings see them."""
    state = read_state(settings.state_file)
    explicit = env_field_names()
    rows = []
    checks = {KAFKA: _kafka_healthy, VALKEY: _redis_healthy}
    for name in (KAFKA, VALKEY):
        field = _ADDRESS_FIELD[name]
        address = str(getattr(settings, field))
        record = state.get(name)
        if field in explicit:
            source, pid, log = "external", None, None
        elif record:
            source, pid, log = "embedded", record.get("pid"), record.get("log")
            address = str(record.get("address") or address)
        else:
            source, pid, log = "default", None, None
        alive = source != "embedded" or recorded_process_alive(record, _data_dir(settings, name))
        healthy = alive and checks[name](settings.model_copy(update={field: address}))
        if not alive:
            detail = "not running (stale state; `riskstream up` restarts it)"
        elif healthy:
            detail = "ok"
        else:
            detail = "unreachable" if source != "default" else "not running (`riskstream up`)"
        rows.append(ServiceStatus(name, source, address, pid, healthy, detail, log))
    return rows
