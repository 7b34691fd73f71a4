"""The second domain (examples/ads: ad-click prediction) runs through the same plumbing with zero code changes
outside its folder: history, backfill, training, serving, the stream job and the monitor, each through the
`rtml` CLI with ``RTML_FEATURE_REPO=examples/ads/feature_repo``, on a private stack (own state dir and ports)
started and stopped by pid here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.infra.conftest import free_port
from tests.serving.conftest import free_port as free_tcp_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
ADS_REPO = REPO / "examples" / "ads" / "feature_repo"
SESSION_ONLY = ("RTML_KAFKA_BOOTSTRAP", "RTML_REDIS_URL", "RTML_KAFKA_CONTROLLER_PORT", "RTML_KAFKA_USER",
                "RTML_KAFKA_PASSWORD", "RTML_KAFKA_BROKERS", "RTML_KAFKA_SECURITY", "RTML_DATA_DIR", "RTML_FEATURE_SERVICE",
                "RTML_MODEL_NAME", "RTML_SERVING_MODEL_TAG", "RTML_MLFLOW_URI", "RTML_REDIS_USER", "RTML_REDIS_PASSWORD")


def run(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``rtml ARGS`` (or ``python -m MODULE`` when args start with -m) with the ads settings; fails loudly."""
    cmd = [sys.executable, *args] if args[0] == "-m" else [sys.executable, "-m", "rtml.cli", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    assert out.returncode == 0, f"{' '.join(args)} exited {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def ads_env(tmp_path_factory):
    state = tmp_path_factory.mktemp("ads-state")
    env = {k: v for k, v in os.environ.items() if k not in SESSION_ONLY}
    env.update(
        RTML_FEATURE_REPO=str(ADS_REPO), RTML_STATE_DIR=str(state), RTML_KAFKA_PORT=str(free_port(consecutive=2)),
        RTML_REDIS_PORT=str(free_port()), PYTHONPATH=str(REPO),
    )
    run(env, "up", timeout=300)
    try:
        yield env
    finally:
        subprocess.run([sys.executable, "-m", "rtml.cli", "serve", "--stop", "--port", env.get("ADS_PORT", "0")],
                       env=env, cwd=REPO, capture_output=True, timeout=120)
        subprocess.run([sys.executable, "-m", "rtml.cli", "down"], env=env, cwd=REPO, capture_output=True, timeout=120)


def oracle(sent: list[dict]) -> dict[int, dict[str, float]]:
    """The stream view's values of each new viewer, computed directly from what was sent (all inside the windows)."""
    out = {}
    for viewer in sorted({r["viewer_id"] for r in sent}):
        rows = [r for r in sent if r["viewer_id"] == viewer]
        out[viewer] = {
            "impressions_10m": len(rows), "impressions_1h": len(rows),
            "mean_bid_1h": float(np.mean([r["bid"] for r in rows])),
            "distinct_ads_1h": len({r["ad_id"] for r in rows}),
        }
    return out


def online(env: dict, viewers: list[int]) -> dict[int, dict]:
    out = run(env, "features", "--json", *(f"viewer_id={v}" for v in viewers), timeout=180)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {r["viewer_id"]: r["features"] for r in rows}


def test_ads_domain_streams_trains_serves_and_monitors(ads_env, tmp_path):
    env = ads_env
    # history -> features -> model, each a stage of the CLI
    run(env, "-m", "examples.ads.simulate", "--days", "2")
    run(env, "apply")
    start = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%d")
    backfill = run(env, "backfill", "--start", start)
    assert re.search(r"rows \{'viewer_activity': \d+\}", backfill.stdout), backfill.stdout
    run(env, "materialize")
    train = run(env, "train", "--join", "fast", "--trials", "1")
    assert "ctr_model" in train.stdout + train.stderr
    models = run(env, "models", "list")
    assert re.search(r"^\* ctr_model:", models.stdout, re.M), models.stdout  # * marks the production model

    # serving: the request schema is the ads feature service's (impression id, entity keys, request fields)
    key = run(env, "keys", "create", "--name", "ads-test", "--scope", "predict").stdout.strip().splitlines()[-1]
    assert key.startswith("rtml_"), key
    headers = {"Authorization": f"Bearer {key}"}
    port = free_tcp_port()
    env["ADS_PORT"] = str(port)
    run(env, "serve", "--detach", "--port", str(port), "--timeout", "300", timeout=360)
    api = f"http://127.0.0.1:{port}"
    bad = httpx.post(f"{api}/predict", json={"impression_id": "b1", "viewer_id": 1, "ad_id": 2, "bid": "high",
                                             "placement": "top"}, headers=headers, timeout=30)
    assert bad.status_code == 400 and "bid" in bad.text

    # the stream job computes the new viewers' features from live impressions
    sent_file = tmp_path / "sent.json"
    run(env, "-m", "tests.examples.live_impressions", "impressions", str(sent_file))
    sent = json.loads(sent_file.read_text())
    expected = oracle(sent)
    stream = subprocess.Popen(
        [sys.executable, "-m", "rtml.cli", "stream", "--starting-offsets", "earliest", "--trigger-seconds", "1",
         "--metrics-port", "0", "--timeout-seconds", "400"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        deadline, got = time.monotonic() + 360, {}
        while time.monotonic() < deadline:
            got = online(env, list(expected))
            if all(got.get(v, {}).get("impressions_10m") == e["impressions_10m"] for v, e in expected.items()):
                break
            assert stream.poll() is None, f"stream job exited {stream.returncode}: {stream.stderr.read()[-3000:]}"
            time.sleep(3)
        for viewer, values in expected.items():
            for name, value in values.items():
                assert got[viewer][name] == pytest.approx(value, rel=1e-9), (viewer, name, got[viewer])
    finally:
        os.killpg(stream.pid, signal.SIGTERM)
        stream.wait(60)

    # serve the live impressions: the model sees the stream features, predictions go to the predictions topic
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        answers = [client.post("/predict", json={k: r[k] for k in ("impression_id", "viewer_id", "ad_id", "bid",
                                                                      "placement")}) for r in sent]
    assert [a.status_code for a in answers] == [200] * len(sent)
    body = answers[-1].json()
    assert body["impression_id"] == sent[-1]["impression_id"] and 0.0 <= body["score"] <= 1.0
    assert body["decision"] in ("skip", "click")  # the label view's decision names
    assert not {"impressions_10m", "mean_bid_1h"} & set(body["missing_features"])

    # the monitor reads the ads predictions and click labels (named by the label view) and evaluates a window
    run(env, "-m", "tests.examples.live_impressions", "clicks", str(sent_file))
    monitor = run(env, "monitor", "--window-size", str(len(sent)), "--max-windows", "1", "--exit-when-idle", "20",
                  "--no-retrain", "--metrics-port", "0", "--no-reports", timeout=600)
    summary = monitor.stdout + monitor.stderr
    assert re.search(r"1 window\(s\) evaluated, 0 malformed", summary), summary[-3000:]
