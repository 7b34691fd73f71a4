"""Roll-ups: once no late event can reach them, an entity's fine tiles that only the coarsest aggregations
still read become one tile per coarse span. The features stay equal to the oracle after every micro-batch
(late events inside the allowed lateness included), a replayed micro-batch changes nothing, and an entity
keeps O(fine window + coarse window) tiles however many events it has."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from streaming.tile_store import ROLLED, write_view_partition
from streaming.tiles import rollup_layout, view_measures
from tests.streaming.helpers import _us, assert_rows_equal, make_events, oracle, view_aggregations
from tests.streaming.test_tiles import MIN, MIXED, python_tile

LAG_US = 20 * MIN  # the query's watermark delay plus one tile: events arrive at most 8 minutes late here


class FakeOnline:
    """The online store's tile and Feast-row calls on dicts (one hash per entity)."""

    def __init__(self) -> None:
        self.hashes: dict[bytes, dict[bytes, bytes]] = {}
        self.rows: dict[int, dict] = {}

    def redis_keys(self, _view, keys) -> list[bytes]:
        return [b"%d" % k for k in keys]

    def write_tiles(self, keys, fields, _ttl_s) -> list[dict[bytes, bytes]]:
        for k, f in zip(keys, fields, strict=True):
            self.hashes.setdefault(k, {}).update(f)
        return [dict(self.hashes[k]) for k in keys]

    def update_tile_fields(self, keys, sets, deletes) -> None:
        for k, s, d in zip(keys, sets, deletes, strict=True):
            self.hashes[k].update(s)
            for f in d:
                self.hashes[k].pop(f, None)

    def write(self, spec, frame: pd.DataFrame) -> int:
        for r in frame.to_dict("records"):
            self.rows[int(r[spec.join_key])] = r
        return len(frame)


def _tile_rows(spec, events: list[dict], touched: list[dict]) -> pd.DataFrame:
    """What Spark's update-mode tile aggregation emits for a micro-batch: the absolute measures of every tile
    the batch's events ``touched``, over all ``events`` so far."""
    tile = spec.tile_us
    keys = {(e["user_id"], _us(e["event_timestamp"]) // tile * tile) for e in touched}
    recs = []
    for k, start in sorted(keys):
        mine = [e for e in events if e["user_id"] == k and _us(e["event_timestamp"]) // tile * tile == start]
        recs.append({"k": k, "tile": start, "wend_us": start + tile, **python_tile(mine)})
    return pd.DataFrame(recs)


def _check(spec, online: FakeOnline, seen: list[dict]) -> None:
    want = oracle(seen, "user_id", view_aggregations(spec))
    for (k, t), values in want.items():
        row = online.rows[k]
        got_t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(row["event_timestamp"]))
        got = {a.name: (None if isinstance(row[a.name], float) and np.isnan(row[a.name]) else row[a.name])
               for a in spec.aggs}
        assert_rows_equal({(k, t): values}, {(k, got_t): got}, f"entity {k}")


@pytest.fixture(scope="module")
def late_events():
    """40 hours of events of 3 users, arriving up to 8 minutes out of event-time order."""
    rng = np.random.default_rng(11)
    evs = make_events(rng, 900, [1, 2, 3], [10, 11, 12, 13], datetime(2026, 1, 1, tzinfo=UTC), timedelta(hours=40))
    arrival = np.array([_us(e["event_timestamp"]) for e in evs]) + rng.integers(0, 8 * MIN, len(evs))
    return [evs[i] for i in np.argsort(arrival, kind="stable")]


def _run(spec, events: list[dict], online: FakeOnline, batch: int, final: bool, check: bool) -> list[pd.DataFrame]:
    seen: list[dict] = []
    emitted = []
    for i in range(0, len(events), batch):
        seen += events[i : i + batch]
        rows = _tile_rows(spec, seen, events[i : i + batch])
        final_before = int(rows["wend_us"].max()) - LAG_US if final else None
        write_view_partition(spec, rows, online, 3600, b"e1", frozenset({b"e1"}), final_before)
        emitted.append((rows, final_before))
        if check:
            _check(spec, online, seen)
    return emitted


def _fields(online: FakeOnline) -> dict[bytes, tuple[int, int]]:
    """Per entity: (fine tiles, rolled-up tiles) stored."""
    return {k: (sum(not _rolled(f) for f in h), sum(_rolled(f) for f in h)) for k, h in online.hashes.items()}


def _rolled(field: bytes) -> bool:
    return field.split(b":")[1].startswith(ROLLED)


def test_rolled_up_tiles_keep_every_feature_equal_to_the_oracle(late_events):
    assert MIXED.rollup_us == 60 * MIN and MIXED.tile_us == 5 * MIN
    online = FakeOnline()
    emitted = _run(MIXED, late_events, online, batch=30, final=True, check=True)
    stored = _fields(online)
    # fine tiles only for the fine windows (1 h) plus the lateness and the current hour; an hour tile per
    # hour of the longest window (24 h)
    assert all(fine <= (60 + 20 + 60) // 5 and 1 <= rolled <= 24 for fine, rolled in stored.values()), stored
    # an hour tile holds no distinct-value set: only a 20-minute-tiled count_distinct reads them
    d = [m.name for m in view_measures(MIXED)].index("d__merchant_id")
    rolled_values = [json.loads(v) for h in online.hashes.values() for f, v in h.items() if _rolled(f)]
    assert rolled_values and all(v[d] is None for v in rolled_values)
    # a replayed micro-batch (old, now rolled-up tiles written again with the same absolute values) changes
    # nothing and its tiles inside rolled-up hours are dropped again
    before = {k: dict(r) for k, r in online.rows.items()}
    for rows, final_before in (emitted[5], emitted[-1]):
        write_view_partition(MIXED, rows, online, 3600, b"e1", frozenset({b"e1"}), final_before)
    _check(MIXED, online, late_events)
    assert _fields(online) == stored
    assert {k: r["event_timestamp"] for k, r in online.rows.items()} == {k: r["event_timestamp"] for k, r in before.items()}


def test_without_a_final_horizon_nothing_is_rolled_up(late_events):
    online = FakeOnline()
    _run(MIXED, late_events[:300], online, batch=100, final=False, check=False)
    _check(MIXED, online, late_events[:300])
    assert all(rolled == 0 for _, rolled in _fields(online).values())


def test_a_late_event_inside_the_lateness_is_never_lost_to_a_roll_up(late_events):
    """A tile a roll-up could have taken too early (its span ending after the final horizon) stays fine."""
    online = FakeOnline()
    seen = sorted(late_events[:200], key=lambda e: e["event_timestamp"])
    rows = _tile_rows(MIXED, seen, seen)
    final_before = int(rows["wend_us"].max()) - LAG_US
    write_view_partition(MIXED, rows, online, 3600, b"e1", frozenset({b"e1"}), final_before)
    span = MIXED.rollup_us
    for h in online.hashes.values():
        for f in h:
            start, mid, _ = f.split(b":")
            if mid.startswith(ROLLED):
                assert int(mid[1:]) <= final_before and int(start) < int(mid[1:]) <= int(start) + span
    # an event just after the horizon, in a span not rolled up yet, lands and counts
    late = dict(seen[-1], user_id=seen[-1]["user_id"],
                event_timestamp=datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=final_before + 1))
    seen.append(late)
    write_view_partition(MIXED, _tile_rows(MIXED, seen, [late]), online, 3600, b"e1", frozenset({b"e1"}), final_before)
    _check(MIXED, online, seen)



def test_a_busy_entity_keeps_only_its_finer_window_of_fine_tiles():
    """Minutes leave for the open hour's rolled-up tile as soon as they are older than every finer window
    and final: 1 h of 5-minute tiles (at most 13), not up to 2 h (the finer window plus the open hour)."""
    rng = np.random.default_rng(7)
    evs = make_events(rng, 400, [7], [10, 11, 12], datetime(2026, 1, 1, tzinfo=UTC), timedelta(hours=6))
    online = FakeOnline()
    update = online.update_tile_fields
    fine_seen = []
    seen: list[dict] = []
    for n, i in enumerate(range(0, len(evs), 20)):
        seen += evs[i : i + 20]
        rows = _tile_rows(MIXED, seen, evs[i : i + 20])
        if n in (8, 12):  # a crash between the new rolled-up tile's HSET and the HDEL of what it replaces
            online.update_tile_fields = lambda keys, sets, deletes: update(keys, sets, [[] for _ in keys])
        write_view_partition(MIXED, rows, online, 3600, b"e1", frozenset({b"e1"}), int(rows["wend_us"].max()) - LAG_US)
        online.update_tile_fields = update
        _check(MIXED, online, seen)  # the rolled-up tile covering the most wins over a leftover one
        if n not in (8, 12):  # a crashed write leaves its replaced tiles until the next one deletes them
            fine_seen.append(_fields(online)[b"rtml:tiles:v:7"][0])
    assert max(fine_seen[6:]) <= 60 // 5 + 1 and max(fine_seen[6:]) >= 60 // 5 - 1, fine_seen  # full, never more
    assert _fields(online)[b"rtml:tiles:v:7"][1] <= 6  # leftovers of the crashes were deleted


def test_changed_features_over_the_same_tiles_are_remerged_for_every_stored_entity(late_events):
    """`feast apply` adds an aggregation that reads existing measures (same tiles, same state schema id): the
    start-up re-merge gives every stored entity, rolled-up tiles included, the oracle's values as of its latest
    event without a new event; an entity whose latest event is outside the view's TTL is left alone."""
    from dataclasses import replace

    from streaming.evolution import features_fingerprint, view_fingerprint
    from streaming.feature_specs import AggSpec
    from streaming.state_schema import schema_id
    from streaming.tile_store import remerge_entities

    online = FakeOnline()
    _run(MIXED, late_events, online, batch=60, final=True, check=False)
    assert any(_fields(online)[k][1] for k in online.hashes)  # rolled-up tiles among the stored ones
    changed = replace(MIXED, aggs=(*MIXED.aggs, AggSpec("distinct_m_10", "count_distinct", "merchant_id", 10 * MIN, 5 * MIN),
                                   AggSpec("max_2h", "max", "amount", 120 * MIN, 60 * MIN)))
    assert view_measures(changed) == view_measures(MIXED) and rollup_layout(changed) == rollup_layout(MIXED)
    assert schema_id((changed,)) == schema_id((MIXED,)) and view_fingerprint(changed) == view_fingerprint(MIXED)
    assert features_fingerprint(changed) != features_fingerprint(MIXED)
    assert all("distinct_m_10" not in r for r in online.rows.values())

    latest = {k: int(r["event_timestamp"]) for k, r in online.rows.items()}
    quiet = min(latest, key=latest.get)
    cutoff = latest[quiet] + 1  # only the quietest entity is older than the TTL
    written = remerge_entities(changed, np.array([3, 1, 2, 1]), online, 3600, frozenset({b"e1"}), cutoff)
    assert written == 2 and "distinct_m_10" not in online.rows[quiet]
    remerge_entities(changed, np.array([quiet]), online, 3600, frozenset({b"e1"}))
    _check(changed, online, late_events)
    assert {k: int(r["event_timestamp"]) for k, r in online.rows.items()} == latest


def test_the_plan_re_merges_a_view_whose_features_changed_and_seeds_one_whose_roll_ups_changed(tmp_path):
    from dataclasses import replace

    from streaming.evolution import plan, save_lineage
    from streaming.feature_specs import AggSpec
    from streaming.state_schema import schema_id

    before = (MIXED,)
    sid = schema_id(before)
    save_lineage(tmp_path, plan(tmp_path, before, sid).lineage)
    assert plan(tmp_path, before, sid).remerge_views == ()
    more = (replace(MIXED, aggs=(*MIXED.aggs, AggSpec("max_2h", "max", "amount", 120 * MIN, 60 * MIN))),)
    p = plan(tmp_path, more, sid)
    assert [v.name for v in p.remerge_views] == ["v"] and p.seed_views == () and p.starting_offsets is None
    save_lineage(tmp_path, p.lineage)
    assert plan(tmp_path, more, sid).remerge_views == ()  # recorded: the next start resumes as usual

    # a finer window longer than the fine tiles kept so far needs minutes already rolled up: a new id and a seed
    longer_fine = (replace(MIXED, aggs=(*MIXED.aggs, AggSpec("count_3h", "count", "amount", 180 * MIN, 15 * MIN))),)
    assert rollup_layout(longer_fine[0])[:2] == [60 * MIN, 180 * MIN] and rollup_layout(MIXED)[:2] == [60 * MIN, 60 * MIN]
    new_sid = schema_id(longer_fine)
    assert new_sid != sid
    run = tmp_path / f"spark-{sid}"
    (run / "commits").mkdir(parents=True)
    (run / "offsets").mkdir()
    (run / "commits" / "0").write_text("v1\n{}\n")
    (run / "offsets" / "0").write_text('v1\n{}\n{"t":{"0":5}}\n')
    p = plan(tmp_path, longer_fine, new_sid)
    assert [v.name for v in p.seed_views] == ["v"] and p.remerge_views == ()


def test_backfill_tiles_of_other_definitions_are_ignored_and_those_of_the_current_ones_merged(late_events):
    """A backfill's tiles carry their layout (``bf-<layout>``): after the definitions changed, tiles a backfill
    wrote under the old ones are left out of the merge (they cannot be decoded as the new layout), while tiles of
    a backfill under the current definitions are merged with the stream's."""
    from dataclasses import replace

    from streaming.tile_store import backfill_epoch

    small = replace(MIXED, aggs=tuple(a for a in MIXED.aggs if a.function in ("count", "sum")))
    assert len(view_measures(small)) < len(view_measures(MIXED)) and backfill_epoch(small) != backfill_epoch(MIXED)
    evs = sorted(late_events, key=lambda e: e["event_timestamp"])
    boundary = _us(evs[600]["event_timestamp"]) // MIXED.tile_us * MIXED.tile_us
    early = [e for e in evs if _us(e["event_timestamp"]) < boundary]
    late = [e for e in evs if _us(e["event_timestamp"]) >= boundary]
    for backfilled, counted in ((small, late), (MIXED, evs)):
        online = FakeOnline()
        write_view_partition(backfilled, _tile_rows(backfilled, early, early), online, 3600)
        assert {f.split(b":")[2] for h in online.hashes.values() for f in h} == {backfill_epoch(backfilled)}
        for i in range(0, len(late), 100):
            write_view_partition(MIXED, _tile_rows(MIXED, late, late[i : i + 100]), online, 3600, b"e1", frozenset({b"e1"}))
        _check(MIXED, online, counted)
