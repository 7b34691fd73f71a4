"""The demo's product service paces its replay by the stream job: every ``sync_every_s`` of event time it
flushes what it published and waits until the stream job processed it, before scoring the next chunk."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import httpx
import pyarrow as pa

import core.kafka_io
import rtml.product_traffic as traffic
import streaming.producer

N, MINUTE_MS = 200, 60_000


class FakeFuture:
    def __init__(self, producer, metadata):
        self.producer, self.metadata = producer, metadata

    def add_callback(self, fn):
        self.producer.pending.append((fn, self.metadata))  # delivered on flush, as a real producer may
        return self


class FakeProducer:
    def __init__(self):
        self.pending, self.offsets = [], {}

    def send(self, topic, value=None, key=None, timestamp_ms=None):
        offset = self.offsets[topic] = self.offsets.get(topic, -1) + 1
        return FakeFuture(self, SimpleNamespace(partition=0, offset=offset, topic=topic))

    def flush(self, timeout=None):
        for fn, md in self.pending:
            fn(md)
        self.pending.clear()

    def close(self, timeout=None):
        pass


def test_the_replay_waits_for_the_stream_every_sync_interval_of_event_time(monkeypatch):
    t0 = 1_700_000_000_000
    values = [json.dumps({"transaction_id": f"t{i}"}).encode() for i in range(N)]
    ts_ms = [t0 + i * MINUTE_MS for i in range(N)]  # one transaction per minute of event time
    scored: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        n = len(json.loads(request.content)["transactions"])
        scored.append(n)
        return httpx.Response(200, json={"predictions": [{}] * n})

    real_client = httpx.Client
    monkeypatch.setattr(httpx, "Client", lambda **kw: real_client(transport=httpx.MockTransport(answer), **kw))
    monkeypatch.setattr(traffic, "_day_table", lambda start, end: pa.table({"transaction_id": [f"t{i}" for i in range(N)]}))
    monkeypatch.setattr(streaming.producer, "history_values", lambda table: (values, [b"k"] * N, ts_ms))
    monkeypatch.setattr(traffic, "_label_values", lambda ids: [(i, b"{}") for i in ids])
    producer = FakeProducer()
    monkeypatch.setattr(core.kafka_io, "make_producer", lambda *a, **kw: producer)
    syncs: list[tuple[int, dict[int, int]]] = []

    def sync(published: dict[int, int]) -> float:
        syncs.append((sum(scored), published))
        return 0.5

    day = datetime(2026, 11, 29, tzinfo=UTC)
    report = traffic.replay_day(day, day, "http://api", rate_per_s=1e9, chunk=10, api_key="k", sync=sync,
                                sync_every_s=1800)
    assert report["scored"] == N and report["errors"] == 0
    # syncs before the chunks starting at minutes 30, 60, ..., 180; each sees every transaction sent before it
    assert [s for s, _ in syncs] == [30, 60, 90, 120, 150, 180]
    events_topic = traffic.domain_topics().events
    assert all(p == {0: s - 1} for s, p in syncs) and producer.offsets[events_topic] == N - 1
    assert report["stream_syncs"] == 6 and report["stream_wait_s"] == 3.0



def test_the_demo_waits_until_the_stream_job_committed_past_what_was_sent(tmp_path, monkeypatch):
    """The demo's ``sync``: done when the stream job's last committed micro-batch (its Spark checkpoint) ends
    past the highest offset sent on every partition; a clear error when it never gets there."""
    import pytest

    from core.errors import UserFacingError
    from rtml.demo import Demo, DemoOptions

    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path))
    demo = Demo(DemoOptions())
    demo.stream_job = "demo-1"
    query = tmp_path / "checkpoints" / "demo-1" / "spark-abc"
    (query / "commits").mkdir(parents=True)
    (query / "offsets").mkdir()
    topic = traffic.domain_topics().events

    def commit(batch: int, ends: dict[str, int]) -> None:
        (query / "offsets" / str(batch)).write_text(f"v1\n{{}}\n{json.dumps({topic: ends})}\n")
        (query / "commits" / str(batch)).write_text("v1\n{}\n")

    commit(0, {"0": 10, "1": 4})
    assert demo.stream_caught_up({0: 9, 1: 3}, timeout_s=1) < 1  # ends are exclusive: offset 9 is in
    with pytest.raises(UserFacingError, match="not caught up"):
        demo.stream_caught_up({0: 9, 1: 4}, timeout_s=0.3)  # offset 4 of partition 1 not processed yet
    commit(1, {"0": 10, "1": 5})
    assert demo.stream_caught_up({0: 9, 1: 4}, timeout_s=1) < 1
