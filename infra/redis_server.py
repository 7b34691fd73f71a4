"""A local `redis-server` for Feast's online store (no persistence, ``maxmemory`` with the ``noeviction``
policy: writes fail instead of features being evicted silently), started by `rtml up` when none answers.

Secure by default (``RTML_REDIS_SECURITY=none`` opts out): started through the deployments' own
``infra/k8s/redis/start-redis.sh`` (the one ACL table: default user off, ``rtml-admin``, ``rtml-writer``
limited to the Feast project's keys, read-only ``rtml-serving``), with passwords generated into
``<state_dir>/secrets/redis.json`` (0600) and the ACL file of their hashes in ``<state_dir>/secrets/redis-acl/``.

Files for the current settings: data dir ``state_dir/redis/``, pid ``run_dir/redis.pid``, log ``run_dir/redis.log``.
Tests that need Redis to go away mid-test use :func:`stop_redis` / :func:`start_redis`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserFacingError
from core.redis_auth import no_retry
from core.settings import REPO_ROOT, Settings, settings
from infra.proc import file_lock, owned_pid, port_open, stop_by_pid_file, stop_pid, tail, wait_until, write_pid
from infra.secrets import ensure_passwords

APT_PACKAGE = "redis-server"
ACL_SCRIPT = REPO_ROOT / "infra" / "k8s" / "redis" / "start-redis.sh"


@dataclass(frozen=True)
class RedisPaths:
    data: Path
    pid_file: Path
    log_file: Path

    @classmethod
    def of(cls, s: Settings) -> RedisPaths:
        return cls(data=s.state_dir / "redis", pid_file=s.run_dir / "redis.pid", log_file=s.run_dir / "redis.log")


@dataclass(frozen=True)
class StartResult:
    address: str
    pid: int | None
    started: bool  # True if this call launched the process
    managed: bool  # True if rtml owns the process (pid file), so `rtml down` stops it
    external: bool


def answers_ping(url: str | None = None, timeout_s: float = 1.0) -> bool:
    """True if a Redis server answers PING at ``url`` within ``timeout_s`` (an auth error counts as Redis)."""
    import redis

    from core.redis_auth import tls_kwargs

    s = settings()
    url = url or s.redis_url
    tls = tls_kwargs(s) if s.redis_tls or url.startswith("rediss://") else {}
    if "," in url.split("://", 1)[-1].split("/", 1)[0] or not url.startswith(("redis://", "rediss://", "unix://")):
        # cluster / sentinel URL: its first node
        host, _, port = url.split("://", 1)[-1].split("/", 1)[0].split(",")[0].rsplit("@", 1)[-1].rpartition(":")
        client = redis.Redis(host=host or "127.0.0.1", port=int(port or 6379), socket_connect_timeout=timeout_s,
                             socket_timeout=timeout_s, retry=no_retry(), **tls)
    else:
        if tls and url.startswith("redis://"):
            url = "rediss://" + url[len("redis://"):]
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=no_retry(),
            **({"ssl_ca_certs": tls.get("ssl_ca_certs")} if tls else {}),
        )
    try:
        return bool(client.ping())
    except redis.exceptions.AuthenticationError:
        return True
    except redis.exceptions.ResponseError as exc:
        return "NOAUTH" in str(exc)
    except (redis.exceptions.RedisError, OSError):
        return False
    finally:
        client.close()


def ensure_secrets(s: Settings | None = None) -> dict[str, str]:
    """role -> generated password of the local Redis's ACL users (created once, mode 0600)."""
    from core.redis_auth import USERS, secrets_path

    return ensure_passwords(secrets_path(s or settings()), USERS)["users"]


def tls_files(s: Settings):
    """The local Redis's CA and server certificate (generated once under ``s.redis_tls_dir``)."""
    from infra.redis_tls import ensure_certificates

    return ensure_certificates(s.redis_tls_dir, [h for h, _ in s.redis_nodes])


def listen_args(s: Settings, port: int) -> list[str]:
    """Where redis-server listens: ``--port``, or with TLS only ``--tls-port`` (``--port 0``: no plaintext)."""
    if not s.redis_tls:
        return ["--port", str(port)]
    return ["--port", "0", "--tls-port", str(port), *tls_files(s).server_args()]


def _tls_hint(s: Settings) -> str:
    return (f"{'over TLS' if s.redis_tls else 'in plaintext'} (started with RTML_REDIS_TLS "
            f"{'off' if s.redis_tls else 'on'}? `rtml down` stops the one rtml started)")


def launch(binary: str, args: list[str], s: Settings) -> tuple[list[str], dict[str, str]]:
    """Command and environment starting ``redis-server args``: through the ACL script when secured."""
    from core.redis_auth import PASSWORD_ENV, secured

    env = dict(os.environ)
    if not secured(s):
        return [binary, *args], env
    passwords = ensure_secrets(s)
    env.update({PASSWORD_ENV[role]: pw for role, pw in passwords.items()})
    from core.feast_store import project_name

    env.update(RTML_FEAST_PROJECT=project_name(), REDIS_ACL_DIR=str(s.secrets_dir / "redis-acl"),
               PATH=f"{os.path.dirname(binary)}{os.pathsep}{env.get('PATH', '')}")
    return [shutil.which("sh") or "/bin/sh", str(ACL_SCRIPT), *args], env


def admin_client(host: str, port: int, timeout_s: float = 1.0, s: Settings | None = None):
    """A redis-py client for one node of the Redis rtml runs, as ``rtml-admin`` with its generated password
    when secured (the server's own, whatever RTML_REDIS_USER a client process is given)."""
    import redis

    from core.redis_auth import USERS, credentials, load_secrets, secured, tls_kwargs

    s = s or settings()
    if secured(s) and load_secrets(s).get("admin"):
        user, password = USERS["admin"], load_secrets(s)["admin"]
    else:
        user, password = credentials("admin", s) or (None, None)
    return redis.Redis(host=host, port=port, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                       username=user, password=password, retry=no_retry(), **tls_kwargs(s))


def running_pid(s: Settings | None = None) -> int | None:
    """Pid of the redis-server that rtml started for these settings, if it runs."""
    s = s or settings()
    return owned_pid(RedisPaths.of(s).pid_file, "redis-server", f":{s.redis_host_port[1]}")


def is_running(s: Settings | None = None) -> bool:
    return running_pid(s) is not None


def redis_server_binary(progress: bool = True) -> str:
    """Path of `redis-server`, installing the Debian package with apt-get when it is missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    apt = shutil.which("apt-get")
    hint = f"install it (`apt-get install {APT_PACKAGE}`) or set RTML_REDIS_URL to a running Redis"
    if apt is None or os.geteuid() != 0:
        raise UserFacingError(f"`redis-server` not found on PATH; {hint}.")
    if progress:
        print(
            f"redis: `redis-server` missing, installing the Debian package {APT_PACKAGE} with apt-get ...", flush=True
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "--no-install-recommends", APT_PACKAGE]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise UserFacingError(f"`{' '.join(cmd)}` failed ({done.stderr.strip()[-300:]}); {hint}.")
    # The package starts a system service on 6379; rtml runs its own instance, so stop that one.
    subprocess.run(["service", "redis-server", "stop"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    found = shutil.which("redis-server")
    if not found:
        raise UserFacingError(f"`redis-server` still not found after installing {APT_PACKAGE}; {hint}.")
    return found


def start(progress: bool = True, timeout_s: float = 15.0) -> StartResult:
    """Start redis-server for the current settings unless a Redis already answers at ``redis_url``."""
    with file_lock(settings().run_dir / "redis.lock"):
        return _start(progress, timeout_s)


def _start(progress: bool, timeout_s: float) -> StartResult:
    s = settings()
    say = print if progress else (lambda *a, **k: None)
    host, port = s.redis_host_port
    if s.redis_external:
        if not answers_ping(s.redis_url, timeout_s=2.0):
            raise UserFacingError(
                f"no Redis answers at RTML_REDIS_URL={s.redis_url}; start it or unset RTML_REDIS_URL."
            )
        say(f"redis: using external Redis at {s.redis_url}")
        return StartResult(s.redis_url, None, started=False, managed=False, external=True)

    pid = running_pid(s)
    if answers_ping(s.redis_url):
        if pid is not None:
            say(f"redis: already running at {s.redis_url} (pid {pid})")
        else:
            say(f"redis: reusing the Redis that already answers at {s.redis_url} (not started by rtml)")
        return StartResult(s.redis_url, pid, started=False, managed=pid is not None, external=False)
    if pid is not None:  # ours but not answering (just starting, or wedged)
        if wait_until(lambda: answers_ping(s.redis_url), timeout_s, interval_s=0.1):
            say(f"redis: already running at {s.redis_url} (pid {pid})")
            return StartResult(s.redis_url, pid, started=False, managed=True, external=False)
        raise UserFacingError(
            f"redis-server (pid {pid}) runs but does not answer PING at {s.redis_url} {_tls_hint(s)}; "
            f"see {RedisPaths.of(s).log_file} or run `rtml down`."
        )
    if port_open(host, port):
        raise UserFacingError(
            f"port {port} is taken by a process that does not answer Redis PING {_tls_hint(s)}; stop it or choose "
            "another port with RTML_REDIS_PORT."
        )

    binary = redis_server_binary(progress)
    paths = RedisPaths.of(s)
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.pid_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        binary,
        *listen_args(s, port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(paths.data),
        "--save",
        "",
        "--appendonly",
        "yes" if s.redis_appendonly else "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "no",
        "--logfile",
        str(paths.log_file),
        "--loglevel",
        "warning",
        # bounded memory: past maxmemory writes fail (the writers replay them) instead of evicting features
        "--maxmemory",
        s.redis_maxmemory,
        "--maxmemory-policy",
        "noeviction",
    ]
    say(f"redis: starting redis-server at {s.redis_url} (log: {paths.log_file})", flush=True)
    argv, env = launch(binary, cmd[1:], s)
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=paths.data,
    )
    write_pid(paths.pid_file, proc.pid)
    started_at = time.monotonic()
    while not answers_ping(s.redis_url, timeout_s=0.5):
        if proc.poll() is not None:
            paths.pid_file.unlink(missing_ok=True)
            raise UserFacingError(
                f"redis-server exited with code {proc.returncode} during startup; see {paths.log_file}:\n"
                f"{tail(paths.log_file, 10)}"
            )
        if time.monotonic() - started_at > timeout_s:
            stop_pid(proc.pid, timeout_s=5)
            proc.poll()
            paths.pid_file.unlink(missing_ok=True)
            raise UserFacingError(f"redis-server did not answer PING within {timeout_s:g} s; see {paths.log_file}")
        time.sleep(0.05)
    say(f"redis: ready in {time.monotonic() - started_at:.1f} s (pid {proc.pid})")
    return StartResult(s.redis_url, proc.pid, started=True, managed=True, external=False)


def stop(progress: bool = True, timeout_s: float = 10.0, s: Settings | None = None) -> bool:
    """Stop the redis-server that rtml started for these settings (by pid). True if one was stopped."""
    s = s or settings()
    return stop_by_pid_file("redis", running_pid(s), RedisPaths.of(s).pid_file, timeout_s, progress)


def stop_redis() -> None:
    """Stop rtml's Redis for the current settings (for tests of Redis outages); it must have been started by rtml."""
    s = settings()
    if s.redis_external or running_pid(s) is None:
        raise UserFacingError(f"the Redis at {s.redis_url} was not started by rtml, so rtml will not stop it.")
    stop(progress=False)
    wait_until(lambda: not answers_ping(s.redis_url, timeout_s=0.2), 5.0, interval_s=0.05)


def start_redis() -> StartResult:
    """Start rtml's Redis again after :func:`stop_redis` (no-op if it answers); returns when it answers PING."""
    return start(progress=False)
