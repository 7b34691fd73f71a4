"""The tile rows and the tile aggregation in Spark, and the versioned schema of the state they keep.

Used by the stream job (streaming, state in the RocksDB state store) and by the backfill (batch): the
same rows, the same aggregate expressions (:func:`streaming.tiles.spark_measure`).

Stream records first become *event rows* (:func:`event_rows`: the parsed columns plus ``wend``, the
watermark column, the end of the coarsest view tile holding min(event time, processing time), and ``eid``,
the event's id, ``dlq:<partition>:<offset>`` for a dead letter), where :func:`drop_duplicate_events` drops
a second copy of an event once, before anything is per view. :func:`view_rows` then splits each into the
tile rows (one per view and valid event; one per dead letter): ``vid`` (view index, -1 for a dead letter),
``k`` (entity key; of a string key its 64-bit hash), ``ks`` (a string key itself, null for other views; the
column exists only if some view has a string key, so integer-keyed layouts keep their schema), ``tile`` (tile start, us), ``ts_us`` (event time), ``ts_times`` (the event time again
for views that keep event times, else null), ``v__<column>`` (the event columns a view reads, null for
columns it does not), ``dlq`` (dead letters only) and ``wend``, passed through so it keeps its watermark.

The state schema id hashes everything the state layout depends on (format version, views, keys, tile
sizes, measures), and each view's longest window, which bounds the tile history kept in Redis (a longer
window needs older tiles: a seed, under a new id). A change gives a new Spark checkpoint folder; see
:mod:`streaming.stream_job` and :mod:`streaming.evolution`.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from streaming.feature_specs import ViewSpec
from streaming.tiles import EVENT_TIMES_COLUMN, Measure, rollup_layout, spark_measure, view_measures

STATE_FORMAT_VERSION = 3  # 2: duplicate events dropped by event id before the tile aggregation; 3: once per
# event (not per view), the watermark column the end of the coarsest view tile
VALUE_PREFIX = "v__"
DLQ_TILE_US = 60_000_000


def all_measures(views: tuple[ViewSpec, ...]) -> tuple[Measure, ...]:
    found: dict[str, Measure] = {}
    for v in views:
        for m in view_measures(v):
            found[m.name] = m
    return tuple(found[k] for k in sorted(found))


def value_columns(views: tuple[ViewSpec, ...]) -> tuple[str, ...]:
    return tuple(sorted({c for v in views for c in v.value_columns}))


def schema_id(views: tuple[ViewSpec, ...], event_id: str | None = None) -> str:
    layout = {
        "format": STATE_FORMAT_VERSION,
        "event_id": event_id,
        "views": [[v.name, v.join_key, v.tile_us] for v in views],
        "windows": {v.name: v.max_window_us for v in views},
        "measures": [m.name for m in all_measures(views)],
        "columns": list(value_columns(views)),
    }
    strings = [v.name for v in views if v.string_key]
    if strings:  # only then (the ``ks`` column)
        layout["string_keys"] = strings
    rollups = {v.name: rollup_layout(v) for v in views if rollup_layout(v)}
    if rollups:  # only then: the ids of layouts without roll-ups stay as they were
        layout["rollups"] = rollups
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()[:12]


def _tile_end(time_us, tile_us: int):
    from pyspark.sql import functions as F

    return F.timestamp_micros((F.floor(time_us / F.lit(tile_us)) + 1) * F.lit(tile_us))


def event_rows(events, views: tuple[ViewSpec, ...], with_dead_letters: bool = True, event_id: str | None = None):
    """Parsed events (see :func:`streaming.parsing.parse_events`) plus the two columns every record needs before
    it is split per view: ``wend`` (the watermark column: end of the coarsest view tile holding min(event time,
    processing time); a dead letter's own) and, with an ``event_id`` field, ``eid`` (the event's id,
    ``dlq:<partition>:<offset>`` for a dead letter). Duplicates are dropped on these rows, once per event."""
    from pyspark.sql import functions as F

    tile_us = max(v.tile_us for v in views)
    clamp = F.least(F.col("event_us"), F.col("batch_us")) if "batch_us" in events.columns else F.col("event_us")
    wend = _tile_end(clamp, tile_us)
    eid = F.col(event_id).cast("string") if event_id is not None else None
    if with_dead_letters:
        # A dead letter's event time: its Kafka record's (see streaming.parsing), not the batch's clock.
        bad = F.col("dlq_reason").isNotNull()
        wend = F.when(bad, _tile_end(_letter_us(events), DLQ_TILE_US)).otherwise(wend)
        if eid is not None:
            eid = F.when(bad, F.concat(F.lit("dlq:"), F.col("partition").cast("string"), F.lit(":"),
                                       F.col("offset").cast("string"))).otherwise(eid)
    return events.select("*", wend.alias("wend"), *([eid.alias("eid")] if eid is not None else []))


def _letter_us(events):
    from pyspark.sql import functions as F

    return F.coalesce(F.col("letter_us"), F.col("batch_us")) if "letter_us" in events.columns else F.col("batch_us")


def view_rows(events, views: tuple[ViewSpec, ...], with_dead_letters: bool = True):
    """:func:`event_rows` -> one row per view and valid event (one per dead letter): the tile aggregation's input.
    ``wend`` passes through untouched, so it keeps its watermark."""
    from pyspark.sql import functions as F

    cols = value_columns(views)
    types = {c: events.schema[c].dataType for c in cols}
    dlq_type = "struct<reason:string,field:string,raw_base64:string,source_topic:string,partition:int,offset:bigint>"
    strings = any(v.string_key for v in views)
    elements = []
    for i, v in enumerate(views):
        key = F.col(v.join_key)
        fields = [
            F.lit(i).alias("vid"),
            (F.xxhash64(key.cast("string")) if v.string_key else key.cast("bigint")).alias("k"),
            *([(key.cast("string") if v.string_key else F.lit(None).cast("string")).alias("ks")] if strings else []),
            (F.floor(F.col("event_us") / F.lit(v.tile_us)) * F.lit(v.tile_us)).cast("bigint").alias("tile"),
            F.col("event_us").alias("ts_us"),
            (F.col("event_us") if any(m.kind == "ts" for m in view_measures(v)) else F.lit(None).cast("bigint")
             ).alias(EVENT_TIMES_COLUMN),
        ]
        fields += [(F.col(c) if c in v.value_columns else F.lit(None).cast(types[c])).alias(VALUE_PREFIX + c)
                   for c in cols]
        fields.append(F.lit(None).cast(dlq_type).alias("dlq"))
        elements.append(F.struct(*fields))
    if not with_dead_letters:
        return events.select("wend", F.explode(F.array(*elements)).alias("r")).select("r.*", "wend")
    letter = F.struct(
        F.lit(-1).alias("vid"), F.col("offset").cast("bigint").alias("k"),
        *([F.lit(None).cast("string").alias("ks")] if strings else []), F.col("partition").cast("bigint").alias("tile"),
        _letter_us(events).alias("ts_us"), F.lit(None).cast("bigint").alias(EVENT_TIMES_COLUMN),
        *[F.lit(None).cast(types[c]).alias(VALUE_PREFIX + c) for c in cols],
        F.struct(F.col("dlq_reason").alias("reason"), F.col("dlq_field").alias("field"),
                 F.col("raw_base64"), F.col("source_topic"), F.col("partition").cast("int").alias("partition"),
                 F.col("offset").cast("bigint").alias("offset")).alias("dlq"),
    )
    bad = F.col("dlq_reason").isNotNull()
    return events.select("wend", F.explode(F.when(bad, F.array(letter)).otherwise(F.array(*elements))).alias("r")
                         ).select("r.*", "wend")


def tile_rows(events, views: tuple[ViewSpec, ...], with_dead_letters: bool = True):
    """Parsed events -> one row per view (and dead letter): :func:`view_rows` of :func:`event_rows` (batch jobs)."""
    return view_rows(event_rows(events, views, with_dead_letters), views, with_dead_letters)


def drop_duplicate_events(events):
    """Event rows (:func:`event_rows` with ``eid``, under a watermark on ``wend``) without a second record of the
    same event id: an event sent twice is counted once, before it is split per view. Bounded state: an id is kept
    until the watermark passes its tile end plus the watermark delay; a copy arriving after that is older than
    the watermark, dropped as late."""
    return events.dropDuplicatesWithinWatermark(["eid"])


def drop_duplicate_history(events, event_id: str):
    """Batch events (backfill, seeding) with one row per event id: the earliest event time, then the smallest
    row (a deterministic pick among copies)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy(event_id).orderBy(F.col("event_us"), *[F.col(c) for c in events.columns if c != event_id])
    return events.withColumn("_copy", F.row_number().over(order)).where(F.col("_copy") == 1).drop("_copy")


def tile_aggregation(rows, views: tuple[ViewSpec, ...], keys: tuple[str, ...] = ("vid", "k", "tile", "wend"),
                     extra: list | None = None):
    """``groupBy(keys).agg(measures)``: the tile measures of every view (and the dead letter, if any); rows with
    string keys (``ks``) are grouped by it too."""
    from pyspark.sql import functions as F

    if "ks" in rows.columns and "ks" not in keys:
        keys = (*keys, "ks")

    aggs = [spark_measure(m, VALUE_PREFIX) for m in all_measures(views)] + list(extra or [])
    if "dlq" in rows.columns:
        aggs.append(F.first("dlq", ignorenulls=True).alias("dlq"))
    return rows.groupBy(*keys).agg(*aggs)


def entity_values(spec: ViewSpec, rows) -> np.ndarray:
    """The entity of each tile row of ``spec`` (pandas): int64 ids, or the strings of a string-keyed view."""
    if spec.string_key:
        return rows["ks"].to_numpy(object)
    return rows["k"].to_numpy(np.int64)
