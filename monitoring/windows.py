"""Count- and time-based windows over the prediction stream (tumbling or sliding).

A window closes after ``size`` events, or when ``seconds`` of event time (the Kafka message
timestamp) passed since its first event, whichever comes first; a time-closed window with fewer
than ``min_events`` rows keeps growing instead (a drift test on a handful of rows is noise).
Sliding windows hold the last ``size`` events (and at most ``seconds`` of event time) and are
evaluated every ``slide`` events.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowSpec:
    size: int = 5000
    seconds: float | None = None
    mode: str = "tumbling"  # or "sliding"
    slide: int | None = None  # sliding only; default size // 5
    min_events: int = 500

    def __post_init__(self) -> None:
        if self.mode not in ("tumbling", "sliding"):
            raise ValueError(f"window mode must be tumbling or sliding, not {self.mode!r}")
        if self.size < 1 or (self.seconds is not None and self.seconds <= 0):
            raise ValueError("window size and seconds must be positive")

    @property
    def step(self) -> int:
        return self.size if self.mode == "tumbling" else max(1, self.slide or self.size // 5)


@dataclass(frozen=True)
class Window:
    rows: np.ndarray  # float matrix: features + score
    start: float  # event time (epoch s) of the first and last row
    end: float
    ts: np.ndarray | None = None  # event time (epoch s) of every row


class Windower:
    """Collects rows; :meth:`add` returns the window that closed, if any."""

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self._rows: deque[list[float]] = deque()
        self._ts: deque[float] = deque()
        self._since_eval = 0

    def __len__(self) -> int:
        return len(self._rows)

    def close_before(self, ts: float) -> Window | None:
        """Time-based tumbling windows: the window that an event at ``ts`` no longer belongs to, if
        it has ``min_events`` rows (call before :meth:`add` of that event)."""
        spec = self.spec
        if (
            spec.mode == "tumbling"
            and spec.seconds is not None
            and self._ts
            and ts - self._ts[0] >= spec.seconds
            and len(self._rows) >= spec.min_events
        ):
            return self._take()
        return None

    def add(self, row: list[float], ts: float) -> Window | None:
        """Add one event; returns the window it completed, if any."""
        spec = self.spec
        if spec.mode == "tumbling":
            self._rows.append(row)
            self._ts.append(ts)
            return self._take() if len(self._rows) >= spec.size else None
        self._rows.append(row)
        self._ts.append(ts)
        self._since_eval += 1
        while len(self._rows) > spec.size or (spec.seconds is not None and ts - self._ts[0] > spec.seconds):
            self._rows.popleft()
            self._ts.popleft()
        if self._since_eval >= spec.step and len(self._rows) >= spec.min_events:
            self._since_eval = 0
            return self._view()
        return None

    def flush(self, force: bool = False) -> Window | None:
        """Close the current window early (idle stream) if it has ``min_events`` rows, or ``force``."""
        if not self._rows or (len(self._rows) < self.spec.min_events and not force):
            return None
        if self.spec.mode == "tumbling":
            return self._take()
        if self._since_eval == 0 and not force:
            return None
        self._since_eval = 0
        return self._view()

    def _view(self) -> Window:
        ts = np.fromiter(self._ts, dtype=float, count=len(self._ts))
        return Window(np.array(self._rows, dtype=float), float(ts[0]), float(ts[-1]), ts)

    def _take(self) -> Window:
        window = self._view()
        self._rows.clear()
        self._ts.clear()
        return window
