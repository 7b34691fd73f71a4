"""`rtml stream`: run the Kafka -> Spark -> Feast (Redis + Parquet) stream job until interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from core.settings import settings
from streaming.stream_job import DEFAULT_MAX_OFFSETS_PER_TRIGGER

log = logging.getLogger("rtml.stream")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    s = settings()
    parser.add_argument("--job-name", default="stream", help="names the checkpoint folder and output files")
    parser.add_argument("--master", default=None, help=f"Spark master (default {s.spark_master})")
    parser.add_argument("--topic", default=None, help="source topic (default: the registry's KafkaSource topic)")
    parser.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default: registry, then settings)")
    parser.add_argument("--dlq-topic", default=None, help="dead-letter topic (default: <event topic>_dlq)")
    parser.add_argument("--checkpoint-dir", default=None, help="default <state_dir>/checkpoints/<job-name>")
    parser.add_argument("--trigger-seconds", type=float, default=1.0, help="micro-batch interval")
    parser.add_argument("--starting-offsets", default="earliest", help="earliest|latest, first start only")
    parser.add_argument("--max-offsets-per-trigger", type=int, default=DEFAULT_MAX_OFFSETS_PER_TRIGGER,
                        help=f"records per micro-batch at most (default {DEFAULT_MAX_OFFSETS_PER_TRIGGER}; 0: unbounded)")
    parser.add_argument("--metrics-port", type=int, default=settings().stream_metrics_port,
                        help="Prometheus port (0: off; default RTML_STREAM_METRICS_PORT or 9108)")
    parser.add_argument("--shuffle-partitions", type=int, default=2)
    parser.add_argument("--ui-port", type=int, default=None, help="Spark UI / REST API port of the driver (default: off)")
    parser.add_argument("--timeout-seconds", type=float, default=None, help="stop after this long (default: run until interrupted)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from streaming.stream_job import StreamJob, StreamOptions

    options = StreamOptions(
        job_name=args.job_name,
        master=args.master,
        topic=args.topic,
        bootstrap=args.bootstrap,
        dlq_topic=args.dlq_topic,
        checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
        trigger_seconds=args.trigger_seconds,
        starting_offsets=args.starting_offsets,
        max_offsets_per_trigger=args.max_offsets_per_trigger,
        metrics_port=args.metrics_port,
        shuffle_partitions=args.shuffle_partitions,
        ui_port=args.ui_port,
    )
    job = StreamJob(options)
    job.metrics.serve(options.metrics_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    query = job.start()
    print(f"rtml stream: running ({job.spec.topic} -> {[v.name for v in job.spec.views]}), "
          f"checkpoint {options.checkpoint()}, metrics :{options.metrics_port}", flush=True)
    try:
        while not stop.wait(1.0):
            if not query.isActive:
                exc = query.exception()
                if exc is not None:
                    print(f"rtml stream: query failed: {exc}", flush=True)
                    return 1
                return 0
            if args.timeout_seconds is not None and args.timeout_seconds > 0:
                args.timeout_seconds -= 1.0
                if args.timeout_seconds <= 0:
                    break
    finally:
        job.close()
    return 0
