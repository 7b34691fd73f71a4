"""The stream job: Kafka -> parse/validate -> tiles in Spark's state store -> Redis, all on executors.

One streaming query (Spark SQL end to end, nothing collected to the driver but per-batch counts):

1. Kafka records are parsed and validated (:func:`streaming.parsing.parse_events`).
2. A second copy of an event (same event id) is dropped, once per event; then each valid event becomes
   one row per stream view (``vid``, entity key ``k``, tile start, values); a dead letter becomes one
   row of its own (``vid = -1``, keyed by its offset). One pass, one parse.
3. ``groupBy(vid, k, tile, wend)`` aggregates the tile measures (:mod:`streaming.tiles`) natively in
   the JVM, state in the RocksDB state store (changelog checkpointing), update output mode: each
   micro-batch emits the absolute value of every tile it touched.
4. ``foreachBatch`` repartitions those tile rows by entity and, on the executors
   (:mod:`streaming.tile_store`), writes them to Redis, merges each touched entity's tiles into its
   features and upserts them in Feast's format, then rolls the entity's final fine tiles that only the
   coarsest aggregations still read up into coarse tiles; dead letters go to the DLQ topic.

Event time and lateness: the watermark column ``wend`` is the end of the (coarsest view) tile of
``min(event time, processing time)``, so an event stamped in the future (inside the DLQ tolerance)
cannot push the watermark past processing time; the watermark delay is the source's
``watermark_delay_threshold`` plus one tile, so the watermark never passes processing time minus the
allowed lateness. A tile leaves the state once the watermark passes its end; an event whose tile has
left is dropped and counted (``rtml_stream_late_events_total{kind="dropped"}``).

Duplicates: an event sent twice (same event id, :func:`core.contracts.event_id_field`) is counted once: the
event rows go through ``dropDuplicatesWithinWatermark`` on the event id before they are split per view, state
bounded by the same watermark (a copy arriving after its id left the state is older than the watermark,
dropped as late). Dropped copies are counted per batch (``duplicates_dropped``).

Exactly-once: a replayed micro-batch recomputes the same absolute tile values from the same state
version and offsets; Redis tiles are overwritten with identical values and the Feast rows move only
forward in event time. Offline rows come from the batch job over the raw event log
(:mod:`streaming.backfill`), with the same tile code: stream and backfill agree to the bit.

State schema versioning: the Spark checkpoint lives under ``<checkpoint>/spark-<schema id>``, the id a
hash of the tile layout (views, keys, tile sizes, measures). After ``feast apply`` changed the views, a
restart hands over at the committed offsets and seeds the changed views (:mod:`streaming.evolution`).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from core.contracts import domain_topics, event_id_field, stream_rules
from core.settings import settings
from streaming import batch_log
from streaming.feature_specs import StreamSpec, load_stream_spec
from streaming.metrics import StreamMetrics
from streaming.parsing import parse_events

log = logging.getLogger(__name__)

DEFAULT_MAX_OFFSETS_PER_TRIGGER = 200_000  # bounds the first batch of a long backlog (and its replay)
KAFKA_FETCH_MAX_WAIT_MS = 20  # broker-side wait of a fetch with no new data (Kafka default 500 ms)


@dataclass
class StreamOptions:
    job_name: str = "stream"
    master: str | None = None
    topic: str | None = None  # default: the registry's KafkaSource, then settings
    bootstrap: str | None = None
    dlq_topic: str | None = None
    checkpoint_dir: Path | None = None  # default: <state_dir>/checkpoints/<job_name>
    trigger_seconds: float = 1.0
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = DEFAULT_MAX_OFFSETS_PER_TRIGGER  # None/0: unbounded (not advised)
    metrics_port: int = 9108
    shuffle_partitions: int = 2
    ui_port: int | None = None  # Spark UI / REST API of the driver (off by default)

    def checkpoint(self) -> Path:
        return Path(self.checkpoint_dir or settings().state_dir / "checkpoints" / self.job_name)


SEEN_BATCHES_KEPT = 1_000  # batch ids remembered to count each batch's progress once (recentProgress holds 100)


def job_counters(checkpoint_dir: Path) -> dict[str, int]:
    """Cumulative counters of the job (events read, dropped late, DLQ per reason, tiles, online rows), from
    its bounded per-batch log (:mod:`streaming.batch_log`: a replayed batch is counted once)."""
    return batch_log.counters(Path(checkpoint_dir) / "batches")


class StreamJob:
    """Builds and starts the streaming query; owns the metrics and the progress watcher."""

    def __init__(self, options: StreamOptions, spark=None, store=None, metrics: StreamMetrics | None = None,
                 fault_hook=None):
        from core.feast_store import get_store
        from core.kafka_io import check_broker

        self.options = options
        self.store = store or get_store()
        spec = load_stream_spec(self.store)
        s = settings()
        self.spec = StreamSpec(
            views=spec.views,
            topic=options.topic or spec.topic,
            bootstrap=options.bootstrap or spec.bootstrap or s.kafka_bootstrap,
            watermark_delay_us=spec.watermark_delay_us,
            rules=spec.rules or stream_rules(),
        )
        self.event_id = event_id_field(self.spec.rules)  # an event sent twice counts once
        self.dlq_topic = options.dlq_topic or domain_topics().dead_letters
        check_broker(self.spec.bootstrap)
        self.metrics = metrics or StreamMetrics()
        self._spark = spark
        from streaming.writer import kill_hook_from_env

        self._fault_hook = fault_hook or kill_hook_from_env()  # tests: (batch_id, step) -> may crash the job
        self.query = None
        self._stop = threading.Event()
        self._seen_batches: set[int] = set()

    def spark(self):
        if self._spark is None:
            from streaming.spark_session import build_session

            # a long-running service: no console progress bar per micro-batch in its log
            self._spark = build_session(f"rtml-{self.options.job_name}", self.options.master,
                                        self.options.shuffle_partitions, ui_port=self.options.ui_port,
                                        extra_conf={"spark.ui.showConsoleProgress": "false"})
        return self._spark

    def _online_store(self):
        from core.online_store import OnlineStore

        return OnlineStore.from_settings(feast_store=self.store)

    def _check_redis(self) -> None:
        """Fail fast with a clear message when the online store (one Redis, a cluster or Sentinel) does not answer."""
        from core.errors import UserFacingError

        online = self._online_store()
        try:
            for client in online.sync.nodes():
                client.ping()
        except Exception as exc:  # noqa: BLE001 - redis errors, refused connections, no slot table
            raise UserFacingError(f"Redis does not answer at {settings().redis_url}: {exc}") from exc
        finally:
            online.close()

    @property
    def _tile_us(self) -> int:
        """The coarsest stored tile of the views (the unit of the watermark column ``wend``)."""
        return max(v.tile_us for v in self.spec.views)

    @property
    def watermark_delay_us(self) -> int:
        """The watermark's delay behind the newest ``wend``: the source's allowed lateness plus one tile."""
        return self.spec.watermark_delay_us + self._tile_us

    def tiles(self, events):
        """The tile aggregation of parsed events (a streaming DataFrame of tile rows, update mode)."""
        from streaming.state_schema import drop_duplicate_events, event_rows, tile_aggregation, view_rows

        rows = event_rows(events, self.spec.views, event_id=self.event_id)
        delay_ms = self.watermark_delay_us // 1000
        rows = drop_duplicate_events(rows.withWatermark("wend", f"{delay_ms} milliseconds"))
        return tile_aggregation(view_rows(rows, self.spec.views), self.spec.views)

    def start(self):
        """Start the streaming query (returns the StreamingQuery)."""
        from core.kafka_io import ensure_topics, spark_kafka_options
        from streaming.evolution import plan, remerge, save_lineage, seed
        from streaming.state_schema import schema_id
        from streaming.writer import BatchWriter

        ensure_topics([self.dlq_topic], bootstrap=self.spec.bootstrap, role="stream")
        self._check_redis()
        spark = self.spark()
        checkpoint = self.options.checkpoint()
        checkpoint.mkdir(parents=True, exist_ok=True)
        sid = schema_id(self.spec.views, self.event_id)
        self.plan = plan(checkpoint, self.spec.views, sid)
        if self.plan.seed_views:
            seed(spark, self.plan, self.spec.topic, self.spec.bootstrap, self.spec.rules, self._online_store())
        if self.plan.remerge_views:
            remerge(spark, self.plan, self._online_store())
        reader = (
            spark.readStream.format("kafka")
            .options(**spark_kafka_options("stream", self.spec.bootstrap))
            .option("subscribe", self.spec.topic)
            .option("startingOffsets", self.plan.starting_offsets or self.options.starting_offsets)
            .option("failOnDataLoss", "true")  # offsets deleted by retention before they were read: stop loudly
            # a task's fetch at the end of a partition is answered within 20 ms, not the broker's default
            # 500 ms: the slowest micro-batches at 5k events/s spent it idle in the Kafka read stage
            .option("kafka.fetch.max.wait.ms", str(KAFKA_FETCH_MAX_WAIT_MS))
        )
        if self.options.max_offsets_per_trigger:
            reader = reader.option("maxOffsetsPerTrigger", str(self.options.max_offsets_per_trigger))
        needed = sorted({v.join_key for v in self.spec.views} | {c for v in self.spec.views for c in v.value_columns}
                        | {self.event_id} - {"event_timestamp"})
        parsed = parse_events(reader.load(), self.spec.rules, keep_columns=tuple(needed))
        writer = BatchWriter(
            views=self.spec.views, online=self._online_store(),
            bootstrap=self.spec.bootstrap, dlq_topic=self.dlq_topic, partitions=self.options.shuffle_partitions,
            batches_dir=checkpoint / "batches", metrics=self.metrics, epoch=sid.encode(), epochs=self.plan.epochs,
            fault_hook=self._fault_hook,
            final_lag_us=self.watermark_delay_us + self._tile_us,
        )
        self.writer = writer
        self.query = (
            self.tiles(parsed).writeStream.queryName(self.options.job_name)
            .outputMode("update")
            .foreachBatch(writer)
            .option("checkpointLocation", str(checkpoint / f"spark-{sid}"))
            .trigger(processingTime=f"{int(self.options.trigger_seconds * 1000)} milliseconds")
            .start()
        )
        save_lineage(checkpoint, self.plan.lineage)
        self._stop.clear()
        threading.Thread(target=self._watch_progress, name="rtml-stream-progress", daemon=True).start()
        log.info("stream job %s: %s@%s -> %s (checkpoint %s, state schema %s)", self.options.job_name,
                 self.spec.topic, self.spec.bootstrap, [v.name for v in self.spec.views], checkpoint, sid)
        return self.query

    def _watch_progress(self) -> None:
        while not self._stop.wait(0.5):
            query = self.query
            if query is None:
                return
            try:
                progresses = query.recentProgress
            except Exception:  # noqa: BLE001 - query gone
                return
            for progress in progresses:
                self.observe_progress(progress)

    def observe_progress(self, progress: dict) -> None:
        """Counters from one query progress (events read, late events dropped, consumer lag), once per batch."""
        batch = int(progress.get("batchId", -1))
        if batch in self._seen_batches:
            return
        self._seen_batches.add(batch)
        if len(self._seen_batches) > 2 * SEEN_BATCHES_KEPT:  # bounded: Spark lists only its last 100 progresses
            self._seen_batches = {b for b in self._seen_batches if b > batch - SEEN_BATCHES_KEPT}
        events = int(progress.get("numInputRows") or 0)
        # Late events are dropped by the first stateful operator, the duplicate drop (one row per event; the
        # tile aggregation after it, one row per view, sees none late in the same batch).
        dropped = sum(int((op.get("customMetrics") or {}).get("numRowsDroppedByWatermark", 0) or 0)
                      + int(op.get("numRowsDroppedByWatermark") or 0) for op in progress.get("stateOperators", [])
                      if "dedup" in str(op.get("operatorName", "")).lower())
        duplicates = sum(int((op.get("customMetrics") or {}).get("numDroppedDuplicateRows", 0) or 0)
                         for op in progress.get("stateOperators", []))
        self.metrics.events_read.inc(events)
        self.metrics.late.labels(kind="dropped").inc(dropped)
        batch_log.add(self.options.checkpoint() / "batches", batch,
                      {"events_read": events, "late_dropped": dropped, "duplicates_dropped": duplicates})
        for source in progress.get("sources", []):
            try:
                latest = json.loads(source.get("latestOffset") or "{}") or {}
                end = json.loads(source.get("endOffset") or "{}") or {}
            except (TypeError, ValueError):
                continue
            for topic, parts in latest.items():
                for part, offset in (parts or {}).items():
                    done = (end.get(topic) or {}).get(part, 0)
                    self.metrics.consumer_lag.labels(partition=str(part)).set(max(int(offset) - int(done), 0))

    def stop(self) -> None:
        if self.query is not None:
            try:
                self.query.stop()
            except Exception:  # noqa: BLE001
                pass
            try:
                for progress in self.query.recentProgress:
                    self.observe_progress(progress)
            except Exception:  # noqa: BLE001
                pass
        self._stop.set()

    def close(self) -> None:
        self.stop()
