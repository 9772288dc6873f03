"""Starting and stopping the service processes (Kafka's JVM, Valkey) without leaving orphans.

Two lifetimes:

* **owned** (tests, ``riskstream demo``): the child gets its own process group, is killed by
  the kernel if the Python parent dies (``PR_SET_PDEATHSIG``), and is stopped by an
  ``atexit`` hook and on ``SIGTERM``/``SIGHUP`` if the caller forgot to stop it.
  The kernel ties the death signal to the *thread* that forked, not the process, so an
  owned child started from another thread (``asyncio.to_thread``, a thread pool) is forked
  by one long-lived spawner thread instead: else it would die with the short-lived thread.
* **detached** (``riskstream up``): its own session, no death signal, no hooks, so it
  outlives the command; ``riskstream down`` stops it later by its recorded PID.

Examples
--------
>>> port = free_port()
>>> 1024 <= port <= 65535
True
>>> pid_alive(os.getpid())
True
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

from streams.errors import RiskstreamError

_PR_SET_PDEATHSIG = 1
# Loaded here, in the parent: the pre-exec hook runs between fork and exec and must not
# import or load libraries there.
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - non-glibc platforms
    _LIBC = None

_owned: dict[int, subprocess.Popen[bytes]] = {}
_owned_lock = threading.RLock()  # re-entrant: the signal hook may run while it is held
_hooks_installed = False
# Forks owned children for threads other than the main one; lives as long as the process.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="riskstream-spawner")


class ServiceStartError(RiskstreamError):
    """A service did not start; ``log_tail`` holds the end of its log to show below the line."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


def tail_file(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' if unreadable)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be bound right now.

    >>> port_is_free(free_port())
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: connections of a stopped server lingering in TIME_WAIT don't count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[-1].split()[0] not in {"Z", "X"}


def pid_cmdline(pid: int) -> str:
    """The command line of ``pid`` joined with spaces ('' if it is gone or unreadable).

    >>> "python" in pid_cmdline(os.getpid()).lower()
    True
    """
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def pid_cwd(pid: int) -> Path | None:
    """The working folder of ``pid`` (None if it is gone or unreadable).

    The services run with their data folder as working folder, which identifies them even
    after they rewrite their command line (Valkey shows only ``host:port`` there).

    >>> pid_cwd(os.getpid()) == Path.cwd()
    True
    """
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    owned: bool,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout/stderr appended to ``log_path``.

    ``owned=True`` ties the child's life to this Python process (see the module doc);
    ``owned=False`` detaches it so it outlives the caller.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def start() -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            return subprocess.Popen(  # noqa: S603 - argv is built by this package, never a shell
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,  # own process group: a terminal Ctrl-C reaches only us
                preexec_fn=_die_with_parent(os.getpid()) if owned else None,
                close_fds=True,
            )

    on_main = threading.current_thread() is threading.main_thread()
    proc = start() if on_main or not owned else _spawner.submit(start).result()
    if owned:
        _install_hooks()
        with _owned_lock:
            _owned[proc.pid] = proc
    return proc


def stop_process(pid: int, *, timeout: float, popen: subprocess.Popen[bytes] | None = None) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout`` seconds, then SIGKILL its process group.

    Returns True if it stopped on SIGTERM, False if it had to be killed. A process that is
    already gone counts as stopped.
    """
    with _owned_lock:
        popen = popen or _owned.get(pid)
    graceful = True
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _forget(pid, popen)
        return True
    if not _wait_exit(pid, timeout, popen):
        graceful = False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_exit(pid, 10.0, popen)
    _forget(pid, popen)
    return graceful


def _wait_exit(pid: int, timeout: float, popen: subprocess.Popen[bytes] | None) -> bool:
    if popen is not None:
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _forget(pid: int, popen: subprocess.Popen[bytes] | None) -> None:
    if popen is not None:
        with contextlib.suppress(Exception):
            popen.wait(timeout=0)
    with _owned_lock:
        _owned.pop(pid, None)


def stop_all_owned(timeout: float = 5.0) -> None:
    """Stop every owned child still running (the ``atexit`` and signal hook)."""
    with _owned_lock:
        procs = list(_owned.values())
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                stop_process(proc.pid, timeout=timeout, popen=proc)
        _forget(proc.pid, proc)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    stop_all_owned(timeout=2.0)
    # Then die of the same signal, as if we had not been here.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(stop_all_owned)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        # Only where nobody else (pytest, Faust, the user) has installed a handler.
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _on_signal)


class ServiceProcess:
    """What the service objects (Kafka broker, Valkey) share: process state, readiness, ``with``.

    A subclass sets :attr:`name`, ``data_dir``, :attr:`address`, :attr:`log_path`, and
    :meth:`_ready`; its ``start()`` spawns into ``self._proc`` and calls
    :meth:`_wait_ready`; its ``stop()`` calls :meth:`_terminate`.
    """

    name = "service"
    poll_s = 0.1  # between readiness checks
    data_dir: Path
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """Where clients connect."""
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        """The service's log file."""
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """PID of the process while this object runs it."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the process this object started is still alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float | None = None) -> Self:
        """Start the service and wait until it is ready; returns self."""
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the service (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        self._terminate(timeout)

    def _ready(self) -> bool:
        """Whether the service answers its clients yet."""
        raise NotImplementedError

    def _log_tail(self) -> str:
        return tail_file(self.log_path)

    def _terminate(self, timeout: float) -> bool:
        """Stop the process if any; True when it stopped on SIGTERM (or there was none)."""
        if self._proc is None:
            return True
        graceful = stop_process(self._proc.pid, timeout=timeout, popen=self._proc)
        self._proc = None
        return graceful

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        """Poll :meth:`_ready` until ``deadline``; ``ServiceStartError`` on exit or timeout."""
        assert self._proc is not None  # noqa: S101 - called right after spawn
        while True:
            code = self._proc.poll()
            if code is not None:
                raise ServiceStartError(
                    f"{self.name} exited with code {code} while starting: see {self.log_path}",
                    self._log_tail(),
                )
            if self._ready():
                return
            if time.monotonic() >= deadline:
                raise ServiceStartError(
                    f"{self.name} did not become ready in {timeout:g} s: see {self.log_path}",
                    self._log_tail(),
                )
            time.sleep(self.poll_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.address} {state} data_dir={self.data_dir}>"
