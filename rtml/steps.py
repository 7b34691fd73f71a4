"""A tiny step runner for long multi-stage commands (`rtml demo`): numbered progress, timings, a timeline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class Timeline:
    """What happened when, for the closing summary."""

    started: float = field(default_factory=time.monotonic)
    events: list[tuple[str, float, str]] = field(default_factory=list)

    def note(self, what: str, detail: str = "") -> None:
        self.events.append((datetime.now(UTC).strftime("%H:%M:%S"), time.monotonic() - self.started, f"{what}{': ' + detail if detail else ''}"))
        print(f"   · {what}{': ' + detail if detail else ''}", flush=True)

    def render(self) -> str:
        return "\n".join(f"  {clock}  +{elapsed:6.1f}s  {text}" for clock, elapsed, text in self.events)


def run_steps(steps: list[tuple[str, Callable[[], Any]]], timeline: Timeline) -> None:
    """Run ``(title, function)`` pairs in order, printing ``[i/n] title`` and how long each took."""
    for i, (title, fn) in enumerate(steps, 1):
        print(f"[{i}/{len(steps)}] {title}", flush=True)
        t0 = time.monotonic()
        detail = fn()
        timeline.note(title, f"{detail} ({time.monotonic() - t0:.1f} s)" if detail else f"{time.monotonic() - t0:.1f} s")
