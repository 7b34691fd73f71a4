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
        parts.append(f"\n## {path.stem}\n")
        parts.append(
            f"Measured {measured} on {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
            f"{machine.get('memory_gb', '?')} GiB, Python {machine.get('python', '?')}, commit {machine.get('commit', '?')}.\n"
        )
        if goals:
            parts.append("\nGoals: " + "; ".join(f"{k}: {v}" for k, v in goals.items()) + "\n")
        parts.append("\n| key | value |\n|---|---|\n")
        for key in sorted(data):
            parts.append(f"| `{key}` | {_fmt(data[key])} |\n")
        if notes:
            parts.append(f"\n{notes}\n")
    out.write_text("".join(parts))
    return out


if __name__ == "__main__":
    print(render())
