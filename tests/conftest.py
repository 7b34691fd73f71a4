"""Shared fixtures for tests against the real local stack (Kafka broker, redis-server).

- ``stack`` (session): starts Kafka and Redis for the current settings if they do not answer (`infra.stack.up`),
  yields the :class:`core.settings.Settings`, and at the end stops only what it started (by pid).
- ``redis_client``: a ``redis.Redis`` for ``settings().redis_url`` as ``rtml-admin`` (no automatic flushdb).
- ``kafka_topic``: factory creating unique, empty topics for a test: ``kafka_topic("txns", partitions=3) -> name``.

Run against your own ports with e.g. ``RTML_KAFKA_PORT=19092 RTML_REDIS_PORT=16379 RTML_STATE_DIR=.rtml-me``.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator

import pytest

import core  # noqa: F401  (pins prometheus_client's value mode before Feast can flip it)

# Spark workers must run the venv's interpreter, and bind to loopback (no DNS/network surprises).
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture(scope="session")
def stack() -> Iterator:
    """The running local stack (started here if needed); yields the Settings it runs for."""
    from core.kafka_io import credentials
    from core.redis_auth import credentials as redis_credentials
    from core.settings import settings
    from infra import kafka_broker, redis_server
    from infra.stack import up

    s = settings()
    info = up(progress=False)
    # Tests send to and read from throwaway topics through production code (stream job, monitor, live producer)
    # whose roles have ACLs on the standard topics only: the session authenticates every client as admin.
    # tests/infra/test_kafka_security.py clears this and checks each role's ACLs with its own credentials.
    # Likewise Redis: tests write keys of other projects and inspect everything, so the session is rtml-admin;
    # tests/security checks each ACL user with its own password.
    admin = credentials("admin", s)
    redis_admin = redis_credentials("admin", s)
    saved = {k: os.environ.get(k) for k in ("RTML_KAFKA_USER", "RTML_KAFKA_PASSWORD", "RTML_REDIS_USER", "RTML_REDIS_PASSWORD",
                                            "RTML_REDIS_TLS_CA")}
    if admin is not None and not s.kafka_auth.user:
        os.environ["RTML_KAFKA_USER"], os.environ["RTML_KAFKA_PASSWORD"] = admin
    if redis_admin is not None and not s.redis_password:
        os.environ["RTML_REDIS_USER"], os.environ["RTML_REDIS_PASSWORD"] = redis_admin
    if s.redis_ca_file is not None:  # (RTML_REDIS_TLS=1) tests that move the state dir keep verifying this Redis
        os.environ["RTML_REDIS_TLS_CA"] = str(s.redis_ca_file)
    try:
        yield s
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        # Stop only what this session started, for the settings it started it with
        # (a test may have restarted Redis with start_redis(): that one is ours too).
        if info.kafka.started:
            kafka_broker.stop(progress=False, s=s)
        if info.redis.started:
            redis_server.stop(progress=False, s=s)


@pytest.fixture
def redis_client(stack):
    from core.redis_auth import connect

    client = connect(stack.redis_url, role="admin", socket_connect_timeout=2, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def kafka_topic(stack, request) -> Callable[..., str]:
    """Factory for fresh topics named after the test: ``kafka_topic(prefix="t", partitions=3) -> str``."""
    from core.kafka_io import ensure_topics

    test = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)[:80]

    def make(prefix: str = "t", partitions: int = 3) -> str:
        name = f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"
        ensure_topics([name], partitions=partitions, bootstrap=stack.kafka_bootstrap, role="admin")
        return name

    return make


from tests.fixtures.s3 import s3_data_dir, s3_env  # noqa: E402,F401  (local s3proxy fixtures)
from tests.fixtures.spark_cluster import spark_cluster  # noqa: E402,F401  (Spark standalone cluster)
