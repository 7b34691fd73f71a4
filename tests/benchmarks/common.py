"""Shared pieces of the benchmarks: percentiles, machine facts, and writing one JSON per benchmark.

Each benchmark is a module ``tests/benchmarks/bench_<name>.py`` with a ``main() -> dict`` that
measures, calls :func:`write_result` and returns the result. ``make bench`` runs them all and
``tests/benchmarks/report.py`` renders ``BENCHMARKS.md`` from the JSON files.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def percentiles(values_s: list[float] | np.ndarray, scale: float = 1.0) -> dict[str, float]:
    """Median, p90, p99 and max of ``values_s`` times ``scale``."""
    arr = np.asarray(values_s, dtype=float) * scale
    if arr.size == 0:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}
    return {
        "p50": float(np.percentile(arr, 50)),
        "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
        "n": int(arr.size),
    }


def machine() -> dict[str, Any]:
    """What the benchmark ran on."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "commit": commit,
    }


def read_result(name: str) -> dict[str, Any]:
    """The figures of ``results/<name>.json`` ({} when there are none yet)."""
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_result(name: str, result: dict[str, Any], part: str | None = None) -> Path:
    """Write ``results/<name>.json`` with the measured figures, the machine and the time of the run.

    ``part``: only one part of the benchmark was measured and ``result`` is the earlier file with that part's
    keys replaced; the file's ``machine`` and ``measured_at`` stay those of the other figures, the part's own
    go to ``parts[part]``. A whole run (``part`` None) drops those of earlier partial runs.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = {"machine": machine(), "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    if part is None:
        payload = {**{k: v for k, v in result.items() if k != "parts"}, **stamp}
    else:
        payload = {**result, "parts": {**result.get("parts", {}), part: stamp}}
        for key, value in stamp.items():
            payload.setdefault(key, value)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path
