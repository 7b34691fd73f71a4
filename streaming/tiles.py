"""Tiled window aggregation: what a tile holds, how tiles merge into feature values, and the semantics.

Each aggregation declares its tile size ``S`` (Feast's ``Aggregation.slide_interval``; its window ``W``
is a multiple of it), e.g. minute tiles for hour windows and hour tiles for day windows, as Chronon sizes its
hops. A view stores tiles of size ``s``, the greatest common divisor of its aggregations' tiles
(:attr:`streaming.feature_specs.ViewSpec.tile_us`). Stored tile ``T`` of an entity holds the
*measures* of its events with event time in ``[T, T + s)``: counts, exact sums, exact sums of
squares, min, max, distinct-value sets, the latest event time and (for ``seconds_since_previous``)
the distinct event times (in Spark's state, which holds only tiles still open to late events; the tiles
kept in Redis for the whole window hold the two newest, :data:`streaming.tile_store.TS_KEPT`, so a stored
tile is O(1) but for distinct-value sets). Measures depend only on the set of events, never on arrival order.

Window semantics (the same in the stream job, the backfill and the oracle tests): the value of an
aggregation with window ``W`` and tile ``S`` as of an event of an entity at time ``t`` covers the entity's
events with ``T(t) + S - W <= time <= t`` where ``T(t) = floor(t / S) * S``: the current tile up to ``t``
and the ``W/S - 1`` complete tiles before it (whole stored tiles, as ``S`` is a multiple of ``s``). So a
window is between ``W - S`` and ``W`` long; at a tile edge it jumps by one whole tile (an event exactly at a
tile start opens a new tile and the oldest tile leaves the window). ``seconds_since_previous``: ``t`` minus
the entity's latest event time strictly before ``t`` inside that window (null if none). Events sharing a
time share values.

Sums are exact: each value is cast by Spark to ``decimal(38, 10)`` and summed as a decimal (an
integer of 1e-10 units here), so tiles combine in any order to the same bits; the final division to
a float is correctly rounded (Python integer true division). Variance/std are sample statistics
(null for fewer than 2 values), as in Feast's tiling.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pandas as pd

from streaming.feature_specs import AggSpec, ViewSpec

SCALE = 10  # decimal places of exact sums
UNIT = 10**SCALE
DECIMAL_TYPE = f"decimal(38,{SCALE})"

# measure kinds: c = count of non-null values, s = exact sum, q = exact sum of squares, mn/mx = min/max,
# d = set of distinct values; per tile also "last" (latest event time, us) and "ts" (distinct event times).
_KINDS_OF = {
    "count": ("c",),
    "sum": ("c", "s"),
    "mean": ("c", "s"),
    "avg": ("c", "s"),
    "min": ("mn",),
    "max": ("mx",),
    "std": ("c", "s", "q"),
    "stddev": ("c", "s", "q"),
    "var": ("c", "s", "q"),
    "variance": ("c", "s", "q"),
    "count_distinct": ("d",),
    "seconds_since_previous": ("ts",),
}
FUNCTIONS = tuple(_KINDS_OF)


@dataclass(frozen=True)
class Measure:
    kind: str  # c | s | q | mn | mx | d | ts | last
    column: str  # event column ("" for ts/last)

    @property
    def name(self) -> str:
        """Column name in Spark and key in a stored tile."""
        return f"{self.kind}__{self.column}" if self.column else self.kind


LAST = Measure("last", "")


def measures_of(agg: AggSpec) -> tuple[Measure, ...]:
    kinds = _KINDS_OF[agg.function]
    return tuple(Measure(k, "" if k == "ts" else agg.column) for k in kinds)


def view_measures(spec: ViewSpec) -> tuple[Measure, ...]:
    """The measures a view's tiles hold (sorted: a stable state layout)."""
    found = {LAST}
    for agg in spec.aggs:
        found.update(measures_of(agg))
    return tuple(sorted(found, key=lambda m: (m.column, m.kind)))


# -- Spark side: the tile aggregation (the same expressions in the stream job and the backfill) ------------
# The event time again, set only on the rows of views that keep event times (``ts``): other views' tiles
# do not collect them (a busy merchant's tile would hold every event time of its minute).
EVENT_TIMES_COLUMN = "ts_times"


def spark_measure(m: Measure, column_prefix: str = ""):
    """Aggregate expression of one measure over rows with event time ``ts_us`` (bigint) and the event columns."""
    from pyspark.sql import functions as F

    col = F.col(f"{column_prefix}{m.column}") if m.column else None
    if m.kind == "c":
        return F.count(col).alias(m.name)
    if m.kind == "s":
        return F.sum(col.cast("double").cast(DECIMAL_TYPE)).alias(m.name)
    if m.kind == "q":
        x = col.cast("double")
        return F.sum((x * x).cast(DECIMAL_TYPE)).alias(m.name)
    if m.kind == "mn":
        return F.min(col.cast("double")).alias(m.name)
    if m.kind == "mx":
        return F.max(col.cast("double")).alias(m.name)
    if m.kind == "d":
        return F.collect_set(col.cast("string")).alias(m.name)
    if m.kind == "ts":
        return F.collect_set(F.col(EVENT_TIMES_COLUMN)).alias(m.name)
    if m.kind == "last":
        return F.max(F.col("ts_us")).alias(m.name)
    raise ValueError(m.kind)


def decimal_units(value) -> int | None:
    """A Spark decimal(38, SCALE) value (Python Decimal) as an exact integer of 1e-SCALE units."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value.scaleb(SCALE))


def python_units(x: float) -> int:
    """The same integer for a plain float (Spark casts double -> decimal via its shortest repr, HALF_UP)."""
    from decimal import ROUND_HALF_UP, Decimal

    return int(Decimal(repr(float(x))).quantize(Decimal(1).scaleb(-SCALE), rounding=ROUND_HALF_UP).scaleb(SCALE))


# -- Tile values: plain dicts {measure name: value}, merged in any order -------------------------------------
def empty_tile() -> dict:
    return {}


def combine(a: dict, b: dict) -> dict:
    """Measures of the union of two disjoint event sets."""
    out = dict(a)
    for name, v in b.items():
        if v is None:
            continue
        old = out.get(name)
        if old is None:
            out[name] = set(v) if isinstance(v, (list, set, tuple, np.ndarray)) else v
            continue
        kind = name.split("__", 1)[0]
        if kind in ("c", "s", "q"):
            out[name] = old + v
        elif kind == "mn":
            out[name] = min(old, v)
        elif kind in ("mx", "last"):
            out[name] = max(old, v)
        else:  # d, ts: sets
            out[name] = set(old) | set(v)
    return out


def finalize_arrays(agg: AggSpec, n: np.ndarray, s: list, q: list, mn: np.ndarray, mx: np.ndarray,
                    distinct: np.ndarray, prev: np.ndarray, t_us: np.ndarray) -> np.ndarray:
    """Feature values of ``agg`` for many windows at once, from their combined measures: ``n`` counts, ``s``/``q``
    exact sums / sums of squares (Python ints, 1e-10 units), ``mn``/``mx`` (NaN if none), ``distinct`` counts,
    ``prev`` the latest event time before ``t_us`` in the window (-1 if none). The stream's online merge and
    the backfill's offline rows both end here, so equal measures give equal bits."""
    fn = agg.function
    if fn == "count":
        return np.asarray(n, dtype=np.int64)
    if fn == "count_distinct":
        return np.asarray(distinct, dtype=np.int64)
    if fn == "seconds_since_previous":
        prev = np.asarray(prev, dtype=np.int64)
        return np.where(prev >= 0, (np.asarray(t_us, dtype=np.int64) - prev) / 1e6, np.nan)
    if fn == "min":
        return np.asarray(mn, dtype=np.float64)
    if fn == "max":
        return np.asarray(mx, dtype=np.float64)
    counts = [int(x) for x in n]
    if fn == "sum":
        return np.array([x / UNIT if c else math.nan for x, c in zip(s, counts, strict=True)], dtype=np.float64)
    if fn in ("mean", "avg"):
        return np.array([x / (c * UNIT) if c else math.nan for x, c in zip(s, counts, strict=True)], dtype=np.float64)
    out = np.full(len(counts), math.nan)
    for i, c in enumerate(counts):
        if c >= 2:
            var = float(max(Fraction(q[i] * UNIT * c - s[i] * s[i], UNIT * UNIT * c * (c - 1)), Fraction(0)))
            out[i] = var if fn in ("var", "variance") else math.sqrt(var)
    return out


def finalize(agg: AggSpec, m: dict, t_us: int):
    """The feature value of ``agg`` from the merged measures (a dict) of one window, as of ``t_us``."""
    col = agg.column
    before = [x for x in (m.get("ts") or ()) if x < t_us]
    mn, mx = m.get(f"mn__{col}"), m.get(f"mx__{col}")
    v = finalize_arrays(agg, np.array([m.get(f"c__{col}") or 0]), [m.get(f"s__{col}") or 0], [m.get(f"q__{col}") or 0],
                        np.array([math.nan if mn is None else mn]), np.array([math.nan if mx is None else mx]),
                        np.array([len(m.get(f"d__{col}") or ())]), np.array([max(before) if before else -1]),
                        np.array([t_us]))[0]
    return int(v) if agg.is_int else float(v)


def oldest_start(spec: ViewSpec, latest: np.ndarray, finer_than: int | None = None) -> np.ndarray | None:
    """Per entity, the oldest tile start any aggregation's window reads as of its ``latest`` event (of the
    aggregations whose tile is finer than ``finer_than`` if given; None if there are none). Tiles starting
    before it are never read again, as an entity's latest event time only moves forward."""
    latest = np.asarray(latest, dtype=np.int64)
    tiles = [(a, spec.tile_of(a)) for a in spec.aggs]
    starts = [(latest // t) * t + t - a.window_us for a, t in tiles if finer_than is None or t < finer_than]
    return np.minimum.reduce(starts) if starts else None


def rolled_measures(spec: ViewSpec) -> frozenset[Measure]:
    """The measures a rolled-up tile keeps (:mod:`streaming.tile_store`): those the coarsest aggregations read."""
    span = spec.rollup_us
    return frozenset({LAST, *(m for a in spec.aggs if spec.tile_of(a) == span for m in measures_of(a))})


def rollup_layout(spec: ViewSpec) -> list | None:
    """What a view's rolled-up tiles depend on (None without roll-ups): the span, the longest window of the finer
    aggregations (fine tiles are kept that long), their (window, tile) pairs and the measures kept. Rolled-up tiles of one layout cannot
    serve another (a longer fine window needs minutes already folded away, a new coarse aggregation a measure
    not kept), so a change seeds the view (:mod:`streaming.evolution`)."""
    if spec.rollup_us == spec.tile_us:
        return None
    fine = sorted({(a.window_us, spec.tile_of(a)) for a in spec.aggs if spec.tile_of(a) < spec.rollup_us})
    return [spec.rollup_us, max(w for w, _ in fine), [list(f) for f in fine],
            sorted(f"{m.kind}__{m.column}" for m in rolled_measures(spec))]


@dataclass
class TileColumns:
    """Many entities' tiles, flattened and sorted by (entity index, tile start): one array per measure."""

    entity: np.ndarray  # int64 entity index, 0..n_entities-1, every entity present
    start: np.ndarray  # int64 tile start (us)
    values: dict[str, object]  # measure name -> np.ndarray (c, mn, mx, last) | list (s, q: ints; d, ts: lists)
    n_entities: int


def merge_entities(spec: ViewSpec, tiles: TileColumns) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(latest event time, {feature: values}) per entity, each as of its latest event: vectorised over entities."""
    ent, start, vals, n = tiles.entity, tiles.start, tiles.values, tiles.n_entities
    seg_end = np.searchsorted(ent, np.arange(n), side="right")
    seg_start = np.searchsorted(ent, np.arange(n), side="left")
    last = np.asarray(vals["last"], dtype=np.int64)
    latest = np.maximum.reduceat(last, seg_start)
    out: dict[str, np.ndarray] = {}
    cache: dict[tuple[int, int], dict] = {}
    for agg in spec.aggs:
        tile = spec.tile_of(agg)
        if (agg.window_us, tile) not in cache:
            lo = (latest // tile) * tile + tile - agg.window_us
            inwin = start >= lo[ent]
            first = seg_end - np.bincount(ent[inwin], minlength=n)
            cache[(agg.window_us, tile)] = {"inwin": inwin, "first": first}
        w = cache[(agg.window_us, tile)]
        m = _window_measures(agg, vals, ent, w["inwin"], w["first"], seg_end, latest, n)
        out[agg.name] = finalize_arrays(agg, *m, latest)
    return latest, out


def _window_measures(agg: AggSpec, vals: dict, ent, inwin, first, seg_end, latest, n: int):
    col = agg.column
    nan = np.full(n, np.nan)

    def window_sum(name: str, obj: bool):
        if name not in vals:
            return [0] * n if obj else np.zeros(n, np.int64)
        arr = np.asarray(vals[name], dtype=object if obj else np.int64)
        cum = np.concatenate([np.zeros(1, dtype=arr.dtype), np.cumsum(arr)])
        res = cum[seg_end] - cum[first]
        return list(res) if obj else res.astype(np.int64)

    def window_reduce(name: str, ufunc):
        if name not in vals:
            return nan
        arr = np.append(np.asarray(vals[name], dtype=np.float64), np.nan)
        idx = np.empty(2 * n, dtype=np.int64)
        idx[0::2], idx[1::2] = first, seg_end
        return ufunc.reduceat(arr, idx)[0::2]

    n_win = window_sum(f"c__{col}", False) if agg.function not in ("count_distinct", "seconds_since_previous") else None
    s = window_sum(f"s__{col}", True) if agg.function in ("sum", "mean", "avg", "std", "stddev", "var", "variance") else None
    q = window_sum(f"q__{col}", True) if agg.function in ("std", "stddev", "var", "variance") else None
    mn = window_reduce(f"mn__{col}", np.fmin) if agg.function == "min" else nan
    mx = window_reduce(f"mx__{col}", np.fmax) if agg.function == "max" else nan
    distinct = np.zeros(n, np.int64)
    prev = np.full(n, -1, np.int64)
    if agg.function in ("count_distinct", "seconds_since_previous"):
        lists = vals[f"d__{col}" if agg.function == "count_distinct" else "ts"]
        idx = np.flatnonzero(inwin).tolist()
        sizes = np.fromiter((len(lists[i]) if lists[i] is not None else 0 for i in idx), dtype=np.int64, count=len(idx))
        owner = np.repeat(ent[idx] if idx else np.zeros(0, np.int64), sizes)  # entity of each listed value
        flat = list(itertools.chain.from_iterable(lists[i] for i in idx if lists[i] is not None))
        if agg.function == "count_distinct":  # distinct (entity, value) pairs per entity
            pairs = pd.DataFrame({"e": owner, "v": pd.Series(flat, dtype=object)}).drop_duplicates()
            distinct = np.bincount(pairs["e"].to_numpy(np.int64), minlength=n).astype(np.int64)
        else:  # the latest event time before the entity's latest event
            times = np.asarray(flat, dtype=np.int64)
            before = times < latest[owner]
            np.maximum.at(prev, owner[before], times[before])
    return (n_win if n_win is not None else np.zeros(n, np.int64), s or [0] * n, q or [0] * n, mn, mx, distinct, prev)


def tile_columns(spec: ViewSpec, per_entity: list[dict[int, list]]) -> TileColumns:
    """:class:`TileColumns` from, per entity, {tile start: [measures dicts...]} (tests, small inputs)."""
    ent, start, rows = [], [], []
    for e, tiles in enumerate(per_entity):
        for st in sorted(tiles):
            for m in tiles[st]:
                ent.append(e)
                start.append(st)
                rows.append(m)
    values: dict[str, object] = {}
    for m in view_measures(spec):
        col = [r.get(m.name) for r in rows]
        if m.kind in ("c", "last"):
            values[m.name] = np.array([x or 0 for x in col], dtype=np.int64)
        elif m.kind in ("mn", "mx"):
            values[m.name] = np.array([np.nan if x is None else x for x in col], dtype=np.float64)
        elif m.kind in ("s", "q"):
            values[m.name] = [x or 0 for x in col]
        else:
            values[m.name] = [x or () for x in col]
    return TileColumns(np.array(ent, np.int64), np.array(start, np.int64), values, len(per_entity))


def features_from_tiles(spec: ViewSpec, tiles: dict[int, dict]) -> tuple[int, dict]:
    """(latest event time, {feature: value}) of one entity from its tiles {tile start: measures}."""
    latest, values = merge_entities(spec, tile_columns(spec, [{k: [v] for k, v in tiles.items()}]))
    return int(latest[0]), {a.name: (int(values[a.name][0]) if a.is_int else float(values[a.name][0])) for a in spec.aggs}
