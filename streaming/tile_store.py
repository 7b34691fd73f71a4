"""Tiles in Redis, written and merged on the executors (one hash per view and entity).

Key: ``rtml:tiles:<view>:`` + the entity's Feast Redis key (built by the online writer's encoder).
Field: ``<tile start us>:<watermark tile end us>`` (the second part only differs for an event stamped
in the future, whose watermark time is clamped to processing time). Value: the tile's measures as
JSON, the *absolute* value Spark's state store holds for that tile, so writing it again (a replayed
micro-batch) changes nothing.

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


def decode_tiles(fields: dict[bytes, bytes]) -> dict[int, dict]:
    """{tile start: measures} of a stored hash (sub-tiles of the same start combined)."""
    tiles: dict[int, dict] = {}
    for f, v in fields.items():
        start = int(f.split(b":", 1)[0])
        tile = json.loads(v)
        tiles[start] = combine(tiles[start], tile) if start in tiles else combine({}, tile)
    return tiles


def write_view_partition(spec: ViewSpec, rows: pd.DataFrame, client, writer, ttl_s: int) -> tuple[int, int]:
    """Write the updated tiles of one view in ``rows`` (k, tile, wend_us, measure columns), merge, upsert.

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
        field = b"%d:%d" % (int(rec["tile"]), int(rec["wend_us"]))
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
        tiles = decode_tiles(raw)
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
