"""Full materialization of the stream views: latest offline row per entity -> Redis (Feast format).

Feast 0.67's own ``materialize`` refuses StreamFeatureViews with windowed aggregations ("Time
window aggregation is not supported in the local compute engine"): the rows in the offline folders
are already the aggregates, so this loads each entity's latest row in [start, end) and writes it
with the stream job's online writer (Feast-format bytes, forward-only). It is a full reload, so it
also restores Redis after it lost its data.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from core.storage import location
from streaming.aggregates import TS
from streaming.feature_specs import ViewSpec


def latest_rows(spec: ViewSpec, start: datetime, end: datetime, folder: str | None = None) -> pd.DataFrame:
    """Each entity's latest row with start <= event_timestamp < end (event_timestamp as int64 us)."""
    root = location(folder or spec.offline_path)
    files = [f.path for f in root.glob("")]
    if not files:
        return pd.DataFrame(columns=[spec.join_key, TS, *[a.name for a in spec.aggs]])
    dataset = ds.dataset(files, format="parquet", filesystem=root.fs)
    ts = ds.field(TS)
    table = dataset.to_table(
        columns=[spec.join_key, TS, *[a.name for a in spec.aggs]],
        filter=(ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(end)),
    )
    df = table.to_pandas()
    if df.empty:
        return df
    df[TS] = df[TS].astype("datetime64[us, UTC]").astype("int64")
    df = df.sort_values([spec.join_key, TS], kind="stable").drop_duplicates(spec.join_key, keep="last")
    return df.reset_index(drop=True)


def materialize_views(views: tuple[ViewSpec, ...], start: datetime, end: datetime, writer,
                      folders: dict[str, str] | None = None, chunk: int = 20_000) -> dict[str, int]:
    """Write the latest rows of every view to the online store; returns rows written per view."""
    written = {}
    for spec in views:
        rows = latest_rows(spec, start, end, (folders or {}).get(spec.name))
        n = 0
        for i in range(0, len(rows), chunk):
            part = rows.iloc[i : i + chunk].copy()
            for a in spec.aggs:
                part[a.name] = part[a.name].astype(np.int64 if a.is_int else np.float64)
            n += writer.write(spec, part)
        written[spec.name] = n
    return written


def materialize_stream_views(store, names: list[str] | None, start: datetime, end: datetime) -> dict[str, int]:
    """Full materialization of the named stream views (default: all) with the pipelined Feast-format writer."""
    import redis

    from core.settings import settings
    from streaming.feature_specs import load_stream_spec
    from streaming.online_writer import PipelinedOnlineWriter

    spec = load_stream_spec(store)
    views = tuple(v for v in spec.views if names is None or v.name in names)
    client = redis.Redis.from_url(settings().redis_url, socket_connect_timeout=2, socket_timeout=30)
    try:
        writer = PipelinedOnlineWriter(client, store.config.project, store.config.entity_key_serialization_version)
        return materialize_views(views, start, end, writer)
    finally:
        client.close()
