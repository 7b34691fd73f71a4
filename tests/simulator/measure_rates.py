"""Measure the simulator's throughput on this machine (not a test; run by hand against a live broker).

    RTML_KAFKA_PORT=... .venv/bin/python -m tests.simulator.measure_rates [--events 300000]

Prints history rows/s and the live producer's max send rate (unpaced, with and without labels) and
the achieved rate when paced at a 20k/s target.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime

from streaming.producer import stream_live
from streaming.simulator import live_events_frame, simulate_history


def main(events: int = 300_000) -> dict:
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        s = simulate_history(
            start="2026-11-01", days=14, n_users=10_200, n_merchants=2000, seed=1, data_dir=tmp, progress=False
        )
        out["history"] = {
            "rows": s.n_transactions,
            "seconds": s.elapsed_s,
            "rows_per_s": s.n_transactions / s.elapsed_s,
        }
    t0 = time.perf_counter()
    live_events_frame(20_000, max_events=events, seed=1, start_time=datetime(2026, 11, 1, tzinfo=UTC))
    out["live_generation_events_per_s"] = events / (time.perf_counter() - t0)
    run = uuid.uuid4().hex[:6]
    for name, kwargs in (
        ("unpaced_no_labels", dict(pace=False, send_labels=False)),
        ("unpaced_with_labels", dict(pace=False, send_labels=True)),
        ("paced_20k_no_labels", dict(pace=True, send_labels=False)),
        ("paced_20k_with_labels", dict(pace=True, send_labels=True)),
    ):
        r = stream_live(
            20_000,
            max_events=events,
            seed=1,
            topic=f"measure-{run}-{name}",
            labels_topic=f"measure-{run}-{name}-labels",
            progress=False,
            **kwargs,
        )
        out[name] = {
            "events": r.events,
            "achieved_rate": round(r.achieved_rate),
            "elapsed_s": r.elapsed_s,
            "max_lag_s": r.max_lag_s,
        }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=300_000)
    main(p.parse_args().events)
