"""Every prediction to the Kafka ``predictions`` topic, without ever slowing or failing a request.

Requests append a small tuple to a bounded in-memory queue (a deque: no lock, no thread wake-up on the
request path; when it is full the record is dropped and counted). One daemon thread wakes every
``flush_interval_s``, turns the queued tuples into ``PREDICTION_FIELDS`` records in small chunks and
hands them to a librdkafka producer (confluent-kafka: batching and network I/O in C threads without the
GIL). Waking rarely and yielding between chunks keeps the GIL with the event loop: a Python thread that
wakes per request makes the request thread wait for the GIL. The thread waits for the broker in the
background (short ``check_broker``, retry), so a missing broker neither blocks start-up nor requests.
Every record that is not delivered (queue full, delivery failed or timed out, left at shutdown) is
counted by reason in ``rtml_serving_prediction_log_dropped_total``.

Messages: the entries of one variant taken together (a ``/predict_batch``'s, or requests queued within
one flush interval) go out as one *batch message* in columns (:mod:`core.prediction_messages`' columns
shape: one produce call and delivery report, and no record dict, per batch instead of per prediction);
a lone entry as a one-record message. A :class:`Message` is a batch message encoded already (by the
serving worker, :mod:`bentos.prediction_log_process`) and is produced as it is. Consumers read every
shape through :func:`core.prediction_messages.expand`.

Shadow predictions are queued unscored (score ``None``): this thread scores them, many rows per
XGBoost call (which releases the GIL), so a shadow challenger adds almost nothing to a request.

A record carries the request's id field and entity keys (named by the feature service), the variant
that made it (``production`` or ``challenger``), whether its score was ``served`` to the caller, and the
model's scoring time ``latency_ms``.

Event time: ``event_timestamp`` and the Kafka message timestamp are the request's event time (its
``timestamp`` / ``event_timestamp``; a stamp later than the prediction is capped at the prediction
time), else the prediction time (a batch message carries each record's in ``event_ms``). The monitor
windows and matches its seasonal reference (hour of the week) on it, so a replayed or delayed request
is compared with the hours it happened in, not with the hour it was scored. ``prediction_timestamp`` stays the wall-clock time.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec
import numpy as np

from core.prediction_messages import MAX_BATCH_BYTES, encode_columns, newest_event_ms
from core.prediction_messages import event_seconds as _event_time
from core.prediction_messages import utc_datetime as _utc
from core.settings import settings

log = logging.getLogger(__name__)
# compact JSON bytes; NaN and inf floats encode as null, aware datetimes as RFC 3339 with "Z" (microseconds
# when not zero), both in C (the same encoder as core.prediction_messages': records read back byte for byte)
_encode = msgspec.json.Encoder().encode
# librdkafka's linger: produce requests carry ~250 ms of messages. Against 50 ms, at 100-row /predict_batch
# concurrency 1 on 2 cores the broker's CPU per batch fell 40-60% (1.30-1.46 -> 0.56-0.90 ms, same run) and
# the batch p99 7-10%; a record reaches the topic at most ~0.25 s later (the monitor windows in minutes).
LINGER_MS = 250


def request_ids(n: int) -> list[str]:
    """``n`` request ids, each ``uuid.uuid4().hex``: 122 random bits from one ``os.urandom`` call (one syscall
    per batch, not one per row), with the version (4) and RFC 4122 variant bits ``uuid4`` sets, set on all
    ids at once."""
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    text = raw.tobytes().hex()
    return [text[j : j + 32] for j in range(0, 32 * n, 32)]


# (request_id, request dict, epoch seconds, score | None, decision | None, row, missing, age, variant,
#  served, scoring seconds | None). Score None = a shadow prediction still to be scored.
Entry = tuple


@dataclass
class Batch:
    """Scored predictions of one variant in columns: one queue entry for ``n`` records (a ``/predict_batch``'s,
    handed over as such, or a run of :data:`Entry` s of one variant, :meth:`of_entries`)."""

    ids: list[str]
    keys: dict[str, list]  # the id field and the entity keys: one value per record
    times: list  # each request's ``timestamp`` (datetime, ISO string or None)
    predicted: list[float]  # prediction times, epoch s
    scores: list
    decisions: list
    rows: Any  # the variant's feature values per record: a float64 matrix or a list of rows
    missing: list
    ages: list
    variant: Any
    served: list[bool]
    seconds: list  # scoring time per record, s (or None)

    @property
    def n(self) -> int:
        return len(self.ids)

    @classmethod
    def of_entries(cls, entries: list[Entry], fields: Sequence[str]) -> Batch:
        reqs = [e[1] for e in entries]
        return cls([e[0] for e in entries], {f: [r[f] for r in reqs] for f in fields},
                   [r.get("timestamp") for r in reqs], [e[2] for e in entries], [e[3] for e in entries],
                   [e[4] for e in entries], [e[5] for e in entries], [e[6] for e in entries], [e[7] for e in entries],
                   entries[0][8], [e[9] for e in entries], [e[10] for e in entries])

    def halves(self) -> tuple[Batch, Batch]:
        h = self.n // 2

        def part(sl: slice) -> Batch:
            return Batch(self.ids[sl], {f: v[sl] for f, v in self.keys.items()}, self.times[sl], self.predicted[sl],
                         self.scores[sl], self.decisions[sl], self.rows[sl], self.missing[sl], self.ages[sl],
                         self.variant, self.served[sl], self.seconds[sl])

        return part(slice(0, h)), part(slice(h, None))


class Message(NamedTuple):
    """A batch message encoded already (:func:`batch_messages`), produced as it is."""

    key: bytes
    value: bytes
    timestamp_ms: int  # the Kafka timestamp: the newest event time of its records
    n: int  # records


_MANY = (Batch, Message)


def records(entries) -> int:
    """Predictions held by queued entries (a :class:`Batch` or :class:`Message` holds many)."""
    return sum(e.n if e.__class__ in _MANY else 1 for e in entries)


def batch_messages(batch: Batch) -> list[Message]:
    """``batch`` as columns batch messages (:func:`core.prediction_messages.encode_columns`), halved until each
    fits a Kafka message. Raises ``TypeError``/``ValueError``/``OverflowError``/``msgspec.EncodeError`` when a
    value cannot be encoded or a row does not match the variant's features."""
    v = batch.variant
    rows = batch.rows if isinstance(batch.rows, np.ndarray) else np.asarray(batch.rows, dtype=np.float64)
    value = encode_columns(batch.ids, batch.keys, batch.times, batch.predicted, v.tag, v.name, list(v.features), rows,
                           batch.scores, batch.decisions, batch.missing, batch.ages, batch.served, batch.seconds)
    if len(value) > MAX_BATCH_BYTES and batch.n > 1:
        first, second = batch.halves()
        return batch_messages(first) + batch_messages(second)
    return [Message(batch.ids[0].encode(), value, newest_event_ms(batch.times, batch.predicted), batch.n)]


def event_seconds(req: dict[str, Any], now: float) -> float:
    """Epoch seconds of the request's event time (``timestamp``; naive = UTC), capped at ``now`` (the
    prediction time), or ``now`` when the request has none (:func:`core.prediction_messages.event_seconds`)."""
    return _event_time(req.get("timestamp"), now)


class PredictionLog:
    """Bounded queue + background producer thread for the ``predictions`` topic."""

    def __init__(
        self,
        id_field: str,
        entity_keys: Sequence[str],
        maxsize: int = 10_000,
        on_drop: Callable[[str, int], None] | None = None,
        topic: str | None = None,
        bootstrap: str | None = None,
        retry_s: float = 2.0,
        flush_interval_s: float = 0.05,
        chunk: int = 64,
        drain_s: float = 10.0,
        recover_s: float = 15.0,
    ):
        s = settings()
        self.topic = topic or s.topics.predictions
        self.bootstrap = bootstrap or s.kafka_bootstrap
        self.id_field = id_field
        self.entity_keys = tuple(entity_keys)
        self.maxsize = maxsize
        self.queue: collections.deque[Entry | Batch | Message] = collections.deque()
        self.put_count = self.taken = 0  # predictions queued / taken off the queue (one writer each)
        self.flush_interval_s = flush_interval_s
        self.chunk = chunk
        self.drain_s = drain_s
        self.on_drop = on_drop or (lambda reason, n: None)
        self.retry_s = retry_s
        self.sent = 0
        self.delivered = 0
        self.dropped = 0
        self.connected = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._producer = None
        self._fatal = False
        # A producer that only fails for recover_s (e.g. an idempotent producer whose sequence numbers the
        # restarted broker no longer accepts) is replaced by a new one.
        self.recover_s = recover_s
        self.reconnects = 0
        self._last_ok = self._last_fail = 0.0

    def start(self) -> None:
        self._thread.start()

    def put(self, entry: Entry | Batch | Message) -> None:
        """Enqueue one prediction (or a :class:`Batch` or :class:`Message`); never blocks (drops and counts when
        the queue is full)."""
        n = entry.n if entry.__class__ in _MANY else 1
        if self.put_count - self.taken + n > self.maxsize:
            self.dropped += n
            self.on_drop("queue_full", n)
        else:
            self.queue.append(entry)
            self.put_count += n

    @staticmethod
    def event_seconds(e: Entry) -> float:
        """Event time (epoch s) of a queued entry: its request's, else its prediction time."""
        return event_seconds(e[1], e[2])

    def record(self, e: Entry, event_s: float | None = None) -> dict[str, Any]:
        """The ``PREDICTION_FIELDS`` record of one queued (and scored) entry (``event_s``: its
        :meth:`event_seconds`, when already known)."""
        request_id, req, ts, score, decision, row, missing, age, variant, served, seconds = e
        out: dict[str, Any] = {"request_id": request_id, self.id_field: req[self.id_field]}
        for key in self.entity_keys:
            out[key] = req[key]
        out["prediction_timestamp"] = _utc(ts)
        out["event_timestamp"] = _utc(event_seconds(req, ts) if event_s is None else event_s)
        out["model_name"] = variant.tag.split(":", 1)[0]
        out["model_version"] = variant.model_version
        out["variant"] = variant.name
        out["served"] = served
        out["score"] = score
        out["decision"] = decision
        out["latency_ms"] = None if seconds is None else 1000.0 * seconds
        out["features"] = dict(zip(variant.features, row, strict=True))  # NaN (missing) is sent as null
        out["missing_features"] = list(missing)
        out["feature_age_seconds"] = age
        return out

    @staticmethod
    def score_shadow(entries: list[Entry]) -> list[Entry]:
        """Score the unscored (shadow) entries, one XGBoost call per challenger; failures become ``error``."""
        todo: dict[int, list[int]] = {}
        for i, e in enumerate(entries):
            if e[3] is None and e[4] is None:
                todo.setdefault(id(e[8]), []).append(i)
        for idx in todo.values():
            variant = entries[idx[0]][8]
            t0 = time.perf_counter()
            try:
                scores = variant.score_rows([entries[i][5] for i in idx])
            except Exception as exc:  # noqa: BLE001 - a broken challenger must not stop the log
                log.warning("shadow %s failed: %s", variant.tag, exc)
                for i in idx:
                    variant.error()
                    entries[i] = (*entries[i][:4], "error", *entries[i][5:])
                continue
            per_row = (time.perf_counter() - t0) / len(idx)
            for i, s in zip(idx, scores, strict=True):
                score = float(s)
                decision = variant.observe(score, per_row)
                e = entries[i]
                entries[i] = (e[0], e[1], e[2], score, decision, e[5], e[6], e[7], e[8], e[9], per_row)
        return entries

    # ---- background thread ----------------------------------------------------------------------
    def _connect(self) -> None:
        from core.kafka_io import make_native_producer

        while not self._stop.is_set():
            try:
                # librdkafka: batching and network I/O in C threads without the GIL (~6 us of CPU a
                # record; kafka-python's send costs ~50 us of GIL, taken from the event loop). Values are
                # serialized here (compact JSON bytes); the partition is librdkafka's hash of the request id.
                self._producer = make_native_producer(
                    self.bootstrap,
                    role="serving",
                    on_delivery=self._delivered,
                    on_error=self._client_error,
                    **{
                        "linger.ms": LINGER_MS,
                        "message.timeout.ms": 12_000,
                        "queue.buffering.max.messages": max(10 * self.maxsize, 100_000),
                    },
                )
                self._producer.list_topics(self.topic, timeout=5)  # authenticated and the topic is there
                self.connected = True
                self._last_ok = time.monotonic()
                log.info("prediction log connected to %s (topic %s)", self.bootstrap, self.topic)
                return
            except Exception as exc:  # broker absent or not ready: keep serving, retry later
                self._producer = None
                log.warning("prediction log: Kafka not available (%s); retrying in %.0f s", exc, self.retry_s)
                self._stop.wait(self.retry_s)

    def _delivered(self, err: Any, _msg: Any) -> None:
        """librdkafka's delivery report of one record (called from ``poll``/``flush`` in this thread)."""
        if err is None:
            self.delivered += 1
            self._last_ok = time.monotonic()
        else:
            self._failed(err)

    def _client_error(self, err: Any) -> None:
        """A client-wide error; a fatal one (e.g. the idempotent producer fenced) needs a new producer."""
        if getattr(err, "fatal", lambda: False)():
            self._fatal = True
        log.debug("prediction log producer: %s", err)

    def _failed(self, _exc: Any, n: int = 1) -> None:
        self.dropped += n
        self._last_fail = time.monotonic()
        self.on_drop("send_failed", n)

    def _stuck(self) -> bool:
        """A fatal producer error, or only failures for longer than ``recover_s``: the producer is replaced."""
        if self._fatal:
            return True
        return self._last_fail > self._last_ok and time.monotonic() - self._last_ok > self.recover_s

    def _reconnect(self) -> None:
        log.warning("prediction log: no record delivered for %.0f s, only failures; reconnecting", self.recover_s)
        producer, self._producer, self.connected, self._fatal = self._producer, None, False, False
        try:
            producer.flush(1)  # what it still holds is reported (failed) now, not lost silently
        except Exception:  # noqa: BLE001 - replacing a broken producer
            pass
        self.reconnects += 1
        self._connect()

    def _send_batch(self, batch: Batch) -> bool:
        """Send ``batch`` as batch messages (:func:`batch_messages`); False when it cannot be encoded as one (the
        caller sends its records one by one)."""
        try:
            messages = batch_messages(batch)
        except (TypeError, ValueError, OverflowError, AttributeError, KeyError, msgspec.EncodeError):
            return False
        for m in messages:
            self._produce(m)
        return True

    def _produce(self, m: Message) -> None:
        n = m.n
        try:
            self._producer.produce(self.topic, m.value, m.key, timestamp=m.timestamp_ms,
                                   on_delivery=lambda err, _msg: self._delivered_many(err, n))
            self.sent += n
        except Exception as exc:  # noqa: BLE001 - local queue full (broker gone for long): counted per record
            self._failed(exc, n)

    def entries(self, batch: Batch) -> list[Entry]:
        """The one-record entries of ``batch`` (its requests reduced to the fields a record carries)."""
        rows = batch.rows.tolist() if isinstance(batch.rows, np.ndarray) else batch.rows
        reqs = [{**{f: v[i] for f, v in batch.keys.items()}, "timestamp": batch.times[i]} for i in range(batch.n)]
        return [(batch.ids[i], reqs[i], batch.predicted[i], batch.scores[i], batch.decisions[i], rows[i],
                 batch.missing[i], batch.ages[i], batch.variant, batch.served[i], batch.seconds[i])
                for i in range(batch.n)]

    @staticmethod
    def variant_runs(entries: list[Entry]) -> list[list[Entry]]:
        """The entries of each variant, in order (first variant first): one batch message each."""
        by_variant: dict[int, list[Entry]] = {}
        for e in entries:
            by_variant.setdefault(id(e[8]), []).append(e)
        return list(by_variant.values())

    def _delivered_many(self, err: Any, n: int) -> None:
        if err is None:
            self.delivered += n
            self._last_ok = time.monotonic()
        else:
            self._failed(err, n)

    def _send_chunk(self) -> None:
        q = self.queue
        taken = [q.popleft() for _ in range(min(self.chunk, len(q)))]
        self.taken += records(taken)
        produce = self._producer.produce
        topic = self.topic
        fields = (self.id_field, *self.entity_keys)
        for m in taken:
            if m.__class__ is Message:
                self._produce(m)
        runs: list[list[Entry] | Batch] = [e for e in taken if e.__class__ is Batch]
        runs += self.variant_runs(self.score_shadow([e for e in taken if e.__class__ not in _MANY]))
        for run in runs:
            if run.__class__ is Batch:
                if self._send_batch(run):
                    continue
                run = self.entries(run)
            elif len(run) > 1:
                try:
                    batch = Batch.of_entries(run, fields)
                except (KeyError, TypeError, IndexError, AttributeError):
                    batch = None  # the one-record path raises and counts per record
                if batch is not None and self._send_batch(batch):
                    continue
            for entry in run:
                try:
                    event_s = self.event_seconds(entry)
                    record = self.record(entry, event_s)
                    # event time as the message timestamp: what the monitor windows by
                    produce(topic, _encode(record), record["request_id"].encode(), timestamp=int(event_s * 1000))
                    self.sent += 1
                except Exception as exc:  # local queue full (broker gone for long) or a record that cannot be sent
                    self._failed(exc)
        self._producer.poll(0)  # delivery reports of earlier records

    def _run(self) -> None:
        self._connect()
        q = self.queue
        while not self._stop.is_set():
            if self._stuck():
                self._reconnect()
            if not q:
                if self._producer is not None:
                    self._producer.poll(0)
                self._stop.wait(self.flush_interval_s)
                continue
            self._send_chunk()
            time.sleep(0)  # let the event loop have the GIL between chunks
        # Shutdown: what is queued is sent too (within the drain budget), then flushed.
        deadline = time.monotonic() + self.drain_s
        while q and self._producer is not None and time.monotonic() < deadline:
            self._send_chunk()
        if q:
            left = records(q)
            self.on_drop("shutdown", left)
            self.dropped += left
            self.taken += left
            q.clear()
        if self._producer is not None:
            try:
                left = self._producer.flush(max(deadline - time.monotonic(), 1.0))
            except Exception:  # noqa: BLE001 - shutting down
                left = 0
            if left:  # still undelivered at the end of the drain budget: counted, not lost silently
                self.on_drop("shutdown", left)
                self.dropped += left

    def stop(self, timeout: float | None = None) -> None:
        """Stop after sending what is queued (at most ``drain_s``) and flushing it."""
        self._stop.set()
        self._thread.join(self.drain_s + 5 if timeout is None else timeout)
