"""A local Redis Cluster for the online store: 3 primaries + 3 replicas, started by `rtml up --redis-cluster`.

Six ``redis-server --cluster-enabled yes`` processes on the ports of ``redis_url``
(``redis-cluster://127.0.0.1:7000,...``; ``RTML_REDIS_CLUSTER=1`` and ``RTML_REDIS_CLUSTER_PORT``),
joined by ``redis-cli --cluster create ... --cluster-replicas 1``. Like :mod:`infra.redis_server`: no
persistence, ``maxmemory`` with ``noeviction`` (writes fail loudly instead of evicting features),
files under ``state_dir/redis-cluster/<port>/`` and ``run_dir/redis-cluster-<port>.{pid,log}``, stopped
by pid. A node killed by a test is promoted away from by the cluster (node timeout
:data:`NODE_TIMEOUT_MS`) and can be restarted with :func:`start_node`; it rejoins as a replica.
With the ACL users of :mod:`infra.redis_server` on every node (replicas replicate as ``rtml-admin``,
credentials in a 0600 config file, never on a command line).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from core.errors import UserFacingError
from core.settings import Settings, settings
from infra.proc import file_lock, owned_pid, port_open, stop_by_pid_file, tail, wait_until, write_pid
from infra.redis_server import StartResult, admin_client, ensure_secrets, launch, redis_server_binary
from infra.secrets import write_private

NODE_TIMEOUT_MS = 2000  # a primary not answering this long is failed over to its replica
REPLICAS = 1


def _data(s: Settings, port: int) -> Path:
    return s.state_dir / "redis-cluster" / str(port)


def _pid_file(s: Settings, port: int) -> Path:
    return s.run_dir / f"redis-cluster-{port}.pid"


def _log_file(s: Settings, port: int) -> Path:
    return s.run_dir / f"redis-cluster-{port}.log"


def node_pid(port: int, s: Settings | None = None) -> int | None:
    """Pid of the cluster node rtml started on ``port`` for these settings, if it runs."""
    s = s or settings()
    return owned_pid(_pid_file(s, port), "redis-server", f":{port}")


def running_pids(s: Settings | None = None) -> dict[int, int]:
    s = s or settings()
    return {port: pid for _, port in s.redis_nodes if (pid := node_pid(port, s)) is not None}


def _client(port: int, timeout_s: float = 1.0, s: Settings | None = None):
    return admin_client("127.0.0.1", port, timeout_s, s)


def cluster_ok(s: Settings | None = None, timeout_s: float = 1.0) -> bool:
    """True if every node of ``redis_url`` that answers reports ``cluster_state:ok`` and at least one answers."""
    import redis

    s = s or settings()
    answered = False
    for host, port in s.redis_nodes:
        c = admin_client(host, port, timeout_s, s)
        try:
            info = c.execute_command("CLUSTER INFO")
        except (redis.RedisError, OSError):
            continue
        finally:
            c.close()
        if isinstance(info, dict):  # redis-py parses CLUSTER INFO
            ok = info.get("cluster_state") == "ok"
        else:
            ok = "cluster_state:ok" in (info.decode() if isinstance(info, bytes) else str(info))
        if not ok:
            return False
        answered = True
    return answered


def _node_command(binary: str, s: Settings, port: int) -> list[str]:
    from core.redis_auth import USERS, secured

    conf: list[str] = []
    if secured(s):  # replicas authenticate to their primary (the default user is off)
        conf = [str(_data(s, port) / "auth.conf")]
        write_private(_data(s, port) / "auth.conf",
                      f"masteruser {USERS['admin']}\nmasterauth {ensure_secrets(s)['admin']}\n")
    return [
        binary, *conf, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(_data(s, port)),
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-replica-validity-factor", "0",
        "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
        "--maxmemory", s.redis_maxmemory, "--maxmemory-policy", "noeviction",
        "--logfile", str(_log_file(s, port)), "--loglevel", "warning",
    ]


def start_node(port: int, s: Settings | None = None, timeout_s: float = 15.0) -> int:
    """Start (or restart) the node on ``port``; returns its pid once it answers PING."""
    s = s or settings()
    pid = node_pid(port, s)
    if pid is not None:
        return pid
    _data(s, port).mkdir(parents=True, exist_ok=True)
    s.run_dir.mkdir(parents=True, exist_ok=True)
    binary, *args = _node_command(redis_server_binary(False), s, port)
    argv, env = launch(binary, args, s)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=_data(s, port))
    write_pid(_pid_file(s, port), proc.pid)

    def answers() -> bool:
        if proc.poll() is not None:
            raise UserFacingError(f"redis-server (cluster node {port}) exited with code {proc.returncode}; "
                                  f"see {_log_file(s, port)}:\n{tail(_log_file(s, port), 10)}")
        c = _client(port, 0.5, s)
        try:
            return bool(c.ping())
        except Exception:
            return False
        finally:
            c.close()

    if not wait_until(answers, timeout_s, interval_s=0.05):
        raise UserFacingError(f"cluster node {port} did not answer PING within {timeout_s:g} s; see {_log_file(s, port)}")
    return proc.pid


def start(progress: bool = True, timeout_s: float = 30.0) -> StartResult:
    """Start the local cluster of the current settings unless it already answers with ``cluster_state:ok``."""
    with file_lock(settings().run_dir / "redis.lock"):
        return _start(progress, timeout_s)


def _start(progress: bool, timeout_s: float) -> StartResult:
    s = settings()
    if s.redis_tls and not s.redis_external:
        raise UserFacingError("RTML_REDIS_TLS=1 is supported for the single local Redis, not the local cluster "
                              "(RTML_REDIS_CLUSTER=1); use one or the other (see docs/operators.md, Redis TLS)")
    say = print if progress else (lambda *a, **k: None)
    ports = [p for _, p in s.redis_nodes]
    if s.redis_external:
        if not cluster_ok(s, timeout_s=2.0):
            raise UserFacingError(f"no healthy Redis Cluster answers at RTML_REDIS_URL={s.redis_url}; start it or unset RTML_REDIS_URL.")
        say(f"redis: using external Redis Cluster at {s.redis_url}")
        return StartResult(s.redis_url, None, started=False, managed=False, external=True)
    if len(ports) != (1 + REPLICAS) * 3:
        raise UserFacingError(f"a local Redis Cluster needs 6 nodes (3 primaries + 3 replicas), {s.redis_url} names {len(ports)}")
    pids = running_pids(s)
    if cluster_ok(s):
        owner = f"pids {sorted(pids.values())}" if pids else "not started by rtml"
        say(f"redis: cluster already running at {s.redis_url} ({owner})")
        return StartResult(s.redis_url, min(pids.values()) if pids else None, started=False, managed=bool(pids), external=False)
    taken = [p for p in ports if p not in pids and port_open("127.0.0.1", p)]
    if taken:
        raise UserFacingError(f"ports {taken} are taken by processes rtml did not start; choose other ports with RTML_REDIS_CLUSTER_PORT.")
    started_at = time.monotonic()
    fresh = not pids
    if fresh:  # a new cluster: forget the configuration of an earlier one
        shutil.rmtree(s.state_dir / "redis-cluster", ignore_errors=True)
    say(f"redis: starting a Redis Cluster (3 primaries + 3 replicas) at {s.redis_url}", flush=True)
    try:
        for port in ports:
            pids[port] = start_node(port, s)
        if fresh:
            cli = shutil.which("redis-cli")
            if cli is None:
                raise UserFacingError("`redis-cli` not found on PATH (Debian package redis-tools); it creates the cluster.")
            from core.redis_auth import USERS, credentials, secured

            creds = (USERS["admin"], ensure_secrets(s)["admin"]) if secured(s) else credentials("admin", s)
            auth = [*(["--user", creds[0]] if creds[0] else []), "--no-auth-warning"] if creds else []
            env = dict(os.environ, **({"REDISCLI_AUTH": creds[1]} if creds else {}))  # not on the command line
            done = subprocess.run([cli, *auth, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                                   "--cluster-replicas", str(REPLICAS), "--cluster-yes"], env=env,
                                  capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                raise UserFacingError(f"redis-cli --cluster create failed: {(done.stdout + done.stderr)[-800:]}")
        if not wait_until(lambda: cluster_ok(s) and _replicas_ready(s), timeout_s, interval_s=0.2):
            raise UserFacingError(f"the Redis Cluster at {s.redis_url} did not reach cluster_state:ok within {timeout_s:g} s")
    except BaseException:
        stop(progress=False, s=s)
        raise
    say(f"redis: cluster ready in {time.monotonic() - started_at:.1f} s (pids {sorted(pids.values())})")
    return StartResult(s.redis_url, min(pids.values()), started=True, managed=True, external=False)


def _replicas_ready(s: Settings) -> bool:
    """Every primary has a connected replica (so a primary can fail over)."""
    import redis

    host, port = s.redis_nodes[0]
    c = admin_client(host, port, 1.0, s)
    try:
        nodes = c.execute_command("CLUSTER NODES")
    except (redis.RedisError, OSError):
        return False
    finally:
        c.close()
    text = nodes.decode() if isinstance(nodes, bytes) else (nodes if isinstance(nodes, str) else "")
    if not text:  # redis-py may parse CLUSTER NODES into a dict
        return _replicas_ready_parsed(nodes)
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    primaries = [ln[0] for ln in lines if "master" in ln[2] and "fail" not in ln[2]]
    replica_of = {ln[3] for ln in lines if "slave" in ln[2] and ln[7] == "connected"}
    return len(primaries) == 3 and all(p in replica_of for p in primaries)


def _replicas_ready_parsed(nodes: dict) -> bool:
    primaries = {v["node_id"] for v in nodes.values() if "master" in v["flags"] and "fail" not in v["flags"]}
    replica_of = {v["master_id"] for v in nodes.values() if "slave" in v["flags"] and v.get("connected")}
    return len(primaries) == 3 and primaries <= replica_of


def stop_node(port: int, s: Settings | None = None, kill: bool = False) -> int | None:
    """Stop one node (SIGKILL with ``kill``: a crash); returns its pid. For failover tests."""
    import os
    import signal

    s = s or settings()
    pid = node_pid(port, s)
    if pid is None:
        return None
    if kill:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: node_pid(port, s) is None, 5.0, interval_s=0.02)
        _pid_file(s, port).unlink(missing_ok=True)
    else:
        stop_by_pid_file(f"redis {port}", pid, _pid_file(s, port), 10.0, False)
    return pid


def stop(progress: bool = True, timeout_s: float = 10.0, s: Settings | None = None) -> bool:
    """Stop every cluster node rtml started for these settings (by pid). True if one was stopped."""
    s = s or settings()
    stopped = False
    for port in sorted({p for _, p in s.redis_nodes} | _ports_with_pid_files(s)):
        pid = node_pid(port, s)
        stopped |= stop_by_pid_file(f"redis cluster node {port}", pid, _pid_file(s, port), timeout_s, progress)
    return stopped


def _ports_with_pid_files(s: Settings) -> set[int]:
    out = set()
    for f in s.run_dir.glob("redis-cluster-*.pid"):
        try:
            out.add(int(f.stem.rsplit("-", 1)[1]))
        except ValueError:
            pass
    return out


def primaries(s: Settings | None = None) -> dict[int, list[tuple[int, int]]]:
    """Port of every primary -> its slot ranges (from ``CLUSTER SLOTS``)."""
    from core.redis_client import RedisTarget, SyncRouter

    s = s or settings()
    router = SyncRouter(RedisTarget.from_settings(s, "admin"), socket_timeout_s=2)
    try:
        router.refresh()
        out: dict[int, list[tuple[int, int]]] = {}
        start_slot = 0
        table = router.slot_owners()
        for slot in range(1, len(table) + 1):
            if slot == len(table) or table[slot] != table[start_slot]:
                out.setdefault(table[start_slot][1], []).append((start_slot, slot - 1))  # type: ignore[index]
                start_slot = slot
        return out
    finally:
        router.close()
