"""A single-node Apache Kafka 4.x broker (KRaft, broker+controller) run from jars resolved from Maven Central.

Layout (for the current :func:`core.settings.settings`):

- jars: ``cache_dir/kafka-<version>/`` (``infra/kafka/pom.xml`` + ``mvn dependency:copy-dependencies``)
- config and data: ``state_dir/kafka/{server.properties,log4j2.properties,data/}``
- pid and logs: ``run_dir/kafka.pid``, ``run_dir/kafka.log`` (broker log), ``run_dir/kafka.out`` (JVM stdout/stderr)

Environment: ``RTML_KAFKA_VERSION`` (default below), ``RTML_KAFKA_CONTROLLER_PORT`` (default broker port + 1),
``RTML_KAFKA_START_TIMEOUT`` seconds to wait for readiness (default 90), ``RTML_KAFKA_HEAP`` (default 512m).
"""

from __future__ import annotations

import base64
import socket
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserFacingError
from core.settings import REPO_ROOT, Settings, settings
from infra import maven
from infra.proc import (
    file_lock,
    owned_pid,
    port_open,
    require_tool,
    stop_by_pid_file,
    stop_pid,
    tail,
    wait_until,
    write_pid,
)

DEFAULT_VERSION = "4.3.1"
POM = REPO_ROOT / "infra" / "kafka" / "pom.xml"
MAIN_CLASS = "kafka.Kafka"


def version() -> str:
    return settings().broker.version or DEFAULT_VERSION


@dataclass(frozen=True)
class BrokerPaths:
    home: Path
    data: Path
    config: Path
    log4j: Path
    pid_file: Path
    log_file: Path
    out_file: Path

    @classmethod
    def of(cls, s: Settings) -> BrokerPaths:
        home = s.state_dir / "kafka"
        return cls(
            home=home,
            data=home / "data",
            config=home / "server.properties",
            log4j=home / "log4j2.properties",
            pid_file=s.run_dir / "kafka.pid",
            log_file=s.run_dir / "kafka.log",
            out_file=s.run_dir / "kafka.out",
        )


def controller_port(s: Settings | None = None) -> int:
    s = s or settings()
    return s.broker.controller_port or s.kafka_host_port[1] + 1


def start_timeout_s() -> float:
    return settings().broker.start_timeout_s


def jars_dir(progress: bool = True, resolve: bool = True) -> Path:
    """Folder with the broker's jars, resolving them from Maven Central the first time."""
    out = settings().cache_dir / f"kafka-{version()}"
    if resolve:
        maven.resolve(POM, {"kafka.version": version()}, out, progress=progress)
    return out


def preflight() -> None:
    """Fail within a second, before anything starts, if starting the broker would need a missing tool."""
    s = settings()
    if s.kafka_external or running_pid(s) is not None or port_open(*s.kafka_host_port):
        return
    require_tool("java")
    if not maven.is_resolved(jars_dir(resolve=False)):
        require_tool("mvn")


# --- probes -------------------------------------------------------------------------------------------


def speaks_kafka(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True if host:port answers a Kafka ApiVersions request (bounded by ``timeout_s``).

    Distinguishes a Kafka broker from any other program that happens to listen on the port.
    """
    client_id = b"rtml-probe"
    correlation_id = 0x5274_6D6C
    header = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(struct.pack(">i", len(header)) + header)
            head = b""
            while len(head) < 8:
                chunk = sock.recv(8 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    size, got_id = struct.unpack(">ii", head)
    return got_id == correlation_id and 0 < size < 1_000_000


def is_ready(bootstrap: str | None = None, timeout_s: float = 3.0) -> bool:
    """True if the broker answers a metadata request listing at least one broker (kafka-python)."""
    from kafka.admin import KafkaAdminClient

    bootstrap = bootstrap or settings().kafka_bootstrap
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not speaks_kafka(host or "127.0.0.1", int(port), timeout_s=min(timeout_s, 2.0)):
        return False
    ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","),
            request_timeout_ms=ms,
            bootstrap_timeout_ms=ms,
            client_id="rtml-ready-check",
        )
    except Exception:
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except Exception:
        return False
    finally:
        try:
            admin.close()
        except Exception:
            pass


# --- config -------------------------------------------------------------------------------------------


def server_properties(s: Settings, paths: BrokerPaths) -> str:
    host, port = s.kafka_host_port
    cport = controller_port(s)
    return f"""# Generated by rtml (infra/kafka_broker.py); rewritten by every `rtml up`.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{cport}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={paths.data}
num.partitions=3
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
# Keep events whatever their timestamp: the simulator replays history with old event times, and time-based
# retention (judged on record timestamps) would delete those segments within minutes. Bounded by size instead.
log.retention.ms=-1
log.retention.bytes=1073741824
log.segment.bytes=134217728
"""


def log4j_properties(paths: BrokerPaths) -> str:
    return f"""# Generated by rtml: the broker logs to a file only (no console output).
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {paths.log_file}
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


def _java_cmd(jars: Path, paths: BrokerPaths, main: str, *args: str, heap: str = "256m") -> list[str]:
    return [
        require_tool("java"),
        f"-Xmx{heap}",
        "-Xms64m",
        "-XX:+UseSerialGC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={paths.log4j}",
        f"-Dkafka.logs.dir={paths.log_file.parent}",
        "-cp",
        f"{jars}/*",
        main,
        *args,
    ]


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _format_storage(jars: Path, paths: BrokerPaths) -> None:
    """Format the KRaft storage once (like `kafka-storage format`)."""
    if (paths.data / "meta.properties").exists():
        return
    cmd = _java_cmd(jars, paths, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(paths.config))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise UserFacingError(f"formatting Kafka storage in {paths.data} did not finish within 120 s") from exc
    if done.returncode != 0:
        last = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
        raise UserFacingError(f"formatting Kafka storage in {paths.data} failed:\n{last}")


# --- lifecycle ----------------------------------------------------------------------------------------


def running_pid(s: Settings | None = None) -> int | None:
    """Pid of the broker that `rtml up` started for these settings, if it runs."""
    s = s or settings()
    paths = BrokerPaths.of(s)
    return owned_pid(paths.pid_file, str(paths.config))


def is_running(s: Settings | None = None) -> bool:
    return running_pid(s) is not None


def _failure_message(what: str, paths: BrokerPaths) -> str:
    lines = tail(paths.log_file, 15) or tail(paths.out_file, 15)
    more = f" Last lines of {paths.log_file}:\n{lines}" if lines else ""
    return f"{what}; see {paths.log_file} and {paths.out_file}.{more}"


@dataclass(frozen=True)
class StartResult:
    address: str
    pid: int | None
    started: bool  # True if this call launched the process
    managed: bool  # True if rtml owns the process (pid file), so `rtml down` stops it
    external: bool


def start(progress: bool = True, timeout_s: float | None = None) -> StartResult:
    """Start the broker for the current settings, or reuse one that already answers; create the topics."""
    with file_lock(settings().run_dir / "kafka.lock"):
        return _start(progress, timeout_s)


def _start(progress: bool, timeout_s: float | None) -> StartResult:
    from core.kafka_io import ensure_topics

    s = settings()
    timeout_s = start_timeout_s() if timeout_s is None else timeout_s
    host, port = s.kafka_host_port
    say = print if progress else (lambda *a, **k: None)

    if s.kafka_external:
        if not is_ready(s.kafka_bootstrap):
            raise UserFacingError(
                f"no Kafka broker answers at RTML_KAFKA_BOOTSTRAP={s.kafka_bootstrap}; start it or unset RTML_KAFKA_BOOTSTRAP."
            )
        say(f"kafka: using external broker at {s.kafka_bootstrap}")
        ensure_topics(s.topics.all(), bootstrap=s.kafka_bootstrap)
        return StartResult(s.kafka_bootstrap, None, started=False, managed=False, external=True)

    paths = BrokerPaths.of(s)
    pid = running_pid(s)
    if pid is not None:
        if not wait_until(lambda: is_ready(s.kafka_bootstrap), timeout_s, interval_s=0.5):
            raise UserFacingError(
                _failure_message(f"the Kafka broker (pid {pid}) runs but does not answer at {s.kafka_bootstrap}", paths)
            )
        say(f"kafka: already running at {s.kafka_bootstrap} (pid {pid})")
        ensure_topics(s.topics.all(), bootstrap=s.kafka_bootstrap)
        return StartResult(s.kafka_bootstrap, pid, started=False, managed=True, external=False)

    if port_open(host, port):
        if not speaks_kafka(host, port):
            raise UserFacingError(
                f"port {port} is taken by a process that does not speak Kafka; stop it or choose another port "
                "with RTML_KAFKA_PORT."
            )
        if not wait_until(lambda: is_ready(s.kafka_bootstrap), min(timeout_s, 30), interval_s=0.5):
            raise UserFacingError(f"a Kafka broker listens at {s.kafka_bootstrap} but never became ready; check it.")
        say(f"kafka: reusing the broker that already answers at {s.kafka_bootstrap} (not started by rtml)")
        ensure_topics(s.topics.all(), bootstrap=s.kafka_bootstrap)
        return StartResult(s.kafka_bootstrap, None, started=False, managed=False, external=False)

    cport = controller_port(s)
    if port_open("127.0.0.1", cport):
        raise UserFacingError(
            f"the Kafka controller port {cport} is taken by another process; free it or set RTML_KAFKA_CONTROLLER_PORT."
        )

    require_tool("java")
    jars = jars_dir(progress)
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.pid_file.parent.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(server_properties(s, paths))
    paths.log4j.write_text(log4j_properties(paths))
    _format_storage(jars, paths)

    say(f"kafka: starting Kafka {version()} at {s.kafka_bootstrap} (log: {paths.log_file})", flush=True)
    heap = s.broker.heap
    cmd = _java_cmd(jars, paths, MAIN_CLASS, str(paths.config), heap=heap)
    with open(paths.out_file, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=paths.home
        )
    write_pid(paths.pid_file, proc.pid)

    started_at = time.monotonic()
    deadline = started_at + timeout_s
    while True:
        if proc.poll() is not None:
            paths.pid_file.unlink(missing_ok=True)
            raise UserFacingError(
                _failure_message(f"the Kafka broker exited with code {proc.returncode} during startup", paths)
            )
        if is_ready(s.kafka_bootstrap, timeout_s=2.0):
            break
        if time.monotonic() >= deadline:
            stop_pid(proc.pid, timeout_s=10)
            proc.poll()
            paths.pid_file.unlink(missing_ok=True)
            raise UserFacingError(
                _failure_message(
                    f"the Kafka broker did not become ready at {s.kafka_bootstrap} within {timeout_s:g} s "
                    "(raise RTML_KAFKA_START_TIMEOUT if the machine is just slow)",
                    paths,
                )
            )
        time.sleep(0.5)
    ensure_topics(s.topics.all(), bootstrap=s.kafka_bootstrap)
    say(f"kafka: ready in {time.monotonic() - started_at:.1f} s (pid {proc.pid}); topics: {', '.join(s.topics.all())}")
    return StartResult(s.kafka_bootstrap, proc.pid, started=True, managed=True, external=False)


def stop(progress: bool = True, timeout_s: float = 20.0, s: Settings | None = None) -> bool:
    """Stop the broker that `rtml up` started for these settings (by pid). True if one was stopped."""
    s = s or settings()
    return stop_by_pid_file("kafka", running_pid(s), BrokerPaths.of(s).pid_file, timeout_s, progress)
