"""`rtml audit`: show the audit trail (what changed what gets served: who, when, before -> after, why)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--action", default=None, help="only this action or family (e.g. model, model.promote)")
    parser.add_argument("-n", "--limit", type=int, default=20, help="the last N entries (0: all; default 20)")
    parser.add_argument("--json", action="store_true", help="print the entries as JSON lines")


def summary(entry: dict) -> str:
    """One line for an entry: before -> after (feature applies: counts of added/changed/removed objects)."""
    details = entry.get("details") or {}
    if entry["action"] == "features.apply" and details:
        return ", ".join(f"{len(v)} {k}" for k, v in details.items() if v) or "no change"

    def short(value) -> str:
        if isinstance(value, dict) and len(value) == 1:
            value = next(iter(value.values()))
        return json.dumps(value, default=str) if not isinstance(value, str) else value

    before, after = entry.get("before"), entry.get("after")
    if isinstance(before, dict) and isinstance(after, dict) and len(before | after) > 1:  # e.g. rollouts: what moved
        moved = [k for k in before | after if before.get(k) != after.get(k)]
        return ", ".join(f"{k}: {short(before.get(k))} -> {short(after.get(k))}" for k in moved) or "no change"
    return f"{short(before)} -> {short(after)}"


def run(args: argparse.Namespace) -> int:
    from core import audit

    entries = audit.read(action=args.action, limit=args.limit or None)
    if args.json:
        for entry in entries:
            print(json.dumps(entry, sort_keys=True))
        return 0
    if not entries:
        print(f"no audit entries in {audit.path()}")
        return 0
    for e in entries:
        reason = e.get("reason") or ""
        print(f"{e['time'][:19]}  {e['actor']:<20} {e['action']:<22} {summary(e)}  ({reason})")
    return 0
