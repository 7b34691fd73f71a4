"""The point-in-time join with its sources on a real S3 API (a local s3proxy) against the same join on local files.

Same data (``bench_training``'s generator, smaller by default), same entity rows, same join
(:func:`training.pit_join.pit_join`; ``sorted`` is the default engine, ``duckdb`` also measured): only the
view paths differ (``/local/folder`` vs ``s3://bucket/prefix``). Baseline = the local-file join in the same run.

Part of ``bench_training`` (run in its own child process there): its keys in ``tests/benchmarks/results/training.json``
are ``pit_cells_mismatching_s3_vs_local`` (goal 0), ``pit_seconds_s3_over_local`` (goal <= 1.5) and ``s3``
(details: seconds per run, rows, bytes, load). The s3proxy is started and stopped (by pid) here, on
``RTML_S3_PORT``.

Env: BENCH_S3_ENTITIES, BENCH_S3_USER_ROWS, BENCH_S3_MERCHANT_ROWS, BENCH_S3_RUNS.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from core.settings import REPO_ROOT
from tests.benchmarks.common import machine

WORK = REPO_ROOT / "tests" / "benchmarks" / ".work" / "training_s3"
RUNS = int(os.environ.get("BENCH_S3_RUNS", 5))
SIZES = {  # bench_training's generator, scaled by these
    "BENCH_PIT_ENTITIES": os.environ.get("BENCH_S3_ENTITIES", "300000"),
    "BENCH_PIT_USERS": "60000",
    "BENCH_PIT_MERCHANTS": "60000",
    "BENCH_PIT_USER_ROWS": os.environ.get("BENCH_S3_USER_ROWS", "1800000"),
    "BENCH_PIT_MERCHANT_ROWS": os.environ.get("BENCH_S3_MERCHANT_ROWS", "1200000"),
}


def _specs(root: str):
    from tests.benchmarks import bench_training as bt
    from training.pit_join import ViewSpec

    return [ViewSpec(name, f"{root}/{path}", (key,), tuple(feats), ttl=ttl)
            for name, (path, key, feats, ttl) in bt.VIEWS.items()]


def mismatching_cells(a: pa.Table, b: pa.Table, names: list[str]) -> int:
    """Cells that differ (a null against a value counts; two nulls are equal)."""
    bad = 0
    for n in names:
        x, y = a.column(n).to_numpy(zero_copy_only=False), b.column(n).to_numpy(zero_copy_only=False)
        xn, yn = a.column(n).is_null().to_numpy(zero_copy_only=False), b.column(n).is_null().to_numpy(
            zero_copy_only=False)
        same = (xn & yn) | (~xn & ~yn & (x == y))
        bad += int((~same).sum())
    return bad + abs(a.num_rows - b.num_rows) * len(names)


def _timed(entities: pa.Table, root: str, engine: str) -> tuple[float, pa.Table]:
    from training.pit_join import pit_join

    t0 = time.perf_counter()
    out = pit_join(entities, _specs(root), engine=engine)
    return time.perf_counter() - t0, out


def measure(data_dir, s3_url: str, entities: pa.Table, names: list[str]) -> dict:
    result = {}
    for engine in ("sorted", "duckdb"):
        local_s, remote_s = [], []
        # one untimed join on each side first: the page cache holds the local files, and s3proxy's JVM has
        # compiled its request path (its first joins run up to 2x slower), as in a server that has been up
        _timed(entities, str(data_dir), engine)
        _timed(entities, s3_url, engine)
        local_out = remote_out = None
        for _ in range(RUNS):  # alternate, so load drifts hit both sides alike
            t, local_out = _timed(entities, str(data_dir), engine)
            local_s.append(t)
            t, remote_out = _timed(entities, s3_url, engine)
            remote_s.append(t)
        result[engine] = {
            "local_seconds_runs": local_s,
            "s3_seconds_runs": remote_s,
            "local_seconds": statistics.median(local_s),
            "s3_seconds": statistics.median(remote_s),
            "s3_over_local": statistics.median(remote_s) / statistics.median(local_s),
            "cells_compared": local_out.num_rows * len(names),
            "cells_mismatching": mismatching_cells(local_out, remote_out, names),
            "rows": remote_out.num_rows,
        }
    return result


def main() -> dict:
    """Generate (once), upload to a fresh local s3proxy, measure; returns the keys for training.json."""
    from core import storage
    from tests.benchmarks import bench_training as bt
    from tests.fixtures.s3 import local_s3, s3_data_env

    bt.WORK, bt.DATA = WORK, WORK / "data"  # own folder: never regenerate the training benchmark's full-size data
    bt.N_ENTITIES, bt.N_USERS, bt.N_MERCHANTS = (int(SIZES[k]) for k in
                                                 ("BENCH_PIT_ENTITIES", "BENCH_PIT_USERS", "BENCH_PIT_MERCHANTS"))
    bt.USER_ROWS, bt.MERCHANT_ROWS = int(SIZES["BENCH_PIT_USER_ROWS"]), int(SIZES["BENCH_PIT_MERCHANT_ROWS"])
    rows = bt.generate()
    entities = pq.read_table(WORK / "entities.parquet").select(["user_id", "merchant_id", "event_timestamp"])
    data_bytes = sum(p.stat().st_size for p in bt.DATA.rglob("*.parquet"))
    load_before = os.getloadavg()
    with local_s3(WORK / "s3-state") as env, s3_data_env(env, "bench") as url:
        t0 = time.perf_counter()
        storage.location(url).upload_dir(bt.DATA)
        upload_s = time.perf_counter() - t0
        figures = measure(bt.DATA, url, entities, bt.NAMES)
    load_after = os.getloadavg()
    main_engine = figures["sorted"]
    result = {
        "pit_cells_mismatching_s3_vs_local": sum(f["cells_mismatching"] for f in figures.values()),
        "pit_seconds_s3_over_local": round(main_engine["s3_over_local"], 3),
        "s3": {
            "what": "training.pit_join (engine sorted = default; duckdb also measured) with view sources on a local "
                    "s3proxy 2.6.0 (filesystem backend) vs the same files on local disk; baseline = local files; "
                    f"median of {RUNS} alternating runs after one untimed warm-up join on each side",
            "baseline_local_seconds": main_engine["local_seconds"],
            "s3_seconds": main_engine["s3_seconds"],
            "engines": figures,
            "rows": rows,
            "data_bytes": data_bytes,
            "upload_seconds": upload_s,
            "load": {"loadavg_before": load_before[0], "loadavg_after": load_after[0],
                     "loadavg_5m_before": load_before[1]},
            "machine": machine(),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
    return result
