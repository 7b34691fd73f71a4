"""Helpers of the stream tests: crafted events, Kafka publishing, a brute-force oracle of the aggregates."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd


def fresh_id_base() -> int:
    """Entity ids nobody used before (Redis keeps values across test runs)."""
    return (uuid.uuid4().int % 10**9 + 1) * 1000


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_events(rng: np.random.Generator, n: int, users: list[int], merchants: list[int], start: datetime,
                span: timedelta, ties: int = 5) -> list[dict]:
    """``n`` valid transactions of ``users`` at ``merchants`` between start and start+span, sorted by time,
    with some exact timestamp ties and cent amounts."""
    offsets = np.sort(rng.integers(0, int(span / timedelta(microseconds=1)), size=n))
    events = []
    for off in offsets.tolist():
        events.append(
            {
                "transaction_id": uuid.uuid4().hex,
                "user_id": int(rng.choice(users)),
                "merchant_id": int(rng.choice(merchants)),
                "amount": round(float(rng.gamma(2.0, 30.0)) + 0.01, 2),
                "currency": "EUR",
                "country": "DE",
                "channel": "online",
                "event_timestamp": start + timedelta(microseconds=off),
            }
        )
    for _ in range(min(ties, n - 1)):  # same user, same instant as its predecessor
        k = int(rng.integers(1, n))
        events[k]["event_timestamp"] = events[k - 1]["event_timestamp"]
        events[k]["user_id"] = events[k - 1]["user_id"]
    return events


def wire(event: dict) -> dict:
    out = dict(event)
    out["event_timestamp"] = iso(event["event_timestamp"])
    return out


def publish(topic: str, events: list[dict], raw: list[bytes] | None = None, raw_timestamp_ms: int | None = None) -> None:
    """Send events (JSON per the wire format, key user_id, timestamp = event time) and raw byte records
    (timestamp ``raw_timestamp_ms``, default the send time)."""
    from core.kafka_io import make_producer

    producer = make_producer(role="admin")
    futures = [producer.send(topic, key=e["user_id"], value=wire(e),
                             timestamp_ms=int(e["event_timestamp"].timestamp() * 1000)) for e in events]
    producer.flush()
    producer.close()
    if raw:
        p = make_producer(key_serializer=None, value_serializer=None, role="admin")
        futures += [p.send(topic, value=value, timestamp_ms=raw_timestamp_ms) for value in raw]
        p.flush()
        p.close()
    for f in futures:  # a record the broker refused (e.g. a timestamp beyond message.timestamp.after.max.ms) raises
        f.get(timeout=0)


def _us(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def oracle(events: list[dict], key: str, aggregations: list[tuple], as_of: str = "latest") -> dict[tuple[int, datetime], dict]:
    """Brute force of the tiled windows (see streaming/tiles.py): for every event (or each key's latest
    event) at t, loop over the key's events with T(t) + tile - W <= time <= t, T(t) = t's tile start.

    ``aggregations``: (name, function, column, window, tile). Returns {(key, t): {name: value}}.
    """
    import math
    import statistics

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
            for name, function, column, window, tile in aggregations:
                s_us, t_us = tile // timedelta(microseconds=1), _us(t)
                lo = (t_us // s_us) * s_us + s_us - window // timedelta(microseconds=1)
                inside = [e for e in evs if lo <= _us(e["event_timestamp"]) <= t_us]
                vals = [e[column] for e in inside] if function != "seconds_since_previous" else []
                if function == "count":
                    row[name] = len(inside)
                elif function == "sum":
                    row[name] = math.fsum(vals)
                elif function in ("mean", "avg"):
                    row[name] = math.fsum(vals) / len(vals)
                elif function == "max":
                    row[name] = max(vals)
                elif function == "min":
                    row[name] = min(vals)
                elif function in ("var", "variance"):
                    row[name] = statistics.variance(vals) if len(vals) > 1 else None
                elif function in ("std", "stddev"):
                    row[name] = statistics.stdev(vals) if len(vals) > 1 else None
                elif function == "count_distinct":
                    row[name] = len(set(vals))
                elif function == "seconds_since_previous":
                    before = [e["event_timestamp"] for e in inside if e["event_timestamp"] < t]
                    row[name] = (t - max(before)).total_seconds() if before else None
                else:
                    raise AssertionError(function)
            out[(k, t)] = row
    return out


def view_aggregations(spec) -> list[tuple[str, str, str, timedelta, timedelta]]:
    return [(a.name, a.function, a.column, timedelta(microseconds=a.window_us), timedelta(microseconds=spec.tile_of(a)))
            for a in spec.aggs]


def assert_rows_equal(expected: dict, actual: dict, what: str) -> None:
    """Counts exact, money to the cent (and within 1e-6 relative), nulls as nulls."""
    assert set(expected) == set(actual), f"{what}: keys differ: {set(expected) ^ set(actual)}"
    for k in expected:
        for name, want in expected[k].items():
            got = actual[k][name]
            if want is None:
                assert got is None or (isinstance(got, float) and np.isnan(got)), f"{what} {k} {name}: {got} != None"
            elif isinstance(want, int):
                assert got == want, f"{what} {k} {name}: {got} != {want}"
            else:
                assert got is not None and abs(got - want) < 5e-3 and abs(got - want) <= 1e-8 * max(1, abs(want)), \
                    f"{what} {k} {name}: {got} != {want}"


def assert_online_equals_oracle(store, views, events: list[dict]) -> None:
    """Every view's online values of the events' entities equal the brute-force oracle over ``events``."""
    from tests.streaming.test_stream_online import online_values

    for spec in views:
        keys = sorted({e[spec.join_key] for e in events})
        expected = {k: row for (k, _t), row in oracle(events, spec.join_key, view_aggregations(spec)).items()}
        assert_rows_equal(expected, online_values(store, spec, keys), f"online {spec.name}")


def assert_offline_equals_oracle(files: list[str], spec, events: list[dict]) -> pd.DataFrame:
    """The view's offline rows (``files``): one per event, each equal to the oracle as of that event; returned."""
    names = [a.name for a in spec.aggs]
    rows = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert len(rows) == len(events), f"{spec.name}: one offline row per event"
    got = {(r[spec.join_key] if spec.string_key else int(r[spec.join_key]), r["event_timestamp"].to_pydatetime()): {n: (None if pd.isna(r[n]) else r[n])
                                                                           for n in names}
           for _, r in rows.iterrows()}
    assert_rows_equal(oracle(events, spec.join_key, view_aggregations(spec), as_of="every"), got, f"offline {spec.name}")
    return rows


def read_dlq(topic: str, expect: int, timeout_s: float = 30.0) -> list[dict]:
    """Messages of a dead-letter topic (read from the start) until ``expect`` arrived or timeout."""
    import time

    from core.kafka_io import make_consumer

    consumer = make_consumer([topic], group_id=None, role="admin")
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(json.loads(r.value) for r in records)
    finally:
        consumer.close()
    return out


def read_offline(folder) -> pd.DataFrame:
    import glob

    files = sorted(glob.glob(f"{folder}/*.parquet"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
