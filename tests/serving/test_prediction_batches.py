"""Batch messages of the ``predictions`` topic: a consumer reads exactly the records one-record messages would
carry, every record is delivered or counted, and a batch that cannot be read is counted, not half-used."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pytest

from bentos import prediction_log
from bentos.prediction_log import Batch, PredictionLog, _encode, batch_messages
from core.prediction_messages import MalformedBatch, encode_batch, encode_columns, expand, is_batch

PROD = SimpleNamespace(name="production", tag="fraud_model:v7", model_version="v7", features=["a", "b", "c"])
SHADOW = SimpleNamespace(name="challenger", tag="fraud_model:v8", model_version="v8", features=["c", "a"])
STAMPS = [datetime(2025, 11, 28, 3, 15, 0, 500_000, tzinfo=UTC), datetime(2025, 11, 28, 3, 15, 0, 500_000), None,
          datetime(2031, 1, 1, tzinfo=UTC), datetime(2025, 11, 30, 10, 0, 0, 1, tzinfo=UTC)]


def _entry(i: int, variant=PROD) -> tuple:
    req = {"transaction_id": f"t\"{i},", "user_id": 10**15 + i, "merchant_id": f"m{i % 3}", "amount": 1.5 * i,
           "timestamp": STAMPS[i % len(STAMPS)], "explain": False}
    row = [float(i) / 7, math.nan, -1e-7 * i, 1e300][: len(variant.features)]
    return (f"r{i}", req, 1_764_500_000.25 + i / 3, 0.125 * (i % 8) if i % 11 else None, ["legit", "fraud", "error"][i % 3],
            row, ["b"] if i % 2 else [], None if i % 5 == 0 else 3.5 * i, variant, i % 4 != 0, None if i % 6 == 0 else 0.001 * i)


def _message(value: bytes, offset: int = 0, timestamp: int = 0, key: bytes | None = None) -> SimpleNamespace:
    return SimpleNamespace(topic="predictions", partition=0, offset=offset, timestamp=timestamp, key=key, value=value)


def _log() -> PredictionLog:
    return PredictionLog("transaction_id", ("user_id", "merchant_id"), topic="predictions", bootstrap="127.0.0.1:1")


def test_a_batch_reads_back_as_the_one_record_messages_of_its_entries():
    log = _log()
    entries = [_entry(i) for i in range(40)]
    (message,) = batch_messages(Batch.of_entries(entries, ("transaction_id", "user_id", "merchant_id")))
    value, newest = message.value, message.timestamp_ms
    assert is_batch(value) and message.n == 40 and message.key == b"r0"
    single = _message(_encode(log.record(_entry(99))), offset=6, timestamp=123, key=b"r99")
    got = expand([single, _message(value, offset=7, key=b"r0")])
    assert got[0] == (*single.__dict__.values(), 7)  # a one-record message passes unchanged
    records = got[1:]
    assert [r.value for r in records] == [_encode(log.record(e)) for e in entries]
    assert [r.key for r in records] == [e[0].encode() for e in entries]
    event_ms = [int(log.event_seconds(e) * 1000) for e in entries]
    assert [r.timestamp for r in records] == event_ms and newest == max(event_ms)
    assert [r.resume_offset for r in records] == [7] * 39 + [8]  # processed once its last record is
    assert [r.offset for r in records] == [7] * 40


def test_a_json_batch_of_earlier_versions_reads_back_as_its_records():
    """The JSON batch shape (written by earlier versions, or by producers outside rtml) still reads back."""
    log = _log()
    entries = [_entry(i) for i in range(12)]
    records = [json.loads(_encode(log.record(e))) for e in entries]
    fields = list(records[0])
    names = list(records[0]["features"])
    event_ms = [int(log.event_seconds(e) * 1000) for e in entries]
    value = encode_batch(fields, {f: [r[f] for r in records] for f in fields if f != "features"}, names,
                         [[r["features"][f] for f in names] for r in records], event_ms)
    got = expand([_message(value, offset=4)])
    assert [r.value for r in got] == [_encode(log.record(e)) for e in entries]
    assert [r.timestamp for r in got] == event_ms and [r.key for r in got] == [e[0].encode() for e in entries]


def _columns(n: int = 2, width: int = 2, **change) -> bytes:
    values = {"request_ids": [f"r{i}" for i in range(n)], "keys": {"transaction_id": [f"t{i}" for i in range(n)]},
              "times": [None] * n, "predicted": [1.0] * n, "model": "m:v1", "variant": "production",
              "feature_names": [f"f{j}" for j in range(width)], "features": np.zeros((n, width)), "scores": [0.5] * n,
              "decisions": ["legit"] * n, "missing": [[]] * n, "ages": [None] * n, "served": [True] * n,
              "seconds": [None] * n}
    values.update(change)
    if "features" in change and isinstance(change["features"], bytes):  # raw bytes of the wrong size
        good = encode_columns(**{**values, "features": np.zeros((n, width))})
        return good.replace(np.zeros((n, width)).tobytes(), change["features"])
    return encode_columns(**values)


@pytest.mark.parametrize("value", [
    _columns(scores=[0.5]),  # a column shorter than the request ids
    _columns(keys={"transaction_id": ["t0"]}),
    _columns(features=b"\x00" * 24),  # 3 values for 2 x 2 features
    _columns(0, 2, features=np.zeros((0, 2))),  # empty
    _columns()[:-5],  # cut short
    b'{"prediction_batch": {"fields": ["request_id", "features"], "columns": {"request_id": ["a", "b"]},'
    b' "feature_names": ["x"], "features": [[1.0]], "event_ms": [1, 2]}}',  # a row missing
    b'{"prediction_batch": {"fields": ["request_id", "features"], "columns": {"request_id": ["a"]},'
    b' "feature_names": ["x", "y"], "features": [[1.0]], "event_ms": [1]}}',  # a row shorter than the names
    b'{"prediction_batch": {"fields": ["features"], "columns": {}, "feature_names": [], "features": [], "event_ms": []}}',
    b'{"prediction_batch": [1, 2',
])
def test_a_batch_that_does_not_add_up_is_counted_and_yields_nothing(value):
    bad = []
    good = _message(b'{"request_id": "x"}', offset=3)
    got = expand([_message(value, offset=2), good], on_malformed=lambda m, exc: bad.append((m.offset, str(exc))))
    assert [g.value for g in got] == [good.value] and [b[0] for b in bad] == [2]
    with pytest.raises(MalformedBatch):
        expand([_message(value)])


class _Producer:
    def __init__(self, fail: bool = False):
        self.messages: list[tuple[bytes, bytes, int]] = []
        self.callbacks: list = []
        self.fail = fail

    def produce(self, topic, value, key, timestamp=None, on_delivery=None):
        self.messages.append((key, value, timestamp))
        self.callbacks.append(on_delivery)

    def poll(self, _timeout=0):
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            (callback or self.on_delivery)(RuntimeError("broker gone") if self.fail else None, None)
        return len(callbacks)

    def flush(self, timeout=None):
        self.poll()
        return 0


def _run(log: PredictionLog, producer: _Producer, entries: list[tuple], monkeypatch) -> list[tuple[str, int]]:
    drops: list[tuple[str, int]] = []
    log.on_drop = lambda reason, n: drops.append((reason, n))
    producer.on_delivery = log._delivered
    monkeypatch.setattr(log, "_connect", lambda: setattr(log, "_producer", producer))
    monkeypatch.setattr(log, "score_shadow", lambda es: es)
    for e in entries:
        log.put(e)
    log.start()
    log.stop()
    return drops


def test_each_variant_goes_out_as_one_batch_and_every_record_is_delivered(monkeypatch):
    log, producer = PredictionLog("transaction_id", ("user_id", "merchant_id"), chunk=1024), _Producer()
    entries = [e for i in range(100) for e in ((_entry(i),) + ((_entry(i, SHADOW),) if i < 3 else ()))]
    entries.append(_entry(500, SimpleNamespace(**{**SHADOW.__dict__, "tag": "fraud_model:v9"})))  # alone
    assert _run(log, producer, entries, monkeypatch) == []
    assert [is_batch(v) for _, v, _ in producer.messages] == [True, True, False]
    records = expand([_message(v, i, t, k) for i, (k, v, t) in enumerate(producer.messages)])
    assert sorted(r.value for r in records) == sorted(_encode(log.record(e)) for e in entries)
    assert log.sent == log.delivered == 104 and log.dropped == 0


def test_a_failed_batch_counts_every_record_it_held(monkeypatch):
    log, producer = PredictionLog("transaction_id", ("user_id", "merchant_id"), chunk=1024), _Producer(fail=True)
    drops = _run(log, producer, [_entry(i) for i in range(30)], monkeypatch)
    assert len(producer.messages) == 1 and drops == [("send_failed", 30)] and log.dropped == 30 and log.delivered == 0


def test_a_batch_too_large_for_one_message_is_split_in_order(monkeypatch):
    monkeypatch.setattr(prediction_log, "MAX_BATCH_BYTES", 600)
    log, producer = PredictionLog("transaction_id", ("user_id", "merchant_id"), chunk=1024), _Producer()
    entries = [_entry(i) for i in range(37)]
    assert _run(log, producer, entries, monkeypatch) == []
    assert len(producer.messages) > 4 and all(len(v) <= 600 for _, v, _ in producer.messages if is_batch(v))
    records = expand([_message(v, i, t, k) for i, (k, v, t) in enumerate(producer.messages)])
    assert [r.value for r in records] == [_encode(log.record(e)) for e in entries]
    assert log.delivered == 37


def test_rows_that_do_not_match_the_features_fall_back_to_one_record_each_and_fail_counted(monkeypatch):
    log, producer = PredictionLog("transaction_id", ("user_id", "merchant_id"), chunk=1024), _Producer()
    entries = [_entry(i) for i in range(4)]
    entries[2] = (*entries[2][:5], [1.0], *entries[2][6:])  # one value for three features
    drops = _run(log, producer, entries, monkeypatch)
    assert drops == [("send_failed", 1)] and log.delivered == 3
    assert [json.loads(v)["request_id"] for _, v, _ in producer.messages] == ["r0", "r1", "r3"]



def test_a_request_batch_crosses_to_the_child_in_columns_and_reads_back_as_its_records():
    """The worker queues a ``/predict_batch`` as one entry (its float64 matrix as bytes on the wire); the child's
    message reads back as exactly the records of the same predictions queued one by one."""
    import io

    import numpy as np

    from bentos.prediction_log_process import PredictionLogProcess, Receiver, frame, read_frame

    entries = [_entry(i) for i in range(25)]
    plog = PredictionLogProcess("transaction_id", ["user_id", "merchant_id"])  # not started: nothing spawned
    matrix = np.array([e[5] for e in entries], dtype=np.float64)
    per_row = 0.002
    now = entries[0][2]
    plog.put_batch([e[0] for e in entries], [e[1] for e in entries], now, [e[3] for e in entries],
                   [e[4] for e in entries], matrix, [e[6] for e in entries], [e[7] for e in entries], PROD, per_row)
    assert len(plog.queue) == 1 and plog.put_count - plog.taken == 25
    batch = plog.queue.popleft()
    stream = io.BytesIO(frame(["v", "k", PROD.tag, PROD.name, PROD.features]) + frame(_wire(batch)))
    receiver, received = Receiver(), []
    while (body := read_frame(stream)) is not None:
        received += receiver.entries(body)
    assert len(received) == 1 and received[0].n == 25
    log = _log()
    (message,) = batch_messages(received[0])
    as_served = [(*e[:2], now, *e[3:9], True, per_row) for e in entries]  # what a one-by-one put would log
    assert [r.value for r in expand([_message(message.value)])] == [_encode(log.record(e)) for e in as_served]


def test_a_request_batch_crosses_to_the_child_as_its_finished_message():
    """The worker's hand-over encodes a ``/predict_batch`` as its batch message; the child receives it as a
    :class:`Message` to produce as it is, which reads back as the records of the same predictions one by one,
    stamped with the newest event time (a future request time capped at the prediction time)."""
    import io

    import numpy as np

    from bentos.prediction_log import Message
    from bentos.prediction_log_process import PredictionLogProcess, Receiver, _batch_frames, read_frame

    entries = [_entry(i) for i in range(25)]
    plog = PredictionLogProcess("transaction_id", ["user_id", "merchant_id"])  # not started: nothing spawned
    now = entries[0][2]
    plog.put_batch([e[0] for e in entries], [e[1] for e in entries], now, [e[3] for e in entries],
                   [e[4] for e in entries], np.array([e[5] for e in entries]), [e[6] for e in entries],
                   [e[7] for e in entries], PROD, 0.002)
    stream = io.BytesIO(b"".join(_batch_frames(plog.queue.popleft())))
    received = []
    while (body := read_frame(stream)) is not None:
        received += Receiver().entries(body)
    assert [m.__class__ for m in received] == [Message] and received[0].n == 25 and received[0].key == b"r0"
    log = _log()
    as_served = [(*e[:2], now, *e[3:9], True, 0.002) for e in entries]
    got = expand([_message(received[0].value)])
    assert [r.value for r in got] == [_encode(log.record(e)) for e in as_served]
    assert received[0].timestamp_ms == max(r.timestamp for r in got) == int(now * 1000)  # 2031 capped at now


def test_a_request_batch_that_cannot_be_encoded_crosses_in_columns_and_its_records_are_counted(monkeypatch):
    """Rows that do not match the variant's features: the hand-over sends the batch's columns, the child's log
    falls back to one record each, and every record that cannot be built is counted as failed."""
    import io

    from bentos.prediction_log_process import PredictionLogProcess, Receiver, _batch_frames, read_frame

    plog = PredictionLogProcess("transaction_id", ["user_id", "merchant_id"])
    entries = [_entry(i) for i in range(5)]
    plog.put_batch([e[0] for e in entries], [e[1] for e in entries], 1.0, [0.5] * 5, ["legit"] * 5,
                   [[1.0]] * 5, [[]] * 5, [None] * 5, PROD, None)  # one value per row for three features
    frames = _batch_frames(plog.queue.popleft())
    receiver = Receiver()
    receiver.entries(["v", "production|fraud_model:v7", PROD.tag, PROD.name, PROD.features])
    received = receiver.entries(read_frame(io.BytesIO(frames[0])))
    assert len(frames) == 1 and [b.__class__ for b in received] == [Batch]
    log, producer = PredictionLog("transaction_id", ("user_id", "merchant_id"), chunk=1024), _Producer()
    assert _run(log, producer, received, monkeypatch) == [("send_failed", 1)] * 5 and producer.messages == []


def _wire(batch) -> list:
    from bentos.prediction_log_process import batch_frame

    body = batch_frame(batch)
    body[1] = "k"  # the variant key the test's variant frame announced
    return body


def test_a_full_queue_refuses_a_whole_batch_and_counts_its_records():
    from bentos.prediction_log_process import PredictionLogProcess

    drops = []
    plog = PredictionLogProcess("transaction_id", ["user_id"], maxsize=30, on_drop=lambda r, n: drops.append((r, n)))
    reqs = [{"transaction_id": f"t{i}", "user_id": i} for i in range(20)]
    for _ in range(2):
        plog.put_batch([f"r{i}" for i in range(20)], reqs, 1.0, [0.5] * 20, ["legit"] * 20,
                       [[1.0, 2.0, 3.0]] * 20, [[]] * 20, [None] * 20, PROD, None)
    assert len(plog.queue) == 1 and drops == [("queue_full", 20)] and plog.dropped == 20
