"""Model rollout costs: shadow overhead, reason codes, hot reload under load, batch scoring.

Same setup as ``bench_serving`` (300 trees of depth 6 on the real feature list, features in Redis written
through Feast, `bentoml serve` with 1 worker, the closed-loop ``loadgen.py`` in its own process):

- ``shadow_overhead_p50_ms_c1`` / ``_p99_``: latency at concurrency 1 with a shadow challenger (a second
  300-tree model) minus without one; runs alternate (no rollout, shadow, ...) so both see the same machine;
- ``explain_p50_ms_c1`` / ``explain_p99_ms_c1``: requests with ``"explain": true``;
- ``reload_failed_requests``: non-200 answers while the registry changes every ~2 s under load at
  concurrency 8 (shadow, canary, A/B, complete, promote, rollback, ...);
- ``batch_score_rows_per_s``: `rtml score` (default local point-in-time join + XGBoost + Parquet) over 1M events
  against 1M+ feature history rows, end to end; beside it Feast's ``get_historical_features`` on a subset
  (the plain path); ``batch_vs_online_score_max_abs_diff``: batch vs the service for the same events.

Goals: shadow overhead p50 <= 0.3 ms; 0 failed requests; >= 200,000 rows/s; diff <= 1e-6.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.benchmarks.bench_serving import N_MERCHANTS, N_USERS, _bodies, _load, _summary, _train_model, kafka_as  # noqa: E402
from tests.benchmarks.common import write_result  # noqa: E402

BATCH_EVENTS = int(os.environ.get("RTML_BENCH_BATCH_EVENTS", "1000000"))
HISTORY_PER_USER = 200


def _headers() -> dict[str, str]:
    """The bench's API key (``RTML_API_KEY``, also read by ``loadgen.py``): the service requires one."""
    return {"authorization": f"Bearer {os.environ['RTML_API_KEY']}"}


def _deployment(port: int) -> dict:
    import httpx

    return httpx.post(f"http://127.0.0.1:{port}/deployment", json={}, timeout=5, headers=_headers()).json()


def _wait(port: int, **expected) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        d = _deployment(port)
        if all(d.get(k) == v for k, v in expected.items()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the service never showed {expected}")


def _history(data_dir: Path, now: pd.Timestamp, seed: int = 5) -> int:
    """Extra user aggregate history: HISTORY_PER_USER rows per user over the day before the fixture's rows."""
    from tests.serving.conftest import USER_BASE, user_aggregate_names

    rng = np.random.default_rng(seed)
    n = N_USERS * HISTORY_PER_USER
    df = pd.DataFrame({"user_id": USER_BASE + 1 + np.repeat(np.arange(N_USERS), HISTORY_PER_USER)})
    for name, kind in user_aggregate_names():
        df[name] = rng.integers(0, 40, n).astype("int64") if kind == "int" else np.round(rng.gamma(2.0, 40.0, n), 3)
    span = pd.Timedelta(hours=23).value // 1000
    df["event_timestamp"] = (now - pd.Timedelta(days=1)) + pd.to_timedelta(rng.integers(0, span, n), unit="us")
    df.to_parquet(data_dir / "user_txn_features" / "part-history.parquet", index=False, coerce_timestamps="us")
    return n


def _events(data_dir: Path, now: pd.Timestamp, n: int, online: list[dict], seed: int = 6) -> None:
    """``n`` events over the last day (interleaved with the feature history) + the ``online`` ones after it."""
    from tests.serving.conftest import MERCHANT_BASE, USER_BASE

    rng = np.random.default_rng(seed)
    span = pd.Timedelta(days=1).value // 1000
    df = pd.DataFrame(
        {
            "transaction_id": [f"b{i}" for i in range(n)],
            "user_id": USER_BASE + 1 + rng.integers(0, N_USERS, n),
            "merchant_id": MERCHANT_BASE + 1 + rng.integers(0, N_MERCHANTS - 1, n),
            "amount": np.round(rng.gamma(2.0, 60.0, n), 2),
            "currency": "EUR",
            "country": rng.choice(["DE", "FR", "NL", "US"], n),
            "channel": "web",
            "event_timestamp": (now - pd.Timedelta(days=1)) + pd.to_timedelta(rng.integers(0, span, n), unit="us"),
        }
    )
    late = pd.DataFrame(online).drop(columns=["timestamp"])
    late["event_timestamp"] = [now + pd.Timedelta(minutes=1, milliseconds=i) for i in range(len(late))]
    folder = data_dir / "transactions"
    folder.mkdir(parents=True, exist_ok=True)
    opts = dict(index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
    df.to_parquet(folder / "part-0.parquet", **opts)
    late.to_parquet(folder / "part-1.parquet", **opts)


def _reload_under_load(port: int, bodies_file: str, prod: str, chal: str, seconds: float) -> dict:
    """Load at concurrency 8 while the registry changes every ~2 s; every change is waited for."""
    from core import model_store

    cmd = [sys.executable, str(HERE / "loadgen.py"), "/predict", "127.0.0.1", str(port), "8", str(seconds), bodies_file]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    steps = [
        (lambda: model_store.start_rollout(chal, "shadow"), {"mode": "shadow"}),
        (lambda: model_store.set_rollout_mode("canary", "20%"), {"mode": "canary"}),
        (lambda: model_store.set_rollout_mode("ab", "50%"), {"mode": "ab"}),
        (lambda: model_store.complete_rollout("bench"), {"production": chal, "mode": None}),
        (lambda: model_store.start_rollout(prod, "canary", "50%"), {"mode": "canary"}),
        (lambda: model_store.abort_rollout("bench"), {"mode": None}),
        (lambda: model_store.promote(prod, "bench"), {"production": prod}),
    ]
    changes = 0
    time.sleep(1.5)
    deadline = time.monotonic() + seconds - 3
    while time.monotonic() < deadline:
        for step, expected in steps:
            if time.monotonic() >= deadline:
                break
            step()
            _wait(port, **expected)
            changes += 1
            time.sleep(1.0)
    if model_store.rollout_state():
        model_store.abort_rollout("bench end")
    if model_store.production_tag() != prod:
        model_store.promote(prod, "bench end")
    _wait(port, production=prod, mode=None)
    out, err = proc.communicate(timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {err[-2000:]}")
    run = json.loads(out)
    n = int(sum(run["status"].values()))
    return {"changes": changes, "requests": n, "failed": n - int(run["status"].get("200", 0)), "status": run["status"]}


def main() -> dict:
    seconds = float(os.environ.get("RTML_BENCH_SECONDS", "15"))
    from core.settings import settings
    from infra import kafka_broker, redis_server
    from infra.stack import up

    outer = settings()
    info = up(progress=False, spark_jars=False)
    tmp = Path(tempfile.mkdtemp(prefix="rtml-bench-rollout-"))
    saved = {k: os.environ.get(k) for k in ("RTML_STATE_DIR", "RTML_DATA_DIR", "RTML_REDIS_URL", "RTML_KAFKA_BOOTSTRAP", "BENTOML_HOME",
                                            "RTML_API_KEY", "RTML_SERVING_AUTH", "RTML_KAFKA_USER", "RTML_KAFKA_PASSWORD",
                                            "RTML_REDIS_USER", "RTML_REDIS_PASSWORD")}
    kafka_as("serving", outer)
    os.environ.update(
        RTML_STATE_DIR=str(tmp / "state"), RTML_DATA_DIR=str(tmp / "data"),
        RTML_REDIS_URL=outer.redis_url, RTML_KAFKA_BOOTSTRAP=outer.kafka_bootstrap,
    )
    os.environ.pop("BENTOML_HOME", None)
    os.environ.pop("RTML_SERVING_AUTH", None)  # API keys on, as deployed
    port = None
    try:
        from bentos import auth
        from bentos.batch_score import score_range
        from bentos.commands import serve
        from core import model_store
        from core.feast_store import apply_repo
        from tests.serving.conftest import free_port, load_online, write_feature_data

        model_store.bentoml_home()
        now = pd.Timestamp.now(tz="UTC").floor("s")
        data = write_feature_data(tmp / "data", now, n_users=N_USERS, n_merchants=N_MERCHANTS)
        apply_repo()
        load_online(now, data)
        history_rows = _history(tmp / "data", now)
        chal = _train_model(seed=5, promote_it=False)
        prod = _train_model()
        os.environ["RTML_API_KEY"] = auth.create_key("bench", ["admin"], rate_per_s=1e9)
        bodies = _bodies(2000)
        bodies_file, explain_file = str(tmp / "bodies.json"), str(tmp / "explain.json")
        Path(bodies_file).write_text(json.dumps(bodies))
        Path(explain_file).write_text(json.dumps([{**b, "explain": True} for b in bodies]))

        port = free_port()
        serve.start_detached("prediction", "127.0.0.1", port, workers=1, timeout=180)
        _load(port, 4, 3, bodies_file)  # warm-up
        load_avg: list[float] = []

        # -- shadow overhead at concurrency 1: alternate plain / shadow runs
        runs: dict[str, list[dict]] = {"plain": [], "shadow": []}
        for _ in range(2):
            for mode in ("plain", "shadow"):
                if mode == "shadow":
                    model_store.start_rollout(chal, "shadow")
                    _wait(port, mode="shadow")
                else:
                    if model_store.rollout_state():
                        model_store.abort_rollout("bench")
                    _wait(port, mode=None)
                _load(port, 1, 2, bodies_file)
                load_avg.append(os.getloadavg()[0])
                runs[mode].append(_load(port, 1, seconds, bodies_file))
        model_store.abort_rollout("bench")
        _wait(port, mode=None)
        merged = {m: _summary({"latencies_s": sum((r["latencies_s"] for r in rs), []),
                               "status": {"200": sum(int(r["status"].get("200", 0)) for r in rs),
                                          "other": sum(int(v) for r in rs for k, v in r["status"].items() if k != "200")},
                               "elapsed_s": sum(r["elapsed_s"] for r in rs), "client_cpu_s": 0.0}, 0.0) for m, rs in runs.items()}
        for m, r in merged.items():
            print(f"{m:7s} c=1 p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms ({r['requests']} requests, {r['errors']} errors)", flush=True)

        # -- reason codes
        load_avg.append(os.getloadavg()[0])
        explain = _summary(_load(port, 1, seconds, explain_file), 0.0)
        print(f"explain c=1 p50 {explain['p50_ms']:.3f} ms p99 {explain['p99_ms']:.3f} ms", flush=True)

        # -- hot reload under load
        load_avg.append(os.getloadavg()[0])
        reload = _reload_under_load(port, bodies_file, prod, chal, max(20.0, 2 * seconds))
        print(f"reload under load: {reload}", flush=True)

        # -- batch scoring: 1M events; the online ones after all feature rows
        online_txns = _bodies(300, seed=9)
        for i, b in enumerate(online_txns):
            b["transaction_id"] = f"online-{i}"
        import httpx

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers=_headers()) as c:
            served = {b["transaction_id"]: c.post("/predict", json=b).json()["score"] for b in online_txns}
        serve.stop(port)
        port = None
        _events(tmp / "data", now, BATCH_EVENTS, online_txns)
        start, end = now - pd.Timedelta(days=2), now + pd.Timedelta(hours=1)
        load_avg.append(os.getloadavg()[0])
        batch = score_range(start, end, engine="auto", out=tmp / "scores.parquet")
        duck_run = score_range(start, end, engine="duckdb", out=tmp / "scores-duckdb.parquet")
        scores = pd.read_parquet(batch.path, columns=["transaction_id", "score", "variant", "model_version"]).set_index("transaction_id")
        diff = max(abs(float(scores.loc[k, "score"]) - s) for k, s in served.items())
        print(f"batch (auto join): {batch.rows} rows, {batch.rows_per_s:,.0f} rows/s {batch.seconds}; duckdb join {duck_run.rows_per_s:,.0f} rows/s; "
              f"batch vs online max diff {diff:.2e}", flush=True)
        # the plain path: Feast get_historical_features (duckdb offline store) on a slice of the same events
        slice_end = now - pd.Timedelta(days=1) + pd.Timedelta(minutes=30)
        feast_run = score_range(now - pd.Timedelta(days=1), slice_end, engine="feast", out=tmp / "scores-feast.parquet")
        print(f"batch feast (plain): {feast_run.rows} rows, {feast_run.rows_per_s:,.0f} rows/s", flush=True)

        plain, shadow = merged["plain"], merged["shadow"]
        out = {
            "setup": {
                "seconds_per_run": seconds, "workers": 1, "model": "300 trees, depth 6 (production and challenger)",
                "client": "tests/benchmarks/loadgen.py", "load_average_1m_during_runs": load_avg,
                "batch_events": batch.rows, "feature_history_rows": history_rows + N_USERS,
                "note": "2-core machine shared with other jobs; the load average shows how busy it was",
            },
            "p50_ms_c1_no_rollout": plain["p50_ms"], "p99_ms_c1_no_rollout": plain["p99_ms"],
            "p50_ms_c1_shadow": shadow["p50_ms"], "p99_ms_c1_shadow": shadow["p99_ms"],
            "shadow_overhead_p50_ms_c1": shadow["p50_ms"] - plain["p50_ms"],
            "shadow_overhead_p99_ms_c1": shadow["p99_ms"] - plain["p99_ms"],
            "shadow_errors": shadow["errors"],
            "explain_p50_ms_c1": explain["p50_ms"], "explain_p99_ms_c1": explain["p99_ms"],
            "explain_method": "XGBoost pred_contribs, approx_contribs=True (RTML_SERVING_EXPLAIN_EXACT=1 for TreeSHAP)",
            "reload_failed_requests": reload["failed"], "reload_changes": reload["changes"], "reload_requests": reload["requests"],
            "batch_score_rows_per_s": batch.rows_per_s, "batch_score_seconds": batch.seconds,
            "batch_score_rows_per_s_duckdb_join": duck_run.rows_per_s, "batch_score_seconds_duckdb_join": duck_run.seconds,
            "baseline_batch_score_rows_per_s_feast": feast_run.rows_per_s, "baseline_batch_rows_feast": feast_run.rows,
            "batch_vs_online_score_max_abs_diff": diff, "batch_vs_online_events": len(served),
        }
        out["goals"] = {
            "shadow_overhead_p50_le_0.3ms": out["shadow_overhead_p50_ms_c1"] <= 0.3,
            "reload_failed_requests_eq_0": out["reload_failed_requests"] == 0,
            "batch_rows_per_s_ge_200k": out["batch_score_rows_per_s"] >= 200_000,
            "batch_vs_online_le_1e-6": diff <= 1e-6,
        }
        path = write_result("rollout", out)
        print(json.dumps(out["goals"]), f"-> {path}")
        return out
    finally:
        from bentos.commands import serve

        if port is not None:
            serve.stop(port)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if info.kafka.started:
            kafka_broker.stop(progress=False, s=outer)
        if info.redis.started:
            redis_server.stop(progress=False, s=outer)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
