"""The stream feature transformation: exact sliding-window aggregates per event.

One function set, used by the stream job (state + new events of a micro-batch) and by the backfill
(historical events): for an event of entity k at time t, every aggregation is computed over k's
events with timestamp in (t - W, t]; ``seconds_since_previous`` is t minus k's latest event time
strictly before t, if that is within W (else null). Events sharing a timestamp get identical values,
so results do not depend on arrival order.

Events are sorted by (key, time, values) and a compiled kernel (numba) walks each queried event's
window: exact (no running sums that drift), deterministic (same order, same bits) and vectorised
(no Python per row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

from streaming.feature_specs import ViewSpec

TS = "event_timestamp"  # event time column: int64 microseconds since the epoch (UTC) inside this module
_FUNC_CODES = {"count": 0, "sum": 1, "mean": 2, "max": 3, "count_distinct": 4, "seconds_since_previous": 5}


@numba.njit(cache=True, nogil=True)
def _kernel(keys, ts, vals, qidx, funcs, cols, windows, out):  # pragma: no cover - compiled
    n = ts.shape[0]
    buf = np.empty(n, dtype=np.float64)
    for qi in range(qidx.shape[0]):
        j = qidx[qi]
        k = keys[j]
        t = ts[j]
        last = j  # last event of k at time t (ties share the window)
        while last + 1 < n and keys[last + 1] == k and ts[last + 1] == t:
            last += 1
        first = j  # first event of k at time t
        while first > 0 and keys[first - 1] == k and ts[first - 1] == t:
            first -= 1
        for a in range(funcs.shape[0]):
            fn = funcs[a]
            lo = t - windows[a]  # window is (lo, t]
            if fn == 5:
                p = first - 1
                if p >= 0 and keys[p] == k and ts[p] > lo:
                    out[qi, a] = (t - ts[p]) / 1e6
                else:
                    out[qi, a] = np.nan
                continue
            c = cols[a]
            cnt = 0
            total = 0.0
            mx = -np.inf
            i = last
            while i >= 0 and keys[i] == k and ts[i] > lo:
                v = vals[i, c]
                if not np.isnan(v):
                    buf[cnt] = v
                    cnt += 1
                    total += v
                    if v > mx:
                        mx = v
                i -= 1
            if fn == 0:
                out[qi, a] = cnt
            elif cnt == 0:
                out[qi, a] = np.nan if fn != 4 else 0.0
            elif fn == 1:
                out[qi, a] = total
            elif fn == 2:
                out[qi, a] = total / cnt
            elif fn == 3:
                out[qi, a] = mx
            else:
                w = np.sort(buf[:cnt])
                d = 1
                for m in range(1, cnt):
                    if w[m] != w[m - 1]:
                        d += 1
                out[qi, a] = d


@dataclass
class SortedEvents:
    """One view's events sorted by (key, time, values), as arrays."""

    keys: np.ndarray  # int64
    ts: np.ndarray  # int64 microseconds
    vals: np.ndarray  # float64 [n, len(spec.value_columns)]

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def frame(self, spec: ViewSpec) -> pd.DataFrame:
        """Back to a DataFrame (key, event_timestamp in us, value columns) for storage."""
        data = {spec.join_key: self.keys, TS: self.ts}
        for i, col in enumerate(spec.value_columns):
            data[col] = self.vals[:, i]
        return pd.DataFrame(data)


def sort_events(events: pd.DataFrame, spec: ViewSpec) -> SortedEvents:
    """Sort ``events`` (columns: join key, event_timestamp as int64 us, the value columns)."""
    keys = events[spec.join_key].to_numpy(np.int64)
    ts = events[TS].to_numpy(np.int64)
    cols = spec.value_columns
    vals = np.empty((len(events), len(cols)), dtype=np.float64)
    for i, col in enumerate(cols):
        vals[:, i] = events[col].to_numpy(np.float64, na_value=np.nan)
    order = np.lexsort(tuple(vals[:, i] for i in reversed(range(len(cols)))) + (ts, keys))
    return SortedEvents(keys=keys[order], ts=ts[order], vals=vals[order])


@numba.njit(cache=True, nogil=True)
def _a_first(ak, at, av, i, bk, bt, bv, j):  # pragma: no cover - compiled
    if ak[i] != bk[j]:
        return ak[i] < bk[j]
    if at[i] != bt[j]:
        return at[i] < bt[j]
    for c in range(av.shape[1]):
        if av[i, c] != bv[j, c]:
            return av[i, c] < bv[j, c]
    return True


@numba.njit(cache=True, nogil=True)
def _merge_order(ak, at, av, bk, bt, bv):  # pragma: no cover - compiled
    na, nb = ak.shape[0], bk.shape[0]
    out = np.empty(na + nb, dtype=np.int64)
    i = j = o = 0
    while i < na and j < nb:
        if _a_first(ak, at, av, i, bk, bt, bv, j):
            out[o] = i
            i += 1
        else:
            out[o] = na + j
            j += 1
        o += 1
    while i < na:
        out[o] = i
        i += 1
        o += 1
    while j < nb:
        out[o] = na + j
        j += 1
        o += 1
    return out


def merge_sorted(a: SortedEvents, b: SortedEvents) -> SortedEvents:
    """Union of two sorted event sets, sorted (linear merge: the state is large, a batch is small)."""
    order = _merge_order(a.keys, a.ts, a.vals, b.keys, b.ts, b.vals)
    keys = np.concatenate([a.keys, b.keys])[order]
    ts = np.concatenate([a.ts, b.ts])[order]
    vals = np.concatenate([a.vals, b.vals])[order]
    return SortedEvents(keys=keys, ts=ts, vals=vals)


def take(events: SortedEvents, mask: np.ndarray) -> SortedEvents:
    return SortedEvents(keys=events.keys[mask], ts=events.ts[mask], vals=events.vals[mask])


def aggregate(events: SortedEvents, spec: ViewSpec, query_idx: np.ndarray) -> pd.DataFrame:
    """Feature rows (join key, event_timestamp us, one column per aggregation) for the queried events."""
    qidx = np.asarray(query_idx, dtype=np.int64)
    col_index = {c: i for i, c in enumerate(spec.value_columns)}
    funcs = np.array([_FUNC_CODES[a.function] for a in spec.aggs], dtype=np.int64)
    cols = np.array([col_index.get(a.column, 0) for a in spec.aggs], dtype=np.int64)
    windows = np.array([a.window_us for a in spec.aggs], dtype=np.int64)
    out = np.empty((qidx.shape[0], len(spec.aggs)), dtype=np.float64)
    if qidx.shape[0]:
        _kernel(events.keys, events.ts, events.vals, qidx, funcs, cols, windows, out)
    data: dict[str, np.ndarray] = {spec.join_key: events.keys[qidx], TS: events.ts[qidx]}
    for i, agg in enumerate(spec.aggs):
        data[agg.name] = out[:, i].astype(np.int64) if agg.is_int else out[:, i]
    return pd.DataFrame(data)


def latest_index(events: SortedEvents, keys: np.ndarray) -> np.ndarray:
    """Index of the latest event of each key in ``keys`` (keys must be present)."""
    wanted = np.unique(np.asarray(keys, dtype=np.int64))
    ends = np.searchsorted(events.keys, wanted, side="right") - 1
    return ends


def range_index(events: SortedEvents, start_us: int | None, end_us: int | None) -> np.ndarray:
    """Indexes of the events with start_us <= time < end_us (None: unbounded)."""
    mask = np.ones(len(events), dtype=bool)
    if start_us is not None:
        mask &= events.ts >= start_us
    if end_us is not None:
        mask &= events.ts < end_us
    return np.flatnonzero(mask)


def to_feature_frame(rows: pd.DataFrame, spec: ViewSpec) -> pd.DataFrame:
    """Rows in the offline/online layout: event_timestamp as datetime64[us, UTC], Feast dtypes."""
    out = rows.copy()
    out[TS] = pd.to_datetime(out[TS].to_numpy(np.int64), unit="us", utc=True).astype("datetime64[us, UTC]")
    for agg in spec.aggs:
        out[agg.name] = out[agg.name].astype("int64" if agg.is_int else "float64")
    return out
