"""Every prediction to the Kafka ``predictions`` topic, without ever slowing or failing a request.

Requests put a small tuple on a bounded in-memory queue (``put_nowait``: when it is full the record is
dropped and counted). One daemon thread turns tuples into ``PREDICTION_FIELDS`` records and hands them
to a kafka-python producer. The thread waits for the broker in the background (short ``check_broker``,
retry), so a missing broker neither blocks start-up nor requests.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rtml.config import settings
from streaming.schemas import PREDICTION_FIELDS

log = logging.getLogger(__name__)

# (request_id, transaction_id, user_id, merchant_id, epoch seconds, score, decision, row, missing, age)
Entry = tuple


def _clean(v: float) -> float | None:
    return None if v != v or math.isinf(v) else v


class PredictionLog:
    """Bounded queue + background producer thread for the ``predictions`` topic."""

    def __init__(
        self,
        model_name: str,
        model_version: str,
        feature_names: list[str],
        maxsize: int = 10_000,
        on_drop: Callable[[str, int], None] | None = None,
        topic: str | None = None,
        bootstrap: str | None = None,
        retry_s: float = 2.0,
    ):
        s = settings()
        self.topic = topic or s.topics.predictions
        self.bootstrap = bootstrap or s.kafka_bootstrap
        self.model_name = model_name
        self.model_version = model_version
        self.feature_names = feature_names
        self.queue: queue.Queue[Entry | None] = queue.Queue(maxsize=maxsize)
        self.on_drop = on_drop or (lambda reason, n: None)
        self.retry_s = retry_s
        self.sent = 0
        self.dropped = 0
        self.connected = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._producer = None

    def start(self) -> None:
        self._thread.start()

    def put(self, entry: Entry) -> None:
        """Enqueue one prediction; never blocks (drops and counts when the queue is full)."""
        try:
            self.queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1
            self.on_drop("queue_full", 1)

    def record(self, e: Entry) -> dict[str, Any]:
        """The ``PREDICTION_FIELDS`` record of one queued entry."""
        request_id, txn_id, user_id, merchant_id, ts, score, decision, row, missing, age = e
        return {
            "request_id": request_id,
            "transaction_id": txn_id,
            "user_id": user_id,
            "merchant_id": merchant_id,
            "prediction_timestamp": datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "score": score,
            "decision": decision,
            "features": {n: _clean(v) for n, v in zip(self.feature_names, row, strict=True)},
            "missing_features": list(missing),
            "feature_age_seconds": None if age is None else _clean(age),
        }

    # ---- background thread ----------------------------------------------------------------------
    def _connect(self) -> None:
        from rtml.kafka import check_broker, make_producer

        while not self._stop.is_set():
            try:
                check_broker(self.bootstrap, timeout_s=0.5)
                self._producer = make_producer(
                    self.bootstrap, max_block_ms=2000, retries=2, request_timeout_ms=5000, delivery_timeout_ms=12_000
                )
                self.connected = True
                log.info("prediction log connected to %s (topic %s)", self.bootstrap, self.topic)
                return
            except Exception as exc:  # broker absent or not ready: keep serving, retry later
                log.warning("prediction log: Kafka not available (%s); retrying in %.0f s", exc, self.retry_s)
                self._stop.wait(self.retry_s)

    def _failed(self, _exc: Exception) -> None:
        self.dropped += 1
        self.on_drop("send_failed", 1)

    def _run(self) -> None:
        self._connect()
        while not self._stop.is_set():
            try:
                entry = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if entry is None:
                break
            try:
                record = self.record(entry)
                future = self._producer.send(self.topic, key=record["request_id"], value=record)
                future.add_errback(self._failed)
                self.sent += 1
            except Exception as exc:  # buffer full / broker gone for longer than max_block_ms
                self._failed(exc)
                if self._stop.is_set():
                    break
                time.sleep(0.05)
        if self._producer is not None:
            try:
                self._producer.flush(timeout=2)
                self._producer.close(timeout=2)
            except Exception:  # noqa: BLE001 - shutting down
                pass

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)


assert set(PREDICTION_FIELDS) == {
    "request_id", "transaction_id", "user_id", "merchant_id", "prediction_timestamp", "model_name",
    "model_version", "score", "decision", "features", "missing_features", "feature_age_seconds",
}, "streaming/schemas.py PREDICTION_FIELDS changed: update PredictionLog.record"
