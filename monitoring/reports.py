"""Evidently HTML drift reports for drifted windows and the latest window, with a retention cap.

The report runs Evidently's ``DataDriftPreset`` with the same method and threshold per column as
the monitor's gauges (:meth:`monitoring.drift.DriftDetector.methods`), so both agree.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

LATEST = "latest.html"


def render_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    methods: dict[str, tuple[str, float]],
    categorical: list[str],
    drift_share: float,
    path: Path,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Run ``DataDriftPreset`` on ``current`` vs ``reference`` (columns = ``methods`` keys) and save HTML."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = list(methods)
    numerical = [c for c in columns if c not in categorical]
    definition = DataDefinition(
        numerical_columns=numerical, categorical_columns=[c for c in columns if c in categorical]
    )
    preset = DataDriftPreset(
        columns=columns,
        drift_share=drift_share,
        per_column_method={c: m for c, (m, _t) in methods.items()},
        per_column_threshold={c: t for c, (_m, t) in methods.items()},
    )
    report = Report([preset], metadata=metadata or {})
    snapshot = report.run(
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    snapshot.save_html(str(tmp))
    tmp.replace(path)
    return path


class ReportStore:
    """``<state_dir>/reports/drift/``: ``window-<id>-<time>.html`` per drifted window (the newest
    ``keep`` are kept) and ``latest.html`` (how often: :mod:`monitoring.report_limit`)."""

    def __init__(self, directory: Path, keep: int = 20) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def drift_path(self, window_id: int, end: float) -> Path:
        return self.directory / f"window-{window_id:06d}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(end))}.html"

    @property
    def latest_path(self) -> Path:
        return self.directory / LATEST

    def prune(self) -> list[Path]:
        """Delete the oldest drifted-window reports beyond ``keep``; returns what was deleted."""
        reports = sorted(self.directory.glob("window-*.html"))
        doomed = reports[: max(0, len(reports) - self.keep)]
        for path in doomed:
            path.unlink(missing_ok=True)
        return doomed

    def reports(self) -> list[Path]:
        return sorted(self.directory.glob("window-*.html"))
