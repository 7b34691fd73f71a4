"""A local S3-compatible server: s3proxy (``org.gaul:s3proxy``, jars from Maven Central) with its filesystem
backend, started by `rtml up --s3` and by tests.

Layout for the current settings: jars ``cache_dir/s3proxy-<version>/``; objects under ``state_dir/s3proxy/data``
(one folder per bucket); config ``state_dir/s3proxy/s3proxy.conf`` and generated credentials
``state_dir/s3proxy/credentials.json`` (both mode 0600; :class:`core.settings.S3Settings` reads them);
pid ``run_dir/s3proxy.pid``, log ``run_dir/s3proxy.log``. Listens at ``settings().s3.endpoint``
(``RTML_S3_PORT``, default 9000); an endpoint named by ``RTML_S3_ENDPOINT`` is external and never started.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserFacingError
from core.settings import REPO_ROOT, Settings, settings
from infra import maven
from infra.proc import file_lock, owned_pid, port_open, require_tool, stop_by_pid_file, wait_started, write_pid

VERSION = "2.6.0"
POM = REPO_ROOT / "infra" / "s3proxy" / "pom.xml"
MAIN_CLASS = "org.gaul.s3proxy.Main"
LOGBACK = """<configuration>
  <appender name="out" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{HH:mm:ss.SSS} %-5level %logger{20} - %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="out"/></root>
</configuration>
"""


@dataclass(frozen=True)
class S3ProxyPaths:
    home: Path
    data: Path
    config: Path
    credentials: Path
    pid_file: Path
    log_file: Path

    @classmethod
    def of(cls, s: Settings) -> S3ProxyPaths:
        home = s.state_dir / "s3proxy"
        return cls(home, home / "data", home / "s3proxy.conf", s.s3.credentials_file,
                   s.run_dir / "s3proxy.pid", s.run_dir / "s3proxy.log")


@dataclass(frozen=True)
class StartResult:
    address: str
    pid: int | None
    started: bool
    managed: bool
    external: bool


def jar_dir(progress: bool = True, resolve: bool = True) -> Path:
    out = settings().cache_dir / f"s3proxy-{VERSION}"
    if resolve:
        maven.resolve(POM, {"s3proxy.version": VERSION}, out, progress=progress)
    return out


def preflight() -> None:
    if not maven.is_resolved(jar_dir(resolve=False)):
        require_tool("mvn")
    require_tool("java")


def answers(endpoint: str | None = None, timeout_s: float = 1.0) -> bool:
    """True if an S3 API answers at ``endpoint`` (any HTTP reply, e.g. 403 for an anonymous request)."""
    endpoint = endpoint or settings().s3.endpoint
    try:
        urllib.request.urlopen(endpoint, timeout=timeout_s).close()
        return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def running_pid(s: Settings | None = None) -> int | None:
    s = s or settings()
    return owned_pid(S3ProxyPaths.of(s).pid_file, MAIN_CLASS, str(S3ProxyPaths.of(s).config))


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def credentials(s: Settings, paths: S3ProxyPaths) -> tuple[str, str]:
    """The configured pair, else the generated one (created once, mode 0600)."""
    if s.s3.access_key_env and s.s3.secret_key_env:
        return s.s3.access_key_env, s.s3.secret_key_env
    if not paths.credentials.exists():
        pair = {"access_key": "rtml" + secrets.token_hex(8), "secret_key": secrets.token_urlsafe(30)}
        _write_private(paths.credentials, json.dumps(pair) + "\n")
    data = json.loads(paths.credentials.read_text())
    return data["access_key"], data["secret_key"]


def start(progress: bool = True, timeout_s: float = 60.0) -> StartResult:
    """Start s3proxy for the current settings unless an S3 endpoint already answers there."""
    with file_lock(settings().run_dir / "s3proxy.lock"):
        return _start(progress, timeout_s)


def _start(progress: bool, timeout_s: float) -> StartResult:
    s = settings()
    say = print if progress else (lambda *a, **k: None)
    endpoint = s.s3.endpoint
    if s.s3.external:
        if not answers(endpoint, timeout_s=2.0):
            raise UserFacingError(f"no S3 API answers at RTML_S3_ENDPOINT={endpoint}; start it or unset it.")
        say(f"s3: using external S3 endpoint {endpoint}")
        return StartResult(endpoint, None, started=False, managed=False, external=True)
    paths = S3ProxyPaths.of(s)
    pid = running_pid(s)
    if pid is not None and answers(endpoint):
        say(f"s3: s3proxy already running at {endpoint} (pid {pid})")
        return StartResult(endpoint, pid, started=False, managed=True, external=False)
    if port_open("127.0.0.1", s.s3.port):
        raise UserFacingError(f"port {s.s3.port} is taken by another process; choose another with RTML_S3_PORT.")
    java = require_tool("java")
    jars = jar_dir(progress)
    access, secret = credentials(s, paths)
    paths.data.mkdir(parents=True, exist_ok=True)
    _write_private(paths.config, "\n".join([
        f"s3proxy.endpoint=http://127.0.0.1:{s.s3.port}",
        "s3proxy.authorization=aws-v2-or-v4",
        f"s3proxy.identity={access}",
        f"s3proxy.credential={secret}",
        "jclouds.provider=filesystem-nio2",
        "jclouds.identity=local",  # required by the provider, unused by the filesystem backend
        "jclouds.credential=local",
        f"jclouds.filesystem.basedir={paths.data}",
        "",
    ]))
    logback = paths.home / "logback.xml"
    logback.write_text(LOGBACK)
    # C1 only (TieredStopAtLevel=1): the request path is compiled within the first requests, and no C2
    # compiler threads compete with the clients for a small machine's cores (measured on 2 cores: a join's
    # objects served ~1.4x faster over its first runs, the same afterwards)
    cmd = [java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", f"-Dlogback.configurationFile={logback}", "-cp", f"{jars}/*", MAIN_CLASS, "--properties", str(paths.config)]
    say(f"s3: starting s3proxy at {endpoint} (objects in {paths.data}, log {paths.log_file})", flush=True)
    paths.log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.log_file, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=paths.home)
    write_pid(paths.pid_file, proc.pid)
    took = wait_started("s3proxy", proc, lambda: answers(endpoint, timeout_s=0.5), paths.pid_file, paths.log_file,
                        timeout_s)
    say(f"s3: ready in {took:.1f} s (pid {proc.pid})")
    return StartResult(endpoint, proc.pid, started=True, managed=True, external=False)


def stop(progress: bool = True, timeout_s: float = 10.0, s: Settings | None = None) -> bool:
    """Stop the s3proxy rtml started for these settings (by pid). True if one was stopped."""
    s = s or settings()
    return stop_by_pid_file("s3", running_pid(s), S3ProxyPaths.of(s).pid_file, timeout_s, progress)
