"""Process and port helpers for the services `rtml up` starts: pid files, liveness, stop by pid, port probes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from core.errors import UserFacingError
from core.locks import file_lock  # noqa: F401  (re-exported: the stack's lock)

INSTALL_HINT = "apt-get install openjdk-17-jre-headless maven"


def require_tool(name: str, hint: str = INSTALL_HINT) -> str:
    """Absolute path of executable ``name`` on PATH, or a :class:`UserFacingError` saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise UserFacingError(f"`{name}` not found on PATH; install it (e.g. `{hint}`) and retry.")
    return path


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def write_pid(pid_file: Path, pid: int) -> None:
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = pid_file.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pid_file)


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our own exited child (else it stays a zombie that looks alive)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError:
        pass


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (zombies count as dead)."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def cmdline(pid: int) -> list[str]:
    try:
        return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return []


def owned_pid(pid_file: Path, *markers: str) -> int | None:
    """The pid recorded in ``pid_file`` if that process is alive and its command line contains every marker.

    The marker (e.g. the config path) protects against pid reuse: a stale pid file never makes us
    signal an unrelated process. A stale pid file is removed.
    """
    pid = read_pid(pid_file)
    if pid is None:
        return None
    line = " ".join(cmdline(pid))
    if pid_alive(pid) and all(marker in line for marker in markers):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def stop_pid(pid: int, timeout_s: float = 15.0) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout_s``, then SIGKILL. True if it had to be killed."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if wait_until(lambda: not pid_alive(pid), timeout_s, interval_s=0.1):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    wait_until(lambda: not pid_alive(pid), 5.0, interval_s=0.05)
    return True


def stop_by_pid_file(label: str, pid: int | None, pid_file: Path, timeout_s: float, progress: bool) -> bool:
    """Stop ``pid`` (SIGTERM, then SIGKILL) and remove its pid file; True if something was stopped."""
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    killed = stop_pid(pid, timeout_s=timeout_s)
    pid_file.unlink(missing_ok=True)
    if progress:
        print(f"{label}: stopped pid {pid}{' (killed after SIGTERM timeout)' if killed else ''}")
    return True


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passed; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def wait_started(label: str, proc, ready: Callable[[], bool], pid_file: Path, log_file: Path,
                 timeout_s: float) -> float:
    """Wait until a service just started as ``proc`` answers (``ready()``); seconds it took. If it exits
    first, or does not answer within ``timeout_s`` (then it is stopped by pid), its pid file is removed and
    a clear error names its log."""
    started_at = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise UserFacingError(
                f"{label} exited with code {proc.returncode} during startup; see {log_file}:\n{tail(log_file, 10)}"
            )
        if time.monotonic() - started_at > timeout_s:
            stop_pid(proc.pid, timeout_s=5)
            pid_file.unlink(missing_ok=True)
            raise UserFacingError(f"{label} did not answer within {timeout_s:g} s; see {log_file}")
        time.sleep(0.2)
    return time.monotonic() - started_at


def port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True if something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 20) -> str:
    """Last ``lines`` lines of a text file ('' if missing)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
