"""What the monitor keeps across restarts: ``<state_dir>/monitor/state.json``.

Window counter, the FeatureDrift streak, alert states, the retraining controller's state, the
labelled (score, label) pairs of the rolling performance and the predictions and labels still waiting
for their other half. Written atomically after every window and before every offset commit.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger(__name__)
# The pending joins make the state large (up to PerformanceTracker.max_pending ids and scores each, written
# after every window): msgspec encodes it about 10x faster than the json module (every value is finite).


def _plain(value: Any) -> Any:
    """numpy scalars (their values may come from arrays) as the Python numbers the json module wrote."""
    item = getattr(value, "item", None)
    if item is None:
        raise NotImplementedError(f"cannot save {type(value).__name__} in the monitor state")
    return item()


_encode = msgspec.json.Encoder(enc_hook=_plain).encode


@dataclass
class MonitorState:
    window_id: int = 0
    feature_streak: int = 0
    feature_streak_start: float = 0.0
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    retrain: dict[str, Any] = field(default_factory=dict)
    pairs: list[tuple[float, int]] = field(default_factory=list)
    reference_model: str = ""
    pending: dict[str, Any] = field(default_factory=dict)  # PerformanceTracker.to_state(): joins still waiting


class StateFile:
    """Reads and writes :class:`MonitorState` as JSON (an unreadable file is logged and ignored)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> MonitorState:
        if not self.path.exists():
            return MonitorState()
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.error("ignoring unreadable monitor state %s: %s", self.path, exc)
            return MonitorState()
        return MonitorState(
            window_id=int(raw.get("window_id", 0)),
            feature_streak=int(raw.get("feature_streak", 0)),
            feature_streak_start=float(raw.get("feature_streak_start", 0.0)),
            alerts=dict(raw.get("alerts") or {}),
            retrain=dict(raw.get("retrain") or {}),
            pairs=[(float(s), int(y)) for s, y in raw.get("pairs", [])],
            reference_model=str(raw.get("reference_model", "")),
            pending=dict(raw.get("pending") or {}),
        )

    def save(self, state: MonitorState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(_encode(state.__dict__))
        tmp.replace(self.path)
