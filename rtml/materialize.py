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

    Full by default: every value in ``[start, end]`` is (re)written, so it repairs a Redis that lost
    its data, which ``materialize-incremental`` would skip. Returns the views materialized.
    """
    from rtml.feast_store import get_store

    store = get_store()
    views = views or views_with_data(store)
    end = end or datetime.now(UTC) + timedelta(seconds=1)
    if not views:
        return []
    # Feast refuses windowed StreamFeatureViews ("Time window aggregation is not supported"): their
    # offline rows are already the aggregates, loaded by the stream job's materializer (always full).
    stream_names = {v.name for v in store.list_stream_feature_views()}
    stream_views = [v for v in views if v in stream_names]
    batch_views = [v for v in views if v not in stream_names]
    if stream_views:
        from streaming.materialize import materialize_stream_views

        materialize_stream_views(store, stream_views, start or datetime(1970, 1, 2, tzinfo=UTC), end)
    if not batch_views:
        return views
    if incremental:
        store.materialize_incremental(end_date=end, feature_views=batch_views)
    else:
        start = start or datetime(1970, 1, 2, tzinfo=UTC)
        store.materialize(start_date=start, end_date=end, feature_views=batch_views)
    return views
