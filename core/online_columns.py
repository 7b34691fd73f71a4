"""Online features of many entity rows, decoded column by column: the batch read's form.

A batch read's replies (per entity row, one ``HMGET`` reply per entity key of the read plan) are
decoded in one compiled pass: straight from the raw replies (:meth:`Columns.from_resp`, the serving
connection's :class:`core.resp.RespBatch`: no Python object per field) or from replies parsed into lists
(:func:`core.online_format.decode_fields`, e.g. a Redis Cluster's, gathered from several nodes). :class:`Columns`
then answers per feature: the model's numbers (:meth:`Columns.matrix`), the Python values an on-demand
view reads (:meth:`Columns.values`), and per row the features whose view has no row and the oldest
feature time. Every answer equals what :meth:`core.online_store.ReadPlan.decode` gives row by row
(``tests/core/test_online_columns.py``); what the compiled pass leaves (strings, anything unusual) is
decoded by the same Python functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core import online_format as fmt
from core import resp


@dataclass(frozen=True)
class ColumnLayout:
    """Where each feature sits in one entity row's flattened replies."""

    period: int  # fields per entity row: every read's HMGET fields, in order
    counts: np.ndarray  # per read: its HMGET's number of fields
    is_ts: np.ndarray  # per field: a Timestamp (``_ts:<view>``)?
    column: dict[str, int]  # feature -> field
    view_of: dict[str, int]  # feature -> index into ``views``
    views: tuple[tuple[int, tuple[str, ...]], ...]  # per view: (its Timestamp field, its features)
    floats: frozenset[str]  # features typed DOUBLE / FLOAT

    @classmethod
    def of(cls, reads: Sequence[Any]) -> ColumnLayout:
        """The layout of a read plan's ``EntityRead`` list."""
        column: dict[str, int] = {}
        view_of: dict[str, int] = {}
        views: list[tuple[int, tuple[str, ...]]] = []
        is_ts: list[bool] = []
        floats: set[str] = set()
        base = 0
        for read in reads:
            flags = [False] * len(read.fields)
            for view in read.views:
                flags[view.ts_index] = True
                for name, idx in view.features:
                    column[name] = base + idx
                    view_of[name] = len(views)
                views.append((base + view.ts_index, tuple(name for name, _ in view.features)))
                floats.update(view.floats)
            is_ts += flags
            base += len(read.fields)
        return cls(base, np.array([len(r.fields) for r in reads], dtype=np.int64), np.array(is_ts, dtype=bool), column,
                   view_of, tuple(views), frozenset(floats))


class Columns:
    """The decoded features of ``n_rows`` entity rows (``fields``: their replies' fields, row after row)."""

    def __init__(self, layout: ColumnLayout, fields: list, n_rows: int):
        self.fields: list | None = fields
        self._decoded(layout, *fmt.decode_fields(fields, layout.is_ts), n_rows)

    @classmethod
    def from_resp(cls, layout: ColumnLayout, batch: resp.RespBatch, n_rows: int) -> Columns:
        """The rows' raw replies (``layout.counts`` replies per row) decoded where they lie; replies shaped
        otherwise are parsed and decoded as lists."""
        located = resp.array_fields(batch.data, batch.n, layout.counts) if batch.n == n_rows * len(layout.counts) else None
        if located is None:
            return cls(layout, [f for reply in resp.parse(batch.data, batch.n) for f in reply], n_rows)
        self = cls.__new__(cls)
        self.fields = None
        self._data, self._starts, self._lens = batch.data, *located
        self._decoded(layout, *fmt.decode_resp(batch.data, *located, layout.is_ts), n_rows)
        return self

    def _decoded(self, layout: ColumnLayout, numbers: np.ndarray, status: np.ndarray, n_rows: int) -> None:
        self.layout = layout
        self.n_rows = n_rows
        self.numbers = numbers.reshape(n_rows, layout.period)
        self.status = status.reshape(n_rows, layout.period)
        ts_fields = [ts for ts, _ in layout.views]
        self.absent = self.status[:, ts_fields] == fmt.ABSENT  # (rows, views): the view has no row
        ts = self.numbers[:, ts_fields]
        for i, v in zip(*np.nonzero(self.status[:, ts_fields] == fmt.PYTHON_VALUE), strict=True):
            ts[i, v] = fmt.decode_timestamp(self._field(int(i), ts_fields[v]))
        oldest = np.where(self.absent, np.inf, ts).min(axis=1) if ts_fields else np.full(n_rows, np.inf)
        self.oldest_ts: list[float | None] = [None if t == math.inf else t for t in oldest.tolist()]
        self.missing: list[list[str]] = [[] for _ in range(n_rows)]
        if self.absent.any():
            for i in np.flatnonzero(self.absent.any(axis=1)).tolist():
                self.missing[i] = [name for v in np.flatnonzero(self.absent[i]).tolist() for name in layout.views[v][1]]

    def _field(self, row: int, column: int) -> bytes | None:
        p = row * self.layout.period + column
        if self.fields is not None:
            return self.fields[p]
        n = int(self._lens[p])
        return None if n < 0 else self._data[int(self._starts[p]) : int(self._starts[p]) + n]

    def _column(self, column: int) -> list:
        """The serialized field of ``column`` in every row (``None`` where absent)."""
        if self.fields is not None:
            return self.fields[column :: self.layout.period]
        data = self._data
        starts = self._starts[column :: self.layout.period].tolist()
        lens = self._lens[column :: self.layout.period].tolist()
        return [None if n < 0 else data[s : s + n] for s, n in zip(starts, lens, strict=True)]

    def absent_rows(self, name: str) -> np.ndarray:
        """Per row: the feature's view has no row for the entity (its value is missing)."""
        return self.absent[:, self.layout.view_of[name]]

    def matrix(self, names: Sequence[str], fill: np.ndarray) -> np.ndarray:
        """The named features as a model reads them, one column each: ``float(value)``, NaN when null or not a
        number, and ``fill[j]`` where feature ``j``'s view has no row for the entity."""
        layout = self.layout
        cols = [layout.column[name] for name in names]
        absent = self.absent[:, [layout.view_of[name] for name in names]]
        out = np.where(absent, fill, self.numbers[:, cols])
        for i, j in zip(*np.nonzero((self.status[:, cols] == fmt.PYTHON_VALUE) & ~absent), strict=True):
            out[i, j] = fmt.as_number(fmt.decode_value(self._field(int(i), cols[j])))
        return out

    def values(self, name: str) -> list:
        """The feature's Python values per row (``None`` when missing or null), as ``decode`` gives them."""
        c = self.layout.column[name]
        absent = self.absent_rows(name)
        if name in self.layout.floats:  # floats decoded exactly by the compiled pass
            out = self.numbers[:, c].tolist()
            for i in np.flatnonzero((self.status[:, c] != fmt.FLOAT_VALUE) | absent).tolist():
                out[i] = None if absent[i] else fmt.decode_value(self._field(i, c))
            return out
        raw = self._column(c)
        if absent.any():
            raw = [None if a else f for a, f in zip(absent.tolist(), raw, strict=True)]
        return fmt.decode_values(raw)
