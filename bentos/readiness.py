"""Readiness that tolerates a blip: a replica leaves the load balancer only after its dependency has failed
continuously for ``grace_s`` seconds, so one slow or dropped Redis ping does not take out every replica at once."""

from __future__ import annotations


class Readiness:
    """Ready unless the dependency has failed at every check for the last ``grace_s`` seconds."""

    def __init__(self, grace_s: float):
        self.grace_s = grace_s
        self.failing_since: float | None = None

    def observe(self, ok: bool, now: float) -> bool:
        if ok:
            self.failing_since = None
            return True
        if self.failing_since is None:
            self.failing_since = now
        return now - self.failing_since < self.grace_s
