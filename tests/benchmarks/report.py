"""Render BENCHMARKS.md from the JSON results: one table per benchmark, with the machine it ran on."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmarks.common import RESULTS_DIR

ROOT = RESULTS_DIR.parent.parent.parent

INTRO = """# Benchmarks

Measured by `make bench` (code under `tests/benchmarks/`, raw figures in `tests/benchmarks/results/*.json`).
Every comparison ran side by side in the same run on the same machine. Figures are re-measured on every run;
nothing here is typed by hand.
"""


# Headline rows per benchmark: (what, our key, baseline key or None, goal text).
HEADLINES: dict[str, list[tuple[str, str, str | None, str]]] = {
    "streaming": [
        ("sustained events/s (driver job: column 3 row below)", "sustained_events_per_s", "baseline_sustained_events_per_s", ">= 30,000"),
        ("  former driver-side job, sustained events/s", "driver_job_sustained_events_per_s", None, ""),
        ("freshness p50 at 5k ev/s (s)", "freshness_p50_s_at_5k", "baseline_freshness_p50_s_at_5k", ""),
        ("freshness p99 at 5k ev/s (s)", "freshness_p99_s_at_5k", "baseline_freshness_p99_s_at_5k", "<= 1.5"),
        ("  former driver-side job, freshness p99 at 5k (s)", "driver_job_freshness_p99_s_at_5k", None, ""),
        ("  steady state (full state), freshness p50 at 5k (s)", "freshness_p50_s_at_5k_steady_state", None, ""),
        ("  steady state, freshness p99 at 5k (s)", "freshness_p99_s_at_5k_steady_state", None, ""),
        ("state MB of one version after N events (key names N)", "state_mb_at_*_events", "driver_job_state_mb_at_*_events", ""),
        ("  tiled job: Redis tile hashes MB after N events", "redis_tile_mb_at_*_events", None, ""),
        ("1,000-event batch: state MB written", "small_batch_state_mb_written_at_*_events",
         "driver_job_small_batch_state_mb_written_at_*_events", "<= 5"),
        ("1,000-event batch: seconds", "small_batch_seconds_at_*_events", "driver_job_small_batch_seconds_at_*_events",
         "<= 1.0"),
        ("state bytes/entity, 1,000 vs 10 events per window", "state_bytes_per_entity_ratio_100x_events",
         "driver_job_state_bytes_per_entity_ratio_100x_events", "<= 1.5"),
        ("standalone cluster: executors used", "cluster_executors_used", "driver_job_cluster_executors_used", ">= 2"),
        ("standalone cluster equals local[2]", "cluster_equals_local", None, "true"),
        ("backfill rows/s", "backfill_rows_per_s", None, ""),
    ],
    "training": [
        ("PIT join of 1M labels x 10.4M feature rows (s)", "pit_seconds", "duckdb_store_seconds", ">= 2x faster than Feast duckdb"),
        ("speedup vs Feast duckdb store (x)", "speedup_vs_duckdb_store", None, ">= 2"),
        ("  same, Feast file (dask) store (s)", "pit_seconds", "file_store_seconds", ""),
        ("peak RSS (GiB)", "pit_peak_rss_gb", "duckdb_store_peak_rss_gb", "within 24"),
        ("cells differing from the merge_asof oracle", "cells_mismatching_oracle", "duckdb_store_cells_mismatching_oracle", "0"),
        ("entity rows dropped (baseline: file store)", "rows_dropped", "file_store_rows_dropped", "0"),
        ("MLflow tracking added to one `rtml train` (s)", "mlflow_logging_overhead_s", None, "<= 2"),
        ("  same, first training on a new store (s)", "mlflow_logging_overhead_first_run_s", None, ""),
        ("data validation of 1M-row frames (s)", "validation_seconds_1m_rows", None, "<= 10"),
    ],
    "serving": [
        ("p50 ms, concurrency 1", "p50_ms_c1", "baseline_p50_ms_c1", ""),
        ("p99 ms, concurrency 1", "p99_ms_c1", "baseline_p99_ms_c1", "<= 1.5"),
        ("requests/s, concurrency 8", "rps_c8", "baseline_rps_c8", ""),
        ("p99 ms, concurrency 8", "p99_ms_c8", "baseline_p99_ms_c8", ""),
        ("requests/s, concurrency 32", "rps_c32", "baseline_rps_c32", ">= 1,000 with p99 <= 25 ms; >= 2x baseline"),
        ("p99 ms, concurrency 32", "p99_ms_c32", "baseline_p99_ms_c32", "<= 25"),
        ("throughput vs baseline, concurrency 32", "throughput_ratio_vs_baseline", None, ">= 6"),
        ("/predict_batch of 100, p99 ms", "batch100_p99_ms", None, "<= 5"),
        ("2 workers: requests/s at p99 <= 25 ms", "rps_2_workers_at_p99_le_25ms", None, ">= 2,500"),
        ("Redis Cluster: p99 ms, concurrency 1", "cluster_p99_ms_c1", None, ""),
        ("Redis Cluster: requests/s, concurrency 8", "cluster_rps_c8", None, ""),
        ("primary killed under load: seconds of failed requests", "failover_failed_request_seconds", None, "<= 15"),
        ("Redis bytes per entity hash", "redis_bytes_per_entity", None, ""),
        ("  same, Redis Cluster", "cluster_redis_bytes_per_entity", None, ""),
    ],
    "rollout": [
        ("p50 ms c1, shadow challenger (vs none)", "p50_ms_c1_shadow", "p50_ms_c1_no_rollout", ""),
        ("shadow overhead p50 ms, c1", "shadow_overhead_p50_ms_c1", None, "<= 0.3"),
        ("shadow overhead p99 ms, c1", "shadow_overhead_p99_ms_c1", None, ""),
        ("explain p99 ms, c1 (vs no explain)", "explain_p99_ms_c1", "p99_ms_c1_no_rollout", "within the latency budget"),
        ("failed requests during registry changes under load", "reload_failed_requests", None, "0"),
        ("batch score rows/s (vs Feast get_historical_features)", "batch_score_rows_per_s", "baseline_batch_score_rows_per_s_feast", ">= 200,000"),
        ("batch vs online score max abs diff", "batch_vs_online_score_max_abs_diff", None, "<= 1e-6"),
    ],
    "monitoring": [
        ("events/s consumed (monitor loop)", "consume_events_per_s", "plain_kafka_json_events_per_s", ">= 20,000"),
        ("events/s consumed, batch messages of 100 (monitor loop)", "consume_batched_events_per_s",
         "plain_kafka_json_events_per_s", ""),
        ("5k-row window evaluation (s)", "window_eval_s_5k", None, "<= 1"),
        ("detection delay (windows)", "detection_delay_windows", None, "<= 2"),
        ("false alarms in 20 clean windows", "false_alarms_in_20_windows", None, "0"),
        ("false alarms per clean day, 14 simulated days, defaults", "false_alarms_per_clean_day_defaults", None, "0"),
        ("detection delay, worst incident (windows)", "detection_delay_windows_max", None, "<= 2"),
        ("online/offline consistency, clean", "consistency_rate_clean", None, ">= 0.999"),
        ("injected online-write skew caught", "consistency_detects_injected_skew", None, "1"),
        ("consistency rows checked/s", "consistency_rows_per_s", None, ""),
    ],
}
BASELINE_NAMES = {
    "streaming": "plain Feast path (consumer + Feast push per event)",
    "training": "Feast offline store",
    "serving": "plain BentoML + FeatureStore.get_online_features",
    "monitoring": "plain kafka-python + json, no monitoring work",
    "rollout": "no rollout / plain Feast offline retrieval",
}


def _headline(name: str, data: dict) -> str:
    rows = HEADLINES.get(name)
    if not rows:
        return ""
    out = [f"\n| | rtml | {BASELINE_NAMES.get(name, 'baseline')} | goal |\n|---|---|---|---|\n"]
    for label, ours, base, goal in rows:
        ours, base = _key(data, ours), _key(data, base) if base else base
        if ours not in data:
            continue
        base_value = _fmt(data[base]) if base and base in data else "-"
        out.append(f"| {label} | {_fmt(data[ours])} | {base_value} | {goal} |\n")
    return "".join(out)


def _key(data: dict, pattern: str) -> str:
    """``pattern`` itself, or the first key of ``data`` it matches when it holds a ``*`` (figures named by size)."""
    import fnmatch

    if "*" not in pattern:
        return pattern
    return next((k for k in sorted(data) if fnmatch.fnmatch(k, pattern)), pattern)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, dict | list):
        return "`" + json.dumps(value, sort_keys=True)[:200] + "`"
    return str(value)


def render(out: Path | None = None) -> Path:
    out = out or ROOT / "BENCHMARKS.md"
    parts = [INTRO]
    for path in sorted(RESULTS_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        machine = data.pop("machine", {})
        measured = data.pop("measured_at", "")
        notes = data.pop("notes", None)
        goals = data.pop("goals", None)
        later = data.pop("parts", {})  # parts measured alone since (``NAME:PART``)
        parts.append(f"\n## {path.stem}\n")
        parts.append(
            f"Measured {measured} on {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
            f"{machine.get('memory_gb', '?')} GiB, Python {machine.get('python', '?')}, commit {machine.get('commit', '?')}"
            + "".join(f"; part {name} re-measured alone {p.get('measured_at', '?')}, commit {p.get('machine', {}).get('commit', '?')}"
                      for name, p in sorted(later.items()))
            + ".\n"
        )
        if goals:
            parts.append("\nGoals: " + "; ".join(f"{k}: {v}" for k, v in goals.items()) + "\n")
        parts.append(_headline(path.stem, data))
        parts.append("\n<details><summary>all figures</summary>\n\n| key | value |\n|---|---|\n")
        for key in sorted(data):
            parts.append(f"| `{key}` | {_fmt(data[key])} |\n")
        parts.append("\n</details>\n")
        if notes:
            parts.append(f"\n{notes}\n")
    out.write_text("".join(parts))
    return out


if __name__ == "__main__":
    print(render())
