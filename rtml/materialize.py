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
    its data, which ``materialize-incremental`` would skip (windowed stream views are always loaded
    in full). Returns the views materialized.
    """
    from core.feast_store import get_store

    store = get_store()
    views = views or views_with_data(store)
    end = end or datetime.now(UTC) + timedelta(seconds=1)
    start = start or datetime(1970, 1, 2, tzinfo=UTC)
    windowed = {v.name for v in store.list_stream_feature_views() if v.aggregations}
    plain = [v for v in views if v not in windowed]
    if plain and incremental:
        store.materialize_incremental(end_date=end, feature_views=plain)
    elif plain:
        store.materialize(start_date=start, end_date=end, feature_views=plain)
    if plain:  # freshness marks (core/freshness.py): the newest event each view now serves
        from core.freshness import mark_sources

        mark_sources([store.get_feature_view(v) for v in plain], end.timestamp())
    stream = [v for v in views if v in windowed]
    if stream:
        # Feast's local engine refuses windowed stream views; their offline rows already are the
        # aggregates, so load each entity's latest row (always a full, forward-only reload).
        from streaming.materialize import materialize_stream_views

        materialize_stream_views(store, stream, start, end)
    return views
