"""The fast security probes (tests/security/probes.py) against the session's real stack: every one must pass.

`make security` runs them all, with a prediction service, and writes tests/benchmarks/results/security.json.
"""

from __future__ import annotations

import pytest

from tests.security.probes import PROBES, Context, run_probe

pytestmark = pytest.mark.integration

FAST = [p for p in PROBES if p.fast]


def test_enough_probes_cover_every_component():
    groups = {p.group for p in PROBES}
    assert len(PROBES) >= 20 and len(FAST) >= 20
    assert groups == {"kafka", "redis", "files", "git", "deploy", "audit", "api"}


@pytest.mark.parametrize("p", FAST, ids=[p.name for p in FAST])
def test_probe_is_refused(stack, p):
    if stack.kafka_external or stack.redis_external:
        pytest.fail("the security probes need the local secured stack (unset RTML_KAFKA_BOOTSTRAP / RTML_REDIS_URL)")
    entry = run_probe(p, Context(s=stack))
    assert entry["passed"], f"{p.name}: tried {p.tried}; expected {p.expected}; got {entry['got']}"
