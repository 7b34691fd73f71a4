"""Fixtures of the stream tests: the real stack (Kafka + Redis), a registry applied for the current
settings, one Spark session per test module, and a job factory with its own topic and checkpoint."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(scope="session")
def feast_store(stack):
    from core.feast_store import apply_repo, get_store

    apply_repo()
    return get_store()


@pytest.fixture(scope="module")
def spark(stack):
    from streaming.spark_session import build_session

    session = build_session("rtml-test-stream", "local[2]", shuffle_partitions=2)
    yield session
    session.stop()


@pytest.fixture
def stream_job(stack, feast_store, spark, tmp_path, kafka_topic):
    """Factory: ``stream_job(**options) -> StreamJob`` reading a fresh topic into tmp offline folders."""
    from prometheus_client import CollectorRegistry

    from streaming.feature_specs import load_stream_spec
    from streaming.metrics import StreamMetrics
    from streaming.stream_job import StreamJob, StreamOptions

    jobs = []
    topic = kafka_topic("txns", partitions=2)
    dlq = kafka_topic("dlq", partitions=1)
    spec = load_stream_spec(feast_store)
    offline = {v.name: str(tmp_path / "offline" / v.name) for v in spec.views}

    def make(fault_hook=None, **overrides):
        opts = dict(
            job_name=f"t{uuid.uuid4().hex[:6]}", topic=topic, dlq_topic=dlq, checkpoint_dir=tmp_path / "checkpoint",
            trigger_seconds=0.2, metrics_port=0,
        )
        opts.update(overrides)
        job = StreamJob(StreamOptions(**opts), spark=spark, store=feast_store,
                        metrics=StreamMetrics(CollectorRegistry()), fault_hook=fault_hook)
        jobs.append(job)
        return job

    make.topic, make.dlq_topic, make.offline, make.spec = topic, dlq, offline, spec
    yield make
    for job in jobs:
        job.close()
