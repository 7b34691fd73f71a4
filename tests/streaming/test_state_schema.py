"""The stream job's Spark rows: one watermark column per event, tile rows per view, event times only where kept."""

from __future__ import annotations

from streaming.feature_specs import AggSpec, ViewSpec
from streaming.state_schema import event_rows, tile_aggregation, view_rows

S = 1_000_000  # microseconds per second
USERS = ViewSpec("users", "user_id", (AggSpec("n_10m", "count", "amount", 600 * S),
                                      AggSpec("gap", "seconds_since_previous", "event_timestamp", 600 * S)),
                 "unused", ("n_10m", "gap"), tile_us=60 * S)
MERCHANTS = ViewSpec("merchants", "merchant_id", (AggSpec("n_1h", "count", "amount", 3600 * S),), "unused",
                     ("n_1h",), tile_us=300 * S)


def _events(spark):
    rows = [  # (id, user, merchant, amount, event s, batch s)
        ("a", 1, 7, 10.0, 1000, 2000),
        ("b", 1, 7, 20.0, 1010, 2000),
        ("c", 2, 7, 5.0, 2500, 2000),  # stamped 500 s in the future: its watermark time is the batch's
    ]
    return spark.createDataFrame(
        [(i, u, m, a, e * S, b * S) for i, u, m, a, e, b in rows],
        "transaction_id string, user_id long, merchant_id long, amount double, event_us long, batch_us long")


def test_watermark_column_is_the_coarsest_tile_end_of_the_clamped_time(spark):
    ev = event_rows(_events(spark), (USERS, MERCHANTS), with_dead_letters=False, event_id="transaction_id")
    got = {r["eid"]: r["wend"].timestamp() for r in ev.select("eid", "wend").collect()}
    # 300 s tiles: 1000 -> [900, 1200); 1010 -> [900, 1200); 2500 clamped to 2000 -> [1800, 2100)
    assert got == {"a": 1200.0, "b": 1200.0, "c": 2100.0}


def test_tile_rows_per_view_keep_event_times_only_for_views_that_need_them(spark):
    views = (USERS, MERCHANTS)
    rows = view_rows(event_rows(_events(spark), views, with_dead_letters=False), views, with_dead_letters=False)
    got = sorted((r["vid"], r["k"], r["tile"] // S, r["ts_us"] // S, r["ts_times"], r["wend"].timestamp())
                 for r in rows.collect())
    assert got == [
        (0, 1, 960, 1000, 1000 * S, 1200.0), (0, 1, 960, 1010, 1010 * S, 1200.0), (0, 2, 2460, 2500, 2500 * S, 2100.0),
        (1, 7, 900, 1000, None, 1200.0), (1, 7, 900, 1010, None, 1200.0), (1, 7, 2400, 2500, None, 2100.0),
    ]
    tiles = {(r["vid"], r["k"], r["tile"] // S): r for r in tile_aggregation(rows, views).collect()}
    assert sorted(tiles[(0, 1, 960)]["ts"]) == [1000 * S, 1010 * S]
    assert tiles[(1, 7, 900)]["c__amount"] == 2
    assert list(tiles[(1, 7, 900)]["ts"]) == []  # a merchant's tile collects no event times
    assert tiles[(1, 7, 900)]["last"] == 1010 * S


def test_a_longer_window_alone_hands_over_and_seeds_the_view(tmp_path):
    """A definition change that keeps the measures but lengthens the longest window needs tiles older than
    Redis kept: a new state schema id, a hand-over at the committed offsets and a seed of that view only."""
    from streaming.evolution import plan, save_lineage
    from streaming.feature_specs import AggSpec, ViewSpec
    from streaming.state_schema import schema_id

    hour = 3_600_000_000
    users = ViewSpec("users", "user_id", (AggSpec("n_1h", "count", "amount", hour),), "unused", ("n_1h",))
    merchants = ViewSpec("merchants", "merchant_id", (AggSpec("m_1h", "count", "amount", hour),), "unused", ("m_1h",))
    longer = ViewSpec("users", "user_id", (AggSpec("n_1h", "count", "amount", 2 * hour),), "unused", ("n_1h",))
    before, after = (users, merchants), (longer, merchants)
    sid = schema_id(before, "transaction_id")
    first = plan(tmp_path, before, sid)
    save_lineage(tmp_path, first.lineage)
    offsets = '{"transactions":{"0":42}}'
    run = tmp_path / f"spark-{sid}"
    (run / "commits").mkdir(parents=True)
    (run / "offsets").mkdir()
    (run / "commits" / "0").write_text("v1\n{}\n")
    (run / "offsets" / "0").write_text(f"v1\n{{}}\n{offsets}\n")
    again = plan(tmp_path, before, sid)  # the same definitions: resume, nothing seeded
    assert (again.starting_offsets, again.seed_views) == (None, ())

    new_sid = schema_id(after, "transaction_id")
    assert new_sid != sid
    p = plan(tmp_path, after, new_sid)
    assert p.starting_offsets == offsets
    assert [v.name for v in p.seed_views] == ["users"]
    assert p.epochs["users"] == {new_sid.encode(), b"seed-" + new_sid.encode()}  # the old tiles are not merged
    assert p.epochs["merchants"] == {sid.encode(), new_sid.encode()}  # untouched: its state is kept


def test_string_keys_are_kept_beside_their_hash_and_integer_layouts_keep_their_schema(spark):
    """A string-keyed view's rows carry the key itself (``ks``) beside its 64-bit hash (``k``) and its tiles
    are grouped by it; other views' rows of the same job carry a null ``ks``. Without a string-keyed view
    there is no ``ks`` column and the state schema id is what it was."""
    from dataclasses import replace

    from pyspark.sql import functions as F

    from streaming.state_schema import schema_id

    by_id = replace(MERCHANTS, name="by_id", join_key="transaction_id", string_key=True)
    views = (USERS, by_id)
    rows = view_rows(event_rows(_events(spark), views, with_dead_letters=False), views, with_dead_letters=False)
    rows = rows.withColumn("hash", F.xxhash64(F.col("ks")))
    got = sorted((r["vid"], r["ks"], r["k"] == r["hash"] if r["ks"] else r["k"]) for r in rows.collect())
    assert got == [(0, None, 1), (0, None, 1), (0, None, 2), (1, "a", True), (1, "b", True), (1, "c", True)]
    tiles = tile_aggregation(rows.drop("hash"), views)
    assert "ks" in tiles.columns and sorted(r["ks"] for r in tiles.where("vid = 1").collect()) == ["a", "b", "c"]

    plain = view_rows(event_rows(_events(spark), (USERS, MERCHANTS), with_dead_letters=False), (USERS, MERCHANTS),
                      with_dead_letters=False)
    assert "ks" not in plain.columns
    assert schema_id((USERS, MERCHANTS)) != schema_id((USERS, replace(MERCHANTS, string_key=True)))
    assert schema_id((USERS, MERCHANTS), "transaction_id") == "61dfff3fe312"  # the id before string keys existed
