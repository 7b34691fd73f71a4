"""The driver-side baseline's exact sliding-window transformation (streaming/aggregates.py, kept for the
streaming benchmark's baseline and test fixtures) alone: exact against a brute-force oracle of the same
(untiled) semantics, order-independent, and incremental (state + batches) equal to all-at-once."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from streaming.aggregates import TS, aggregate, latest_index, merge_sorted, range_index, sort_events
from streaming.feature_specs import AggSpec, ViewSpec
from tests.streaming.helpers import assert_rows_equal, make_events

SPEC = ViewSpec(
    name="v",
    join_key="user_id",
    aggs=tuple(
        [AggSpec(f"{f}_{w}", f, "amount", w * 60_000_000) for w in (10, 60, 1440) for f in ("count", "sum", "mean", "max")]
        + [AggSpec("distinct_m", "count_distinct", "merchant_id", 3_600_000_000),
           AggSpec("ssp", "seconds_since_previous", "event_timestamp", 86_400_000_000)]
    ),
    offline_path="/nonexistent",
    feature_names=(),
)


def sliding_oracle(events: list[dict], key: str, aggregations: list[tuple[str, str, str, timedelta]],
           as_of: str = "latest") -> dict[tuple[int, datetime], dict]:
    """Brute force of the exact sliding windows the driver-side baseline computes: for every event (or each
    key's latest event), loop over the key's events in (t - W, t].

    ``aggregations``: (name, function, column, window). Returns {(key, t): {name: value}}.
    """
    by_key: dict[int, list[dict]] = defaultdict(list)
    for e in events:
        by_key[e[key]].append(e)
    out = {}
    for k, evs in by_key.items():
        times = sorted({e["event_timestamp"] for e in evs})
        if as_of == "latest":
            times = [times[-1]]
        for t in times:
            row = {}
            for name, function, column, window in aggregations:
                inside = [e for e in evs if t - window < e["event_timestamp"] <= t]
                if function == "count":
                    row[name] = len(inside)
                elif function == "sum":
                    row[name] = sum(e[column] for e in inside)
                elif function == "mean":
                    row[name] = sum(e[column] for e in inside) / len(inside)
                elif function == "max":
                    row[name] = max(e[column] for e in inside)
                elif function == "count_distinct":
                    row[name] = len({e[column] for e in inside})
                elif function == "seconds_since_previous":
                    before = [e["event_timestamp"] for e in evs if e["event_timestamp"] < t]
                    prev = max(before) if before else None
                    row[name] = (t - prev).total_seconds() if prev is not None and t - prev < window else None
                else:
                    raise AssertionError(function)
            out[(k, t)] = row
    return out


def sliding_aggregations(spec) -> list[tuple[str, str, str, timedelta]]:
    return [(a.name, a.function, a.column, timedelta(microseconds=a.window_us)) for a in spec.aggs]


def frame(events: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(events)
    df[TS] = pd.to_datetime(df["event_timestamp"], utc=True).astype("datetime64[us, UTC]").astype("int64")
    return df


def as_dict(rows: pd.DataFrame) -> dict:
    out = {}
    for r in rows.to_dict("records"):
        t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(r[TS]))
        out[(int(r["user_id"]), t)] = {a.name: (None if pd.isna(r[a.name]) else r[a.name]) for a in SPEC.aggs}
    return out


@pytest.fixture(scope="module")
def events():
    rng = np.random.default_rng(3)
    return make_events(rng, 600, [1, 2, 3, 4], [10, 11, 12, 13, 14], datetime(2026, 1, 1, tzinfo=UTC),
                       timedelta(hours=40), ties=15)


def test_every_event_equals_oracle(events):
    sorted_events = sort_events(frame(events), SPEC)
    rows = aggregate(sorted_events, SPEC, range_index(sorted_events, None, None))
    assert len(rows) == len(events)
    assert rows["count_10"].dtype == np.int64 and rows["sum_10"].dtype == np.float64
    assert_rows_equal(sliding_oracle(events, "user_id", sliding_aggregations(SPEC), as_of="every"), as_dict(rows), "rows")


def test_incremental_batches_equal_all_at_once_in_any_arrival_order(events):
    everything = sort_events(frame(events), SPEC)
    full = aggregate(everything, SPEC, range_index(everything, None, None))
    rng = np.random.default_rng(5)
    shuffled = [events[i] for i in rng.permutation(len(events))]
    state = sort_events(frame(shuffled[:1]), SPEC)
    for chunk in np.array_split(np.arange(1, len(shuffled)), 7):
        state = merge_sorted(state, sort_events(frame([shuffled[i] for i in chunk]), SPEC))
    assert np.array_equal(state.keys, everything.keys) and np.array_equal(state.ts, everything.ts)
    assert np.array_equal(state.vals, everything.vals)
    again = aggregate(state, SPEC, range_index(state, None, None))
    pd.testing.assert_frame_equal(again, full, check_exact=True)


def test_latest_rows_per_key(events):
    sorted_events = sort_events(frame(events), SPEC)
    rows = aggregate(sorted_events, SPEC, latest_index(sorted_events, np.array([3, 1, 1])))
    assert list(rows["user_id"]) == [1, 3]
    expected = {k: v for k, v in sliding_oracle(events, "user_id", sliding_aggregations(SPEC)).items() if k[0] in (1, 3)}
    assert_rows_equal(expected, as_dict(rows), "latest")


def test_window_is_open_on_the_left():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    evs = [
        {"user_id": 1, "merchant_id": 1, "amount": 1.0, "event_timestamp": t0},
        {"user_id": 1, "merchant_id": 2, "amount": 2.0, "event_timestamp": t0 + timedelta(minutes=10)},
    ]
    s = sort_events(frame(evs), SPEC)
    row = aggregate(s, SPEC, np.array([1])).iloc[0]
    assert row["count_10"] == 1 and row["sum_10"] == 2.0  # the event exactly 10 min earlier is outside (t-W, t]
    assert row["count_60"] == 2 and row["sum_60"] == 3.0 and row["distinct_m"] == 2
    assert row["ssp"] == 600.0
