"""When a window gets an HTML report: the rate limit of drift reports and of ``latest.html``.

A report costs ~1.5 s of CPU; one per 5k-event window would cap the monitor far below the stream's
rate. The first drifted window of an episode always gets its own report; under persistent drift a
drifted window gets one at most every ``drift_every_s`` seconds (the others point at the latest
drift report); a clean window rewrites ``latest.html`` at most every ``latest_every_s`` seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RENDER_DRIFT = "drift"
RENDER_LATEST = "latest"
SKIP = "skip"  # a drifted window without its own report (rate limit)


@dataclass
class ReportLimiter:
    drift_every_s: float = 60.0
    latest_every_s: float = 300.0
    last_drift_report: str = ""
    last_drift_at: float = -math.inf
    last_latest_at: float = 0.0

    def decide(self, any_drift: bool, episode_active: bool, now: float) -> str | None:
        """:data:`RENDER_DRIFT`, :data:`RENDER_LATEST`, :data:`SKIP` or None (nothing to do)."""
        if any_drift:
            if not episode_active or now - self.last_drift_at >= self.drift_every_s:
                return RENDER_DRIFT
            return SKIP
        if now - self.last_latest_at >= self.latest_every_s:
            return RENDER_LATEST
        return None

    def drift_rendered(self, path: str, now: float) -> None:
        if path:
            self.last_drift_report, self.last_drift_at = path, now

    def latest_rendered(self, now: float) -> None:
        self.last_latest_at = now
