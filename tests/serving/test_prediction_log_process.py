"""The prediction log's child process: records built from the wire equal those built in the worker, every
entry handed over is delivered or counted, a child that dies is replaced and its records counted."""

from __future__ import annotations

import io
import math
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from bentos.prediction_log import PredictionLog
from bentos.prediction_log_process import PredictionLogProcess, Receiver, frame, read_frame, variant_key

FAKE_CHILD = str(Path(__file__).with_name("fake_log_child.py"))


def _variant(name: str = "production", tag: str = "fraud_model:v7") -> SimpleNamespace:
    return SimpleNamespace(name=name, tag=tag, model_version=tag.split(":", 1)[1], features=["a", "b"])


def _entry(i: int, variant: SimpleNamespace, timestamp=None) -> tuple:
    req = {"transaction_id": f"t{i}", "user_id": i, "amount": 1.5 * i, "timestamp": timestamp}
    return (f"r{i}", req, 1_764_500_000.25 + i, 0.25, "legit", [float(i), math.nan], ["b"], 3.5, variant, True, 0.001)


def _log(mode: str | None, out=None, **options) -> tuple[PredictionLogProcess, list[tuple[str, int]]]:
    """A prediction log whose child is the fake one in ``mode`` writing to ``out`` (None: the real child), and
    the list its drops go to."""
    drops: list[tuple[str, int]] = []
    command = None if mode is None else [sys.executable, FAKE_CHILD, mode, str(out)]
    plog = PredictionLogProcess("transaction_id", ["user_id"], on_drop=lambda r, n: drops.append((r, n)),
                                flush_interval_s=0.01, command=command, **options)
    return plog, drops


def test_records_from_the_wire_equal_the_records_built_in_the_worker():
    """msgpack carries every field: aware and naive (UTC) datetimes, a missing timestamp, NaN features."""
    prod, chal = _variant(), _variant("challenger", "fraud_model:v8")
    stamps = [datetime(2025, 11, 28, 3, 15, 0, 500_000, tzinfo=UTC), datetime(2025, 11, 28, 3, 15, 0, 500_000), None]
    entries = [_entry(i, prod if i % 2 else chal, stamps[i % 3]) for i in range(6)]
    wire = [(*e[:8], variant_key(e[8]), *e[9:]) for e in entries]
    stream = io.BytesIO(b"".join([frame(["v", variant_key(v), v.tag, v.name, v.features]) for v in (prod, chal)]
                                 + [frame(["e", wire])]))
    receiver, received = Receiver(), []
    while (body := read_frame(stream)) is not None:
        received += receiver.entries(body)
    log = PredictionLog("transaction_id", ("user_id",))
    for sent, got in zip(entries, received, strict=True):
        want, have = log.record(sent), log.record(got)
        assert math.isnan(want["features"].pop("b")) and math.isnan(have["features"].pop("b"))
        assert have == want
        assert log.event_seconds(got) == log.event_seconds(sent)
    assert len(received) == 6


def test_every_entry_handed_over_is_delivered_in_order(tmp_path):
    out = tmp_path / "ids.txt"
    plog, drops = _log("deliver", out)
    v = _variant()
    plog.start()
    for i in range(3000):
        plog.put(_entry(i, v))
        if i % 500 == 0:
            time.sleep(0.02)  # several frames
    plog.stop()
    assert out.read_text().split() == [f"r{i}" for i in range(3000)]
    assert plog.delivered == 3000 and plog.dropped == 0 and drops == [] and plog.restarts == 0


class _WatchedEvent(threading.Event):
    """An event that tells when somebody waits on it (the hand-over thread, once its queue is empty)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def test_a_batch_is_handed_over_right_after_its_request_and_a_few_entries_wait_for_the_interval(tmp_path):
    """``request_done`` wakes the hand-over once ``wake_at`` entries are queued; fewer wait (here 30 s)."""
    out = tmp_path / "ids.txt"
    plog, drops = _log("deliver", out, wake_at=64)
    plog.flush_interval_s = 30.0
    plog._wake = wake = _WatchedEvent()
    v = _variant()
    plog.start()
    assert wake.waiting.wait(30)  # the hand-over thread has found the queue empty and sleeps until woken
    for i in range(10):
        plog.put(_entry(i, v))
    plog.request_done()
    time.sleep(1.0)
    assert plog.delivered == 0 and not out.exists()  # 10 < wake_at: still queued
    for i in range(10, 100):
        plog.put(_entry(i, v))
    plog.request_done()
    deadline = time.monotonic() + 10
    while plog.delivered < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert plog.delivered == 100 and out.read_text().split() == [f"r{i}" for i in range(100)]
    plog.stop()
    assert drops == [] and plog.dropped == 0


def test_a_child_that_dies_is_replaced_and_its_records_counted(tmp_path):
    out = tmp_path / "ids.txt"
    plog, drops = _log("crash-once", out, restart_s=0.05)
    v = _variant()
    for i in range(100):
        plog.put(_entry(i, v))
    plog.start()
    deadline = time.monotonic() + 30
    while plog.restarts == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert plog.restarts == 1
    for i in range(100, 150):
        plog.put(_entry(i, v))
    plog.stop()
    assert drops == [("send_failed", 100)]  # what the dead child took: counted, not lost silently
    assert out.read_text().split() == [f"r{i}" for i in range(100, 150)]
    assert plog.delivered == 50 and plog.dropped == 100


def test_the_real_child_counts_what_it_could_not_send_at_shutdown(monkeypatch):
    """No broker: the real child keeps the records queued and reports them dropped at shutdown."""
    monkeypatch.setenv("RTML_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    plog, drops = _log(None, drain_s=1.0)
    v = _variant()
    for i in range(40):
        plog.put(_entry(i, v))
    plog.start()
    time.sleep(0.5)
    plog.stop()
    assert sum(n for _, n in drops) == 40 and {r for r, _ in drops} == {"shutdown"}
    assert plog.delivered == 0 and plog.dropped == 40


def test_a_batch_that_cannot_be_encoded_is_counted_and_the_next_one_still_names_its_variant(tmp_path):
    out = tmp_path / "ids.txt"
    plog, drops = _log("deliver", out)
    v = _variant()
    bad = _entry(0, v)
    bad[1]["amount"] = object()  # msgpack cannot carry it
    plog.put(bad)
    plog.start()
    deadline = time.monotonic() + 30
    while not drops and time.monotonic() < deadline:
        time.sleep(0.01)
    plog.put(_entry(1, v))
    plog.stop()
    assert drops == [("send_failed", 1)] and plog.restarts == 0
    assert out.read_text().split() == ["r1"] and plog.delivered == 1


def test_a_request_batch_with_a_key_beyond_64_bits_is_counted_and_the_hand_over_goes_on(tmp_path):
    """An integer msgpack cannot carry (OverflowError, neither its finished message nor its columns): the batch's
    records are counted as failed and the next batch is still handed over and delivered."""
    import numpy as np

    out = tmp_path / "ids.txt"
    plog, drops = _log("deliver", out)
    v = _variant()
    plog.start()
    for lo, user in ((0, 2**70), (10, 7)):
        reqs = [{"transaction_id": f"t{i}", "user_id": user} for i in range(lo, lo + 10)]
        plog.put_batch([f"r{i}" for i in range(lo, lo + 10)], reqs, 1_764_500_000.0, [0.5] * 10, ["legit"] * 10,
                       np.ones((10, 2)), [[]] * 10, [None] * 10, v, 0.001)
        plog.request_done()
        deadline = time.monotonic() + 30
        while plog.dropped + plog.delivered < lo + 10 and time.monotonic() < deadline:
            time.sleep(0.01)
    plog.stop()
    assert drops == [("send_failed", 10)] and plog.dropped == 10 and plog.restarts == 0
    assert out.read_text().split() == [f"r{i}" for i in range(10, 20)] and plog.delivered == 10
