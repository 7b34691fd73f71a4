"""Retraining policy: when to start the retraining command, and when not to.

Reasons: ``drift`` (drift share above ``drift_share`` for ``consecutive`` windows in a row),
``performance`` (the rolling performance is below its floor), ``schedule`` (``every_s`` since the
last run). A run starts only when no run is going and the last one started more than
``cooldown_s`` ago, so a drift that retraining does not fix cannot start a loop. The command
(default ``rtml train``, which applies its own promotion gate) runs detached; its log goes to
``<state_dir>/monitor/retrain/``. Every decision is logged, appended to ``decisions.jsonl`` and
counted (``rtml_retrain_decisions_total{decision}``, ``rtml_retrain_triggered_total{reason}``).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.settings import settings

log = logging.getLogger(__name__)


def default_command() -> list[str]:
    """``$RTML_RETRAIN_COMMAND`` (shell words) or ``rtml train`` with this interpreter (which validates the
    data with the same expectations as any training, and tags its MLflow run as monitor-triggered)."""
    command = settings().monitor.retrain_command
    if command:
        return shlex.split(command)
    return [sys.executable, "-m", "rtml.cli", "train", "--trigger", "monitor"]


@dataclass(frozen=True)
class RetrainConfig:
    drift_share: float = 0.3
    consecutive: int = 3
    on_performance: bool = True
    every_s: float | None = None
    cooldown_s: float = 6 * 3600
    command: list[str] = field(default_factory=default_command)
    enabled: bool = True


@dataclass(frozen=True)
class Decision:
    decision: str  # started | cooldown | running | failed
    reasons: list[str]
    detail: str
    at: float


class RetrainController:
    """Applies :class:`RetrainConfig` window by window; state survives restarts via :meth:`to_state`."""

    def __init__(
        self,
        config: RetrainConfig,
        log_dir: Path,
        metrics=None,
        clock: Callable[[], float] = time.time,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.log_dir = Path(log_dir)
        self.metrics = metrics
        self.clock = clock
        state = state or {}
        self.consecutive: int = int(state.get("consecutive", 0))
        self.last_started_at: float | None = state.get("last_started_at")
        self.schedule_anchor: float = state.get("schedule_anchor") or clock()
        self.pid: int | None = state.get("pid")
        self.process: subprocess.Popen | None = None
        self.decisions: list[Decision] = []

    def to_state(self) -> dict[str, Any]:
        return {
            "consecutive": self.consecutive,
            "last_started_at": self.last_started_at,
            "schedule_anchor": self.schedule_anchor,
            "pid": self.pid if self.running() else None,
        }

    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        if self.pid:  # started before a restart
            try:
                os.kill(self.pid, 0)
                return True
            except OSError:
                self.pid = None
        return False

    def poll(self) -> int | None:
        """Exit code of a run that just finished (once), else None."""
        if self.process is None or self.process.poll() is None:
            return None
        code = self.process.returncode
        self.process = None
        self.pid = None
        outcome = "succeeded" if code == 0 else "failed"
        log.info("retraining run finished: %s (exit %s)", outcome, code)
        if self.metrics is not None:
            self.metrics.retrain_runs.labels(outcome=outcome).inc()
        self._record({"event": "finished", "outcome": outcome, "exit_code": code})
        return code

    def observe(self, drift_share: float, performance_low: bool) -> Decision | None:
        """Feed one window; returns the decision taken, or None when no reason to retrain."""
        cfg = self.config
        now = self.clock()
        self.consecutive = self.consecutive + 1 if drift_share > cfg.drift_share else 0
        reasons = []
        if self.consecutive >= cfg.consecutive:
            reasons.append("drift")
        if performance_low and cfg.on_performance:
            reasons.append("performance")
        if cfg.every_s and now - self.schedule_anchor >= cfg.every_s:
            reasons.append("schedule")
        if not reasons or not cfg.enabled:
            return None
        detail = (
            f"drift share {drift_share:.2f} > {cfg.drift_share} for {self.consecutive} window(s)"
            if "drift" in reasons
            else ""
        )
        if "performance" in reasons:
            detail = (detail + "; " if detail else "") + "performance below its floor"
        if "schedule" in reasons:
            detail = (detail + "; " if detail else "") + f"scheduled every {cfg.every_s:.0f} s"
        if self.running():
            decision = Decision("running", reasons, detail + "; a retraining run is still going", now)
        elif self.last_started_at is not None and now - self.last_started_at < cfg.cooldown_s:
            left = cfg.cooldown_s - (now - self.last_started_at)
            decision = Decision("cooldown", reasons, detail + f"; cool-down: {left:.0f} s left", now)
        else:
            decision = self._start(reasons, detail, now)
        self.decisions.append(decision)
        if self.metrics is not None:
            self.metrics.retrain_decisions.labels(decision=decision.decision).inc()
        log.info("retraining decision: %s (%s) %s", decision.decision, ",".join(reasons), decision.detail)
        self._record(
            {"event": "decision", "decision": decision.decision, "reasons": reasons, "detail": decision.detail}
        )
        return decision

    def _start(self, reasons: list[str], detail: str, now: float) -> Decision:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"retrain-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}.log"
        env = {**os.environ, "RTML_RETRAIN_REASON": ",".join(reasons)}
        try:
            with open(log_path, "ab") as out:
                self.process = subprocess.Popen(
                    self.config.command,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            return Decision("failed", reasons, f"{detail}; could not start {self.config.command}: {exc}", now)
        self.pid = self.process.pid
        self.last_started_at = now
        self.schedule_anchor = now
        self.consecutive = 0
        if self.metrics is not None:
            for reason in reasons:
                self.metrics.retrain_triggered.labels(reason=reason).inc()
        return Decision("started", reasons, f"{detail}; pid {self.pid}, log {log_path}", now)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Wait briefly for a run we started (it is detached and keeps going if it does not finish)."""
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.info("retraining run pid %s keeps running detached", self.process.pid)

    def _record(self, entry: dict[str, Any]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        entry = {"at": self.clock(), **entry}
        with open(self.log_dir / "decisions.jsonl", "a") as fh:
            fh.write(json.dumps(entry) + "\n")
