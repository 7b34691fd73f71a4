"""Tiles in Redis, written and merged on the executors (one hash per view and entity).

Key: ``rtml:tiles:<view>:`` + the entity's Feast Redis key (built by the online writer's encoder).
Field: ``<tile start us>:<watermark tile end us>:<epoch>`` (the second part only differs for an event
stamped in the future, whose watermark time is clamped to processing time; the epoch is the state
schema id of the query that wrote it, ``seed-<id>`` for tiles seeded from history when that schema
started, ``bf`` for a backfill). Value: the tile's measures as JSON, the *absolute* value Spark's state
store holds for that tile, so writing it again (a replayed micro-batch) changes nothing. Fields of
different epochs of a view hold disjoint events (a new schema's query starts at the offsets where the
previous one stopped) and are combined; epochs from before a view's last definition change are ignored.

After writing a partition's tiles, each touched entity's hash is read back, its features are merged
with :func:`streaming.tiles.features_from_tiles` and written in Feast's format through the
forward-only :class:`streaming.online_writer.PipelinedOnlineWriter`. Tiles older than the longest
window are deleted; the hash expires if the entity goes quiet.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pandas as pd

from streaming.feature_specs import ViewSpec
from streaming.tiles import combine, decimal_units, features_from_tiles, view_measures

PREFIX = b"rtml:tiles:"


def tile_keys(writer, spec: ViewSpec, keys: np.ndarray) -> list[bytes]:
    prefix = PREFIX + spec.name.encode() + b":"
    return [prefix + k for k in writer.redis_keys(spec.join_key, keys)]


def tile_measures(row, measures) -> dict:
    """One tile row of the Spark aggregation as plain values (exact sums as integers of 1e-10 units)."""
    out = {}
    for m in measures:
        v = row[m.name]
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        if m.kind in ("s", "q"):
            out[m.name] = decimal_units(v)
        elif m.kind in ("c", "last"):
            out[m.name] = int(v)
        elif m.kind in ("mn", "mx"):
            out[m.name] = float(v)
        else:  # sets
            out[m.name] = sorted(v.tolist() if isinstance(v, np.ndarray) else list(v))
    return out


def encode_tile(row, measures) -> bytes:
    """JSON of one tile row (see :func:`tile_measures`)."""
    return json.dumps(tile_measures(row, measures), separators=(",", ":")).encode()


BACKFILL_EPOCH = b"bf"


def decode_tiles(fields: dict[bytes, bytes], epochs: frozenset[bytes] | None = None) -> dict[int, dict]:
    """{tile start: measures} of a stored hash: sub-tiles of the same start combined, over the allowed
    ``epochs`` (None: all). A backfill tile counts only where no stream epoch has that tile start."""
    stream: dict[int, dict] = {}
    backfill: dict[int, dict] = {}
    for f, v in fields.items():
        start_b, _wend, epoch = (f.split(b":", 2) + [b""])[:3]
        into = backfill if epoch == BACKFILL_EPOCH else stream
        if epochs is not None and epoch not in epochs and epoch != BACKFILL_EPOCH:
            continue
        start = int(start_b)
        into[start] = combine(into.get(start, {}), json.loads(v))
    for start, tile in backfill.items():
        stream.setdefault(start, tile)
    return stream


def write_view_partition(spec: ViewSpec, rows: pd.DataFrame, client, writer, ttl_s: int, epoch: bytes = BACKFILL_EPOCH,
                         epochs: frozenset[bytes] | None = None) -> tuple[int, int]:
    """Write the updated tiles of one view in ``rows`` (k, tile, wend_us, measure columns) under ``epoch``,
    merge each entity's tiles of the allowed ``epochs`` and upsert its Feast row.

    Returns (tiles written, feature rows written).
    """
    if rows.empty:
        return 0, 0
    measures = view_measures(spec)
    keys = rows["k"].to_numpy(np.int64)
    uniq, inverse = np.unique(keys, return_inverse=True)
    hkeys = tile_keys(writer, spec, uniq)
    fields: dict[int, dict[bytes, bytes]] = defaultdict(dict)
    records = rows.to_dict("records")
    for i, rec in enumerate(records):
        field = b"%d:%d:%s" % (int(rec["tile"]), int(rec["wend_us"]), epoch)
        fields[int(inverse[i])][field] = encode_tile(rec, measures)
    pipe = client.pipeline(transaction=False)
    for j, mapping in fields.items():
        pipe.hset(hkeys[j], mapping=mapping)
        pipe.expire(hkeys[j], ttl_s)
    pipe.execute()
    for j in range(len(uniq)):
        pipe.hgetall(hkeys[j])
    stored = pipe.execute()
    out_keys, out_ts, values = [], [], defaultdict(list)
    stale = []
    for j, raw in enumerate(stored):
        tiles = decode_tiles(raw, epochs)
        if not tiles:
            continue
        latest, feats = features_from_tiles(spec, tiles)
        out_keys.append(int(uniq[j]))
        out_ts.append(latest)
        for name, v in feats.items():
            values[name].append(v)
        horizon = (latest // spec.tile_us) * spec.tile_us + spec.tile_us - spec.max_window_us
        old = [f for f in raw if int(f.split(b":", 1)[0]) < horizon]
        if old:
            stale.append((hkeys[j], old))
    for key, old in stale:
        pipe.hdel(key, *old)
    if stale:
        pipe.execute()
    frame = pd.DataFrame({spec.join_key: np.asarray(out_keys, np.int64), "event_timestamp": np.asarray(out_ts, np.int64)})
    for agg in spec.aggs:
        col = np.asarray(values[agg.name], dtype=np.float64)
        frame[agg.name] = col.astype(np.int64) if agg.is_int else col
    written = writer.write(spec, frame)
    return len(records), written
