"""Definitions that evolve without a reset: state schema lineage, hand-over offsets and seeding.

The stream job's Spark state layout depends on its views (keys, tile sizes, measures). Each layout has an
id (:func:`streaming.state_schema.schema_id`) and its own checkpoint folder ``spark-<id>``; the job's
``lineage.json`` lists the layouts it ran with. When ``feast apply`` changed the stream views:

1. the new query starts at the Kafka offsets the previous query committed (no event read twice, none
   skipped) in a new checkpoint folder; nothing is deleted;
2. views whose definition changed in a way tiles depend on (new view, new measure or column, tile size,
   longer window, the roll-up layout; each is part of the state schema id) are *seeded*: the previous
   events still in Kafka are read as a batch (up to those offsets) and turned into tiles with the
   backfill's tile code, written under epoch ``seed-<id>``;
3. for those views the online merge then uses only the seed and the new query's tiles; untouched views
   keep combining the tiles of every earlier epoch with the new ones (disjoint offsets), so their
   state is kept and nothing is counted twice.

Changing an aggregation that reuses existing measures within the same longest window (e.g. a new
function over a column already summed, a shorter window) touches no tile: no seeding needed, and the
state schema id stays the same. The lineage also records each view's features
(:func:`features_fingerprint`); a view whose features changed is *re-merged* before the query starts:
every entity with a tile hash gets its Feast row again from its stored tiles, as of its latest event
(:func:`streaming.tile_store.remerge_entities`, on the executors), so a quiet entity serves the new
features now rather than at its next event.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from streaming.feature_specs import ViewSpec
from streaming.state_schema import drop_duplicate_history, tile_aggregation, tile_rows
from streaming.tiles import rollup_layout, view_measures

log = logging.getLogger(__name__)


def view_fingerprint(view: ViewSpec) -> str:
    """What a view's tiles depend on (a change seeds the view)."""
    layout = [view.name, view.join_key, view.tile_us, view.max_window_us, [m.name for m in view_measures(view)]]
    if rollup_layout(view):  # only then: views without roll-ups keep their fingerprint
        layout.append(rollup_layout(view))
    return hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:12]


def features_fingerprint(view: ViewSpec) -> str:
    """What a view's features are computed as from its tiles (a change re-merges the view)."""
    aggs = [[a.name, a.function, a.column, a.window_us, view.tile_of(a)] for a in view.aggs]
    return hashlib.sha256(json.dumps([aggs, list(view.feature_names)]).encode()).hexdigest()[:12]


@dataclass
class Plan:
    sid: str
    starting_offsets: str | None  # Kafka offsets JSON to start a new layout's query at (None: option's default)
    seed_views: tuple[ViewSpec, ...]  # views to seed from the events before those offsets
    epochs: dict[str, frozenset[bytes]]  # view -> tile epochs its online merge combines
    lineage: list[dict]
    remerge_views: tuple[ViewSpec, ...] = ()  # views whose features changed over unchanged tiles


def _load(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def committed_offsets(spark_checkpoint: Path) -> str | None:
    """The end offsets (Kafka source JSON) of the last committed micro-batch of a query checkpoint."""
    commits = spark_checkpoint / "commits"
    ids = sorted(int(p.name) for p in commits.iterdir() if p.name.isdigit()) if commits.exists() else []
    if not ids:
        return None
    lines = (spark_checkpoint / "offsets" / str(ids[-1])).read_text().splitlines()
    return lines[2] if len(lines) > 2 else None


def plan(checkpoint: Path, views: tuple[ViewSpec, ...], sid: str) -> Plan:
    """What a start with layout ``sid`` needs: resume, start fresh, or hand over from the previous layout."""
    lineage = _load(checkpoint / "lineage.json")
    fps = {v.name: view_fingerprint(v) for v in views}
    features = {v.name: features_fingerprint(v) for v in views}
    if lineage and lineage[-1]["sid"] == sid:
        last = lineage[-1]
        remerge = _features_changed(last, views, features)
        last["features"] = features  # saved once the query started (a crash before re-merges again)
        return Plan(sid, None, (), _epochs(lineage, views), lineage, remerge)
    entry = {"sid": sid, "views": fps, "features": features, "seeded": []}
    if not lineage:
        return Plan(sid, None, (), _epochs([entry], views), [entry])
    previous = lineage[-1]
    offsets = committed_offsets(checkpoint / f"spark-{previous['sid']}")
    seed = tuple(v for v in views if previous["views"].get(v.name) != fps[v.name]) if offsets else ()
    entry["seeded"] = [v.name for v in seed]
    entry["starting_offsets"] = offsets
    new = [*lineage, entry]
    remerge = tuple(v for v in _features_changed(previous, views, features) if v not in seed)
    return Plan(sid, offsets, seed, _epochs(new, views), new, remerge)


def _features_changed(entry: dict, views: tuple[ViewSpec, ...], features: dict[str, str]) -> tuple[ViewSpec, ...]:
    """Views whose recorded features differ from ``features`` (a lineage entry without any: none)."""
    known = entry.get("features") or {}
    return tuple(v for v in views if v.name in known and known[v.name] != features[v.name])


def _epochs(lineage: list[dict], views: tuple[ViewSpec, ...]) -> dict[str, frozenset[bytes]]:
    """Per view: the epochs since its fingerprint last changed (with that change's seed)."""
    out = {}
    for v in views:
        allowed: set[bytes] = set()
        fp = lineage[-1]["views"].get(v.name)
        for entry in reversed(lineage):
            if entry["views"].get(v.name) != fp:
                break
            allowed.add(entry["sid"].encode())
            if v.name in entry.get("seeded", []):
                allowed.add(b"seed-" + entry["sid"].encode())
                break
        out[v.name] = frozenset(allowed)
    return out


def save_lineage(checkpoint: Path, lineage: list[dict]) -> None:
    path = checkpoint / "lineage.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(lineage, indent=1))
    tmp.replace(path)


def seed(spark, p: Plan, topic: str, bootstrap: str, rules, online) -> dict[str, int]:
    """Tiles of the seeded views from the events in Kafka before the hand-over offsets (backfill tile code)."""
    from pyspark.sql import functions as F

    from streaming.parsing import parse_events
    from streaming.tile_store import tile_ttl_s, write_view_rows

    if not p.seed_views:
        return {}
    from core.kafka_io import spark_kafka_options

    raw = (spark.read.format("kafka").options(**spark_kafka_options("stream", bootstrap)).option("subscribe", topic)
           .option("startingOffsets", "earliest").option("endingOffsets", p.starting_offsets)
           .option("failOnDataLoss", "false").load())
    cols = sorted({v.join_key for v in p.seed_views} | {c for v in p.seed_views for c in v.value_columns}
                  - {"event_timestamp"})
    from core.contracts import event_id_field

    eid = event_id_field(rules)
    events = parse_events(raw, rules, keep_columns=tuple(sorted({*cols, eid}))).where(
        F.col("dlq_reason").isNull()).drop("batch_us")
    events = drop_duplicate_history(events.select(eid, "event_us", *[c for c in cols if c != eid]), eid)  # as the stream job: once per id
    epoch = b"seed-" + p.sid.encode()
    out = {}
    for view in p.seed_views:
        tiles = tile_aggregation(tile_rows(events, (view,), with_dead_letters=False), (view,))
        tiles = tiles.withColumn("wend_us", F.unix_micros("wend")).drop("wend")
        allowed = p.epochs[view.name]
        ttl_s = tile_ttl_s(view.max_window_us)

        def run(frames, view=view, allowed=allowed, ttl_s=ttl_s):
            import pandas as pd

            parts = [f for f in frames if len(f)]
            if not parts:
                return
            try:
                # entities merged a bounded number at a time, as the stream writer and the backfill do
                n, rows = write_view_rows(view, pd.concat(parts, ignore_index=True), online, ttl_s, epoch, allowed)
            finally:
                online.close()
            yield pd.DataFrame({"tiles": [n], "rows": [rows]})

        done = tiles.repartition(max(spark.sparkContext.defaultParallelism, 1), "k").mapInPandas(
            run, "tiles long, rows long").collect()
        out[view.name] = int(sum(r["tiles"] for r in done))
    log.info("seeded %s from the events before %s", out, p.starting_offsets)
    return out


def remerge(spark, p: Plan, online) -> dict[str, int]:
    """The Feast rows of the re-merged views written again from their stored tiles (no event read): the ids of
    the entities with a tile hash are listed on the driver (SCAN), their tiles merged on the executors. An
    entity whose latest event is older than the view's TTL is left alone. Returns the rows written per view."""
    import time

    import numpy as np
    import pandas as pd

    from streaming.tile_store import MAX_ENTITIES_PER_WRITE, remerge_entities, stored_entities, tile_ttl_s

    out = {}
    for view in p.remerge_views:
        ids = np.unique(np.concatenate([np.zeros(0, object if view.string_key else np.int64),
                                        *stored_entities(online, view)]))
        ttl = online.view(view.name).ttl_s
        not_before = int((time.time() - ttl) * 1e6) if ttl else None
        allowed, ttl_s = p.epochs[view.name], tile_ttl_s(view.max_window_us)

        def run(frames, view=view, allowed=allowed, ttl_s=ttl_s, not_before=not_before):
            rows = 0
            try:
                for frame in frames:
                    ks = frame["k"].to_numpy(object if view.string_key else np.int64)
                    for lo in range(0, len(ks), MAX_ENTITIES_PER_WRITE):
                        rows += remerge_entities(view, ks[lo : lo + MAX_ENTITIES_PER_WRITE], online, ttl_s, allowed,
                                                 not_before)
            finally:
                online.close()
            yield pd.DataFrame({"rows": [rows]})

        if len(ids):
            done = spark.createDataFrame(pd.DataFrame({"k": ids})).repartition(
                max(spark.sparkContext.defaultParallelism, 1), "k").mapInPandas(run, "rows long").collect()
            out[view.name] = int(sum(r["rows"] for r in done))
        else:
            out[view.name] = 0
    log.info("re-merged %s (features changed, tiles unchanged)", out)
    return out
