"""The stream job's ``foreachBatch``: tile rows -> Redis (tiles + Feast rows) and dead letters -> Kafka, on executors.

The driver only repartitions the micro-batch's tile rows by entity and collects one small count row
per view and partition; every event-derived byte is handled by the executors.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from streaming import batch_log
from streaming.feature_specs import ViewSpec
from streaming.metrics import StreamMetrics

RESULT_SCHEMA = "vid int, tiles long, rows long, reason string, n long, max_ts long"
FAULT_ENV = "RTML_FAULT_KILL_AT"  # fault matrix only: "<step>@<batch>" SIGKILLs the job there (off by default)


def kill_hook_from_env():
    """The fault matrix's hook (``RTML_FAULT_KILL_AT=after_write@3``): SIGKILL this process at ``step`` of the
    first batch >= ``batch``. None when the variable is unset (production)."""
    import os

    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return None
    step, _, first = spec.partition("@")

    def hook(batch_id: int, at: str) -> None:
        if at == step and batch_id >= int(first or 0):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _dead_letters(rows: pd.DataFrame, batch_id: int) -> list[tuple[str, dict]]:
    from streaming.dead_letters import letter

    return [letter(d["source_topic"], d["partition"], d["offset"], d["reason"], d.get("field"),
                   base64.b64decode(d.get("raw_base64") or ""), batch_id) for d in rows["dlq"]]


def partition_writer(views: tuple[ViewSpec, ...], online, bootstrap: str, dlq_topic: str,
                     batch_id: int, epoch: bytes, epochs: dict[str, frozenset[bytes]], max_entities: int,
                     final_lag_us: int | None = None):
    """The function run by ``mapInPandas`` on each entity partition of a micro-batch's tile rows (entities
    merged ``max_entities`` at a time). With ``final_lag_us`` (the query's watermark delay plus one tile), tiles
    ending that long before the partition's newest watermark time are final: no later event reaches them
    (the next watermark is at least that newest time minus the delay), so they may be rolled up."""
    from streaming.tile_store import tile_ttl_s

    ttl_s = tile_ttl_s(max(v.max_window_us for v in views))

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from streaming.tile_store import write_view_rows

        writer = online  # core.online_store.OnlineStore (picklable; tiles and Feast rows, routed by slot)
        out = []
        try:
            parts = [f for f in frames if len(f)]
            if not parts:
                return
            rows = pd.concat(parts, ignore_index=True)
            letters = rows[rows["vid"] == -1]
            if len(letters):
                from core.kafka_io import make_producer
                from streaming import dead_letters

                producer = make_producer(bootstrap, role="stream")
                try:  # raises if Kafka did not take them all: the batch fails and is replayed
                    dead_letters.send(producer, dlq_topic, _dead_letters(letters, batch_id), writer.sync, writer.project)
                finally:
                    producer.close(timeout=5)
                for reason, n in letters["dlq"].map(lambda d: d["reason"]).value_counts().items():
                    out.append((-1, 0, 0, reason, int(n), 0))
            tile_rows = rows["wend_us"][rows["vid"] >= 0]
            final_before = None if final_lag_us is None or not len(tile_rows) else int(tile_rows.max()) - final_lag_us
            for i, spec in enumerate(views):
                mine = rows[rows["vid"] == i]
                if len(mine):
                    tiles, written = write_view_rows(spec, mine, writer, ttl_s, epoch, epochs.get(spec.name),
                                                     max_entities, final_before)
                    out.append((i, tiles, written, None, 0, int(mine["last"].max())))
        finally:
            writer.close()
        if out:
            yield pd.DataFrame(out, columns=["vid", "tiles", "rows", "reason", "n", "max_ts"])

    return run


@dataclass
class BatchWriter:
    views: tuple[ViewSpec, ...]
    online: object  # core.online_store.OnlineStore
    bootstrap: str
    dlq_topic: str
    partitions: int
    batches_dir: Path  # the per-batch counters (streaming.batch_log)
    metrics: StreamMetrics
    epoch: bytes = b""  # the state schema id of this query
    epochs: dict | None = None  # view -> allowed epochs (see streaming.evolution)
    final_lag_us: int | None = None  # tiles this long before a batch's newest watermark time are final (roll-ups)
    fault_hook: object = None  # tests: called with (batch_id, step) to simulate a crash

    def __call__(self, df, batch_id: int) -> None:
        started = time.perf_counter()
        from streaming import tile_store

        run = partition_writer(self.views, self.online, self.bootstrap, self.dlq_topic, batch_id,
                               self.epoch, self.epochs or {}, tile_store.MAX_ENTITIES_PER_WRITE, self.final_lag_us)
        if self.fault_hook is not None:
            self.fault_hook(batch_id, "before_write")
        from pyspark.sql import functions as F

        tiles = df.withColumn("wend_us", F.unix_micros("wend")).drop("wend")
        result = tiles.repartition(self.partitions, "vid", "k").mapInPandas(run, RESULT_SCHEMA).collect()
        write_time = time.time()
        if self.fault_hook is not None:
            self.fault_hook(batch_id, "after_write")
        counts: dict[str, int] = {}
        newest: dict[str, int] = {}  # per view, the newest event time (us) of the tiles written
        for r in result:
            if r["vid"] == -1:
                counts[f"dlq_{r['reason']}"] = counts.get(f"dlq_{r['reason']}", 0) + int(r["n"])
                self.metrics.dlq.labels(reason=r["reason"]).inc(int(r["n"]))
            else:
                view = self.views[r["vid"]].name
                counts[f"tiles_{view}"] = counts.get(f"tiles_{view}", 0) + int(r["tiles"])
                counts[f"online_{view}"] = counts.get(f"online_{view}", 0) + int(r["rows"])
                self.metrics.rows_written.labels(view=view, store="online").inc(int(r["rows"]))
                newest[view] = max(newest.get(view, 0), int(r["max_ts"]))
        for view, ts in newest.items():  # the view's age (rtml_feature_view_age_seconds) restarts from it
            self.metrics.view_freshness.observe(view, ts / 1e6)
        max_ts = max(newest.values(), default=0)
        seconds = time.perf_counter() - started
        self.metrics.batch_duration.observe(seconds)
        if max_ts:
            freshness = write_time - max_ts / 1e6
            self.metrics.freshness.set(freshness)
            self.metrics.freshness_hist.observe(max(freshness, 0.0))
        batch_log.record(self.batches_dir, batch_id, counts)
        if self.fault_hook is not None:
            self.fault_hook(batch_id, "after_record")
        self.last = {"batch_id": batch_id, "seconds": seconds, "write_time": write_time, "max_ts": max_ts, **counts}
        for observer in getattr(self, "observers", []):
            observer(self.last)
