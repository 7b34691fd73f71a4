"""Alert events (ALERT_FIELDS) and where they go: the Kafka ``alerts`` topic and an optional webhook.

An alert fires when its condition becomes true, repeats every ``repeat_every`` windows while it
holds (same ``started_at``), and sends one ``resolved`` event when it clears. Alert names are the
Prometheus alert names; each has a runbook ``monitoring/runbooks/<alert>.md``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.contracts import ALERT_FIELDS
from core.settings import settings

log = logging.getLogger(__name__)

RUNBOOK_DIR = Path(__file__).resolve().parent / "runbooks"


def runbook(alert: str) -> str:
    """Where the runbook of ``alert`` is: ``$RTML_RUNBOOK_BASE/<alert>.md`` or the file in this repo."""
    base = settings().monitor.runbook_base
    if base:
        return f"{base.rstrip('/')}/{alert}.md"
    return str(RUNBOOK_DIR / f"{alert}.md")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Alert:
    alert: str
    severity: str  # warning | critical | resolved
    started_at: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    report_path: str = ""
    runbook: str = ""

    def message(self) -> dict[str, Any]:
        msg = asdict(self)
        assert set(msg) == set(ALERT_FIELDS), "Alert must match core.contracts.ALERT_FIELDS"
        return msg


class AlertSink:
    """Sends alerts to Kafka (``producer`` from :func:`core.kafka_io.make_producer`, may be None) and to
    ``webhook`` (default ``$RTML_ALERT_WEBHOOK``). A failed delivery is logged and counted, never fatal."""

    def __init__(self, producer=None, topic: str = "alerts", webhook: str | None = None, metrics=None) -> None:
        self.producer = producer
        self.topic = topic
        self.webhook = webhook if webhook is not None else settings().monitor.alert_webhook
        self.metrics = metrics
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> None:
        msg = alert.message()
        self.sent.append(alert)
        log.warning(
            "ALERT %s [%s] %s (report: %s)", alert.alert, alert.severity, alert.summary, alert.report_path or "-"
        )
        if self.metrics is not None:
            self.metrics.alerts_total.labels(alert=alert.alert, severity=alert.severity).inc()
        if self.producer is not None:
            try:
                self.producer.send(self.topic, key=alert.alert, value=msg)
                self.producer.flush(timeout=5)
            except Exception as exc:  # noqa: BLE001 - Kafka down must not stop monitoring
                self._failed("kafka", exc)
        if self.webhook:
            try:
                import httpx

                httpx.post(self.webhook, json=msg, timeout=3.0).raise_for_status()
            except Exception as exc:  # noqa: BLE001
                self._failed("webhook", exc)

    def _failed(self, sink: str, exc: Exception) -> None:
        log.error("alert delivery to %s failed: %s", sink, exc)
        if self.metrics is not None:
            self.metrics.alert_delivery_failures.labels(sink=sink).inc()


@dataclass
class AlertState:
    active: bool = False
    started_at: float = 0.0
    windows: int = 0  # windows since it started


class AlertTracker:
    """Per-alert firing/resolved state; decides which events to send."""

    def __init__(self, repeat_every: int = 12, state: dict[str, dict[str, Any]] | None = None) -> None:
        self.repeat_every = repeat_every
        self.states: dict[str, AlertState] = {k: AlertState(**v) for k, v in (state or {}).items()}

    def update(self, name: str, firing: bool, since: float) -> str | None:
        """Feed one window's verdict; returns ``"fire"``, ``"repeat"``, ``"resolve"`` or None."""
        st = self.states.setdefault(name, AlertState())
        if firing and not st.active:
            st.active, st.started_at, st.windows = True, since, 0
            return "fire"
        if firing:
            st.windows += 1
            return "repeat" if self.repeat_every and st.windows % self.repeat_every == 0 else None
        if st.active:
            st.active = False
            return "resolve"
        return None

    def to_state(self) -> dict[str, dict[str, Any]]:
        return {k: asdict(v) for k, v in self.states.items()}
