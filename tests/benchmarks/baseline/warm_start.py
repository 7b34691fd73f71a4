"""Warm start: seed an empty stream-job state with the recent raw events of the offline history.

A stream job started on a fresh checkpoint (new job, or `--starting-offsets latest` after a
backfill) has seen no events yet, so its 24 h windows would start at zero for every entity: counts
and sums far below what the backfill, the training set and a long-running job compute. Before its
first micro-batch it therefore loads, from the raw transactions history (the Kafka source's batch
source), every event in the longest window before the batch's first event.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable

import pandas as pd
import pyarrow.dataset as ds

from streaming.aggregates import TS

HistoryLoader = Callable[[int, int], pd.DataFrame]


def history_loader(path: str, columns: list[str]) -> HistoryLoader | None:
    """A loader of raw events with ``since_us <= event time < until_us`` from Parquet under ``path`` (None if no files)."""
    files = sorted(glob.glob(os.path.join(path, "*.parquet"))) if os.path.isdir(path) else (
        [path] if os.path.isfile(path) else []
    )
    if not files:
        return None

    def load(since_us: int, until_us: int) -> pd.DataFrame:
        dataset = ds.dataset(files, format="parquet")
        ts = ds.field("event_timestamp").cast("int64")
        table = dataset.to_table(columns=[*columns, "event_timestamp"], filter=(ts >= since_us) & (ts < until_us))
        frame = table.to_pandas()
        frame[TS] = table["event_timestamp"].cast("int64").to_numpy()
        return frame

    return load


def stream_history_loader(store, columns: list[str]) -> HistoryLoader | None:
    """The loader over the registry's raw-transactions history (``transactions_stream``'s batch source)."""
    from streaming.feature_specs import STREAM_SOURCE_NAME

    try:
        path = store.get_data_source(STREAM_SOURCE_NAME).batch_source.path
    except Exception:  # noqa: BLE001 - no Kafka source or no batch source: nothing to warm from
        return None
    return history_loader(path, columns) if path else None
