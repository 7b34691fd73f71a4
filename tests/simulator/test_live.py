"""Live generator: deterministic, paced schedule, wire format per core/contracts.py, fraud and labels."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.contracts import LABEL_FIELDS, TRANSACTION_FIELDS
from streaming.producer import label_values, transaction_values
from streaming.simulation.live import iter_live_batches
from streaming.simulator import iter_live_events, live_events_frame, natural_rate_per_s

START = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
ARGS = dict(rate_per_s=200.0, seed=5, n_users=400, n_merchants=80, start_time=START)


def test_same_arguments_same_events_and_shorter_runs_are_prefixes():
    a = live_events_frame(max_events=3000, **ARGS)
    b = live_events_frame(max_events=3000, **ARGS)
    pd.testing.assert_frame_equal(a, b)
    short = live_events_frame(max_events=777, **ARGS)
    pd.testing.assert_frame_equal(short, a.iloc[:777])
    other = live_events_frame(max_events=3000, **{**ARGS, "seed": 6})
    assert not a["user_id"].equals(other["user_id"])


def test_event_times_follow_the_rate_schedule():
    df = live_events_frame(max_events=2001, **ARGS)
    assert len(df) == 2001
    offsets = (df["event_timestamp"] - pd.Timestamp(START)).dt.total_seconds().to_numpy()
    np.testing.assert_allclose(offsets, np.arange(2001) / ARGS["rate_per_s"], atol=1e-6)
    assert df["transaction_id"].is_unique
    assert len(live_events_frame(duration_s=2.5, **ARGS)) == 500


def test_events_match_the_wire_schema_and_the_frame():
    events = list(iter_live_events(max_events=500, **ARGS))
    frame = live_events_frame(max_events=500, **ARGS)
    assert len(events) == 500
    for e in events:
        assert list(e) == list(TRANSACTION_FIELDS)
        for name, typ in TRANSACTION_FIELDS.items():
            assert isinstance(e[name], typ), (name, e[name])
        assert e["event_timestamp"].endswith("Z")
    parsed = pd.to_datetime([e["event_timestamp"] for e in events], utc=True)
    assert (parsed == frame["event_timestamp"]).all()
    assert [e["transaction_id"] for e in events] == frame["transaction_id"].tolist()
    assert [e["amount"] for e in events] == frame["amount"].tolist()
    assert [e["user_id"] for e in events] == frame["user_id"].tolist()


def test_producer_bytes_decode_to_the_generator_dicts():
    events = list(iter_live_events(max_events=400, with_labels=True, **ARGS))
    values, labels = [], []
    for batch in iter_live_batches(max_events=400, **ARGS):
        values += transaction_values(batch)
        labels += label_values(batch)
    decoded = [json.loads(v) for v in values]
    assert decoded == [{k: e[k] for k in TRANSACTION_FIELDS} for e in events]
    decoded_labels = [json.loads(v) for v in labels]
    for lab, e in zip(decoded_labels, events, strict=True):
        assert list(lab) == list(LABEL_FIELDS)
        assert lab["transaction_id"] == e["transaction_id"] and lab["is_fraud"] == e["is_fraud"]
        assert lab["label_timestamp"] == e["label_timestamp"] > e["event_timestamp"]


def test_fraud_rate_and_bursts_over_a_longer_stream():
    # at the population's natural rate users transact as often as in the history (here ~7 days of events)
    rate = natural_rate_per_s(ARGS["n_users"], ARGS["n_merchants"], ARGS["seed"])
    assert 400 * 2 / 86400 < rate < 400 * 20 / 86400
    df = live_events_frame(max_events=20_000, **{**ARGS, "rate_per_s": rate})
    rate = df["is_fraud"].mean()
    assert 0.004 <= rate <= 0.025
    df = df.sort_values(["user_id", "event_timestamp"])
    gap = df.groupby("user_id")["event_timestamp"].diff().dt.total_seconds()
    close = gap < 600
    assert close[df["is_fraud"] == 1].mean() > 3 * close[df["is_fraud"] == 0].mean()


def test_label_delay_scale_compresses_delays():
    slow = live_events_frame(max_events=1000, label_delay_scale=1.0, **ARGS)
    fast = live_events_frame(max_events=1000, label_delay_scale=1 / 3600, **ARGS)
    d_slow = (slow["label_timestamp"] - slow["event_timestamp"]).dt.total_seconds()
    d_fast = (fast["label_timestamp"] - fast["event_timestamp"]).dt.total_seconds()
    assert d_slow.median() > 3600  # hours to days in real scale
    assert d_fast.median() == pytest.approx(d_slow.median() / 3600, rel=0.01)
    assert (d_fast > 0).all()


def test_default_start_is_now():
    before = datetime.now(UTC)
    first = next(iter_live_events(10.0, max_events=1, seed=1, n_users=10, n_merchants=5))
    t = datetime.fromisoformat(first["event_timestamp"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= t <= datetime.now(UTC)


def test_rejects_non_positive_rate():
    with pytest.raises(ValueError):
        next(iter_live_batches(0, max_events=1))
