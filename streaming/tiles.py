"""Tiled window aggregation: what a tile holds, how tiles merge into feature values, and the semantics.

A stream view declares one tile size ``s`` (Feast's ``Aggregation.slide_interval``, equal for all of
its aggregations; every window ``W`` is a multiple of it). Tile ``T`` of an entity holds the
*measures* of its events with event time in ``[T, T + s)``: counts, exact sums, exact sums of
squares, min, max, distinct-value sets, the latest event time and (for ``seconds_since_previous``)
the distinct event times. Measures depend only on the set of events, never on arrival order.

Window semantics (the same in the stream job, the backfill and the oracle tests): the value of an
aggregation with window ``W`` as of an event of an entity at time ``t`` covers the entity's events
with ``T(t) + s - W <= time <= t`` where ``T(t) = floor(t / s) * s``: the current tile up to ``t``
and the ``W/s - 1`` complete tiles before it. So a window is between ``W - s`` and ``W`` long; at a
tile edge it jumps by one whole tile (an event exactly at a tile start opens a new tile and the
oldest tile leaves the window). ``seconds_since_previous``: ``t`` minus the entity's latest event
time strictly before ``t`` inside that window (null if none). Events sharing a time share values.

Sums are exact: each value is cast by Spark to ``decimal(38, 10)`` and summed as a decimal (an
integer of 1e-10 units here), so tiles combine in any order to the same bits; the final division to
a float is correctly rounded (Python integer true division). Variance/std are sample statistics
(null for fewer than 2 values), as in Feast's tiling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

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
        return F.collect_set(F.col("ts_us")).alias(m.name)
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


def finalize(agg: AggSpec, m: dict, t_us: int):
    """The feature value of ``agg`` from the merged measures of its window, as of event time ``t_us``."""
    fn, col = agg.function, agg.column
    n = m.get(f"c__{col}") or 0
    if fn == "count":
        return int(n)
    if fn == "count_distinct":
        return len(m.get(f"d__{col}") or ())
    if fn == "seconds_since_previous":
        before = [x for x in (m.get("ts") or ()) if x < t_us]
        return (t_us - max(before)) / 1e6 if before else math.nan
    if fn == "min":
        v = m.get(f"mn__{col}")
        return math.nan if v is None else float(v)
    if fn == "max":
        v = m.get(f"mx__{col}")
        return math.nan if v is None else float(v)
    if n == 0:
        return math.nan
    s = m.get(f"s__{col}") or 0
    if fn == "sum":
        return s / UNIT
    if fn in ("mean", "avg"):
        return s / (n * UNIT)
    if n < 2:
        return math.nan
    q = m.get(f"q__{col}") or 0
    var = Fraction(q * UNIT * n - s * s, UNIT * UNIT * n * (n - 1))
    var_f = float(max(var, Fraction(0)))
    return var_f if fn in ("var", "variance") else math.sqrt(var_f)


def window_start(agg: AggSpec, tile_us: int, t_us: int) -> int:
    """First event time inside the window of ``agg`` as of ``t_us``: T(t) + s - W."""
    return (t_us // tile_us) * tile_us + tile_us - agg.window_us


def features_from_tiles(spec: ViewSpec, tiles: dict[int, dict]) -> tuple[int, dict]:
    """(latest event time, {feature: value}) of an entity from all its tiles {tile start us: measures}."""
    latest = max(t["last"] for t in tiles.values() if t.get("last") is not None)
    out = {}
    cache: dict[int, dict] = {}
    for agg in spec.aggs:
        lo = window_start(agg, spec.tile_us, latest)
        if lo not in cache:
            merged: dict = {}
            for start, tile in tiles.items():
                if lo <= start <= latest:
                    merged = combine(merged, tile)
            cache[lo] = merged
        out[agg.name] = finalize(agg, cache[lo], latest)
    return latest, out
