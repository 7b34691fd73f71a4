"""Seasonal reference: for each window, reference rows from the same hours of the week (training period).

The reference sample keeps each row's event time. For a window, every row's hour of the week
(weekday x hour, UTC) is counted, and for each hour the reference contributes rows in the same
proportion, drawn from that hour of the same weekday; an hour with fewer than ``min_slot_rows``
such rows falls back to the same hour on days of the same kind (weekday / weekend), then to the same
hour on any day. The window is so compared with what the training period looked like at the same
time of day and week, and the daily and weekly cycles do not read as drift.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

HOURS_PER_WEEK = 168


def hour_of_week(ts: np.ndarray) -> np.ndarray:
    """Hour of the week (Monday 00:00 UTC = 0) of epoch seconds."""
    t = np.asarray(ts, dtype=np.float64)
    hours = np.floor(t / 3600.0).astype(np.int64)
    days = hours // 24
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
    return weekday * 24 + hours % 24


def _day_kind(how: np.ndarray) -> np.ndarray:
    return (how // 24 >= 5).astype(np.int64)  # 0 weekday, 1 weekend


@dataclass(frozen=True)
class SeasonalConfig:
    min_slot_rows: int = 100
    rows: int = 5000  # reference rows drawn per window
    max_rows_per_slot: int = 1000  # stored reference rows per hour of the week


class SeasonalReference:
    """Reference rows (float matrix, ``columns`` order) with their hour of the week and day."""

    def __init__(self, matrix: np.ndarray, ts: np.ndarray, config: SeasonalConfig | None = None) -> None:
        self.config = config or SeasonalConfig()
        self.matrix = np.asarray(matrix, dtype=np.float64)
        self.ts = np.asarray(ts, dtype=np.float64)
        self.how = hour_of_week(self.ts)
        self.day = np.floor(self.ts / 86400.0).astype(np.int64)
        order = np.argsort(self.how, kind="stable")
        self._order = order
        self._bounds = np.searchsorted(self.how[order], np.arange(HOURS_PER_WEEK + 1))

    def __len__(self) -> int:
        return len(self.ts)

    def slot_rows(self, how: int) -> np.ndarray:
        return self._order[self._bounds[how] : self._bounds[how + 1]]

    def _pool(self, how: int, exclude_days: np.ndarray | None) -> np.ndarray:
        hour = how % 24
        kind = int(how // 24 >= 5)
        candidates = (
            [how],
            [d * 24 + hour for d in range(7) if int(d >= 5) == kind],
            [d * 24 + hour for d in range(7)],
        )
        pool = np.empty(0, dtype=np.int64)
        for slots in candidates:
            pool = np.concatenate([self.slot_rows(s) for s in slots])
            if exclude_days is not None and len(exclude_days):
                pool = pool[~np.isin(self.day[pool], exclude_days)]
            if len(pool) >= self.config.min_slot_rows:
                return pool
        return pool

    def match(self, window_ts: np.ndarray, exclude_days: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
        """Row indexes of a reference matched to the hours of the week of ``window_ts``."""
        how = hour_of_week(window_ts)
        slots, counts = np.unique(how, return_counts=True)
        total = counts.sum()
        rng = np.random.default_rng(seed)
        want = np.maximum(1, np.round(counts / total * self.config.rows).astype(np.int64))
        parts = []
        for slot, k in zip(slots, want, strict=True):
            pool = self._pool(int(slot), exclude_days)
            if len(pool) == 0:
                continue
            parts.append(rng.choice(pool, size=int(k), replace=len(pool) < k))
        if not parts:
            return np.arange(len(self.ts))
        return np.concatenate(parts)

    def thin(self, seed: int = 0) -> np.ndarray:
        """Indexes keeping at most ``max_rows_per_slot`` rows per hour of the week and day (what is stored)."""
        rng = np.random.default_rng(seed)
        keep = []
        cap = self.config.max_rows_per_slot
        for how in range(HOURS_PER_WEEK):
            rows = self.slot_rows(how)
            if len(rows) > cap:
                rows = np.sort(rng.choice(rows, size=cap, replace=False))
            keep.append(rows)
        return np.sort(np.concatenate(keep))


def window_seed(ts: np.ndarray) -> int:
    return zlib.crc32(np.asarray(ts[:1] if len(ts) else [0.0], dtype=np.float64).tobytes())
