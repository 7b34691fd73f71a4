"""Benchmark results: one part measured alone replaces only its own keys and keeps the other figures."""

from __future__ import annotations

import json

from tests.benchmarks import bench_serving, common


def test_a_part_measured_alone_keeps_the_other_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    whole = {"p99_ms_c1": 1.2, "batch100_p99_ms": 4.0, "cluster": {"error": "boom"}, "cluster_error": "boom"}
    common.write_result("serving", {**whole, "goals": bench_serving.goals(whole)})
    first = json.loads((tmp_path / "serving.json").read_text())
    assert first["goals"]["failover_failed_request_seconds_le_15"] is False  # not measured: not met

    part = {"cluster": {"runs": {}}, "failover_failed_request_seconds": 3.5}
    merged = bench_serving.merge_part(common.read_result("serving"), "cluster", part)
    merged["goals"] = bench_serving.goals(merged)
    common.write_result("serving", merged, part="cluster")

    got = json.loads((tmp_path / "serving.json").read_text())
    assert got["p99_ms_c1"] == 1.2 and got["batch100_p99_ms"] == 4.0  # the standalone figures stay
    assert "cluster_error" not in got and got["failover_failed_request_seconds"] == 3.5
    assert got["goals"]["failover_failed_request_seconds_le_15"] is True and got["goals"]["batch100_p99_le_5ms"] is True
    assert got["measured_at"] == first["measured_at"] and got["machine"] == first["machine"]  # the whole run's
    assert set(got["parts"]) == {"cluster"}

    again = bench_serving.merge_part(got, "standalone", {"p99_ms_c1": 0.9})  # the other part alone
    assert again["p99_ms_c1"] == 0.9 and "batch100_p99_ms" not in again and again["failover_failed_request_seconds"] == 3.5
    assert again["parts"] == got["parts"]

    common.write_result("serving", {"p99_ms_c1": 1.0})  # a whole run again: no stale part stamps
    assert "parts" not in json.loads((tmp_path / "serving.json").read_text())
