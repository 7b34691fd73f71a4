"""Every prediction to the Kafka ``predictions`` topic, without ever slowing or failing a request.

Requests append a small tuple to a bounded in-memory queue (a deque: no lock, no thread wake-up on the
request path; when it is full the record is dropped and counted). One daemon thread wakes every
``flush_interval_s``, turns the queued tuples into ``PREDICTION_FIELDS`` records in small chunks and
hands them to a kafka-python producer (long linger: few wake-ups of its sender thread). Waking rarely
and yielding between chunks keeps the GIL with the event loop: a Python thread that wakes per request
makes the request thread wait for the GIL. The thread waits for the broker in the background (short
``check_broker``, retry), so a missing broker neither blocks start-up nor requests.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from core.contracts import PREDICTION_FIELDS
from core.settings import settings

log = logging.getLogger(__name__)
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode

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
        flush_interval_s: float = 0.05,
        chunk: int = 64,
    ):
        s = settings()
        self.topic = topic or s.topics.predictions
        self.bootstrap = bootstrap or s.kafka_bootstrap
        self.model_name = model_name
        self.model_version = model_version
        self.feature_names = feature_names
        self.maxsize = maxsize
        self.queue: collections.deque[Entry] = collections.deque()
        self.flush_interval_s = flush_interval_s
        self.chunk = chunk
        self.on_drop = on_drop or (lambda reason, n: None)
        self.retry_s = retry_s
        self.sent = 0
        self.dropped = 0
        self.connected = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._producer = None
        self._partitions: list[int] = [0]
        self._next = 0

    def start(self) -> None:
        self._thread.start()

    def put(self, entry: Entry) -> None:
        """Enqueue one prediction; never blocks (drops and counts when the queue is full)."""
        if len(self.queue) >= self.maxsize:
            self.dropped += 1
            self.on_drop("queue_full", 1)
        else:
            self.queue.append(entry)

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
        from core.kafka_io import check_broker, make_producer

        while not self._stop.is_set():
            try:
                check_broker(self.bootstrap, timeout_s=0.5)
                # Values are serialized here (compact JSON bytes); partitions are chosen round-robin
                # (request ids are unique, so kafka-python's pure-Python murmur2 buys nothing).
                self._producer = make_producer(
                    self.bootstrap,
                    role="serving",
                    key_serializer=None,
                    value_serializer=None,
                    linger_ms=100,
                    max_block_ms=2000,
                    retries=2,
                    request_timeout_ms=5000,
                    delivery_timeout_ms=12_000,
                )
                self._partitions = sorted(self._producer.partitions_for(self.topic) or [0])
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
        q = self.queue
        while not self._stop.is_set():
            if not q:
                self._stop.wait(self.flush_interval_s)
                continue
            partitions = self._partitions
            for _ in range(min(self.chunk, len(q))):
                entry = q.popleft()
                try:
                    record = self.record(entry)
                    self._next = (self._next + 1) % len(partitions)
                    future = self._producer.send(
                        self.topic,
                        key=record["request_id"].encode(),
                        value=_dumps(record).encode(),
                        partition=partitions[self._next],
                    )
                    future.add_errback(self._failed)
                    self.sent += 1
                except Exception as exc:  # buffer full / broker gone for longer than max_block_ms
                    self._failed(exc)
            time.sleep(0)  # let the event loop have the GIL between chunks
        if self._producer is not None:
            try:
                self._producer.flush(timeout=2)
                self._producer.close(timeout=2)
            except Exception:  # noqa: BLE001 - shutting down
                pass

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        self._thread.join(timeout)


assert set(PREDICTION_FIELDS) == {
    "request_id", "transaction_id", "user_id", "merchant_id", "prediction_timestamp", "model_name",
    "model_version", "score", "decision", "features", "missing_features", "feature_age_seconds",
}, "core/contracts.py PREDICTION_FIELDS changed: update PredictionLog.record"
