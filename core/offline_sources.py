"""Offline sources of a feature repo: Parquet under the data dir, as Feast ``FileSource``s or ``SparkSource``s.

Feature repos declare their offline data with :func:`parquet_source` so where it lives (``RTML_DATA_DIR``)
and which engine reads it (``RTML_OFFLINE_STORE=duckdb|spark``) are settings, not definitions. On an ``s3://``
data dir the sources name the objects the way each engine reads them (:meth:`core.storage.Location.feast_uri`).
"""

from __future__ import annotations

from typing import Any

from core.settings import settings
from core.storage import data_root

DATA_PATH_TAG = "rtml.data_path"  # a source's path relative to the data dir (the absolute path is import-time)


def data_relative(source: Any) -> str:
    """Where a batch source's data lives: relative to the data dir when rtml declared it (``data_root() /
    data_relative(s)`` then follows the current ``RTML_DATA_DIR``), else the source's own (absolute) path."""
    return (getattr(source, "tags", None) or {}).get(DATA_PATH_TAG) or getattr(source, "path", "") or ""


def parquet_source(name: str, relative_path: str, description: str, timestamp_field: str = "event_timestamp"):
    """A Parquet batch source under the data dir (a file or a folder of part files)."""
    from feast import FileSource
    from feast.data_format import ParquetFormat

    s = settings()
    # s3:// data: s3a:// for Spark, s3arrow:// (pyarrow's S3 route, see core.storage) for the duckdb store
    path = (data_root() / relative_path).feast_uri
    tags = {DATA_PATH_TAG: relative_path}
    if s.offline_store == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(
            name=name, path=path, file_format="parquet", timestamp_field=timestamp_field, description=description,
            tags=tags,
        )
    # file_format is explicit: Feast's duckdb store reads a folder only when the format is declared.
    return FileSource(
        name=name, path=path, file_format=ParquetFormat(), timestamp_field=timestamp_field, description=description,
        tags=tags,
    )
