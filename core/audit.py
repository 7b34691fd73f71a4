"""The audit trail: every change that alters what gets served, appended as one JSON line per entry.

Entries go to ``<state_dir>/audit/audit.jsonl`` (always; appended under a lock, fsynced) and to the ``audit``
Kafka topic (best effort: when Kafka is down or refuses, a warning says so and the JSONL keeps the entry).

Entry: ``{"time", "actor", "action", "before", "after", "reason"}`` plus ``"trigger"`` for changes made by an
automatic retraining (``RTML_RETRAIN_REASON``, set by the monitor for the retraining it starts). Actions in use:
``features.apply``, ``model.promote``, ``model.rollback``, ``model.rollout.start|mode|complete|abort`` (before/after:
production, challenger, mode, share; the monitor's automatic rollout steps name the rollout policy as actor and its
decision as reason); API keys use ``key.create`` / ``key.revoke``.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.settings import settings

log = logging.getLogger(__name__)


def default_actor() -> str:
    """Who acts: the OS user, or the retraining trigger for an automatic change."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    reason = settings().retrain_reason
    return f"retraining ({reason}) as {user}" if reason else user


def path() -> Path:
    return settings().audit_path


def record(
    action: str,
    actor: str | None = None,
    before: Any = None,
    after: Any = None,
    reason: str | None = None,
    *,
    details: dict[str, Any] | None = None,
    kafka: bool = True,
) -> dict[str, Any]:
    """Append one entry (JSONL always, Kafka best effort); returns it. ``details``: extra action-specific fields
    (e.g. the added/changed/removed lists of a feature apply)."""
    entry: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "actor": actor or default_actor(),
        "action": action,
        "before": before,
        "after": after,
        "reason": reason,
    }
    if details:
        entry["details"] = details
    trigger = settings().retrain_reason
    if trigger:
        entry["trigger"] = trigger
    line = json.dumps(entry, separators=(",", ":"), default=str, sort_keys=True) + "\n"
    target = path()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if kafka:
        _publish(entry)
    return entry


def _publish(entry: dict[str, Any]) -> None:
    from core.kafka_io import make_producer

    s = settings()
    try:
        producer = make_producer(role="operator", max_block_ms=3000, request_timeout_ms=5000, delivery_timeout_ms=8000)
    except Exception as exc:
        log.warning("audit: Kafka unavailable (%s); the entry is only in %s", _short(exc), path())
        return
    try:
        producer.send(s.topics.audit, key=entry["action"], value=entry).get(timeout=10)
    except Exception as exc:
        log.warning("audit: could not publish to Kafka topic %s (%s); the entry is only in %s",
                    s.topics.audit, _short(exc), path())  # fmt: skip
    finally:
        producer.close(timeout=2)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


def read(action: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Entries of the local trail, oldest first (optionally one action prefix, the last ``limit``)."""
    try:
        lines = path().read_text().splitlines()
    except FileNotFoundError:
        return []
    entries = [json.loads(line) for line in lines if line.strip()]
    if action:
        entries = [e for e in entries if e["action"] == action or e["action"].startswith(action + ".")]
    return entries[-limit:] if limit else entries
