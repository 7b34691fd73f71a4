"""Versioned keyed state of the stream job, kept in the job's checkpoint folder.

Version ``b`` is the state after micro-batch ``b``: each view's recent events (those the windows of
future events and not yet final rows still need) plus the max event time seen. A (re)run of batch
``b`` always starts from the newest version older than ``b``, so a replayed batch computes exactly
what its first run computed: no lost, no double-counted events. Files are written to a temporary
name and renamed, so a kill mid-write leaves no partial version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.feather as feather

from streaming.aggregates import SortedEvents, sort_events
from streaming.feature_specs import ViewSpec

_VERSION = re.compile(r"^v(\d{12})$")


@dataclass
class JobState:
    """State after some batch: events per view and the max event time seen (us, None before any)."""

    version: int  # batch id that produced it; -1 = empty
    events: dict[str, SortedEvents]
    max_event_us: int | None = None
    counters: dict[str, int] = field(default_factory=dict)


def empty_state(views: tuple[ViewSpec, ...]) -> JobState:
    events = {}
    for v in views:
        events[v.name] = SortedEvents(
            keys=np.empty(0, np.int64), ts=np.empty(0, np.int64), vals=np.empty((0, len(v.value_columns)), np.float64)
        )
    return JobState(version=-1, events=events)


class StateStore:
    """State versions under ``<checkpoint>/state/v<batch>``; keeps the last few versions."""

    def __init__(self, checkpoint_dir: Path, views: tuple[ViewSpec, ...], keep: int = 3):
        self.root = Path(checkpoint_dir) / "state"
        self.views = views
        self.keep = keep
        self._cached: JobState | None = None

    def versions(self) -> list[int]:
        if not self.root.exists():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _VERSION.match(p.name)))

    def load_before(self, batch_id: int) -> JobState:
        """The newest state older than ``batch_id`` (empty if none)."""
        older = [v for v in self.versions() if v < batch_id]
        if not older:
            return empty_state(self.views)
        version = older[-1]
        if self._cached is not None and self._cached.version == version:
            return self._cached
        folder = self.root / f"v{version:012d}"
        meta = json.loads((folder / "meta.json").read_text())
        events = {}
        for v in self.views:
            df = feather.read_feather(folder / f"{v.name}.arrow")
            events[v.name] = sort_events(df, v)
        state = JobState(version=version, events=events, max_event_us=meta["max_event_us"],
                         counters=meta.get("counters", {}))
        self._cached = state
        return state

    def save(self, state: JobState) -> None:
        folder = self.root / f"v{state.version:012d}"
        tmp = self.root / f".tmp-v{state.version:012d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for v in self.views:
            feather.write_feather(state.events[v.name].frame(v), tmp / f"{v.name}.arrow", compression="uncompressed")
        (tmp / "meta.json").write_text(json.dumps({"max_event_us": state.max_event_us, "counters": state.counters}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        self._cached = state
        for old in self.versions()[: -self.keep]:
            shutil.rmtree(self.root / f"v{old:012d}", ignore_errors=True)
