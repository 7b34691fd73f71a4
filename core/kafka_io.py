"""Kafka client setup shared by every component: who may do what (roles), credentials, fail-fast clients.

Every client names its *role* (a Kafka principal): ``admin`` (`rtml up`, topic creation, tests that inspect
topics), ``product`` (the product service: transactions and labels), ``stream`` (the stream job), ``serving``
(the prediction log), ``monitor`` (the drift monitor), ``operator`` (the audit trail, the demo's alert watch).
:func:`role_acls` is the one table of their topic permissions; the local broker (``infra.kafka_broker``) and the
Strimzi ``KafkaUser`` manifests grant exactly these.

Credentials: ``RTML_KAFKA_USER``/``RTML_KAFKA_PASSWORD`` when set (a deployment gives each component its own),
else the role's generated password in ``<state_dir>/secrets/kafka.json`` (written by `rtml up`, mode 0600).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from core.contracts import DomainTopics, domain_topics
from core.errors import UserFacingError
from core.settings import Settings, Topics, generated_passwords, settings

# SASL over loopback without TLS is this stack's documented design; kafka-python warns on every connection.
logging.getLogger("kafka.net.sasl.scram").setLevel(logging.ERROR)
logging.getLogger("kafka.net.sasl.plain").setLevel(logging.ERROR)
# A consumer group joined before its topic has metadata (an alerts watcher at start-up): retried, not an error.
logging.getLogger("kafka.coordinator.assignors.range").setLevel(logging.ERROR)

ROLES = ("admin", "product", "stream", "serving", "monitor", "operator")
# Consumer groups the Spark Kafka source uses (it generates ids with this prefix).
SPARK_GROUP_PREFIX = "spark-kafka-source-"


class BrokerUnavailable(UserFacingError):
    """No Kafka broker answers at the configured bootstrap address."""


@dataclass(frozen=True)
class Grants:
    """Topics a role may read (consume; implies describe) and write (produce)."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


def role_acls(topics: Topics | None = None, domain: DomainTopics | None = None) -> dict[str, Grants]:
    """The topic permissions of every non-admin role (admin is a super user); the domain's topics come from
    the feature repo (:func:`core.contracts.domain_topics`)."""
    t = topics or settings().topics
    d = domain or domain_topics()
    return {
        "product": Grants(write=(d.events, d.labels)),
        "stream": Grants(read=(d.events,), write=(d.dead_letters,)),
        "serving": Grants(write=(t.predictions,)),
        # audit: the monitor's rollout policy completes/aborts rollouts and its retraining promotes (core.audit)
        "monitor": Grants(read=(t.predictions, d.labels), write=(t.alerts, t.audit)),
        "operator": Grants(read=(t.alerts, t.audit), write=(t.audit,)),
    }


# --- credentials ----------------------------------------------------------------------------------------


def secrets_path(s: Settings | None = None):
    return (s or settings()).secrets_dir / "kafka.json"


def load_secrets(s: Settings | None = None) -> dict[str, str]:
    """role -> password from the state dir ({} when `rtml up` has not generated them yet)."""
    return generated_passwords(secrets_path(s), "delete it and run `rtml up`")


def credentials(role: str, s: Settings | None = None) -> tuple[str, str] | None:
    """(user, password) the client with ``role`` authenticates with; None when the cluster is plaintext."""
    s = s or settings()
    if role not in ROLES:
        raise ValueError(f"unknown Kafka role {role!r}; one of {', '.join(ROLES)}")
    auth = s.kafka_auth
    if auth.security == "plaintext":
        return None
    if auth.user:
        if not auth.password:
            raise UserFacingError("RTML_KAFKA_USER is set without RTML_KAFKA_PASSWORD")
        return auth.user, auth.password
    password = load_secrets(s).get(role)
    if not password:
        raise UserFacingError(
            f"no Kafka credentials for role {role!r} in {secrets_path(s)}: start the stack with `rtml up` "
            "(it generates them), or set RTML_KAFKA_USER/RTML_KAFKA_PASSWORD"
        )
    return role, password


def client_security(role: str, s: Settings | None = None) -> dict[str, Any]:
    """kafka-python options authenticating as ``role`` ({} for a plaintext cluster)."""
    s = s or settings()
    creds = credentials(role, s)
    if creds is None:
        return {}
    return dict(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=s.kafka_auth.mechanism,
        sasl_plain_username=creds[0],
        sasl_plain_password=creds[1],
    )


def jaas_config(user: str, password: str, mechanism: str) -> str:
    """A JAAS login line for a Java Kafka client (quotes escaped)."""
    module = (
        "org.apache.kafka.common.security.plain.PlainLoginModule"
        if mechanism == "PLAIN"
        else "org.apache.kafka.common.security.scram.ScramLoginModule"
    )

    def quote(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return f"{module} required username={quote(user)} password={quote(password)};"


def spark_kafka_options(role: str, bootstrap: str | None = None) -> dict[str, str]:
    """Options for Spark's Kafka source or sink (``.options(**...)``) connecting and authenticating as ``role``."""
    s = settings()
    options = {"kafka.bootstrap.servers": bootstrap or s.kafka_bootstrap}
    creds = credentials(role, s)
    if creds is not None:
        options.update(
            {
                "kafka.security.protocol": "SASL_PLAINTEXT",
                "kafka.sasl.mechanism": s.kafka_auth.mechanism,
                "kafka.sasl.jaas.config": jaas_config(*creds, s.kafka_auth.mechanism),
            }
        )
    return options


# --- clients --------------------------------------------------------------------------------------------


def check_broker(bootstrap: str | None = None, timeout_s: float = 2.0) -> None:
    """Raise :class:`BrokerUnavailable` within ``timeout_s`` if nothing listens at the bootstrap address.

    kafka-python itself blocks ~30 s before giving up, so every client is created after this check.
    """
    bootstrap = bootstrap or settings().kafka_bootstrap
    errors = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
                return
        except OSError as exc:
            errors.append(f"{address}: {exc.strerror or exc}")
    raise BrokerUnavailable(
        f"no Kafka broker answers at {bootstrap} ({'; '.join(errors)}). "
        "Start the local stack with `rtml up`, or set RTML_KAFKA_BOOTSTRAP to a running broker."
    )


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def make_producer(bootstrap: str | None = None, *, role: str, **overrides: Any):
    """A kafka-python producer for ``role`` (JSON values, str keys), created only after the broker answered.

    ``acks=all`` with idempotence: a write counts only once ``min.insync.replicas`` copies hold it, and a
    retry after a lost acknowledgement does not duplicate it.
    """
    from kafka import KafkaProducer

    bootstrap = bootstrap or settings().kafka_bootstrap
    security = client_security(role)
    check_broker(bootstrap)
    options: dict[str, Any] = dict(
        bootstrap_servers=bootstrap.split(","),
        key_serializer=lambda k: None if k is None else str(k).encode(),
        value_serializer=json_bytes,
        linger_ms=5,
        batch_size=256 * 1024,
        acks="all",
        enable_idempotence=True,
        max_in_flight_requests_per_connection=5,
        max_block_ms=5000,
        request_timeout_ms=10000,
        client_id=f"rtml-{role}",
        **security,
    )
    options.update(overrides)
    from kafka.serializer import Serializer, SerializeWrapper

    for key in ("key_serializer", "value_serializer"):  # kafka-python warns on bare callables: wrap them here
        fn = options.get(key)
        if fn is not None and not isinstance(fn, Serializer):
            options[key] = SerializeWrapper(fn)
    return KafkaProducer(**options)


def make_native_producer(
    bootstrap: str | None = None,
    *,
    role: str,
    on_delivery: Any = None,
    on_error: Any = None,
    **overrides: Any,
):
    """A confluent-kafka (librdkafka) producer for ``role``, created only after the broker answered: for
    hot paths. Its batching, compression and network I/O run in C threads without the GIL, so a record
    costs ~6 us of CPU against ~50 us in kafka-python (its ``send`` builds record batches in Python).

    Values and keys are bytes. ``on_delivery(err, msg)`` is called for every record from ``poll``/``flush``
    (``err`` None = delivered); ``on_error(err)`` for client-wide errors (``err.fatal()``: replace the
    producer). Idempotent with ``acks=all``, like :func:`make_producer`; ``overrides`` are librdkafka
    settings (dotted names). librdkafka's own log lines go to the ``rtml.kafka.native`` logger.
    """
    from confluent_kafka import Producer

    s = settings()
    bootstrap = bootstrap or s.kafka_bootstrap
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "client.id": f"rtml-{role}",
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 20,
        "logger": logging.getLogger("rtml.kafka.native"),
    }
    creds = credentials(role, s)
    if creds is not None:
        config.update({
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": s.kafka_auth.mechanism,
            "sasl.username": creds[0],
            "sasl.password": creds[1],
        })
    if on_delivery is not None:
        config["on_delivery"] = on_delivery
    if on_error is not None:
        config["error_cb"] = on_error
    config.update(overrides)
    check_broker(bootstrap)
    return Producer(config)


def make_consumer(
    topics: Iterable[str], group_id: str | None, bootstrap: str | None = None, *, role: str, **overrides: Any
):
    """A kafka-python consumer for ``role`` returning raw bytes; decoding and validation are the caller's."""
    from kafka import KafkaConsumer

    bootstrap = bootstrap or settings().kafka_bootstrap
    security = client_security(role)
    check_broker(bootstrap)
    options: dict[str, Any] = dict(
        bootstrap_servers=bootstrap.split(","),
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=30000,
        consumer_timeout_ms=1000,
        client_id=f"rtml-{role}",
        **security,
    )
    options.update(overrides)
    consumer = KafkaConsumer(**options)
    consumer.subscribe(list(topics))
    return consumer


def make_admin(bootstrap: str | None = None, *, role: str = "admin", **overrides: Any):
    """A kafka-python admin client for ``role`` (topic creation and ACLs need ``admin``)."""
    from kafka.admin import KafkaAdminClient

    bootstrap = bootstrap or settings().kafka_bootstrap
    security = client_security(role)
    check_broker(bootstrap)
    options: dict[str, Any] = dict(
        bootstrap_servers=bootstrap.split(","), request_timeout_ms=10000, client_id=f"rtml-{role}", **security
    )
    options.update(overrides)
    return KafkaAdminClient(**options)


def topic_layout(s: Settings | None = None) -> tuple[int, dict[str, str]]:
    """Replication factor and topic configs for new topics: the local cluster's (3 copies, 2 in sync for three
    nodes; 1 and 1 for one), or the broker's defaults (-1, {}) for an external cluster."""
    s = s or settings()
    if s.kafka_external:
        return -1, {}
    return s.broker.replication_factor, {"min.insync.replicas": str(s.broker.min_insync_replicas)}


def ensure_topics(topics: Iterable[str], partitions: int = 3, bootstrap: str | None = None, *, role: str) -> None:
    """Create the topics that do not exist yet (idempotent). Only ``admin`` may create; any other role only
    checks that its topics exist and gets a clear error if one is missing."""
    from kafka.errors import TopicAlreadyExistsError

    wanted_names = list(topics)
    admin = make_admin(bootstrap, role=role)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted_names if t not in existing]
        if not missing:
            return
        if role != "admin":
            raise UserFacingError(
                f"Kafka topic(s) {', '.join(missing)} missing or not visible to role {role!r}; "
                "`rtml up` creates the standard topics (role 'admin' creates others)"
            )
        replication, configs = topic_layout()
        try:
            admin.create_topics(
                {
                    t: {"num_partitions": partitions, "replication_factor": replication, "configs": configs}
                    for t in missing
                },
                wait_for_metadata=True,
            )
        except TopicAlreadyExistsError:
            pass
    finally:
        admin.close()
