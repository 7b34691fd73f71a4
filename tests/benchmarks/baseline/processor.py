"""One micro-batch of the stream job, from parsed rows to Redis, Parquet and the dead-letter topic.

Exactly-once by construction: batch ``b`` starts from the state saved after the newest batch
before ``b`` and writes idempotent outputs (offline file named by batch id, forward-only online
upserts, state version ``b``), so running it again after a crash gives the same result.

Event time: the watermark of batch ``b`` is (max event time of earlier batches) - delay. Events
older than it are dropped (counted); events older than the max event time seen but inside the
watermark are late but used (counted), and the entity's online row is recomputed with them.
Offline rows are written once they are final, i.e. when the watermark passes their event time: no
accepted event can change them afterwards, so the offline store holds one exact row per event,
equal to what a backfill over the same events computes.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from streaming.aggregates import TS, aggregate, latest_index, merge_sorted, range_index, sort_events, take
from streaming.feature_specs import StreamSpec
from streaming.metrics import StreamMetrics
from streaming.offline_writer import write_offline
from tests.benchmarks.baseline.online_writer import OnlineWriter
from tests.benchmarks.baseline.state_store import JobState, StateStore

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    batch_id: int
    events_read: int = 0
    dlq: dict[str, int] = field(default_factory=dict)
    late_within_watermark: int = 0
    late_dropped: int = 0
    online_rows: dict[str, int] = field(default_factory=dict)
    offline_rows: dict[str, int] = field(default_factory=dict)
    watermark_us: int | None = None
    seconds: float = 0.0


def dead_letters(rows: pd.DataFrame, batch_id: int) -> list[tuple[str, dict]]:
    """(key, value) of each dead-letter message: reason, offending field, original bytes and origin."""
    from streaming.dead_letters import letter

    return [
        letter(r.source_topic, r.partition, r.offset, r.dlq_reason, r.dlq_field if isinstance(r.dlq_field, str) else None,
               base64.b64decode(r.raw_base64) if isinstance(r.raw_base64, str) else b"", batch_id)
        for r in rows.itertuples(index=False)
    ]


class BatchProcessor:
    """Turns parsed micro-batches (pandas, see :func:`streaming.parsing.parse_events`) into writes."""

    def __init__(
        self,
        spec: StreamSpec,
        state_store: StateStore,
        online_writer: OnlineWriter,
        job_name: str,
        dlq_send: Callable[[list[tuple[str, dict]]], None],
        metrics: StreamMetrics,
        offline_dirs: dict[str, str] | None = None,
        fault_hook: Callable[[int, str], None] | None = None,
        warm_start: Callable[[int, int], pd.DataFrame] | None = None,
    ):
        self.spec = spec
        self.store = state_store
        self.online = online_writer
        self.job_name = job_name
        self.dlq_send = dlq_send
        self.metrics = metrics
        self.offline_dirs = offline_dirs or {}
        self.fault_hook = fault_hook  # tests: raise at a named step to simulate a crash
        self.warm_start = warm_start  # (since_us, until_us) -> raw history events, for an empty state
        # called after the online write with (result, accepted event times in us, write time in s); benchmarks
        self.observers: list[Callable[[BatchResult, np.ndarray, float], None]] = []
        self.last_result: BatchResult | None = None

    def _fault(self, batch_id: int, step: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(batch_id, step)

    def process(self, rows: pd.DataFrame, batch_id: int) -> BatchResult:
        started = time.perf_counter()
        result = BatchResult(batch_id=batch_id, events_read=len(rows))
        state = self.store.load_before(batch_id)
        delay = self.spec.watermark_delay_us
        if state.version == -1 and self.warm_start is not None:
            state = self._warm_state(rows, state)

        bad = rows["dlq_reason"].notna().to_numpy()
        if bad.any():
            letters = dead_letters(rows[bad], batch_id)
            self.dlq_send(letters)
            result.dlq = rows.loc[bad, "dlq_reason"].value_counts().to_dict()
        events = rows[~bad]
        ts = events["event_us"].to_numpy(np.int64)
        watermark = None if state.max_event_us is None else state.max_event_us - delay
        dropped = np.zeros(len(events), bool) if watermark is None else ts < watermark
        late = np.zeros(len(events), bool) if state.max_event_us is None else (ts < state.max_event_us) & ~dropped
        result.late_dropped = int(dropped.sum())
        result.late_within_watermark = int(late.sum())
        accepted = events[~dropped].rename(columns={"event_us": TS})
        max_event = state.max_event_us
        if len(accepted):
            newest = int(accepted[TS].max())
            max_event = newest if max_event is None else max(max_event, newest)
        new_watermark = None if max_event is None else max_event - delay
        result.watermark_us = new_watermark

        new_events, online_rows, offline_rows = {}, {}, {}
        for view in self.spec.views:
            incoming = sort_events(accepted[[view.join_key, TS, *view.value_columns]], view)
            merged = merge_sorted(state.events[view.name], incoming)
            online_rows[view.name] = aggregate(merged, view, latest_index(merged, incoming.keys))
            final = range_index(merged, watermark, new_watermark) if new_watermark is not None else np.empty(0, np.int64)
            offline_rows[view.name] = aggregate(merged, view, final)
            keep = merged.ts > (new_watermark - view.max_window_us) if new_watermark is not None else slice(None)
            new_events[view.name] = take(merged, keep)

        self._fault(batch_id, "before_online")
        for view in self.spec.views:
            n = self.online.write(view, online_rows[view.name])
            result.online_rows[view.name] = n
        write_time = time.time()
        self._fault(batch_id, "before_offline")
        for view in self.spec.views:
            rows_v = offline_rows[view.name]
            write_offline(view, rows_v, f"stream-{self.job_name}-b{batch_id:012d}", self.offline_dirs.get(view.name))
            result.offline_rows[view.name] = int(len(rows_v))
        self._fault(batch_id, "before_state")

        counters = dict(state.counters)
        for key, value in (
            ("events_read", result.events_read),
            ("events_accepted", int(len(accepted))),
            ("late_within_watermark", result.late_within_watermark),
            ("late_dropped", result.late_dropped),
            *((f"dlq_{k}", int(v)) for k, v in result.dlq.items()),
        ):
            counters[key] = counters.get(key, 0) + value
        self.store.save(JobState(version=batch_id, events=new_events, max_event_us=max_event, counters=counters))
        self._fault(batch_id, "after_state")

        result.seconds = time.perf_counter() - started
        self._observe(result, accepted, write_time)
        for observer in self.observers:
            observer(result, accepted[TS].to_numpy(np.int64), write_time)
        self.last_result = result
        return result

    def _warm_state(self, rows: pd.DataFrame, empty: JobState) -> JobState:
        """An empty state seeded with the history events in the longest window before this batch's first event.

        Its max event time is set one watermark delay past the newest history event, so none of
        those events is emitted again as an offline row (the backfill wrote them); events of the
        first batch inside that delay count as late-within-watermark, none is dropped.
        """
        valid = rows.loc[rows["dlq_reason"].isna(), "event_us"]
        if valid.empty:
            return empty
        first = int(valid.min())
        longest = max(v.max_window_us for v in self.spec.views)
        history = self.warm_start(first - longest, first)
        if history.empty:
            return empty
        events = {v.name: sort_events(history[[v.join_key, TS, *v.value_columns]], v) for v in self.spec.views}
        newest = int(history[TS].max())
        log.info("warm start: %d history events before %s", len(history), pd.Timestamp(first, unit="us", tz="UTC"))
        # Offline rows are emitted for watermark <= t < next watermark: start past the newest history event.
        return JobState(version=-1, events=events, max_event_us=newest + 1 + self.spec.watermark_delay_us,
                        counters={"warm_start_events": int(len(history))})

    def _observe(self, result: BatchResult, accepted: pd.DataFrame, write_time: float) -> None:
        m = self.metrics
        m.events_read.inc(result.events_read)
        for reason, n in result.dlq.items():
            m.dlq.labels(reason=reason).inc(n)
        m.late.labels(kind="within_watermark").inc(result.late_within_watermark)
        m.late.labels(kind="dropped").inc(result.late_dropped)
        for view, n in result.online_rows.items():
            m.rows_written.labels(view=view, store="online").inc(n)
        for view, n in result.offline_rows.items():
            m.rows_written.labels(view=view, store="offline").inc(n)
        m.batch_duration.observe(result.seconds)
        if len(accepted):
            for view in result.online_rows:
                m.view_freshness.observe(view, int(accepted[TS].max()) / 1e6)
            freshness = write_time - int(accepted[TS].max()) / 1e6
            m.freshness.set(freshness)
            m.freshness_hist.observe(max(freshness, 0.0))


def job_counters(checkpoint_dir: Path, spec: StreamSpec) -> dict[str, int]:
    """Cumulative counters (events read/accepted, late, DLQ per reason) of the newest committed state."""
    store = StateStore(checkpoint_dir, spec.views)
    versions = store.versions()
    if not versions:
        return {}
    meta = json.loads((store.root / f"v{versions[-1]:012d}" / "meta.json").read_text())
    return dict(meta.get("counters", {}))
