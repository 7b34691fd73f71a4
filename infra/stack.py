"""The local stack as a whole: `up` (Redis, Kafka broker + topics, Spark's Kafka connector jars; with ``s3``: the
local s3proxy, the data dir's bucket and Spark's s3a jars), `down`, `status`.

Everything follows :func:`core.settings.settings`; services named by RTML_KAFKA_BOOTSTRAP / RTML_REDIS_URL are
external and never started or stopped. `down` stops only what `up` started (pid files under ``run_dir``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from core.settings import Settings, settings
from infra import kafka_broker, mlflow_server, redis_cluster, redis_server, s3proxy_server, spark_deps
from infra.redis_server import start_redis, stop_redis  # noqa: F401  (re-exported for tests)


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    address: str
    pid: int | None
    started: bool  # launched by this `up` call
    managed: bool  # owned by rtml (pid file): `down` stops it
    external: bool  # named by RTML_KAFKA_BOOTSTRAP / RTML_REDIS_URL


@dataclass(frozen=True)
class StackInfo:
    kafka: ServiceInfo
    redis: ServiceInfo
    spark_kafka_jars: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    s3: ServiceInfo | None = None

    @property
    def started(self) -> list[str]:
        """Names of the services this call launched."""
        return [s.name for s in (self.kafka, self.redis, self.s3) if s is not None and s.started]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    pid: int | None
    answers: bool
    managed: bool
    external: bool
    pids: tuple[int, ...] = ()  # every node of a multi-node Kafka cluster

    def line(self) -> str:
        if self.external:
            owner = "external"
        elif self.managed:
            owner = f"pid {','.join(map(str, self.pids or (self.pid,)))}"
        else:
            owner = "not started by rtml" if self.answers else "not running"
        return f"{self.name:<6} {self.address:<28} {owner:<22} {'answers' if self.answers else 'DOWN'}"


def up(progress: bool = True, spark_jars: bool = True, s3: bool = False) -> StackInfo:
    """Start (or reuse) Redis and the Kafka broker, create the topics, pre-resolve Spark's Kafka connector.

    ``s3``: also start the local s3proxy (unless RTML_S3_ENDPOINT is external), create the data dir's bucket
    when RTML_DATA_DIR is ``s3://``, and pre-resolve Spark's s3a jars (hadoop-aws + AWS SDK)."""
    started_at = time.monotonic()
    kafka_broker.preflight()
    if spark_jars:
        spark_deps.preflight()
    if s3:
        s3proxy_server.preflight()
    redis = redis_cluster if settings().redis_mode == "cluster" else redis_server
    r = redis.start(progress=progress)
    s3_info = None
    try:
        k = kafka_broker.start(progress=progress)
        jars = spark_deps.connector_jars(progress=progress) if spark_jars else []
        if s3:
            s3_info = _start_s3(progress, spark_jars)
    except BaseException:
        if r.started:  # leave nothing half-started behind
            redis.stop(progress=progress)
        raise
    info = StackInfo(
        kafka=ServiceInfo("kafka", k.address, k.pid, k.started, k.managed, k.external),
        redis=ServiceInfo("redis", r.address, r.pid, r.started, r.managed, r.external),
        spark_kafka_jars=jars,
        seconds=time.monotonic() - started_at,
        s3=s3_info,
    )
    if progress:
        if jars:
            print(f"spark: Kafka connector ready ({len(jars)} jars in {jars[0].parent})")
        print(f"stack up in {info.seconds:.1f} s: kafka {k.address}, redis {r.address}")
    return info


def _start_s3(progress: bool, spark_jars: bool) -> ServiceInfo:
    from core import storage

    p = s3proxy_server.start(progress=progress)
    if settings().data_on_s3:
        bucket = storage.ensure_bucket()
        if progress:
            print(f"s3: bucket {bucket} ready for RTML_DATA_DIR={settings().data_url}")
    if spark_jars:
        spark_deps.s3a_jars(progress=progress)
    return ServiceInfo("s3", p.address, p.pid, p.started, p.managed, p.external)


def down(progress: bool = True, s: Settings | None = None) -> list[str]:
    """Stop what `up` started for ``s`` (default: current settings), by pid; returns the names of stopped services."""
    stopped = []
    if kafka_broker.stop(progress=progress, s=s):
        stopped.append("kafka")
    if redis_server.stop(progress=progress, s=s) | redis_cluster.stop(progress=progress, s=s):
        stopped.append("redis")
    if mlflow_server.stop(progress=progress, s=s):
        stopped.append("mlflow")
    if s3proxy_server.stop(progress=progress, s=s):
        stopped.append("s3")
    if progress and not stopped:
        print("nothing to stop (no service started by `rtml up` runs for these settings)")
    return stopped


def status() -> list[ServiceStatus]:
    """State of each service for the current settings (bounded: a few seconds at most)."""
    s = settings()
    kafka_pids = [] if s.kafka_external else kafka_broker.any_layout_pids(s)
    kafka_pid = kafka_pids[0] if kafka_pids else None
    if s.redis_mode == "cluster":
        pids = {} if s.redis_external else redis_cluster.running_pids(s)
        redis_pid, redis_answers = (min(pids.values()) if pids else None), redis_cluster.cluster_ok(s)
    else:
        redis_pid = None if s.redis_external else redis_server.running_pid(s)
        redis_answers = redis_server.answers_ping(s.redis_url)
    return [
        ServiceStatus(
            "kafka",
            s.kafka_bootstrap,
            kafka_pid,
            kafka_broker.is_ready(s.kafka_bootstrap, timeout_s=2.0, brokers=1 if s.kafka_external else len(kafka_pids) or 1),
            managed=kafka_pid is not None,
            external=s.kafka_external,
            pids=tuple(kafka_pids),
        ),
        ServiceStatus(
            "redis",
            s.redis_url,
            redis_pid,
            redis_answers,
            managed=redis_pid is not None,
            external=s.redis_external,
        ),
    ] + _s3_status(s)


def _s3_status(s: Settings) -> list[ServiceStatus]:
    """The S3 line, when the data dir is on S3 or rtml runs a local s3proxy."""
    pid = None if s.s3.external else s3proxy_server.running_pid(s)
    if not (s.data_on_s3 or pid is not None or s.s3.external):
        return []
    return [ServiceStatus("s3", s.s3.endpoint, pid, s3proxy_server.answers(s.s3.endpoint, timeout_s=2.0),
                          managed=pid is not None, external=s.s3.external)]
