"""Tiled windows against the brute-force oracle, for every aggregation function Feast defines (and
seconds_since_previous): per event (offline rows) and as of each entity's latest event (online merge),
with tiles merged in any order; plus the tile-edge semantics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from streaming.backfill import offline_rows
from streaming.feature_specs import SUPPORTED_FUNCTIONS, AggSpec, ViewSpec
from streaming.tile_store import TS_KEPT, _encoded_columns, tile_measures
from streaming.tiles import SCALE, combine, features_from_tiles, python_units, view_measures
from tests.streaming.helpers import _us, assert_rows_equal, make_events, oracle, view_aggregations

MIN = 60_000_000
SPEC = ViewSpec(
    name="v",
    join_key="user_id",
    aggs=tuple(
        [AggSpec(f"{f}_{w}", f, "amount", w * MIN) for w in (10, 60, 1440)
         for f in SUPPORTED_FUNCTIONS if f not in ("count_distinct", "seconds_since_previous")]
        + [AggSpec("distinct_m", "count_distinct", "merchant_id", 60 * MIN),
           AggSpec("ssp", "seconds_since_previous", "event_timestamp", 1440 * MIN)]
    ),
    offline_path="/nonexistent",
    feature_names=(),
    tile_us=5 * MIN,
)
# The same aggregations, each with its own tile (5, 15, 60 and 20 minutes): stored tiles of 5 minutes.
_MIXED_TILES = {10: 5, 60: 15, 1440: 60}
MIXED = ViewSpec(
    name="v",
    join_key="user_id",
    aggs=tuple(AggSpec(a.name, a.function, a.column, a.window_us,
                       (20 if a.function == "count_distinct" else _MIXED_TILES[a.window_us // MIN]) * MIN)
               for a in SPEC.aggs),
    offline_path="/nonexistent",
    feature_names=(),
    tile_us=5 * MIN,
)


def python_tile(events: list[dict]) -> dict:
    """The measures Spark's tile aggregation computes (streaming.tiles.spark_measure), in plain Python."""
    row = {}
    for m in view_measures(SPEC):
        vals = [e[m.column] for e in events] if m.column else []
        row[m.name] = {
            "c": lambda: len(vals), "s": lambda: Decimal(sum(python_units(x) for x in vals)).scaleb(-SCALE),  # noqa: B023 (called at once, in the loop)
            "q": lambda: Decimal(sum(python_units(float(x) * float(x)) for x in vals)).scaleb(-SCALE),  # noqa: B023 (called at once, in the loop)
            "mn": lambda: float(min(vals)), "mx": lambda: float(max(vals)), "d": lambda: sorted({str(x) for x in vals}),  # noqa: B023 (called at once, in the loop)
            "ts": lambda: sorted({_us(e["event_timestamp"]) for e in events}),
            "last": lambda: max(_us(e["event_timestamp"]) for e in events),
        }[m.kind]()
    return row


def as_dict(rows: pd.DataFrame) -> dict:
    out = {}
    for r in rows.to_dict("records"):
        t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(r["event_timestamp"]))
        out[(int(r["user_id"]), t)] = {a.name: (None if pd.isna(r[a.name]) else r[a.name]) for a in SPEC.aggs}
    return out


@pytest.fixture(scope="module")
def events():
    rng = np.random.default_rng(3)
    evs = make_events(rng, 500, [1, 2, 3, 4], [10, 11, 12, 13, 14], datetime(2026, 1, 1, tzinfo=UTC),
                      timedelta(hours=40), ties=15)
    t0 = datetime(2026, 1, 1, 6, tzinfo=UTC)  # exactly on tile edges
    evs += [dict(evs[0], user_id=5, event_timestamp=t0 + timedelta(minutes=m)) for m in (0, 5, 10, 10, 15)]
    return evs


def per_timestamp_frame(events: list[dict]) -> pd.DataFrame:
    groups: dict = {}
    for e in events:
        groups.setdefault((e["user_id"], _us(e["event_timestamp"])), []).append(e)
    recs = []
    for (k, ts), evs in groups.items():
        recs.append({"k": k, "ts_us": ts, "n_events": len(evs), **python_tile(evs)})
    return pd.DataFrame(recs)


def test_every_function_is_covered():
    assert {a.function for a in SPEC.aggs} == set(SUPPORTED_FUNCTIONS)
    assert {"min", "max", "sum", "count", "mean", "avg", "std", "var", "count_distinct"} <= set(SUPPORTED_FUNCTIONS)


@pytest.mark.parametrize("spec", [SPEC, MIXED], ids=["one-tile", "per-aggregation-tiles"])
def test_offline_rows_equal_oracle_for_every_event(events, spec):
    rows = offline_rows(spec, per_timestamp_frame(events), -(2**62), 2**62)
    assert len(rows) == len(events)
    assert rows["count_10"].dtype == np.int64 and rows["sum_10"].dtype == np.float64
    assert_rows_equal(oracle(events, "user_id", view_aggregations(spec), as_of="every"), as_dict(rows), "rows")


@pytest.mark.parametrize("spec", [SPEC, MIXED], ids=["one-tile", "per-aggregation-tiles"])
def test_online_merge_of_tiles_in_any_order_equals_oracle_and_offline(events, spec):
    rng = np.random.default_rng(5)
    offline = as_dict(offline_rows(spec, per_timestamp_frame(events), -(2**62), 2**62))
    want = oracle(events, "user_id", view_aggregations(spec))
    for k in sorted({e["user_id"] for e in events}):
        mine = [e for e in events if e["user_id"] == k]
        tiles: dict[int, dict] = {}
        for i in rng.permutation(len(mine)):  # events arrive in any order, a tile per event, merged
            e = mine[i]
            start = (_us(e["event_timestamp"]) // spec.tile_us) * spec.tile_us
            one = tile_measures(python_tile([e]), view_measures(SPEC))
            tiles[start] = combine(tiles.get(start, {}), one)
        latest, feats = features_from_tiles(spec, tiles)
        t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=latest)
        got = {(k, t): {n: (None if isinstance(v, float) and np.isnan(v) else v) for n, v in feats.items()}}
        assert_rows_equal({(k, t): want[(k, t)]}, got, f"online {k}")
        for name, v in feats.items():  # bit for bit what the offline row of that event says
            o = offline[(k, t)][name]
            assert (o is None and np.isnan(v)) or o == v, (k, name, o, v)


def test_window_edges_follow_tiles(events):
    rows = as_dict(offline_rows(SPEC, per_timestamp_frame(events), -(2**62), 2**62))
    t0 = datetime(2026, 1, 1, 6, tzinfo=UTC)
    at = {m: rows[(5, t0 + timedelta(minutes=m))] for m in (0, 5, 10, 15)}
    # 10-minute window, 5-minute tiles: the current tile and the one before it
    assert [at[m]["count_10"] for m in (0, 5, 10, 15)] == [1, 2, 3, 3]  # at 10:00 the 0:00 tile has left
    assert at[15]["count_60"] == 5 and at[15]["ssp"] == 300.0
    assert at[10]["ssp"] == 300.0  # the other event at the same time is not "previous"



def test_each_aggregation_snaps_its_window_to_its_own_tile(events):
    """Per-aggregation tiles: a 1-hour window with 15-minute tiles starts at 06:15 as of 07:01, the same window
    with the view's 5-minute tiles at 06:05; a 24-hour window with 1-hour tiles covers the whole day."""
    t0 = datetime(2026, 1, 3, 6, tzinfo=UTC)
    evs = [dict(events[0], user_id=9, event_timestamp=t0 + timedelta(minutes=m)) for m in (12, 44, 61)]
    at = t0 + timedelta(minutes=61)
    mixed = as_dict(offline_rows(MIXED, per_timestamp_frame(evs), -(2**62), 2**62))[(9, at)]
    one = as_dict(offline_rows(SPEC, per_timestamp_frame(evs), -(2**62), 2**62))[(9, at)]
    assert (mixed["count_60"], one["count_60"]) == (2, 3)  # 06:12 is before 06:15, after 06:05
    assert mixed["count_1440"] == one["count_1440"] == 3
    assert mixed["ssp"] == one["ssp"] == 17 * 60.0

def test_offline_rows_of_a_range_equal_those_rows_of_the_whole_history(events):
    frame = per_timestamp_frame(events)
    whole = offline_rows(SPEC, frame, -(2**62), 2**62)
    lo, hi = _us(datetime(2026, 1, 1, 12, tzinfo=UTC)), _us(datetime(2026, 1, 1, 20, tzinfo=UTC))
    part = offline_rows(SPEC, frame.sample(frac=1.0, random_state=1), lo, hi)  # any input order
    want = whole[(whole["event_timestamp"] >= lo) & (whole["event_timestamp"] < hi)].reset_index(drop=True)
    assert 0 < len(part) < len(whole)
    pd.testing.assert_frame_equal(part.reset_index(drop=True), want, check_exact=True)


def _stored(tile: dict) -> dict:
    """A tile as Redis keeps it (the tile store's encoding, decoded back): event times cut to the newest TS_KEPT."""
    measures = view_measures(SPEC)
    encoded = [col[0] for col in _encoded_columns(pd.DataFrame([tile]), measures)]
    out = {}
    for m, v in zip(measures, encoded, strict=True):
        if v is not None:
            out[m.name] = int(v) if m.kind in ("s", "q") else set(v) if m.kind in ("d", "ts") else v
    return out


def test_stored_tiles_keep_two_event_times_and_still_equal_the_oracle():
    """Busy tiles (many events, ties) stored as Redis keeps them, each tile's events split over two epochs
    (disjoint event sets, combined on read): O(1) event times per tile, and as of many moments (each a
    prefix of the history: the entity's latest event then) the same values as the oracle."""
    rng = np.random.default_rng(11)
    evs = make_events(rng, 400, [1, 2], [10, 11, 12], datetime(2026, 1, 1, tzinfo=UTC), timedelta(hours=3), ties=40)
    want = oracle(evs, "user_id", view_aggregations(SPEC), as_of="every")
    busiest = 0
    for k in (1, 2):
        mine = [e for e in evs if e["user_id"] == k]
        times = sorted({_us(e["event_timestamp"]) for e in mine})
        for t_us in [times[i] for i in rng.choice(len(times), 25, replace=False)]:
            by_tile: dict[int, list] = {}
            for e in (e for e in mine if _us(e["event_timestamp"]) <= t_us):
                by_tile.setdefault((_us(e["event_timestamp"]) // SPEC.tile_us) * SPEC.tile_us, []).append(e)
            tiles = {}
            for start, part in by_tile.items():
                busiest = max(busiest, len({_us(e["event_timestamp"]) for e in part}))
                cut = int(rng.integers(1, len(part) + 1))
                stored = [_stored(python_tile(x)) for x in (part[:cut], part[cut:]) if x]
                assert all(len(x["ts"]) <= TS_KEPT for x in stored)
                tiles[start] = combine(*stored) if len(stored) == 2 else stored[0]
            latest, feats = features_from_tiles(SPEC, tiles)
            t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=latest)
            got = {(k, t): {n: (None if isinstance(v, float) and np.isnan(v) else v) for n, v in feats.items()}}
            assert_rows_equal({(k, t): want[(k, t)]}, got, f"stored {k} as of {t}")
    assert busiest > 3 * TS_KEPT  # the cut really dropped event times


def test_view_spec_reads_each_aggregations_tile_and_stores_their_common_divisor():
    """From a Feast definition: each aggregation keeps its slide_interval, the view stores tiles of their
    greatest common divisor, and a window that is not a multiple of its own tile is refused; integer and string
    join keys are read, any other key type is refused."""
    from types import SimpleNamespace

    from feast.aggregation import Aggregation
    from feast.types import Float64, Int64, String

    from streaming.feature_specs import view_spec

    def view(*aggs, key_type=Int64):
        return SimpleNamespace(name="v", entity_columns=[SimpleNamespace(name="user_id", dtype=key_type)],
                               aggregations=list(aggs), batch_source=SimpleNamespace(path="/nonexistent"), features=[])

    h, m = timedelta(hours=1), timedelta(minutes=1)
    spec = view_spec(view(Aggregation(column="amount", function="sum", time_window=h, slide_interval=15 * m, name="a"),
                          Aggregation(column="amount", function="max", time_window=24 * h, slide_interval=h, name="b"),
                          Aggregation(column="amount", function="count", time_window=h, slide_interval=6 * m, name="c")))
    assert [spec.tile_of(a) for a in spec.aggs] == [15 * MIN, 60 * MIN, 6 * MIN]
    assert spec.tile_us == 3 * MIN
    with pytest.raises(ValueError, match="not a multiple"):
        view_spec(view(Aggregation(column="amount", function="sum", time_window=h, slide_interval=7 * m, name="a")))
    one = Aggregation(column="amount", function="sum", time_window=h, slide_interval=m, name="a")
    assert not spec.string_key and view_spec(view(one, key_type=String)).string_key
    with pytest.raises(ValueError, match="join key 'user_id' has type Float64; stream views support integer"):
        view_spec(view(one, key_type=Float64))
