"""Tiles in Redis, written and merged on the executors (one hash per view and entity).

Key: ``rtml:tiles:<view>:`` + the entity's Feast Redis key (built by the online writer's encoder).
Field: ``<tile start us>:<watermark tile end us>:<epoch>`` (the second part only differs for an event
stamped in the future, whose watermark time is clamped to processing time; the epoch is the state
schema id of the query that wrote it, ``seed-<id>`` for tiles seeded from history when that schema
started, ``bf-<layout>`` for a backfill: :func:`backfill_epoch`, so a backfill under other definitions is ignored). Value: the tile's measures as a JSON list (one value per measure, in :func:`streaming.tiles.view_measures` order), the *absolute* value Spark's state
store holds for that tile (of its distinct event times only the two newest, :data:`TS_KEPT`), so writing it
again (a replayed micro-batch) changes nothing. Fields of
different epochs of a view hold disjoint events (a new schema's query starts at the offsets where the
previous one stopped) and are combined; epochs from before a view's last definition change are ignored.

After writing a partition's tiles, each touched entity's hash is read back, its features are merged
with :func:`streaming.tiles.features_from_tiles` and written in Feast's format through the
forward-only :meth:`core.online_store.OnlineStore.write`. Tiles older than every window are deleted; the
hash expires if the entity goes quiet.

Roll-ups (a view whose aggregations use different tiles, e.g. minute tiles for hour windows and hour tiles
for day windows): the stream job folds an entity's stored tiles that are older than every finer aggregation's
window as of its latest event (only the coarsest aggregations still read them) and final (no event that old
can arrive any more: the next watermark is past them) into one field per coarsest-tile span
(:attr:`~streaming.feature_specs.ViewSpec.rollup_us`): ``<span start>:r<until>:<epoch>``, the merged measures
(:func:`_combined`) of the span's tiles before ``until``. As minutes age out, the span's field is rewritten
under a later ``until`` with them folded in. The rolled-up field of an allowed epoch covering the most
replaces the span's other rolled-up fields and every tile before its ``until``: a replayed micro-batch
rewriting an old minute tile changes nothing (the tile is ignored and deleted), and a crash between writing a
new rolled-up field and deleting what it replaces counts nothing twice. A busy entity so keeps one finer
window of fine tiles plus one tile per coarse span of the longest window, not one per fine tile of the day.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import ujson

from streaming.feature_specs import ViewSpec
from streaming.state_schema import entity_values
from streaming.tiles import TileColumns, decimal_units, merge_entities, oldest_start, rolled_measures, view_measures

PREFIX = b"rtml:tiles:"
# Event times kept per stored tile: ``seconds_since_previous`` is read only as of the entity's latest event
# ``t`` (the maximum over its tiles), and in any tile the latest time before ``t`` is its newest or its second
# newest distinct time; the union of two tiles' kept times keeps that true (epochs, the backfill).
TS_KEPT = 2
BACKFILL = b"bf"  # a backfill's tiles: epoch ``bf-<layout>`` (:func:`backfill_epoch`); a bare ``bf`` is from before layouts
ROLLED = b"r"  # a rolled-up tile's field: ``r<until>`` in the middle (instead of its watermark tile end)
MAX_ENTITIES_PER_WRITE = 2_000  # entities whose tiles are merged at once (all their stored tiles are read back)


def backfill_epoch(spec: ViewSpec) -> bytes:
    """The epoch of a view's backfill tiles, ``bf-<layout>`` (stored tile size and measures): tiles a backfill wrote
    under other definitions are never decoded as this layout (they are ignored until they age out)."""
    layout = [spec.tile_us, [m.name for m in view_measures(spec)]]
    return BACKFILL + b"-" + hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:8].encode()


def _is_backfill(epoch: bytes) -> bool:
    return epoch == BACKFILL or epoch.startswith(BACKFILL + b"-")  # stream epochs are hex ids, seeds ``seed-<id>``


def tile_ttl_s(max_window_us: int) -> int:
    """Expiry of a tile hash (refreshed on every write): twice the longest window plus an hour."""
    return int(2 * max_window_us / 1e6) + 3600


def tile_keys(writer, spec: ViewSpec, keys: np.ndarray) -> list[bytes]:
    prefix = PREFIX + spec.name.encode() + b":"
    return [prefix + k for k in writer.redis_keys(spec.name, keys)]


def write_and_read(online, keys: list[bytes], fields: list[dict[bytes, bytes]], ttl_s: int) -> list[dict[bytes, bytes]]:
    """Write each key's fields (absolute tile values) and read its whole hash back, routed by hash slot
    through the online store (:meth:`core.online_store.OnlineStore.write_tiles`: one Redis, a cluster or Sentinel)."""
    return online.write_tiles(keys, fields, ttl_s)


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


def _encoded_columns(rows: pd.DataFrame, measures) -> list[list]:
    """Per measure, the column of ``rows`` as JSON-ready values (sums as decimal strings: any size)."""
    cols = []
    for m in measures:
        col = rows[m.name].tolist()
        if m.kind in ("s", "q"):
            cols.append([None if v is None else str(decimal_units(v)) for v in col])
        elif m.kind in ("c", "last"):
            cols.append([None if v is None or v != v else int(v) for v in col])
        elif m.kind in ("mn", "mx"):
            cols.append([None if v is None or v != v else float(v) for v in col])
        else:  # sets; of the event times only the two latest (TS_KEPT): state per tile stays O(1)
            keep = -TS_KEPT if m.kind == "ts" else 0
            cols.append([None if v is None else sorted(v.tolist() if isinstance(v, np.ndarray) else v)[keep:] for v in col])
    return cols


def _columns(measures, ent: np.ndarray, start: np.ndarray, decoded: list[list], n: int) -> TileColumns:
    """:class:`TileColumns` from rows already sorted by (entity, tile start) and their decoded measure lists."""
    by_measure = list(zip(*decoded, strict=True)) if decoded else [() for _ in measures]
    values: dict[str, object] = {}
    for m, col in zip(measures, by_measure, strict=True):
        if m.kind in ("c", "last"):  # None -> 0 (float64 holds these integers exactly: counts, us < 2**53)
            values[m.name] = np.nan_to_num(np.array(col, dtype=np.float64), nan=0.0).astype(np.int64)
        elif m.kind in ("mn", "mx"):
            values[m.name] = np.array(col, dtype=np.float64)  # None -> NaN
        elif m.kind in ("s", "q"):
            values[m.name] = [0 if v is None else int(v) for v in col]
        else:
            values[m.name] = [() if v is None else v for v in col]
    return TileColumns(ent, start, values, n)


def _read_back(stored: list[dict[bytes, bytes]], epochs: frozenset[bytes] | None, rollup_us: int, bf_epoch: bytes):
    """Every stored field of the entities' hashes: (entity index, tile start, field name, rolled-up?) per field,
    the indices of the fields to merge, in (entity, start) order, and a mask of the fields a rolled-up tile
    replaces. A field is merged if its epoch is allowed (``epochs``; None: any but a backfill's) or it is a tile of
    the view's current backfill layout (``bf_epoch``) that no merged stream tile of the same start replaces, and no
    merged rolled-up tile covers its start. Of a span's rolled-up tiles of allowed epochs, the one covering the
    most replaces the others (it holds them)."""
    counts = [len(r) for r in stored]
    names = [f for r in stored for f in r]
    ent = np.repeat(np.arange(len(stored), dtype=np.int64), counts)
    parts = [f.split(b":", 2) for f in names]
    start = np.array([int(x[0]) for x in parts], dtype=np.int64)
    rolled = np.fromiter((x[1][:1] == ROLLED for x in parts), dtype=bool, count=len(parts))
    eps = [x[2] if len(x) > 2 else b"" for x in parts]
    is_bf = np.fromiter((e == bf_epoch for e in eps), dtype=bool, count=len(eps))
    any_bf = np.fromiter((_is_backfill(e) for e in eps), dtype=bool, count=len(eps))
    stream = ~any_bf if epochs is None else np.fromiter((e in epochs for e in eps), dtype=bool, count=len(eps)) & ~any_bf
    shadowed = np.zeros(len(names), dtype=bool)
    if rolled.any():
        idx = np.flatnonzero(rolled)
        until = np.array([_rolled_until(parts[i][1], start[i], rollup_us) for i in idx.tolist()], dtype=np.int64)
        bucket = (ent << 32) | (start // rollup_us)
        live = stream[idx]
        cand, cand_until = idx[live], until[live]
        if len(cand):  # per span, the allowed rolled-up tile covering the most
            o = np.lexsort((cand_until, bucket[cand]))
            cand, cand_until = cand[o], cand_until[o]
            last = np.r_[bucket[cand][1:] != bucket[cand][:-1], True]
            win, win_until, win_key = cand[last], cand_until[last], bucket[cand][last]
            at = np.minimum(np.searchsorted(win_key, bucket), len(win_key) - 1)
            covered = win_key[at] == bucket
            is_win = np.zeros(len(names), dtype=bool)
            is_win[win] = True
            shadowed = covered & np.where(rolled, ~is_win, start < win_until[at])
    order = np.lexsort((is_bf, start, ent))  # by entity, tile start, stream tiles before backfill tiles
    if not len(order):
        return ent, start, names, rolled, order, shadowed
    s_ent, s_start = ent[order], start[order]
    group = np.cumsum(np.r_[True, (s_ent[1:] != s_ent[:-1]) | (s_start[1:] != s_start[:-1])]) - 1
    has_stream = np.zeros(int(group[-1]) + 1, dtype=bool)
    has_stream[group[(stream & ~shadowed)[order]]] = True
    merged = (stream[order] | (is_bf[order] & ~has_stream[group])) & ~shadowed[order]
    return ent, start, names, rolled, order[merged], shadowed


def _rolled_until(middle: bytes, start: int, rollup_us: int) -> int:
    """The end of what a rolled-up field covers: ``r<until>`` (part of its span), ``r`` the whole span."""
    return int(middle[1:]) if len(middle) > 1 else start + rollup_us


def _combined(measures, tiles: list[list], wanted: frozenset) -> list:
    """The stored (JSON) measures of the union of the disjoint event sets of ``tiles`` (same layout); measures
    not in ``wanted`` are left out (null)."""
    out = []
    for k, m in enumerate(measures):
        vals = [t[k] for t in tiles if t[k] is not None] if m in wanted else None
        if not vals:
            out.append(None)
        elif m.kind == "c":
            out.append(sum(vals))
        elif m.kind in ("s", "q"):
            out.append(str(sum(int(v) for v in vals)))
        elif m.kind == "mn":
            out.append(min(vals))
        elif m.kind in ("mx", "last"):
            out.append(max(vals))
        else:  # sets; of the event times only the newest TS_KEPT
            union = sorted(set().union(*vals))
            out.append(union[-TS_KEPT:] if m.kind == "ts" else union)
    return out


def _roll_up(spec: ViewSpec, measures, epoch: bytes, latest: np.ndarray, m_ent: np.ndarray, m_start: np.ndarray,
             m_rolled: np.ndarray, decoded: list[list], final_before_us: int, keep: np.ndarray):
    """Merged fine tiles (entity ``m_ent``, start ``m_start``, measures ``decoded``) that only the coarsest
    aggregations still read (older than every finer window) and no late event can reach any more (ending by
    ``final_before_us``), folded per span of ``spec.rollup_us`` into one rolled-up tile ``<span start>:r<until>:
    <epoch>`` together with the span's rolled-up tile so far: {entity: {field: value}} and the positions of the
    tiles it replaces. A rolled-up tile keeps only the measures the coarsest aggregations read (no
    distinct-value set of a finer window's ``count_distinct``)."""
    span, tile = spec.rollup_us, spec.tile_us
    wanted = rolled_measures(spec)
    limit = (np.minimum(oldest_start(spec, latest, finer_than=span), final_before_us) // tile) * tile
    bucket = (m_start // span) * span
    until = np.minimum(limit[m_ent], bucket + span)  # per tile: its span is covered up to here
    pos = np.flatnonzero(keep & ~m_rolled & (m_start < until))
    sets: dict[int, dict[bytes, bytes]] = {}
    if not len(pos):
        return sets, pos
    so_far = {(int(m_ent[p]), int(bucket[p])): p for p in np.flatnonzero(keep & m_rolled).tolist()}
    replaced = []
    e, b = m_ent[pos], bucket[pos]
    cut = np.flatnonzero(np.r_[True, (e[1:] != e[:-1]) | (b[1:] != b[:-1]), True])
    for lo, hi in zip(cut[:-1].tolist(), cut[1:].tolist(), strict=True):
        group = pos[lo:hi].tolist()
        prev = so_far.get((int(e[lo]), int(b[lo])))
        if prev is not None:
            group.append(prev)
            replaced.append(prev)
        value = _combined(measures, [decoded[p] for p in group], wanted)
        name = b"%d:%s%d:%s" % (b[lo], ROLLED, until[pos[lo]], epoch)
        sets.setdefault(int(e[lo]), {})[name] = ujson.dumps(value).encode()
    return sets, np.concatenate([pos, np.array(replaced, dtype=np.int64)])


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a partition's tiles are decoded and merged: millions of small acyclic
    objects (freed by reference counting) would trigger full collections over them again and again (the
    read-back of 1,000 entities' day of tiles ran 2.5x slower with it)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def write_view_partition(spec: ViewSpec, rows: pd.DataFrame, writer, ttl_s: int, epoch: bytes | None = None,
                         epochs: frozenset[bytes] | None = None, final_before_us: int | None = None) -> tuple[int, int]:
    """Write the updated tiles of one view in ``rows`` (k, tile, wend_us, measure columns) under ``epoch`` (None:
    the view's backfill epoch),
    merge each entity's tiles of the allowed ``epochs`` (vectorised over entities) and upsert its Feast row.
    ``writer`` is the :class:`core.online_store.OnlineStore`: one pipelined round trip per node writes the
    tiles and reads the hashes back (a Redis Cluster included: calls are grouped by hash slot).

    A stream query (``final_before_us``: no event older than that can arrive any more) then rolls each entity's
    fine tiles that only the coarsest aggregations still read up into one tile per ``spec.rollup_us`` span.

    Runs with the cyclic garbage collector paused. Returns (tiles written, feature rows written).
    """
    with _gc_paused():
        return _write_view_partition(spec, rows, writer, ttl_s, epoch, epochs, final_before_us)


def _write_view_partition(spec: ViewSpec, rows: pd.DataFrame, writer, ttl_s: int, epoch: bytes | None,
                          epochs: frozenset[bytes] | None, final_before_us: int | None) -> tuple[int, int]:
    """The body of :func:`write_view_partition`."""
    if rows.empty:
        return 0, 0
    epoch = epoch or backfill_epoch(spec)
    measures = view_measures(spec)
    keys = entity_values(spec, rows)
    uniq, inverse = np.unique(keys, return_inverse=True)
    hkeys = tile_keys(writer, spec, uniq)
    fields: list[dict[bytes, bytes]] = [{} for _ in range(len(uniq))]
    tiles_, wends = rows["tile"].to_numpy(np.int64).tolist(), rows["wend_us"].to_numpy(np.int64).tolist()
    for i, encoded in enumerate(zip(*_encoded_columns(rows, measures), strict=True)):
        fields[inverse[i]][b"%d:%d:%s" % (tiles_[i], wends[i], epoch)] = ujson.dumps(encoded).encode()
    stored = write_and_read(writer, hkeys, fields, ttl_s)
    return len(rows), _merge_stored(spec, measures, uniq, hkeys, stored, writer, epoch, epochs, final_before_us)


def _merge_stored(spec: ViewSpec, measures, uniq: np.ndarray, hkeys: list[bytes], stored: list[dict[bytes, bytes]],
                  writer, epoch: bytes, epochs: frozenset[bytes] | None, final_before_us: int | None,
                  not_before_us: int | None = None) -> int:
    """Merge the entities' ``stored`` hashes (entity ``uniq[i]`` at ``hkeys[i]``), delete what no window reads
    any more, roll up (a stream write) and upsert each entity's Feast row, unless its latest event is older than
    ``not_before_us``. Returns the feature rows written."""
    raw = [v for r in stored for v in r.values()]
    ent, start, names, rolled, merged, shadowed = _read_back(stored, epochs, spec.rollup_us, backfill_epoch(spec))
    present = np.zeros(len(uniq), dtype=bool)
    present[ent[merged]] = True  # entities with no tile of an allowed epoch: nothing to merge
    remap = -np.ones(len(uniq), np.int64)
    remap[present] = np.arange(int(present.sum()))
    uniq, hkeys_present = uniq[present], [k for k, p in zip(hkeys, present, strict=True) if p]
    if not len(uniq):
        return 0
    decoded = ujson.loads(b"[" + b",".join([raw[i] for i in merged.tolist()]) + b"]")
    m_ent = remap[ent[merged]]
    cols = _columns(measures, m_ent, start[merged], decoded, len(uniq))
    latest, values = merge_entities(spec, cols)
    at = remap[ent]  # every stored field of a merged entity older than every window: deleted
    old = (at >= 0) & (start < oldest_start(spec, latest)[np.maximum(at, 0)])
    drop: dict[int, list[bytes]] = {}
    for i in np.flatnonzero(old | (shadowed & (at >= 0))).tolist():
        drop.setdefault(int(at[i]), []).append(names[i])
    sets: dict[int, dict[bytes, bytes]] = {}
    if final_before_us is not None and spec.rollup_us > spec.tile_us and not _is_backfill(epoch):
        sets, pos = _roll_up(spec, measures, epoch, latest, m_ent, start[merged], rolled[merged], decoded,
                             final_before_us, keep=~old[merged])
        for p_ in pos.tolist():
            drop.setdefault(int(m_ent[p_]), []).append(names[merged[p_]])
    if drop or sets:
        touched = sorted(set(drop) | set(sets))
        writer.update_tile_fields([hkeys_present[j] for j in touched], [sets.get(j, {}) for j in touched],
                                  [drop.get(j, []) for j in touched])
    frame = pd.DataFrame({spec.join_key: uniq if spec.string_key else uniq.astype(np.int64),
                          "event_timestamp": latest.astype(np.int64)})
    for agg in spec.aggs:
        frame[agg.name] = values[agg.name].astype(np.int64) if agg.is_int else values[agg.name].astype(np.float64)
    if not_before_us is not None:
        frame = frame[latest >= not_before_us]
    return writer.write(spec, frame)


def remerge_entities(spec: ViewSpec, ids: np.ndarray, writer, ttl_s: int, epochs: frozenset[bytes] | None,
                     not_before_us: int | None = None) -> int:
    """Merge the stored tiles of entities ``ids`` again under ``spec`` and upsert their Feast rows as of each
    one's latest event, writing no tile (after ``feast apply`` changed features that read existing measures:
    quiet entities get the new values now, not at their next event). Entities whose latest event is older than
    ``not_before_us`` (outside the view's TTL) are left alone. Returns the feature rows written."""
    with _gc_paused():
        uniq = np.unique(np.asarray(ids, dtype=object if spec.string_key else np.int64))
        if not len(uniq):
            return 0
        hkeys = tile_keys(writer, spec, uniq)
        stored = write_and_read(writer, hkeys, [{} for _ in range(len(uniq))], ttl_s)
        return _merge_stored(spec, view_measures(spec), uniq, hkeys, stored, writer, backfill_epoch(spec), epochs, None,
                             not_before_us)


def stored_entities(writer, spec: ViewSpec, batch: int = MAX_ENTITIES_PER_WRITE) -> Iterator[np.ndarray]:
    """The ids of the entities with a tile hash of ``spec``, a SCAN page at a time (an id may come twice)."""
    prefix = PREFIX + spec.name.encode() + b":"
    for keys in writer.scan_keys(prefix + b"*", count=batch):
        yield writer.entity_values(spec.name, [k[len(prefix) :] for k in keys])


def write_view_rows(spec: ViewSpec, rows: pd.DataFrame, writer, ttl_s: int, epoch: bytes | None = None,
                    epochs: frozenset[bytes] | None = None, max_entities: int = MAX_ENTITIES_PER_WRITE,
                    final_before_us: int | None = None) -> tuple[int, int]:
    """:func:`write_view_partition` over groups of at most ``max_entities`` entities (each entity whole). Every
    touched entity's stored tiles are read back and decoded, up to a day of tiles each: grouping bounds that
    memory (a micro-batch touching 90k entities of a 20 M-event day read 17 M tiles at once: 9 GB)."""
    keys = entity_values(spec, rows)
    uniq = np.unique(keys)
    if len(uniq) <= max_entities:
        return write_view_partition(spec, rows, writer, ttl_s, epoch, epochs, final_before_us)
    group = np.searchsorted(uniq, keys) // max_entities
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(1, int(group.max()) + 1))
    tiles = written = 0
    for idx in np.split(order, bounds):
        t, w = write_view_partition(spec, rows.iloc[idx], writer, ttl_s, epoch, epochs, final_before_us)
        tiles, written = tiles + t, written + w
    return tiles, written
