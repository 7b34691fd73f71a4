"""Full materialization: each entity's latest offline row in [start, end) -> the online store.

Feast 0.67's own ``materialize`` refuses StreamFeatureViews with windowed aggregations ("Time
window aggregation is not supported in the local compute engine"), and it writes Redis without the
expiry rtml bounds memory with. The offline rows already are the feature values (the stream views'
rows are the aggregates), so this reads each entity's latest row from the Parquet files and writes it
with :meth:`core.online_store.OnlineStore.write`, the stream job's writer (Feast-format bytes,
forward-only, TTL-bounded expiry). It is a full reload, so it also restores Redis after it lost its data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import pyarrow.dataset as ds

from core.freshness import FreshnessMarks
from core.online_store import TS
from core.storage import Location, location


@dataclass(frozen=True)
class OfflineRows:
    """Where a view's offline rows are: a Parquet file or folder and its event-time column."""

    name: str
    offline_path: str
    timestamp_field: str = TS


def _files(root: Location) -> list[str]:
    """The Parquet file ``root``, or the Parquet files directly in the folder ``root`` (local or S3)."""
    if root.is_file():
        return [root.path]
    return [f.path for f in root.glob("")]


def latest_rows(path: str, join_key: str, columns: Iterable[str], start: datetime, end: datetime,
                timestamp_field: str = TS) -> pd.DataFrame:
    """Each entity's latest row with start <= event time < end (``event_timestamp`` as int64 us)."""
    columns = [c for c in dict.fromkeys(columns) if c not in (join_key, timestamp_field)]
    root = location(path)
    files = _files(root)
    if not files:
        return pd.DataFrame(columns=[join_key, TS, *columns])
    ts = ds.field(timestamp_field)
    table = ds.dataset(files, format="parquet", filesystem=root.fs).to_table(
        columns=[join_key, timestamp_field, *columns],
        filter=(ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(end)),
    )
    df = table.to_pandas().rename(columns={timestamp_field: TS})
    if df.empty:
        return df
    df[TS] = pd.to_datetime(df[TS], utc=True).astype("datetime64[us, UTC]").astype("int64")
    df = df.sort_values([join_key, TS], kind="stable").drop_duplicates(join_key, keep="last")
    return df.reset_index(drop=True)


def materialize_views(views: Iterable, start: datetime, end: datetime, writer,
                      folders: dict[str, str] | None = None, chunk: int = 20_000) -> dict[str, int]:
    """Write the latest rows of every view (anything with ``name`` and ``offline_path``) with ``writer``
    (an :class:`~core.online_store.OnlineStore`); returns rows written per view."""
    written = {}
    for spec in views:
        view = writer.view(spec.name)
        path = (folders or {}).get(spec.name) or spec.offline_path
        rows = latest_rows(path, view.join_key, [f for f, _ in view.features], start, end,
                           getattr(spec, "timestamp_field", TS))
        n = 0
        for i in range(0, len(rows), chunk):
            n += writer.write(view, rows.iloc[i : i + chunk])
        written[spec.name] = n
        if len(rows):
            FreshnessMarks().mark(spec.name, int(rows[TS].max()) / 1e6)  # TS: int64 us
    return written


def materialize_stream_views(store, names: list[str] | None, start: datetime, end: datetime,
                             online=None) -> dict[str, int]:
    """Full materialization of the named stream views (default: all)."""
    from core.online_store import OnlineStore
    from streaming.feature_specs import load_stream_spec

    spec = load_stream_spec(store)
    views = tuple(v for v in spec.views if names is None or v.name in names)
    own = online is None
    online = online or OnlineStore.from_settings(feast_store=store)
    try:
        return materialize_views(views, start, end, online)
    finally:
        if own:
            online.close()
