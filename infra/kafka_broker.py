"""The local Apache Kafka 4.x cluster (KRaft; each node broker+controller) run from jars resolved from Maven Central.

One node by default; ``RTML_KAFKA_BROKERS=3`` (`rtml up --brokers 3`) starts three with a quorum of three
controllers, topics replicated three times with ``min.insync.replicas=2`` (producers use acks=all).

Secure by default (``RTML_KAFKA_SECURITY=plaintext`` opts out): clients authenticate with SASL/SCRAM-SHA-512,
KRaft's StandardAuthorizer enforces per-role ACLs (``core.kafka_io.role_acls``), ``admin`` is the super user.
Passwords are generated into ``<state_dir>/secrets/kafka.json`` (0600); node configs holding them are 0600 too.

Layout (for the current :func:`core.settings.settings`; see :class:`BrokerPaths` for multi-node clusters):

- jars: ``cache_dir/kafka-<version>/`` (``infra/kafka/pom.xml`` + ``mvn dependency:copy-dependencies``)
- config and data: ``state_dir/kafka/{server.properties,log4j2.properties,data/}``
- pid and logs: ``run_dir/kafka.pid``, ``run_dir/kafka.log`` (broker log), ``run_dir/kafka.out`` (JVM stdout/stderr)

Environment: ``RTML_KAFKA_VERSION`` (default below), ``RTML_KAFKA_CONTROLLER_PORT`` (default broker port + 1),
``RTML_KAFKA_START_TIMEOUT`` seconds to wait for readiness (default 90), ``RTML_KAFKA_HEAP`` (default 512m).
Node i (1-based) listens at ``RTML_KAFKA_PORT + 2(i-1)``, its controller at the controller port ``+ 2(i-1)``.
"""

from __future__ import annotations

import base64
import socket
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.contracts import all_topics
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
from infra.secrets import ensure_passwords, write_private

DEFAULT_VERSION = "4.3.1"
POM = REPO_ROOT / "infra" / "kafka" / "pom.xml"
MAIN_CLASS = "kafka.Kafka"


def version() -> str:
    return settings().broker.version or DEFAULT_VERSION


@dataclass(frozen=True)
class BrokerPaths:
    """Files of one node. A one-node cluster keeps ``state_dir/kafka`` and ``run_dir/kafka.{pid,log,out}``;
    node N of a multi-node cluster uses ``state_dir/kafka-cluster<n>/node-N`` and ``run_dir/kafka-nodeN.*``."""

    home: Path
    data: Path
    config: Path
    log4j: Path
    pid_file: Path
    log_file: Path
    out_file: Path

    @classmethod
    def of(cls, s: Settings, node: int = 1) -> BrokerPaths:
        if s.broker.brokers == 1:
            home, stem = s.state_dir / "kafka", "kafka"
        else:
            home, stem = s.state_dir / f"kafka-cluster{s.broker.brokers}" / f"node-{node}", f"kafka-node{node}"
        return cls(
            home=home,
            data=home / "data",
            config=home / "server.properties",
            log4j=home / "log4j2.properties",
            pid_file=s.run_dir / f"{stem}.pid",
            log_file=s.run_dir / f"{stem}.log",
            out_file=s.run_dir / f"{stem}.out",
        )


@dataclass(frozen=True)
class Node:
    """One node of the local KRaft cluster (broker and controller in one JVM)."""

    id: int  # 1-based node.id
    port: int
    controller_port: int
    paths: BrokerPaths

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def nodes(s: Settings | None = None) -> list[Node]:
    """The nodes for these settings: node i listens at port + 2(i-1), its controller at controller port + 2(i-1)."""
    s = s or settings()
    port = s.kafka_host_port[1]
    cport = controller_port(s)
    return [Node(i + 1, port + 2 * i, cport + 2 * i, BrokerPaths.of(s, i + 1)) for i in range(s.broker.brokers)]


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


def is_ready(bootstrap: str | None = None, timeout_s: float = 3.0, brokers: int = 1) -> bool:
    """True if the cluster answers a metadata request (as admin) listing at least ``brokers`` brokers."""
    from core.kafka_io import make_admin

    bootstrap = bootstrap or settings().kafka_bootstrap
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not speaks_kafka(host or "127.0.0.1", int(port), timeout_s=min(timeout_s, 2.0)):
        return False
    ms = int(timeout_s * 1000)
    try:
        admin = make_admin(bootstrap, request_timeout_ms=ms, bootstrap_timeout_ms=ms, client_id="rtml-ready-check")
    except Exception:
        return False
    try:
        return len(admin.describe_cluster().get("brokers") or []) >= brokers
    except Exception:
        return False
    finally:
        try:
            admin.close()
        except Exception:
            pass


# --- config -------------------------------------------------------------------------------------------


def _secured(s: Settings) -> bool:
    return s.kafka_auth.security == "sasl"


def ensure_secrets(s: Settings | None = None) -> dict[str, Any]:
    """The local cluster's generated passwords (one per role, plus the controllers' own), created once.

    Stored in ``<state_dir>/secrets/kafka.json`` (folder 0700, file 0600); never printed or logged.
    """
    from core.kafka_io import ROLES, secrets_path

    return ensure_passwords(secrets_path(s or settings()), ROLES, extra=("controller",))


def server_properties(s: Settings, paths: BrokerPaths, node: Node | None = None) -> str:
    """server.properties of one node (mode 0600 on disk: the secured variant holds passwords)."""
    from core.kafka_io import jaas_config

    all_nodes = nodes(s)
    node = node or all_nodes[0]
    host = s.kafka_host_port[0]
    n = len(all_nodes)
    rf, min_isr = s.broker.replication_factor, s.broker.min_insync_replicas
    voters = ",".join(f"{x.id}@127.0.0.1:{x.controller_port}" for x in all_nodes)
    if _secured(s):
        secret = ensure_secrets(s)
        admin_pw, controller_pw = secret["users"]["admin"], secret["controller"]
        mech = s.kafka_auth.mechanism
        controller_jaas = jaas_config("controller", controller_pw, "PLAIN").rstrip(";") + (
            f' user_controller="{controller_pw}";'
        )
        security = f"""listeners=CLIENT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}
advertised.listeners=CLIENT://{host}:{node.port}
inter.broker.listener.name=CLIENT
listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,CLIENT:SASL_PLAINTEXT
# Clients and brokers: SCRAM (credentials live in the cluster metadata; admin is bootstrapped at format time).
sasl.mechanism.inter.broker.protocol={mech}
listener.name.client.sasl.enabled.mechanisms={mech}
listener.name.client.{mech.lower()}.sasl.jaas.config={jaas_config("admin", admin_pw, mech)}
# Controllers: KRaft cannot use SCRAM here (controllers read SCRAM credentials from the metadata log they
# serve), so SASL PLAIN with one static, generated user. Not PLAINTEXT: that would need User:ANONYMOUS in
# super.users, making any local process that reaches the controller port (admin clients can, KIP-919) a super user.
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config={controller_jaas}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:controller
allow.everyone.if.no.acl.found=false
"""
    else:
        security = f"""listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}
advertised.listeners=PLAINTEXT://{host}:{node.port}
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
"""
    return f"""# Generated by rtml (infra/kafka_broker.py); rewritten by every `rtml up`.
process.roles=broker,controller
node.id={node.id}
controller.quorum.voters={voters}
controller.listener.names=CONTROLLER
{security}log.dirs={paths.data}
num.partitions=3
default.replication.factor={rf}
min.insync.replicas={min_isr}
auto.create.topics.enable={"false" if _secured(s) else "true"}
offsets.topic.replication.factor={rf}
offsets.topic.num.partitions=6
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={rf}
share.coordinator.state.topic.min.isr={min_isr}
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
# Keep events whatever their timestamp: the simulator replays history with old event times, and time-based
# retention (judged on record timestamps) would delete those segments within minutes. Bounded by size instead.
log.retention.ms=-1
log.retention.bytes=1073741824
log.segment.bytes=134217728
# {n} node(s): replication factor {rf}, min.insync.replicas {min_isr} (producers use acks=all).
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
    """A random KRaft cluster id; like Kafka's Uuid.randomUuid, never one starting with '-' (the storage tool's
    argument parser would read it as an option)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _format_storage(jars: Path, paths: BrokerPaths, cluster_id: str, s: Settings) -> None:
    """Format the KRaft storage once (like `kafka-storage format`), bootstrapping the admin's SCRAM credential."""
    if (paths.data / "meta.properties").exists():
        return
    args = ["format", "-t", cluster_id, "-c", str(paths.config)]
    if _secured(s):
        admin_pw = ensure_secrets(s)["users"]["admin"]
        args += ["--add-scram", f"{s.kafka_auth.mechanism}=[name=admin,password={admin_pw}]"]
    cmd = _java_cmd(jars, paths, "kafka.tools.StorageTool", *args)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise UserFacingError(f"formatting Kafka storage in {paths.data} did not finish within 120 s") from exc
    if done.returncode != 0:
        out = done.stdout + done.stderr
        if _secured(s):
            out = out.replace(ensure_secrets(s)["users"]["admin"], "***")
        last = "\n".join(out.strip().splitlines()[-10:])
        raise UserFacingError(f"formatting Kafka storage in {paths.data} failed:\n{last}")


def _cluster_id_of(all_nodes: list[Node]) -> str:
    """The cluster id already formatted into one of the nodes, else a new one (all nodes share it)."""
    for node in all_nodes:
        meta = node.paths.data / "meta.properties"
        if meta.exists():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
    return _cluster_id()


# --- lifecycle ----------------------------------------------------------------------------------------


def _node_pid(node: Node) -> int | None:
    return owned_pid(node.paths.pid_file, str(node.paths.config))


def running_pids(s: Settings | None = None) -> list[int]:
    """Pids of the nodes `rtml up` started for these settings that run."""
    return [pid for pid in (_node_pid(node) for node in nodes(s)) if pid is not None]


def running_pid(s: Settings | None = None) -> int | None:
    """Pid of the first node `rtml up` started for these settings, if it runs."""
    pids = running_pids(s)
    return pids[0] if pids else None


def is_running(s: Settings | None = None) -> bool:
    return running_pid(s) is not None


def _failure_message(what: str, paths: BrokerPaths) -> str:
    lines = tail(paths.log_file, 15) or tail(paths.out_file, 15)
    more = f" Last lines of {paths.log_file}:\n{lines}" if lines else ""
    return f"{what}; see {paths.log_file} and {paths.out_file}.{more}"


@dataclass(frozen=True)
class StartResult:
    address: str
    pid: int | None  # the first node's
    started: bool  # True if this call launched the process
    managed: bool  # True if rtml owns the process (pid file), so `rtml down` stops it
    external: bool
    pids: tuple[int, ...] = ()  # every node's


def start(progress: bool = True, timeout_s: float | None = None) -> StartResult:
    """Start the cluster for the current settings, or reuse one that already answers; create topics, users, ACLs."""
    with file_lock(settings().run_dir / "kafka.lock"):
        return _start(progress, timeout_s)


def provision(s: Settings | None = None, managed: bool = True) -> None:
    """Topics (replication per the cluster size); on a cluster rtml manages, also SCRAM users and per-role ACLs."""
    from core.kafka_io import ensure_topics

    s = s or settings()
    ensure_topics(all_topics(), bootstrap=s.kafka_bootstrap, role="admin")
    if managed and _secured(s) and not s.kafka_external:
        ensure_users({role: pw for role, pw in ensure_secrets(s)["users"].items() if role != "admin"}, s)
        ensure_acls(s)


def provision_roles(passwords: dict[str, str], s: Settings | None = None) -> None:
    """Topics, the roles' SCRAM users with these passwords and their ACLs on a cluster rtml does not start (the
    docker-compose broker: its `init` service), as the admin bootstrapped when its storage was formatted."""
    from core.kafka_io import ROLES, ensure_topics

    s = s or settings()
    missing = [r for r in ROLES if r != "admin" and not passwords.get(r)]
    if missing:
        raise UserFacingError(f"no Kafka password for role(s) {', '.join(missing)}")
    ensure_topics(all_topics(), bootstrap=s.kafka_bootstrap, role="admin")
    ensure_users(passwords, s)
    ensure_acls(s)


def ensure_users(passwords: dict[str, str], s: Settings | None = None) -> None:
    """SCRAM credentials of these users (every role but admin, which is bootstrapped at format time), upserted:
    a user that exists gets this password again (a rotated one takes effect)."""
    from kafka.admin import UserScramCredentialUpsertion

    from core.kafka_io import make_admin

    s = s or settings()
    if "admin" in passwords:
        raise ValueError("the admin's SCRAM credential is bootstrapped at format time, not upserted")
    admin = make_admin(s.kafka_bootstrap, role="admin")
    try:
        wanted = [UserScramCredentialUpsertion(user, s.kafka_auth.mechanism, pw) for user, pw in passwords.items()]
        errors = {u: e for u, e in admin.alter_user_scram_credentials(wanted).items() if e}
        if errors:
            raise UserFacingError(f"creating Kafka users failed: {errors}")
    finally:
        admin.close()


def acl_bindings(s: Settings | None = None) -> list[tuple[str, str, str, str, str]]:
    """(principal, resource type, name, pattern type, operation) for every role, from ``core.kafka_io.role_acls``."""
    from core.kafka_io import SPARK_GROUP_PREFIX, role_acls

    s = s or settings()
    out = []
    for role, grants in role_acls(s.topics).items():
        principal = f"User:{role}"
        out += [(principal, "TOPIC", t, "LITERAL", "WRITE") for t in grants.write]
        out += [(principal, "TOPIC", t, "LITERAL", "READ") for t in grants.read]
        if grants.read:  # consumer groups: the role's own prefix (the Spark source names its own)
            out.append((principal, "GROUP", f"rtml-{role}", "PREFIXED", "READ"))
            if role == "stream":
                out.append((principal, "GROUP", SPARK_GROUP_PREFIX, "PREFIXED", "READ"))
    return out


def ensure_acls(s: Settings | None = None) -> None:
    """The ACLs of :func:`acl_bindings` (creating one that exists is a no-op)."""
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern, ResourceType

    from core.kafka_io import make_admin

    s = s or settings()
    acls = [
        ACL(
            principal=principal,
            host="*",
            operation=ACLOperation[op],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(ResourceType[rtype], name, ACLResourcePatternType[pattern]),
        )
        for principal, rtype, name, pattern, op in acl_bindings(s)
    ]
    admin = make_admin(s.kafka_bootstrap, role="admin")
    try:
        result = admin.create_acls(acls)
        if result["failed"]:
            raise UserFacingError(f"creating Kafka ACLs failed: {result['failed'][:3]}")
    finally:
        admin.close()


def _start(progress: bool, timeout_s: float | None) -> StartResult:
    s = settings()
    timeout_s = start_timeout_s() if timeout_s is None else timeout_s
    host, port = s.kafka_host_port
    say = print if progress else (lambda *a, **k: None)
    n = s.broker.brokers

    if s.kafka_external:
        if not is_ready(s.kafka_bootstrap):
            raise UserFacingError(
                f"no Kafka broker answers at RTML_KAFKA_BOOTSTRAP={s.kafka_bootstrap}; start it or unset RTML_KAFKA_BOOTSTRAP."
            )
        say(f"kafka: using external broker at {s.kafka_bootstrap}")
        provision(s, managed=False)
        return StartResult(s.kafka_bootstrap, None, started=False, managed=False, external=True)

    all_nodes = nodes(s)
    pids = running_pids(s)
    if pids:
        if len(pids) < n:
            stopped = [node.id for node in all_nodes if _node_pid(node) is None]
            say(f"kafka: node(s) {', '.join(map(str, stopped))} of {n} not running; starting them")
        else:
            if not wait_until(lambda: is_ready(s.kafka_bootstrap, brokers=n), timeout_s, interval_s=0.5):
                raise UserFacingError(
                    _failure_message(
                        f"the Kafka broker (pid {pids[0]}) runs but does not answer at {s.kafka_bootstrap}",
                        all_nodes[0].paths,
                    )
                )
            say(f"kafka: already running at {s.kafka_bootstrap} (pid {', '.join(map(str, pids))})")
            provision(s)
            return StartResult(
                s.kafka_bootstrap, pids[0], started=False, managed=True, external=False, pids=tuple(pids)
            )
    else:
        other = _other_layout_pids(s)
        if other:
            raise UserFacingError(
                f"a Kafka cluster of another size started by `rtml up` runs for this state dir (pid {other[0]}); "
                "stop it with `rtml down` first"
            )
        if port_open(host, port):
            if not speaks_kafka(host, port):
                raise UserFacingError(
                    f"port {port} is taken by a process that does not speak Kafka; stop it or choose another port "
                    "with RTML_KAFKA_PORT."
                )
            if not wait_until(lambda: is_ready(s.kafka_bootstrap), min(timeout_s, 30), interval_s=0.5):
                raise UserFacingError(
                    f"a Kafka broker listens at {s.kafka_bootstrap} but never became ready; check it."
                )
            say(f"kafka: reusing the broker that already answers at {s.kafka_bootstrap} (not started by rtml)")
            provision(s, managed=False)
            return StartResult(s.kafka_bootstrap, None, started=False, managed=False, external=False)

    to_start = [node for node in all_nodes if _node_pid(node) is None]
    for node in to_start:
        if node.id > 1 and port_open("127.0.0.1", node.port):
            raise UserFacingError(
                f"the Kafka port {node.port} (node {node.id}) is taken; choose another RTML_KAFKA_PORT."
            )
        if port_open("127.0.0.1", node.controller_port):
            raise UserFacingError(
                f"the Kafka controller port {node.controller_port} is taken by another process; free it or set "
                "RTML_KAFKA_CONTROLLER_PORT."
            )

    require_tool("java")
    jars = jars_dir(progress)
    cluster_id = _cluster_id_of(all_nodes)
    for node in to_start:
        paths = node.paths
        paths.home.mkdir(parents=True, exist_ok=True)
        paths.pid_file.parent.mkdir(parents=True, exist_ok=True)
        if _secured(s) and (paths.data / "meta.properties").exists() and not secrets_path_exists(s):
            raise UserFacingError(
                f"the Kafka storage in {paths.data} was formatted with credentials that are gone "
                f"({secrets_file(s)} is missing), or by an rtml without Kafka authentication; delete {paths.home} "
                "(its events too) and run `rtml up` again, or keep it plaintext with RTML_KAFKA_SECURITY=plaintext"
            )
        write_private(paths.config, server_properties(s, paths, node))
        paths.log4j.write_text(log4j_properties(paths))
        _format_storage(jars, paths, cluster_id, s)

    what = f"a {n}-node KRaft cluster" if n > 1 else f"Kafka {version()}"
    say(f"kafka: starting {what} at {s.kafka_bootstrap} (log: {all_nodes[0].paths.log_file})", flush=True)
    procs: dict[int, subprocess.Popen] = {}
    for node in to_start:
        cmd = _java_cmd(jars, node.paths, MAIN_CLASS, str(node.paths.config), heap=s.broker.heap)
        with open(node.paths.out_file, "ab") as out:
            procs[node.id] = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=node.paths.home,
            )
        write_pid(node.paths.pid_file, procs[node.id].pid)

    def give_up(what: str, paths: BrokerPaths) -> UserFacingError:
        for node in to_start:
            proc = procs[node.id]
            if proc.poll() is None:
                stop_pid(proc.pid, timeout_s=10)
                proc.poll()
            node.paths.pid_file.unlink(missing_ok=True)
        return UserFacingError(_failure_message(what, paths))

    started_at = time.monotonic()
    deadline = started_at + timeout_s
    pending = {node.id: node for node in to_start}
    while pending:
        for node_id, node in list(pending.items()):
            proc = procs[node_id]
            if proc.poll() is not None:
                raise give_up(f"the Kafka broker exited with code {proc.returncode} during startup", node.paths)
            if is_ready(node.address, timeout_s=2.0, brokers=n):
                del pending[node_id]
        if not pending:
            break
        if time.monotonic() >= deadline:
            node = next(iter(pending.values()))
            raise give_up(
                f"the Kafka broker did not become ready at {node.address} within {timeout_s:g} s "
                "(raise RTML_KAFKA_START_TIMEOUT if the machine is just slow)",
                node.paths,
            )
        time.sleep(0.5)
    provision(s)
    pids = running_pids(s)
    say(
        f"kafka: ready in {time.monotonic() - started_at:.1f} s (pid {', '.join(map(str, pids))}); "
        f"topics: {', '.join(all_topics())}"
    )
    return StartResult(s.kafka_bootstrap, pids[0], started=True, managed=True, external=False, pids=tuple(pids))


def secrets_file(s: Settings) -> Path:
    from core.kafka_io import secrets_path

    return secrets_path(s)


def secrets_path_exists(s: Settings) -> bool:
    return secrets_file(s).exists()


def _node_pid_files(s: Settings) -> list[Path]:
    """Pid files of every node layout in this state dir (one node, or any multi-node cluster)."""
    run = s.run_dir
    return [run / "kafka.pid", *sorted(run.glob("kafka-node*.pid"))]


def any_layout_pids(s: Settings | None = None) -> list[int]:
    """Pids of every node `rtml up` started in this state dir, whatever the cluster size (`rtml status`)."""
    s = s or settings()
    pids = (owned_pid(pid_file, MAIN_CLASS, f"{s.state_dir}/") for pid_file in _node_pid_files(s))
    return [pid for pid in pids if pid is not None]


def _other_layout_pids(s: Settings) -> list[int]:
    mine = {node.paths.pid_file for node in nodes(s)}
    found = []
    for pid_file in _node_pid_files(s):
        if pid_file in mine:
            continue
        pid = owned_pid(pid_file, MAIN_CLASS, f"{s.state_dir}/")
        if pid is not None:
            found.append(pid)
    return found


def stop(progress: bool = True, timeout_s: float = 20.0, s: Settings | None = None) -> bool:
    """Stop every node `rtml up` started in this state dir (by pid), whatever the cluster size. True if any."""
    s = s or settings()
    stopped = False
    for pid_file in _node_pid_files(s):
        pid = owned_pid(pid_file, MAIN_CLASS, f"{s.state_dir}/")
        label = "kafka" if pid_file.stem == "kafka" else f"kafka {pid_file.stem.removeprefix('kafka-')}"
        stopped |= stop_by_pid_file(label, pid, pid_file, timeout_s, progress)
    return stopped


def _main(argv: list[str] | None = None) -> int:
    """``python -m infra.kafka_broker provision-roles``: :func:`provision_roles` with the passwords of
    ``KAFKA_<ROLE>_PASSWORD`` (the compose `init` service; it authenticates as admin through RTML_KAFKA_USER)."""
    import argparse
    import os

    from core.kafka_io import ROLES

    parser = argparse.ArgumentParser(prog="python -m infra.kafka_broker", description=_main.__doc__.split("\n")[0])
    parser.add_argument("action", choices=["provision-roles"])
    parser.parse_args(argv)
    names = {r: f"KAFKA_{r.upper()}_PASSWORD" for r in ROLES if r != "admin"}
    missing = [name for name in names.values() if not os.environ.get(name)]
    if missing:
        print(f"error: set {', '.join(missing)} (infra/.env)", file=sys.stderr)
        return 1
    try:
        provision_roles({r: os.environ[name] for r, name in names.items()})
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
