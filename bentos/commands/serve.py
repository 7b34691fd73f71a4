"""`rtml serve`: run the prediction service (`bentoml serve`), in the foreground or detached.

Detached (``--detach``) it starts in its own session, logs to ``<run_dir>/serve-<port>.log``, writes
``serve-<port>.pid``, waits until ``/readyz`` answers and prints the URL. ``--stop`` stops a detached
service by its pid file.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.errors import UserFacingError
from core.settings import REPO_ROOT, settings

SERVICES = {
    "prediction": "bentos.service:PredictionService",
    "baseline": "bentos.baseline_service:BaselineScorer",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=3000, help="HTTP port (default 3000)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: RTML_SERVING_WORKERS, 1)")
    parser.add_argument("--service", choices=sorted(SERVICES), default="prediction", help="prediction (default) or the plain baseline")
    parser.add_argument("--model", default=None, help="model tag to serve (default: the registry's production model)")
    parser.add_argument("--detach", action="store_true", help="start in the background, wait for readiness, print the URL")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness with --detach")
    parser.add_argument("--stop", action="store_true", help="stop the detached service on --port")


def pid_file(port: int) -> Path:
    return settings().run_dir / f"serve-{port}.pid"


def log_file(port: int) -> Path:
    return settings().run_dir / f"serve-{port}.log"


def service_env(workers: int = 1, model: str | None = None, port: int | None = None) -> dict[str, str]:
    """Environment of the `bentoml serve` process: rtml settings plus BentoML's home."""
    from core.model_store import bentoml_home

    env = dict(os.environ)
    env["BENTOML_HOME"] = str(bentoml_home())
    env["RTML_SERVING_WORKERS"] = str(workers)
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    if model:
        env["RTML_SERVING_MODEL_TAG"] = model
    if port is not None:
        env["RTML_PROMETHEUS_DIR"] = str(prometheus_dir(port))
    return env


def serve_command(service: str, host: str, port: int) -> list[str]:
    """`bentoml serve` through :mod:`bentos.commands.bentoml_launcher` (per-server metrics directory)."""
    return [sys.executable, "-m", "bentos.commands.bentoml_launcher", "serve", SERVICES[service], "--host", host, "--port", str(port)]


def prometheus_dir(port: int) -> Path:
    return settings().run_dir / f"prometheus-{port}"


def wait_ready(url: str, timeout: float, proc: subprocess.Popen | None = None) -> str:
    """``ready`` when ``/readyz`` answers 200, ``alive`` when only ``/livez`` does by the deadline."""
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)
    deadline = time.monotonic() + timeout
    alive = False
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return "exited"
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return "ready"
            alive = httpx.get(f"{url}/livez", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    return "alive" if alive else "timeout"


def start_detached(service: str, host: str, port: int, workers: int = 1, model: str | None = None, timeout: float = 90.0) -> tuple[int, str]:
    """Start `bentoml serve` in its own session; return (pid, url) once ready. Raises UserFacingError."""
    url = f"http://{host}:{port}"
    pf = pid_file(port)
    if pf.exists() and _alive(int(pf.read_text().strip() or 0)):
        raise UserFacingError(f"a service started by rtml already runs on port {port} (pid {pf.read_text().strip()}); `rtml serve --stop --port {port}`")
    settings().run_dir.mkdir(parents=True, exist_ok=True)
    logf = open(log_file(port), "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        serve_command(service, host, port),
        cwd=REPO_ROOT,
        env=service_env(workers, model, port),
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    logf.close()
    pf.write_text(str(proc.pid))
    state = wait_ready(url, timeout, proc)
    if state == "ready":
        return proc.pid, url
    if state in ("exited", "timeout"):
        stop(port)
        tail = _tail(log_file(port))
        raise UserFacingError(f"the service did not start ({state}); last log lines of {log_file(port)}:\n{tail}")
    raise UserFacingError(
        f"the service runs at {url} (pid {proc.pid}) but is not ready: is Redis up at {settings().redis_url}? "
        f"Stop it with `rtml serve --stop --port {port}`."
    )


def stop(port: int, timeout: float = 15.0) -> bool:
    """Stop the detached service on ``port``: the `bentoml serve` process and its workers (which BentoML
    puts in process groups of their own), by pid. True if something was stopped."""
    pf = pid_file(port)
    if not pf.exists():
        return False
    pid = int(pf.read_text().strip() or 0)
    stopped = False
    if pid and _alive(pid):
        family = [pid, *descendants(pid)]
        _signal_all(family, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(p) for p in family):
            time.sleep(0.1)
        _signal_all([p for p in family if _alive(p)], signal.SIGKILL)
        stopped = True
    pf.unlink(missing_ok=True)
    shutil.rmtree(prometheus_dir(port), ignore_errors=True)
    return stopped


def descendants(pid: int) -> list[int]:
    """Pids of all live descendants of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _signal_all(pids: list[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:  # reap it if it is our zombie child
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def check_model(model: str | None) -> str:
    """The tag that will be served; a clear error (before starting anything) when there is none."""
    from core import model_store
    return str((model_store.get_model(model) if model else model_store.production_model()).tag)


def run(args: argparse.Namespace) -> int:
    if args.stop:
        print(f"stopped the service on port {args.port}" if stop(args.port) else f"no detached service on port {args.port}")
        return 0
    check_model(args.model)
    workers = args.workers or settings().serving.workers
    if args.detach:
        pid, url = start_detached(args.service, args.host, args.port, workers, args.model, args.timeout)
        print(f"{args.service} service ready at {url} (pid {pid}, log {log_file(args.port)}); stop: rtml serve --stop --port {args.port}")
        return 0
    cmd = serve_command(args.service, args.host, args.port)
    print(f"serving {SERVICES[args.service]} at http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    settings().run_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=service_env(workers, args.model, args.port))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 130
