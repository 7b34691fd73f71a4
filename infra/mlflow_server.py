"""A local `mlflow server` (tracking API + UI) over rtml's local tracking store, started by `rtml up --mlflow`.

It serves the same sqlite store and artifact folder that `rtml train` writes (``<state_dir>/mlflow``),
so the UI shows every run. Files: pid ``run_dir/mlflow.pid``, log ``run_dir/mlflow.log``. Port:
``RTML_MLFLOW_PORT`` (default 5000). Stopped by pid (`rtml down`), never by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserFacingError
from core.settings import Settings, settings
from infra.proc import file_lock, owned_pid, port_open, stop_by_pid_file, wait_started, wait_until, write_pid


@dataclass(frozen=True)
class MlflowPaths:
    store: Path
    artifacts: Path
    pid_file: Path
    log_file: Path

    @classmethod
    def of(cls, s: Settings) -> MlflowPaths:
        return cls(
            store=s.mlflow_dir / "mlflow.db",
            artifacts=s.mlflow_dir / "artifacts",
            pid_file=s.run_dir / "mlflow.pid",
            log_file=s.run_dir / "mlflow.log",
        )


def url(s: Settings | None = None) -> str:
    s = s or settings()
    return f"http://127.0.0.1:{s.mlflow.port}"


def answers(address: str | None = None, timeout_s: float = 1.0) -> bool:
    """True if an MLflow server answers ``/health`` at ``address``."""
    try:
        with urllib.request.urlopen(f"{address or url()}/health", timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def running_pid(s: Settings | None = None) -> int | None:
    s = s or settings()
    return owned_pid(MlflowPaths.of(s).pid_file, "mlflow", str(MlflowPaths.of(s).store))


def start(progress: bool = True, timeout_s: float = 90.0) -> tuple[str, int]:
    """Start `mlflow server` on the local store unless ours already runs; returns (url, pid)."""
    s = settings()
    if s.mlflow.uri:
        raise UserFacingError(
            f"RTML_MLFLOW_URI={s.mlflow.uri} names a tracking server already; `rtml up --mlflow` serves the local store only."
        )
    with file_lock(s.run_dir / "mlflow.lock"):
        return _start(s, progress, timeout_s)


def _start(s: Settings, progress: bool, timeout_s: float) -> tuple[str, int]:
    say = print if progress else (lambda *a, **k: None)
    paths = MlflowPaths.of(s)
    address = url(s)
    pid = running_pid(s)
    if pid is not None:
        say(f"mlflow: already running at {address} (pid {pid})")
        return address, pid
    if port_open("127.0.0.1", s.mlflow.port):
        raise UserFacingError(f"port {s.mlflow.port} is taken; choose another with RTML_MLFLOW_PORT.")
    paths.artifacts.mkdir(parents=True, exist_ok=True)
    paths.pid_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        s.mlflow_tracking_uri,
        "--default-artifact-root",
        paths.artifacts.as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(s.mlflow.port),
        "--workers",
        "1",
    ]
    say(f"mlflow: starting the tracking server and UI at {address} (log: {paths.log_file})", flush=True)
    with paths.log_file.open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    write_pid(paths.pid_file, proc.pid)
    took = wait_started("mlflow server", proc, lambda: answers(address, timeout_s=1.0), paths.pid_file,
                        paths.log_file, timeout_s)
    say(f"mlflow: ready in {took:.1f} s (pid {proc.pid}); UI at {address}")
    return address, proc.pid


def stop(progress: bool = True, timeout_s: float = 15.0, s: Settings | None = None) -> bool:
    """Stop the mlflow server rtml started for these settings: its pid, and the uvicorn workers in the
    session it leads (it was started with ``start_new_session``, so its pid is that group's id)."""
    s = s or settings()
    pid = running_pid(s)
    if pid is not None:
        _signal_group(pid, signal.SIGTERM)
    stopped = stop_by_pid_file("mlflow", pid, MlflowPaths.of(s).pid_file, timeout_s, progress)
    if pid is not None and not wait_until(lambda: not _group_alive(pid), timeout_s, interval_s=0.1):
        _signal_group(pid, signal.SIGKILL)
    return stopped


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
