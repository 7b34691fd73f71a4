"""Stream job end to end (real Kafka, Spark, Redis): online values equal a brute-force oracle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tests.streaming.helpers import assert_online_equals_oracle, fresh_id_base, make_events, publish

pytestmark = pytest.mark.integration


def online_values(store, spec, keys: list[int]) -> dict:
    feats = [f"{spec.name}:{a.name}" for a in spec.aggs]
    got = store.get_online_features(features=feats, entity_rows=[{spec.join_key: k} for k in keys]).to_dict()
    return {k: {a.name: got[a.name][i] for a in spec.aggs} for i, k in enumerate(keys)}


def test_online_values_equal_bruteforce_oracle(stream_job, feast_store):
    rng = np.random.default_rng(7)
    base = fresh_id_base()  # Redis is shared between runs: new entity ids every run
    users = [base + i for i in range(6)]
    merchants = [base + 100 + i for i in range(4)]
    start = datetime.now(UTC) - timedelta(hours=30)
    events = make_events(rng, 300, users, merchants, start, timedelta(hours=29, minutes=50))
    first, second = events[:200], events[200:]

    job = stream_job()
    publish(stream_job.topic, first)
    query = job.start()
    query.processAllAvailable()
    publish(stream_job.topic, second)  # a second micro-batch on top of the state of the first
    query.processAllAvailable()
    job.stop()

    assert_online_equals_oracle(feast_store, stream_job.spec.views, events)
    assert job.writer.last["batch_id"] >= 1
    # every view's age (rtml_feature_view_age_seconds, the FeatureFreshnessSLO alert) restarts from the newest
    # event it wrote: here every event has a user and a merchant
    newest = max(e["event_timestamp"] for e in events)
    expected = (newest - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) / 1e6
    assert job.metrics.view_freshness.newest() == {v.name: expected for v in stream_job.spec.views}
