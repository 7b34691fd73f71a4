"""Baseline only (benchmarks): the former driver-side stream job, kept to measure the tiled job against.

Kafka (Spark's own source) -> parse/validate (Spark SQL) -> foreachBatch -> ``toPandas()`` on the driver
-> exact per-event windows in pandas/numba -> Redis + Parquet + DLQ. Superseded by
:mod:`streaming.stream_job`; remove once the benchmark no longer needs the comparison.

Usage from Python::

    job = StreamJob(StreamOptions(job_name="stream"))
    query = job.start()          # a running StreamingQuery
    ...; query.stop(); job.close()

The per-batch logic lives in :class:`tests.benchmarks.baseline.processor.BatchProcessor`; this module wires Spark,
Kafka, the writers and the metrics around it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from core.contracts import domain_topics, stream_rules
from core.settings import settings
from streaming.feature_specs import StreamSpec, load_stream_spec
from streaming.metrics import StreamMetrics
from streaming.parsing import parse_events
from tests.benchmarks.baseline.processor import BatchProcessor
from tests.benchmarks.baseline.state_store import StateStore

log = logging.getLogger(__name__)


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
    max_offsets_per_trigger: int | None = None
    online_writer: str = "pipelined"  # or "feast"
    metrics_port: int = 9108
    shuffle_partitions: int = 2
    offline_dirs: dict[str, str] | None = None  # tests: per-view output folders
    warm_start: bool = False  # seed an empty state from the raw history (see tests.benchmarks.baseline.warm_start)
    warm_start_path: str | None = None  # default: the registry's transactions_stream batch source

    def checkpoint(self) -> Path:
        return Path(self.checkpoint_dir or settings().state_dir / "checkpoints" / self.job_name)


class StreamJob:
    """Builds and starts the streaming query; owns the Kafka producer, Redis client and metrics."""

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
        if not options.bootstrap and spec.bootstrap and spec.bootstrap != s.kafka_bootstrap:
            log.warning("Kafka bootstrap from the registry (%s) differs from settings (%s): using the registry's; "
                        "re-run `rtml apply` or pass --bootstrap to change it", spec.bootstrap, s.kafka_bootstrap)
        self.dlq_topic = options.dlq_topic or domain_topics().dead_letters
        check_broker(self.spec.bootstrap)
        self.metrics = metrics or StreamMetrics()
        self._spark = spark
        self._fault_hook = fault_hook
        self._producer = None
        self._redis = None
        self.processor: BatchProcessor | None = None
        self.query = None
        self._stop_lag = threading.Event()

    # -- wiring ---------------------------------------------------------------------------------
    def _redis_client(self):
        import redis

        if self._redis is None:
            from core.redis_auth import connect

            self._redis = connect(settings().redis_url, role="writer", socket_connect_timeout=2, socket_timeout=10)
            try:
                self._redis.ping()
            except redis.RedisError as exc:
                from core.errors import UserFacingError

                raise UserFacingError(f"Redis does not answer at {settings().redis_url}: {exc}") from exc
        return self._redis

    def _online_writer(self):
        from core.online_store import OnlineStore
        from tests.benchmarks.baseline.online_writer import FeastOnlineWriter

        self._redis_client()  # fail fast with a clear error when Redis does not answer
        online = OnlineStore.from_settings(feast_store=self.store)
        if self.options.online_writer == "feast":
            return FeastOnlineWriter(online)
        if self.options.online_writer == "pipelined":
            return online
        raise ValueError(f"unknown online writer {self.options.online_writer!r} (feast|pipelined)")

    def _send_dead_letters(self, letters) -> None:
        from core.kafka_io import make_producer

        if self._producer is None:
            self._producer = make_producer(self.spec.bootstrap, role="stream")
        from streaming import dead_letters

        dead_letters.send(self._producer, self.dlq_topic, letters)  # raises when Kafka did not take them all

    def spark(self):
        if self._spark is None:
            from streaming.spark_session import build_session

            self._spark = build_session(
                f"rtml-{self.options.job_name}", self.options.master, self.options.shuffle_partitions
            )
        return self._spark

    def build_processor(self) -> BatchProcessor:
        return BatchProcessor(
            spec=self.spec,
            state_store=StateStore(self.options.checkpoint(), self.spec.views),
            online_writer=self._online_writer(),
            job_name=self.options.job_name,
            dlq_send=self._send_dead_letters,
            metrics=self.metrics,
            offline_dirs=self.options.offline_dirs,
            fault_hook=self._fault_hook,
            warm_start=self._warm_start_loader(),
        )

    def _warm_start_loader(self):
        if not self.options.warm_start:
            return None
        from tests.benchmarks.baseline.warm_start import history_loader, stream_history_loader

        columns = sorted({c for v in self.spec.views for c in (v.join_key, *v.value_columns)})
        if self.options.warm_start_path:
            return history_loader(self.options.warm_start_path, columns)
        return stream_history_loader(self.store, columns)

    def _foreach_batch(self, batch_df, batch_id: int) -> None:
        t0 = time.perf_counter()
        rows = batch_df.toPandas()
        collect_s = time.perf_counter() - t0
        if rows.empty:
            return
        result = self.processor.process(rows, batch_id)
        log.info(
            "batch %d: %d read, %d dlq, %d late, %d dropped, online %s, offline %s; collect %.2fs, process %.2fs",
            batch_id, result.events_read, sum(result.dlq.values()), result.late_within_watermark,
            result.late_dropped, result.online_rows, result.offline_rows, collect_s, result.seconds,
        )

    def start(self):
        """Start the streaming query (returns the StreamingQuery)."""
        from core.kafka_io import ensure_topics, spark_kafka_options

        ensure_topics([self.dlq_topic], bootstrap=self.spec.bootstrap, role="stream")
        self._redis_client()
        self.processor = self.build_processor()
        spark = self.spark()
        reader = (
            spark.readStream.format("kafka")
            .options(**spark_kafka_options("stream", self.spec.bootstrap))
            .option("subscribe", self.spec.topic)
            .option("startingOffsets", self.options.starting_offsets)
            .option("failOnDataLoss", "true")  # offsets deleted by retention before they were read: stop loudly
        )
        if self.options.max_offsets_per_trigger:
            reader = reader.option("maxOffsetsPerTrigger", str(self.options.max_offsets_per_trigger))
        needed = sorted({v.join_key for v in self.spec.views} | {c for v in self.spec.views for c in v.value_columns}
                        - {"event_timestamp"})
        parsed = parse_events(reader.load(), self.spec.rules, keep_columns=tuple(needed))
        checkpoint = self.options.checkpoint()
        checkpoint.mkdir(parents=True, exist_ok=True)
        self.query = (
            parsed.writeStream.queryName(self.options.job_name)
            .foreachBatch(self._foreach_batch)
            .option("checkpointLocation", str(checkpoint / "spark"))
            .trigger(processingTime=f"{int(self.options.trigger_seconds * 1000)} milliseconds")
            .start()
        )
        self._stop_lag.clear()
        threading.Thread(target=self._watch_lag, name="rtml-stream-lag", daemon=True).start()
        log.info("stream job %s: %s@%s -> %s (checkpoint %s)", self.options.job_name, self.spec.topic,
                 self.spec.bootstrap, [v.name for v in self.spec.views], checkpoint)
        return self.query

    def _watch_lag(self) -> None:
        while not self._stop_lag.wait(1.0):
            query = self.query
            if query is None:
                return
            try:
                progress = query.lastProgress
            except Exception:  # noqa: BLE001 - query gone
                return
            if not progress:
                continue
            for source in progress.get("sources", []):
                try:
                    latest = json.loads(source.get("latestOffset") or "{}")
                    end = json.loads(source.get("endOffset") or "{}")
                except (TypeError, ValueError):
                    continue
                for topic, parts in latest.items():
                    for part, offset in parts.items():
                        done = end.get(topic, {}).get(part, 0)
                        self.metrics.consumer_lag.labels(partition=str(part)).set(max(int(offset) - int(done), 0))

    def stop(self) -> None:
        self._stop_lag.set()
        if self.query is not None:
            try:
                self.query.stop()
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        self.stop()
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None
