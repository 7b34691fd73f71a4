"""The monitor's Kafka loop: ``predictions`` + ``labels`` in one consumer group, windows fed to the monitor.

Offsets are committed after each evaluated window, so a restart resumes where the last evaluated
window ended (at-least-once: the rows of an unfinished window are read again). Labels partitions are
committed on the stats tick. Before any commit the monitor saves its state, which holds the predictions
still waiting for a label and the labels waiting for a prediction (see ``PerformanceTracker``). Malformed messages are counted and skipped.

Each record names the model that made it: when the production variant's model changes (a promotion
or rollback reached serving), the window in progress is closed against the old model's reference (if
it has ``min_events`` rows) and the new model's reference is used (``Monitor.follow_model``). Records
served by a rollout's challenger are left to the rollout comparison.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from core.prediction_messages import expand
from monitoring.decode import MalformedMessage, decode_label
from monitoring.windows import Window, Windower

CHALLENGER = "challenger"  # bentos.variants: the variant a rollout tries

if TYPE_CHECKING:
    from monitoring.monitor import Monitor

log = logging.getLogger(__name__)


def consume(
    monitor: Monitor,
    consumer,
    predictions_topic: str,
    labels_topic: str | None,
    stop: threading.Event | None = None,
    max_windows: int | None = None,
    idle_exit_s: float | None = None,
    idle_flush_s: float | None = None,
    stats_every_s: float = 5.0,
) -> int:
    """Consume until ``stop`` is set, ``max_windows`` windows were evaluated, or nothing arrived for
    ``idle_exit_s`` seconds. Returns the number of windows evaluated."""
    from kafka.structs import OffsetAndMetadata

    mon = monitor
    stop = stop or threading.Event()
    windower = Windower(mon.config.window)
    timed = mon.config.window.seconds is not None
    processed: dict[Any, int] = {}
    committed: dict[Any, int] = {}
    windows = 0
    events = 0
    last_stats = last_msg = time.monotonic()
    decode = mon.decoder.decode_full
    from monitoring.rollout import RolloutFeed

    rollout_feed = RolloutFeed(predictions_topic)
    if idle_flush_s is None and timed:
        idle_flush_s = mon.config.window.seconds

    def commit(offsets: dict[Any, int]) -> None:
        if offsets and mon.config.commit_every_window:
            mon.save_state()  # the joins waiting for a label are on disk before their offsets are committed
            consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
            committed.update(offsets)

    def commit_safe() -> None:
        """Commit what no unfinished window depends on: every partition when the window buffer is
        empty, else the labels partitions only."""
        offsets = {tp: off for tp, off in processed.items() if committed.get(tp) != off}
        if len(windower):
            offsets = {tp: off for tp, off in offsets.items() if tp.topic != predictions_topic}
        commit(offsets)

    def close(window: Window) -> None:
        nonlocal windows, windower, decode
        mon.process_window(window.rows, window.start, window.end, window.ts)
        windows += 1
        commit(dict(processed))
        if decode.__self__ is not mon.decoder:  # new reference: rows in progress have the old layout
            decode = mon.decoder.decode_full
            windower = Windower(mon.config.window)

    def switch_model(model: str) -> bool:
        """The records now come from ``model``: close the old model's window, use the new reference."""
        nonlocal windower, decode
        ref = mon.reference_for(model)
        if ref is None:
            return False
        window = windower.flush()  # None below min_events: too few rows to test, dropped
        if window is not None:
            close(window)
        mon.follow_model(model)
        decode = mon.decoder.decode_full
        windower = Windower(mon.config.window)
        return True

    def done() -> bool:
        return max_windows is not None and windows >= max_windows

    while not stop.is_set() and not done():
        batch = consumer.poll(timeout_ms=500, max_records=5000)
        now = time.monotonic()
        for tp, records in batch.items():
            if tp.topic == predictions_topic:  # one record per prediction, batch messages included
                def bad_batch(msg, exc, tp=tp) -> None:
                    malformed(mon, tp.topic, msg, exc)
                    processed[tp] = msg.offset + 1

                records = expand(records, on_malformed=bad_batch)
            # Rollout comparison (monitoring/rollout.py): sees every record; drift and performance keep the served ones.
            records = rollout_feed.observe(tp.topic, records)
            if done():
                break  # the rest of the batch is not committed: read again after a restart
            if tp.topic == predictions_topic:
                for rec in records:
                    if done():
                        break
                    try:
                        row, txn, model, variant = decode(rec.value)
                        if variant == CHALLENGER:  # served by a rollout's challenger: the rollout compares it
                            processed[tp] = rec.resume_offset
                            continue
                        if model and model != mon.reference.model and switch_model(model):
                            row, txn, model, variant = decode(rec.value)  # in the new model's feature order
                    except MalformedMessage as exc:
                        malformed(mon, tp.topic, rec, exc)
                        processed[tp] = rec.resume_offset
                        continue
                    ts = rec.timestamp / 1000.0  # the request's event time (bentos.prediction_log)
                    if timed:
                        early = windower.close_before(ts)
                        if early is not None:
                            close(early)
                    mon.performance.add_prediction(txn, row[-1])
                    processed[tp] = rec.resume_offset  # a batch message: once its last record is in
                    window = windower.add(row, ts)
                    if window is not None:
                        close(window)
                events += len(records)
            else:
                for rec in records:
                    try:
                        txn, label = decode_label(rec.value, mon.config.label_key, mon.config.label_column)
                        mon.performance.add_label(txn, label)
                    except MalformedMessage as exc:
                        malformed(mon, tp.topic, rec, exc)
                    processed[tp] = rec.offset + 1
            mon.metrics.events_total.labels(topic=tp.topic).inc(len(records))
            if records:
                last_msg = now
        if now - last_stats >= stats_every_s:
            mon.metrics.events_per_second.set(events / (now - last_stats))
            events, last_stats = 0, now
            export_lag(mon, consumer)
            commit_safe()
            mon.tick()
            if decode.__self__ is not mon.decoder:
                decode = mon.decoder.decode_full
                windower = Windower(mon.config.window)
        if batch:
            continue
        idle = time.monotonic() - last_msg
        if idle_flush_s is not None and idle >= idle_flush_s and len(windower):
            window = windower.flush()
            if window is not None:
                close(window)
        if idle_exit_s is not None and idle >= idle_exit_s:
            break
    commit_safe()
    export_lag(mon, consumer)
    mon.refresh_performance()
    return windows


def malformed(mon: Monitor, topic: str, rec, exc: Exception) -> None:
    mon.malformed += 1
    mon.metrics.malformed_total.labels(topic=topic).inc()
    if mon.malformed <= 10 or mon.malformed % 1000 == 0:
        log.warning(
            "skipping malformed %s message (partition %s offset %s): %s [%d so far]",
            topic,
            rec.partition,
            rec.offset,
            exc,
            mon.malformed,
        )


def export_lag(mon: Monitor, consumer) -> None:
    try:
        assigned = list(consumer.assignment())
        if not assigned:
            return
        ends = consumer.end_offsets(assigned)
        for tp in assigned:
            lag = max(0, ends.get(tp, 0) - consumer.position(tp))
            mon.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
    except Exception as exc:  # noqa: BLE001 - lag is informative only
        log.debug("could not read consumer lag: %s", exc)
