"""Apache Kafka 4 (KRaft, one node acting as broker and controller), run with ``java -cp``.

:class:`KafkaBroker` writes ``server.properties`` from the template
``ops/kafka/server.properties``, formats the storage on first start, launches
``kafka.Kafka``, waits until a metadata request succeeds and stops the JVM with SIGTERM
(SIGKILL after a timeout). The jars come from :func:`fetch_kafka_jars`.

``python -m streams.services.kafka fetch`` fills the jar cache (``make bootstrap`` runs it).

Examples
--------
>>> broker = KafkaBroker(Path("/tmp/riskstream-doc-broker"), port=19092)
>>> broker.bootstrap_servers, broker.running
('127.0.0.1:19092', False)

In a test or script (the JVM dies with the Python process even on ``kill -9``)::

    with KafkaBroker(tmp_path / "kafka") as broker:
        create_topic(broker.bootstrap_servers, "transactions", partitions=4)
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from pydantic import SecretStr

from streams.errors import RiskstreamError
from streams.services.kafka_config import log4j_config, server_properties
from streams.services.kafka_jars import (
    cds_archive,
    class_path,
    copy_formatted,
    fetch_kafka_jars,
    formatted_storage,
    java_executable,
    kafka_home,
    kafka_version,
)
from streams.services.process import (
    ServiceProcess,
    ServiceStartError,
    free_port,
    port_is_free,
    port_open,
    spawn,
    tail_file,
)
from streams.settings import Settings, get_settings

__all__ = ["KafkaBroker", "fetch_kafka_jars", "kafka_version", "main"]

_PORT_RETRIES = 3


class KafkaBroker(ServiceProcess):
    """One Apache Kafka node on ``host`` with its data, config and logs in ``data_dir``.

    Parameters
    ----------
    data_dir
        Holds ``server.properties``, ``server.log`` (the broker log), ``kafka.out`` (JVM
        output) and ``data/`` (the KRaft log folder). Reusing a folder keeps the topics.
    port, controller_port
        Listener ports; 0 picks free ones at the first start and keeps them for restarts.
    owned
        True (tests, demo): the JVM dies with this Python process. False (``riskstream
        up``): the JVM is detached and outlives it.
    settings
        Source of the cache folder, heap size, default partitions and start timeout.
    full_jit
        Enable the optimizing C2 compiler: best for long-lived brokers. Off, the JVM starts
        faster and uses less CPU, which suits tests on a small machine.
    sasl_users
        User name -> password. Given, the client listener is SASL_PLAINTEXT with the PLAIN
        mechanism and accepts only these accounts (plus the broker's own inter-broker
        account, a random one); clients then need ``RISKSTREAM_KAFKA_SECURITY_PROTOCOL=
        SASL_PLAINTEXT``, ``..._SASL_MECHANISM=PLAIN`` and a user name and password.
    """

    name = "Kafka broker"

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        *,
        controller_port: int = 0,
        host: str = "127.0.0.1",
        owned: bool = True,
        settings: Settings | None = None,
        full_jit: bool = False,
        sasl_users: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port
        self.controller_port = controller_port
        self.owned = owned
        self.full_jit = full_jit
        self._settings = settings or get_settings()
        self._auto_port = port == 0
        self._auto_controller_port = controller_port == 0
        self._archive_tmp: Path | None = None
        self.start_seconds: float | None = None
        self._accounts: dict[str, str] | None = None
        if sasl_users:
            # The broker's own account comes first: the JAAS login of the listener uses it.
            self._accounts = {"riskstream-broker": secrets.token_urlsafe(24), **sasl_users}

    # --- addresses and state ------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the client listener (valid once started, or if port was given)."""
        return f"{self.host}:{self.port}"

    @property
    def security_protocol(self) -> str:
        """``PLAINTEXT``, or ``SASL_PLAINTEXT`` when started with ``sasl_users``."""
        return "SASL_PLAINTEXT" if self._accounts else "PLAINTEXT"

    @property
    def address(self) -> str:
        """Same as :attr:`bootstrap_servers`."""
        return self.bootstrap_servers

    @property
    def log_path(self) -> Path:
        """The broker's log file."""
        return self.data_dir / "server.log"

    @property
    def output_path(self) -> Path:
        """The JVM's stdout/stderr (startup failures that happen before logging)."""
        return self.data_dir / "kafka.out"

    # --- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> Self:
        """Start the broker and wait until it answers a metadata request; returns self.

        Raises
        ------
        RiskstreamError
            Java or Maven missing, jars unavailable, or (as ``ServiceStartError``, with
            ``log_tail``) the broker exited or was not ready within ``timeout`` seconds.
        """
        if self.running:
            return self
        timeout = timeout if timeout is not None else self._settings.kafka_start_timeout_s
        java = java_executable()
        libs = fetch_kafka_jars(self._settings)
        home = kafka_home(self._settings)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_dir = self.data_dir / "data"
        if not (log_dir / "meta.properties").is_file():
            copy_formatted(formatted_storage(home, java, libs), log_dir)
        (self.data_dir / "log4j2.xml").write_text(log4j_config(self.log_path))
        for attempt in range(_PORT_RETRIES):
            self._choose_ports()
            self._write_properties(log_dir)
            started = time.monotonic()
            self._proc = spawn(
                self._argv(java, libs),
                log_path=self.output_path,
                cwd=self.data_dir,
                owned=self.owned,
            )
            try:
                self._wait_ready(started + timeout, timeout)
            except ServiceStartError as exc:
                self._kill()
                taken = "Address already in use" in exc.log_tail
                auto = self._auto_port or self._auto_controller_port
                if taken and auto and attempt + 1 < _PORT_RETRIES:
                    # Another process took a free port first: choose again.
                    self.port = 0 if self._auto_port else self.port
                    self.controller_port = 0 if self._auto_controller_port else self.controller_port
                    continue
                raise
            self.start_seconds = time.monotonic() - started
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the JVM and wait for a clean shutdown; SIGKILL after ``timeout`` seconds."""
        if self._proc is None:
            return
        self._keep_class_archive(self._terminate(timeout))

    # --- internals ----------------------------------------------------------------------
    def _choose_ports(self) -> None:
        self.port = self._pick_port(self.port, self._auto_port, "port", avoid=0)
        self.controller_port = self._pick_port(
            self.controller_port, self._auto_controller_port, "controller port", avoid=self.port
        )

    def _pick_port(self, current: int, auto: bool, what: str, avoid: int) -> int:
        if not auto:
            if not port_is_free(current, self.host):
                raise RiskstreamError(f"Kafka {what} {self.host}:{current} is already in use")
            return current
        # Keep the previous port across restarts so clients' bootstrap address stays valid.
        while current in (0, avoid) or not port_is_free(current, self.host):
            current = free_port(self.host)
        return current

    def _write_properties(self, log_dir: Path) -> None:
        text = server_properties(
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            log_dir=log_dir,
            partitions=self._settings.topic_partitions,
            sasl_users=self._accounts,
        )
        (self.data_dir / "server.properties").write_text(text)

    def _argv(self, java: str, libs: Path) -> list[str]:
        argv = [java, "-Xms64m", f"-Xmx{self._settings.kafka_heap_mb}m"]
        argv += ["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError"]
        argv += ["-Djava.awt.headless=true"]
        argv += [f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.xml'}"]
        if not self.full_jit:
            argv.append("-XX:TieredStopAtLevel=1")
        # Class-data sharing: loading Kafka's classes from a memory-mapped archive roughly
        # halves JVM start. An owned broker records the archive when it first stops cleanly.
        archive = cds_archive(libs, java)
        self._archive_tmp = None
        if archive.is_file():
            argv.append(f"-XX:SharedArchiveFile={archive}")
        elif self.owned:
            self._archive_tmp = archive.with_name(f"{archive.name}.{os.getpid()}-{id(self)}")
            argv.append(f"-XX:ArchiveClassesAtExit={self._archive_tmp}")
        argv += ["-cp", class_path(libs), "kafka.Kafka", str(self.data_dir / "server.properties")]
        return argv

    def _keep_class_archive(self, graceful: bool) -> None:
        tmp, self._archive_tmp = self._archive_tmp, None
        if tmp is None or not tmp.exists():
            return
        final = tmp.with_name(tmp.name.split(".jsa.", 1)[0] + ".jsa")
        if graceful and tmp.stat().st_size > 0 and not final.exists():
            os.replace(tmp, final)
        else:
            tmp.unlink(missing_ok=True)

    def _ready(self) -> bool:
        return port_open(self.host, self.port, 0.25) and self._answers_metadata()

    def _answers_metadata(self) -> bool:
        from streams.services.topics import admin_client

        target: str | Settings = self.bootstrap_servers
        if self._accounts:
            (user, password), *_ = self._accounts.items()
            target = Settings(
                kafka_bootstrap_servers=self.bootstrap_servers,
                kafka_security_protocol="SASL_PLAINTEXT",
                kafka_sasl_mechanism="PLAIN",
                kafka_sasl_username=user,
                kafka_sasl_password=SecretStr(password),
            )
        try:
            with admin_client(target, timeout_s=2.0) as admin:
                admin.list_topics()
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
        return True

    def _log_tail(self) -> str:
        parts = [tail_file(self.output_path, 10), tail_file(self.log_path, 20)]
        return "\n".join(p for p in parts if p)

    def _kill(self) -> None:
        self._terminate(5.0)
        self._keep_class_archive(graceful=False)


def main(argv: list[str] | None = None) -> int:
    """``python -m streams.services.kafka fetch``: fill the jar cache and say where it is."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["fetch"]:
        print("usage: python -m streams.services.kafka fetch", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        libs = fetch_kafka_jars()
    except RiskstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    jars = len(list(libs.glob("*.jar")))
    took = time.monotonic() - started
    print(f"Kafka {kafka_version()} jars: {libs} ({jars} jars, {took:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
