"""Produce/consume through the real broker with core.kafka_io helpers: keys, timestamps and values survive."""

from __future__ import annotations

import json
import random
import time

import pytest

from core.contracts import all_topics, domain_topics
from core.kafka_io import make_consumer, make_producer

pytestmark = pytest.mark.integration


def test_project_topics_exist(stack):
    consumer = make_consumer([domain_topics().events], group_id=None, bootstrap=stack.kafka_bootstrap, role="admin")
    try:
        assert set(all_topics()) <= consumer.topics()
    finally:
        consumer.close()


def test_round_trip_preserves_keys_timestamps_and_values(stack, kafka_topic):
    topic = kafka_topic("roundtrip", partitions=3)
    rng = random.Random(7)
    base_ms = 1_700_000_000_000
    sent = []
    for i in range(300):
        key = rng.randrange(1, 50)
        ts = base_ms + rng.randrange(0, 86_400_000)  # not monotonic on purpose
        value = {"i": i, "user_id": key, "amount": round(rng.uniform(1, 500), 2)}
        sent.append((str(key), ts, value))

    producer = make_producer(stack.kafka_bootstrap, role="admin")
    try:
        for key, ts, value in sent:
            producer.send(topic, key=key, value=value, timestamp_ms=ts)
        producer.flush(timeout=30)
    finally:
        producer.close()

    consumer = make_consumer([topic], group_id=f"g-{topic}", bootstrap=stack.kafka_bootstrap, role="admin")
    received = []
    try:
        deadline = time.monotonic() + 60
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                received.extend(records)
    finally:
        consumer.close()

    got = sorted(((r.key.decode(), r.timestamp, json.loads(r.value)) for r in received), key=lambda t: t[2]["i"])
    assert len(received) == len(sent)
    assert got == sent
    # Same key -> same partition, per-key order preserved.
    by_key: dict[str, set[int]] = {}
    for r in received:
        by_key.setdefault(r.key.decode(), set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_key.values())
    order = {}
    for r in sorted(received, key=lambda r: (r.partition, r.offset)):
        order.setdefault(r.key.decode(), []).append(json.loads(r.value)["i"])
    assert all(seq == sorted(seq) for seq in order.values())
    assert len({r.partition for r in received}) > 1
