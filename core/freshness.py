"""Feature freshness: the SLO each feature view declares, and the age of its data.

- **Declared** in the feature repo: a view's tag ``freshness_slo`` (``"5m"``, ``"2d"``, ...): the oldest
  its newest data may get before on-call hears of it.
- **Measured**: the age of a view = now - event time of the newest row written for it, computed at
  scrape time, so it keeps growing when the writer is stuck or no events arrive at all (a "seconds
  since the batch's newest event" gauge set per batch would freeze at its last value and hide that).
  The stream job reports every batch it writes (:class:`FreshnessGauge` in its process); a batch
  writer such as materialize, which does not live to be scraped, leaves marks in
  ``<state_dir>/freshness.json`` (:class:`FreshnessMarks`) that the monitor exports.

Exported: ``rtml_feature_view_age_seconds{view,source}``, ``rtml_feature_view_newest_event_timestamp_seconds
{view,source}``, and ``rtml_feature_view_freshness_slo_seconds{view}`` where the SLOs are known.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

TAG = "freshness_slo"
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_duration(text: str) -> float:
    """``"90s"``, ``"5m"``, ``"2h"``, ``"1d"`` -> seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"not a duration like 90s, 5m, 2h or 1d: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def freshness_slo_s(view: Any) -> float | None:
    """The SLO a feature view declares (tag ``freshness_slo``), in seconds; None when it declares none."""
    tag = (getattr(view, "tags", None) or {}).get(TAG)
    if tag is None:
        return None
    try:
        return parse_duration(tag)
    except ValueError as exc:
        raise ValueError(f"feature view {view.name}: {exc}") from None


def view_slos(views: Iterable[Any]) -> dict[str, float]:
    """View name -> SLO seconds, for the views that declare one."""
    return {v.name: s for v in views if (s := freshness_slo_s(v)) is not None}


class FreshnessMarks:
    """``<state_dir>/freshness.json``: view -> newest event time (epoch s) a batch writer wrote."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            from core.settings import settings

            path = settings().state_dir / "freshness.json"
        self.path = Path(path)

    def read(self) -> dict[str, float]:
        try:
            return {k: float(v) for k, v in json.loads(self.path.read_text()).items()}
        except (OSError, ValueError):
            return {}

    def mark(self, view: str, newest_event_ts: float) -> None:
        marks = self.read()
        marks[view] = max(float(newest_event_ts), marks.get(view, float("-inf")))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(marks))
        tmp.replace(self.path)


def mark_sources(views: Iterable[Any], end_ts: float, marks: FreshnessMarks | None = None) -> dict[str, float]:
    """After a batch materialization: mark each view with the newest event time of its offline source
    before ``end_ts`` (epoch s); returns what was marked."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    marks = marks or FreshnessMarks()
    done = {}
    for view in views:
        src = view.batch_source
        path, field = getattr(src, "path", None), src.timestamp_field
        if not path or not Path(path).exists():
            continue
        column = ds.dataset(path, format="parquet").to_table(columns=[field]).column(field)
        newest = pc.max(column).as_py()
        if newest is None:
            continue
        ts = min(newest.timestamp(), end_ts)
        marks.mark(view.name, ts)
        done[view.name] = ts
    return done


class FreshnessGauge(Collector):
    """Exports the age of each view's newest event (at scrape time) from ``observe`` calls and/or marks."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        slos: dict[str, float] | None = None,
        source: str = "stream",
        marks: FreshnessMarks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.slos = dict(slos or {})
        self.source = source
        self.marks = marks
        self.clock = clock
        self._newest: dict[str, float] = {}
        if registry is not None:
            registry.register(self)

    def observe(self, view: str, newest_event_ts: float) -> None:
        """A batch of ``view`` rows whose newest event time is ``newest_event_ts`` (epoch s) was written."""
        self._newest[view] = max(float(newest_event_ts), self._newest.get(view, float("-inf")))

    def newest(self) -> dict[str, float]:
        return {**(self.marks.read() if self.marks else {}), **self._newest}

    def ages(self, now: float | None = None) -> dict[str, float]:
        now = self.clock() if now is None else now
        return {view: max(0.0, now - ts) for view, ts in self.newest().items()}

    def breaches(self, now: float | None = None) -> dict[str, float]:
        """Views older than their SLO -> age."""
        return {v: a for v, a in self.ages(now).items() if v in self.slos and a > self.slos[v]}

    def collect(self):
        now = self.clock()
        newest = self.newest()
        age = GaugeMetricFamily(
            "rtml_feature_view_age_seconds", "Now minus the event time of the newest row written for the view.",
            labels=["view", "source"],
        )
        stamp = GaugeMetricFamily(
            "rtml_feature_view_newest_event_timestamp_seconds", "Event time of the newest row written for the view.",
            labels=["view", "source"],
        )
        for view, ts in sorted(newest.items()):
            age.add_metric([view, self.source], max(0.0, now - ts))
            stamp.add_metric([view, self.source], ts)
        yield age
        yield stamp
        if self.slos:
            slo = GaugeMetricFamily(
                "rtml_feature_view_freshness_slo_seconds", "Freshness SLO the view declares (tag freshness_slo).",
                labels=["view"],
            )
            for view, seconds in sorted(self.slos.items()):
                slo.add_metric([view], seconds)
            yield slo
