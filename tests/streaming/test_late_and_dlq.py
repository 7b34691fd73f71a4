"""Late events inside and beyond the watermark, and every class of malformed record in the DLQ."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from streaming.stream_job import job_counters
from tests.streaming.helpers import (
    assert_rows_equal,
    fresh_id_base,
    iso,
    make_events,
    oracle,
    publish,
    read_dlq,
    view_aggregations,
)
from tests.streaming.test_stream_online import online_values

pytestmark = pytest.mark.integration


def test_late_events_and_dead_letters(stream_job, feast_store):
    rng = np.random.default_rng(23)
    base = fresh_id_base()  # Redis is shared between runs: new entity ids every run
    users, merchants = [base + i for i in range(4)], [base + 100 + i for i in range(3)]
    start = datetime.now(UTC) - timedelta(hours=3)
    events = make_events(rng, 80, users, merchants, start, timedelta(hours=2), ties=2)
    t_max = max(e["event_timestamp"] for e in events)
    delay = timedelta(microseconds=stream_job.spec.watermark_delay_us)

    def late(user: int, age: timedelta) -> dict:
        return dict(events[0], transaction_id=f"late-{user}-{age.total_seconds()}", user_id=user,
                    amount=round(float(rng.uniform(1, 500)), 2), event_timestamp=t_max - age)

    within = [late(users[0], delay / 2), late(users[1], delay / 3), late(users[0], timedelta(seconds=1))]
    # the watermark is tile-granular (its delay is the allowed lateness plus one tile): beyond = tile gone
    tile = timedelta(microseconds=max(v.tile_us for v in stream_job.spec.views))
    beyond = [late(users[2], delay + 3 * tile), late(users[3], delay * 3)]

    good = {"transaction_id": "x", "user_id": users[0], "merchant_id": merchants[0], "amount": 10.0,
            "currency": "EUR", "country": "DE", "channel": "pos", "event_timestamp": iso(t_max)}
    bad = {
        b"this is { not json": ("unparseable_json", None),
        b"": ("unparseable_json", None),
        b"[1, 2, 3]": ("unparseable_json", None),
        json.dumps({k: v for k, v in good.items() if k != "amount"}).encode(): ("missing_field", "amount"),
        json.dumps({k: v for k, v in good.items() if k != "user_id"}).encode(): ("missing_field", "user_id"),
        json.dumps({**good, "user_id": "abc"}).encode(): ("bad_type", "user_id"),
        json.dumps({**good, "merchant_id": 1.5}).encode(): ("bad_type", "merchant_id"),
        json.dumps({**good, "event_timestamp": "yesterday"}).encode(): ("bad_type", "event_timestamp"),
        json.dumps({**good, "amount": -5.0}).encode(): ("below_min", "amount"),
        json.dumps({**good, "amount": 2e6}).encode(): ("above_max", "amount"),
        json.dumps({**good, "event_timestamp": iso(datetime.now(UTC) + timedelta(days=1))}).encode():
            ("future_timestamp", "event_timestamp"),
    }

    job = stream_job()
    publish(stream_job.topic, events)
    query = job.start()
    query.processAllAvailable()
    publish(stream_job.topic, within + beyond, raw=list(bad))
    query.processAllAvailable()
    job.stop()

    counters = job_counters(job.options.checkpoint())
    assert counters["late_dropped"] == len(beyond)
    assert counters["events_read"] == len(events) + len(within) + len(beyond) + len(bad)
    reasons = {}
    for why, _ in bad.values():
        reasons[why] = reasons.get(why, 0) + 1
    assert {k[4:]: v for k, v in counters.items() if k.startswith("dlq_")} == reasons
    m = job.metrics
    assert m.late.labels(kind="dropped")._value.get() == len(beyond)
    assert m.events_read._value.get() == counters["events_read"]
    for why, n in reasons.items():
        assert m.dlq.labels(reason=why)._value.get() == n

    # Online values include the late events inside the watermark, not the dropped ones.
    used = events + within
    for spec in stream_job.spec.views:
        keys = sorted({e[spec.join_key] for e in used})
        expected = {k: row for (k, _t), row in oracle(used, spec.join_key, view_aggregations(spec)).items()}
        assert_rows_equal(expected, online_values(feast_store, spec, keys), f"online {spec.name}")

    # Every malformed record is in the DLQ with its reason, field and original bytes.
    letters = read_dlq(stream_job.dlq_topic, expect=len(bad))
    assert len(letters) == len(bad)
    got = {base64.b64decode(m["raw_base64"]): (m["reason"], m["field"]) for m in letters}
    assert got == bad
    assert all(m["source_topic"] == stream_job.topic and m["offset"] >= 0 for m in letters)


def test_future_event_does_not_make_later_late_events_dropped(stream_job, feast_store):
    """One event stamped 290 s ahead (inside the DLQ tolerance) must not push the watermark past processing
    time: the next 50 events, arriving 60 s late, are all used (the driver job dropped 50 of 50)."""
    rng = np.random.default_rng(29)
    base = fresh_id_base()
    now = datetime.now(UTC)
    future = make_events(rng, 1, [base + 900], [base + 901], now + timedelta(seconds=290), timedelta(seconds=1))
    users, merchants = [base + i for i in range(10)], [base + 100 + i for i in range(5)]
    late = make_events(rng, 50, users, merchants, now - timedelta(seconds=61), timedelta(seconds=2), ties=0)

    job = stream_job()
    publish(stream_job.topic, future)
    query = job.start()
    query.processAllAvailable()
    publish(stream_job.topic, late)
    query.processAllAvailable()
    job.stop()

    assert job.metrics.late.labels(kind="dropped")._value.get() == 0
    assert job_counters(job.options.checkpoint())["late_dropped"] == 0
    used = future + late
    for spec in stream_job.spec.views:
        keys = sorted({e[spec.join_key] for e in used})
        expected = {k: row for (k, _t), row in oracle(used, spec.join_key, view_aggregations(spec)).items()}
        assert_rows_equal(expected, online_values(feast_store, spec, keys), f"online {spec.name}")
