"""Kafka client setup shared by every component: fail fast when no broker answers."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from typing import Any

from core.errors import UserFacingError
from core.settings import settings


class BrokerUnavailable(UserFacingError):
    """No Kafka broker answers at the configured bootstrap address."""


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


def make_producer(bootstrap: str | None = None, **overrides: Any):
    """A kafka-python producer (JSON values, str keys), created only after the broker answered."""
    from kafka import KafkaProducer

    bootstrap = bootstrap or settings().kafka_bootstrap
    check_broker(bootstrap)
    options: dict[str, Any] = dict(
        bootstrap_servers=bootstrap.split(","),
        key_serializer=lambda k: None if k is None else str(k).encode(),
        value_serializer=json_bytes,
        linger_ms=5,
        batch_size=256 * 1024,
        acks=1,
        max_block_ms=5000,
        request_timeout_ms=10000,
    )
    options.update(overrides)
    return KafkaProducer(**options)


def make_consumer(topics: Iterable[str], group_id: str | None, bootstrap: str | None = None, **overrides: Any):
    """A kafka-python consumer returning raw bytes; decoding and validation are the caller's."""
    from kafka import KafkaConsumer

    bootstrap = bootstrap or settings().kafka_bootstrap
    check_broker(bootstrap)
    options: dict[str, Any] = dict(
        bootstrap_servers=bootstrap.split(","),
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=30000,
        consumer_timeout_ms=1000,
    )
    options.update(overrides)
    consumer = KafkaConsumer(**options)
    consumer.subscribe(list(topics))
    return consumer


def ensure_topics(topics: Iterable[str], partitions: int = 3, bootstrap: str | None = None) -> None:
    """Create the topics that do not exist yet (idempotent)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    bootstrap = bootstrap or settings().kafka_bootstrap
    check_broker(bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=10000)
    try:
        existing = set(admin.list_topics())
        wanted = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics if t not in existing]
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
