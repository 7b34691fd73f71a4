"""The service under failures of its dependencies: Redis stopped (fast 503, then recovery), Kafka stopped
(requests unaffected, log drops counted), Kafka absent at start-up (start-up not blocked)."""

from __future__ import annotations

import contextlib
import math
import re
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from core.settings import settings
from tests.serving.conftest import MERCHANT_BASE, UNKNOWN_USER, USER_BASE, api_headers, free_port, load_online
from tests.serving.test_service import score_rows, txn
from training import registry

pytestmark = pytest.mark.integration


def metric(url: str, name: str, labels: str = "") -> float:
    """Sum of a metric's samples whose labels contain ``labels``."""
    text = httpx.get(f"{url}/metrics", timeout=5, headers=api_headers()).text
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)$", line)
        if m and labels in (m.group(1) or ""):
            total += float(m.group(2))
    return total


@contextlib.contextmanager
def stack_env(serving):
    """The environment the stack was started with (to start/stop its services with infra's functions)."""
    with pytest.MonkeyPatch.context() as mp:
        for var in ("RTML_REDIS_URL", "RTML_KAFKA_BOOTSTRAP", "RTML_DATA_DIR"):
            mp.delenv(var, raising=False)
        mp.setenv("RTML_STATE_DIR", str(serving.stack.state_dir))
        yield


def test_redis_down_gives_fast_clear_503_then_recovers(serving):
    from infra import redis_server

    with stack_env(serving):
        if redis_server.running_pid() is None:
            pytest.skip("this session's Redis was not started by rtml; not stopping someone else's Redis")
    known = txn(USER_BASE + 2, MERCHANT_BASE + 2, 30.0, "DE")
    assert httpx.post(f"{serving.url}/predict", json=known, timeout=5, headers=api_headers()).json()["missing_features"] == []
    errors_before = metric(serving.url, "rtml_serving_redis_errors_total")
    with stack_env(serving):
        redis_server.stop_redis()
    try:
        assert not redis_server.answers_ping(serving.stack.redis_url, timeout_s=0.5)
        for _ in range(5):
            t0 = time.monotonic()
            r = httpx.post(f"{serving.url}/predict", json=known, timeout=5, headers=api_headers())
            elapsed = time.monotonic() - t0
            assert r.status_code == 503, r.text
            assert "feature store unavailable" in r.json()["error"] and "Redis" in r.json()["detail"]
            host, port = serving.stack.redis_host_port
            assert host not in r.text and str(port) not in r.text  # no addresses for API clients
            assert elapsed < 2.0, f"503 took {elapsed:.2f} s: the Redis timeout is not bounded"
        r = httpx.post(f"{serving.url}/predict_batch", json={"transactions": [known, known]}, timeout=5, headers=api_headers())
        assert r.status_code == 503
        # readiness tolerates a blip (RTML_SERVING_READY_GRACE_S, 5 s): not ready only once Redis stays down
        assert httpx.get(f"{serving.url}/readyz", timeout=5).status_code == 200
        time.sleep(settings().serving.ready_grace_s + 0.5)
        assert httpx.get(f"{serving.url}/readyz", timeout=5).status_code == 503
        assert httpx.get(f"{serving.url}/healthz", timeout=5).status_code == 200  # alive, just not ready
        assert metric(serving.url, "rtml_serving_redis_errors_total") >= errors_before + 6
    finally:
        with stack_env(serving):
            redis_server.start_redis()
    # Redis is back (empty: no persistence): the service answers again without a restart...
    r = httpx.post(f"{serving.url}/predict", json=known, timeout=5, headers=api_headers())
    assert r.status_code == 200 and r.json()["missing_features"]
    assert httpx.get(f"{serving.url}/readyz", timeout=5).status_code == 200
    # ... and serves the features again once they are reloaded.
    load_online(serving.now, serving.data)
    assert httpx.post(f"{serving.url}/predict", json=known, timeout=5, headers=api_headers()).json()["missing_features"] == []


def test_kafka_down_requests_still_succeed_and_drops_are_counted(serving):
    from infra import kafka_broker

    with stack_env(serving):
        if kafka_broker.running_pid() is None:
            pytest.skip("this session's Kafka was not started by rtml; not stopping someone else's broker")
    dropped_before = metric(serving.url, "rtml_serving_prediction_log_dropped_total")
    with stack_env(serving):
        kafka_broker.stop(progress=False)
    try:
        latencies = []
        for i in range(40):
            t0 = time.monotonic()
            r = httpx.post(f"{serving.url}/predict", json=txn(USER_BASE + 1 + i % 10, MERCHANT_BASE + 1, 10.0 + i, "DE"), timeout=5, headers=api_headers())
            latencies.append(time.monotonic() - t0)
            assert r.status_code == 200, r.text
        assert max(latencies) < 1.0, f"a request took {max(latencies):.2f} s while Kafka was down"
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and metric(serving.url, "rtml_serving_prediction_log_dropped_total") <= dropped_before:
            time.sleep(1)
        assert metric(serving.url, "rtml_serving_prediction_log_dropped_total") > dropped_before
    finally:
        with stack_env(serving):
            kafka_broker.start(progress=False)
    # The log recovers without a restart: new predictions reach the topic again. One consumer reads on across
    # the attempts (re-reading the whole topic each time may never reach its end on a slow machine).
    from core.kafka_io import make_consumer
    from core.prediction_messages import expand

    consumer = make_consumer([settings().topics.predictions], group_id=None, consumer_timeout_ms=500, role="admin")
    posted: set[str] = set()
    found: set[str] = set()
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and not found:
            body = httpx.post(f"{serving.url}/predict", json=txn(USER_BASE + 3, MERCHANT_BASE + 3, 5.0, "FR"), timeout=5, headers=api_headers()).json()
            posted.add(body["request_id"])
            for msg in expand(consumer):  # one per prediction, batch messages included
                if msg.key and msg.key.decode() in posted:
                    found.add(msg.key.decode())
    finally:
        consumer.close()
    assert found, f"none of {len(posted)} predictions reached Kafka within 90 s after the broker restarted"


def test_no_broker_at_startup_and_metadata_defaults(serving):
    """A second service: Kafka address with nothing behind it, a 4-slot log queue, and a model whose
    metadata gives defaults for missing features."""
    from bentos.commands import serve
    from core import model_store
    model = model_store.get_model(serving.model_tag)
    meta = dict(model.info.metadata)
    defaults = {f: math.nan for f in meta["features"]}
    defaults.update({"account_age_days": 0.0, "credit_limit": 1500.0, "txn_count_24h": 0.0, "txn_mean_24h": 25.0})
    tag = registry.register_model(model_store.load_booster(model), {**meta, "defaults": defaults}, None)

    port = free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RTML_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
        mp.setenv("RTML_SERVING_LOG_QUEUE", "4")
        t0 = time.monotonic()
        _, url = serve.start_detached("prediction", "127.0.0.1", port, model=tag, timeout=120)
        startup = time.monotonic() - t0
    try:
        assert startup < 100
        t = txn(UNKNOWN_USER, MERCHANT_BASE + 1, 60.0, "FR")
        bodies = [httpx.post(f"{url}/predict", json=t, timeout=5, headers=api_headers()) for _ in range(12)]
        assert [b.status_code for b in bodies] == [200] * 12
        body = bodies[0].json()
        assert body["model_version"] == tag.split(":")[1]
        # Expected: Feast's online row for this transaction, with the model's defaults where the user is unknown.
        from core.feast_store import get_store

        store = get_store()
        online = store.get_online_features(
            features=store.get_feature_service(meta["feature_service"]),
            entity_rows=[{k: t[k] for k in ("user_id", "merchant_id", "amount", "country")}],
        ).to_dict()
        row = {}
        for f in meta["features"]:
            v = online[f][0]
            row[f] = defaults[f] if f in body["missing_features"] else (np.nan if v is None else v)
        assert row["account_age_days"] == 0.0 and row["credit_limit"] == 1500.0
        expected = score_rows(model_store.load_booster(model), list(meta["features"]), pd.DataFrame([row]))[0]
        assert body["score"] == pytest.approx(float(expected), abs=1e-6)
        # Nothing drains the log's 4-slot queue without a broker: the rest are dropped and counted. The log's
        # process reports its drops a moment later (every 0.2 s), so the count is polled.
        deadline, dropped = time.monotonic() + 10, 0.0
        while dropped < 12 - 4 and time.monotonic() < deadline:
            time.sleep(0.1)
            dropped = metric(url, "rtml_serving_prediction_log_dropped_total", 'reason="queue_full"')
        assert dropped == 12 - 4
        # A pinned tag (RTML_SERVING_MODEL_TAG, as images run) ignores the registry: no production change, no rollout.
        model_store.start_rollout(tag, "canary", "100%")
        time.sleep(2.0)  # four reload intervals
        assert httpx.post(f"{url}/deployment", json={}, timeout=5, headers=api_headers()).json()["challenger"] is None
        assert httpx.post(f"{url}/predict", json=t, timeout=5, headers=api_headers()).json()["model_version"] == tag.split(":")[1]
    finally:
        if model_store.rollout_state():
            model_store.abort_rollout("test cleanup")
        serve.stop(port)
