"""Load offline feature values into the online store (Redis)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

log = logging.getLogger(__name__)


def views_with_data(store) -> list[str]:
    """Online feature views whose offline Parquet source exists (stream views before any backfill have none)."""
    names = []
    for view in [*store.list_feature_views(), *store.list_stream_feature_views()]:
        if not view.online:
            continue
        path = getattr(view.batch_source, "path", None)
        if path is None or Path(path).exists():
            names.append(view.name)
        else:
            log.info("skipping %s: no offline data at %s yet", view.name, path)
    return names


def materialize(
    views: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    incremental: bool = False,
) -> list[str]:
    """Materialize ``views`` (default: every online view that has offline data) into Redis.

    Full by default: every entity's latest value in ``[start, end)`` is (re)written, so it repairs a
    Redis that lost its data, which ``incremental`` (each view from the end of its last
    materialization, like ``feast materialize-incremental``) would skip; windowed stream views are
    always loaded in full. Every view goes through :class:`core.online_store.OnlineStore`, the stream
    job's writer: forward-only upserts, entity hashes that expire with the views' TTL, and on a Redis
    Cluster each key to its node. Returns the views materialized.
    """
    from core.feast_store import get_store
    from core.online_store import OnlineStore
    from streaming.materialize import OfflineRows, materialize_views

    store = get_store()
    views = views or views_with_data(store)
    end = end or datetime.now(UTC) + timedelta(seconds=1)
    start = start or datetime(1970, 1, 2, tzinfo=UTC)
    batch = {v.name: v for v in store.list_feature_views()}
    stream = {v.name: v for v in store.list_stream_feature_views()}
    online = OnlineStore.from_settings(feast_store=store)
    try:
        for name in views:
            fv = batch.get(name) or stream.get(name)
            if fv is None:
                raise ValueError(f"{name!r} is not a feature view of the registry")
            source = fv.batch_source
            path = getattr(source, "path", None)
            if path is None:
                raise ValueError(f"{name}: only file (Parquet) sources can be materialized, not {type(source).__name__}")
            windowed = name in stream and bool(stream[name].aggregations)
            since = start
            if incremental and not windowed and fv.most_recent_end_time is not None:
                since = max(start, fv.most_recent_end_time)
            rows = OfflineRows(name, path, source.timestamp_field or "event_timestamp")
            n = materialize_views([rows], since, end, online)[name]
            if not windowed:
                store.registry.apply_materialization(fv, store.project, since, end)
            log.info("materialized %s: %d entities", name, n)
    finally:
        online.close()
    return views
