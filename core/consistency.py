"""The online/offline consistency report: written by the consistency job (monitoring/consistency.py),
read by the promotion gate (training/gate.py). One file: ``<state_dir>/monitor/consistency.json``.

``{"checked_at": ..., "rows": n, "features": {"view:feature": {"view", "feature", "rows", "consistent",
"rate", "examples": [...]}}, "views": {view: rate}}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.settings import settings

MIN_ROWS = 100  # a feature with fewer compared rows has no verdict


def report_path() -> Path:
    return settings().state_dir / "monitor" / "consistency.json"


def write_report(report: dict[str, Any], path: Path | None = None) -> Path:
    path = Path(path or report_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
    return path


def read_report(path: Path | None = None) -> dict[str, Any] | None:
    path = Path(path or report_path())
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def promotion_blockers(
    feature_refs: list[str], min_rate: float | None = None, path: Path | None = None
) -> list[str]:
    """Why a model on ``feature_refs`` must not be promoted: its features whose online/offline
    consistency in the latest report is below ``min_rate`` (settings: 0.99). No report, or features
    not checked (on-demand ones, too few rows), block nothing."""
    report = read_report(path)
    if not report:
        return []
    threshold = settings().monitor.consistency_min_rate if min_rate is None else min_rate
    blockers = []
    for ref in feature_refs:
        entry = report.get("features", {}).get(ref)
        if entry and entry["rows"] >= MIN_ROWS and entry["rate"] < threshold:
            blockers.append(f"{ref} {entry['rate']:.2%} consistent over {entry['rows']} rows")
    return blockers
