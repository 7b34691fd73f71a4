"""Serving reliability without a server: readiness that tolerates a blip, the prediction log drained at
shutdown, the concurrency limit and the request bounds taken from the feature repo's declarations."""

from __future__ import annotations

import pytest

from bentos.prediction_log import PredictionLog
from bentos.readiness import Readiness


def test_readiness_tolerates_one_failed_ping_but_not_an_outage():
    r = Readiness(grace_s=5.0)
    assert r.observe(True, 100.0)
    assert r.observe(False, 101.0)  # one blip: still ready
    assert r.observe(True, 101.5)  # recovered: the clock restarts
    assert r.observe(False, 110.0) and r.observe(False, 114.9)
    assert not r.observe(False, 115.0)  # down for the whole grace period
    assert r.observe(True, 116.0)


class _Producer:
    """A librdkafka producer's surface: ``produce`` queues, ``poll``/``flush`` report deliveries."""

    def __init__(self, on_delivery=None):
        self.sent: list[bytes] = []
        self.timestamps: list[int | None] = []
        self.values: list[bytes] = []
        self.callbacks: list = []  # each message's delivery report callback
        self.flushed = False
        self.on_delivery = on_delivery
        self.pending = 0

    def produce(self, topic, value, key, timestamp=None, on_delivery=None):
        self.sent.append(key)
        self.timestamps.append(timestamp)
        self.values.append(value)
        self.callbacks.append(on_delivery or self.on_delivery)
        self.pending += 1

    def poll(self, _timeout=0):
        n, self.pending = self.pending, 0
        for callback in self.callbacks[len(self.callbacks) - n:] if n else []:
            if callback is not None:
                callback(None, None)
        return n

    def flush(self, timeout=None):
        self.flushed = True
        self.poll()
        return 0


def _log_on(producer, monkeypatch, **options) -> tuple[PredictionLog, list[tuple[str, int]]]:
    """A prediction log sending opaque entries through ``producer``, and the list its drops go to."""
    log = PredictionLog("transaction_id", ("user_id",), maxsize=10_000, chunk=64, **options)
    drops: list[tuple[str, int]] = []
    log.on_drop = lambda reason, n: drops.append((reason, n))
    monkeypatch.setattr(log, "_connect", lambda: setattr(log, "_producer", producer))
    monkeypatch.setattr(log, "event_seconds", lambda e: 0.0)
    monkeypatch.setattr(log, "record", lambda e, event_s: {"request_id": e})
    monkeypatch.setattr(log, "score_shadow", lambda entries: entries)
    monkeypatch.setattr(log, "variant_runs", lambda entries: [[e] for e in entries])  # opaque: one record each
    return log, drops


def test_prediction_log_sends_what_is_queued_at_shutdown(monkeypatch):
    producer = _Producer()
    log, drops = _log_on(producer, monkeypatch)
    for i in range(2000):
        log.put(f"r{i}")
    log.start()
    log.stop()
    assert len(producer.sent) == 2000 and producer.flushed
    assert drops == [] and log.dropped == 0 and not log.queue


class _FailingProducer(_Producer):
    """Every delivery fails (as after a broker restart that no longer accepts the producer's sequence numbers)."""

    def poll(self, _timeout=0):
        n, self.pending = self.pending, 0
        for callback in self.callbacks[len(self.callbacks) - n:] if n else []:
            callback(RuntimeError("OutOfOrderSequenceNumber"), None)
        return n

    def flush(self, timeout=None):
        self.flushed = True
        self.poll()
        return 0


def test_prediction_log_replaces_a_producer_that_only_fails(monkeypatch):
    import time

    broken, healthy = _FailingProducer(), _Producer()
    producers = iter([broken, healthy])
    log = PredictionLog("transaction_id", ("user_id",), maxsize=10_000, chunk=8, flush_interval_s=0.01, recover_s=0.3)

    def connect():
        log._producer = next(producers)
        log._producer.on_delivery = log._delivered
        log._last_ok = time.monotonic()

    monkeypatch.setattr(log, "_connect", connect)
    monkeypatch.setattr(log, "event_seconds", lambda e: 0.0)
    monkeypatch.setattr(log, "record", lambda e, event_s: {"request_id": e})
    monkeypatch.setattr(log, "score_shadow", lambda entries: entries)
    monkeypatch.setattr(log, "variant_runs", lambda entries: [[e] for e in entries])  # opaque: one record each
    log.start()
    deadline, i = time.monotonic() + 10, 0
    while not healthy.sent and time.monotonic() < deadline:
        log.put(f"r{i}")
        i += 1
        time.sleep(0.01)
    log.stop()
    assert broken.flushed and log.reconnects == 1 and healthy.sent
    assert log.dropped == len(broken.sent) > 0  # what the broken producer took is counted as dropped


def test_prediction_log_stamps_records_and_messages_with_the_requests_event_time(monkeypatch):
    """A replayed request (event time 2 days before it is scored) gets its own event time as the record's
    ``event_timestamp`` and as the Kafka message timestamp (what the monitor's seasonal windows use); a
    request without one gets the prediction time, and one stamped in the future is capped at it."""
    import json
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from core.prediction_messages import expand

    producer = _Producer()
    log = PredictionLog("transaction_id", ("user_id",), maxsize=100, chunk=64)
    monkeypatch.setattr(log, "_connect", lambda: setattr(log, "_producer", producer))
    variant = SimpleNamespace(tag="fraud_model:v1", model_version="v1", name="production", features=["x"])
    now = 1_764_500_000.25  # 2025-11-30 10:53:20.25 UTC: when the model scored
    past = datetime(2025, 11, 28, 3, 15, 0, 500_000, tzinfo=UTC)
    reqs = [
        {"transaction_id": "t-past", "user_id": 1, "timestamp": past},
        {"transaction_id": "t-naive", "user_id": 2, "timestamp": past.replace(tzinfo=None)},  # naive = UTC
        {"transaction_id": "t-none", "user_id": 3, "timestamp": None},
        {"transaction_id": "t-future", "user_id": 4, "timestamp": datetime(2030, 1, 1, tzinfo=UTC)},
    ]
    for i, req in enumerate(reqs):
        log.put((f"r{i}", req, now, 0.5, "legit", [1.0], [], 1.0, variant, True, 0.001))
    log.start()
    log.stop()
    # one batch message (one variant), read as consumers read it: one record per prediction
    assert len(producer.values) == 1 and producer.timestamps == [1_764_500_000_250]  # the newest event time
    messages = [SimpleNamespace(topic="predictions", partition=0, offset=0, timestamp=t, key=k, value=v)
                for k, t, v in zip(producer.sent, producer.timestamps, producer.values, strict=True)]
    got = expand(messages)
    records = [json.loads(r.value) for r in got]
    assert [r["transaction_id"] for r in records] == ["t-past", "t-naive", "t-none", "t-future"]
    assert [r.key for r in got] == [b"r0", b"r1", b"r2", b"r3"]
    past_ms = 1_764_299_700_500
    assert [r.timestamp for r in got] == [past_ms, past_ms, 1_764_500_000_250, 1_764_500_000_250]
    assert [r["event_timestamp"] for r in records] == [
        "2025-11-28T03:15:00.500000Z", "2025-11-28T03:15:00.500000Z",
        "2025-11-30T10:53:20.250000Z", "2025-11-30T10:53:20.250000Z",
    ]
    assert {r["prediction_timestamp"] for r in records} == {"2025-11-30T10:53:20.250000Z"}


def test_request_amount_is_bounded_by_the_stream_sources_declared_range():
    from pydantic import ValidationError

    from bentos.request_schema import request_models, request_spec
    from core.contracts import stream_rules

    lo, hi = stream_rules().ranges["amount"]
    request, _ = request_models(request_spec(), 4)
    body = {"transaction_id": "t", "user_id": 1, "merchant_id": 2, "country": "DE"}
    assert request(**body, amount=hi).amount == hi
    with pytest.raises(ValidationError, match="amount"):
        request(**body, amount=hi * 1.0001)
    with pytest.raises(ValidationError, match="user_id"):
        request(**{**body, "user_id": 2**63}, amount=10.0)


def test_service_sets_a_concurrency_limit_from_settings():
    import ast
    from pathlib import Path

    from core.settings import settings

    source = Path(__file__).resolve().parents[2] / "bentos" / "service.py"
    decorator = next(d for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.ClassDef)
                     and n.name == "PredictionService" for d in n.decorator_list)
    traffic = next(k.value for k in decorator.keywords if k.arg == "traffic")
    keys = [k.value for k in traffic.keys]
    assert "max_concurrency" in keys
    assert ast.unparse(traffic.values[keys.index("max_concurrency")]) == "_SERVING.max_concurrency"
    assert settings().serving.max_concurrency == 256


def test_prediction_log_counts_records_still_undelivered_at_shutdown(monkeypatch):
    """Records the producer still holds when the drain budget ends are counted as dropped (``shutdown``)."""

    class _Stalled(_Producer):
        def flush(self, timeout=None):
            self.flushed = True
            return self.pending  # nothing delivered: all still queued

    producer = _Stalled()
    log, drops = _log_on(producer, monkeypatch, drain_s=0.5)
    producer.poll = lambda _t=0: 0  # the broker never answers
    for i in range(100):
        log.put(f"r{i}")
    log.start()
    log.stop()
    assert len(producer.sent) == 100 and producer.flushed
    assert drops == [("shutdown", 100)] and log.dropped == 100
