"""The short fault matrix in `make test`: SIGKILL of the stream job after its online write (dead letters of the
killed batch included) and the poison inputs, against the session's real stack: 0 lost, 0 duplicated."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

# Open defects the matrix shows (they must keep failing until fixed: then this list shrinks).
KNOWN_OPEN: set[str] = set()


def test_short_fault_matrix_loses_and_duplicates_nothing(stack, tmp_path):
    from tests.faults.run import SHORT, run_matrix

    outcomes = run_matrix(SHORT, tmp_path, log=lambda *_: None)
    assert len(outcomes) >= 7
    for o in outcomes:
        if o.name in KNOWN_OPEN:
            assert not o.passed, f"{o.name} passes now: remove it from KNOWN_OPEN"
            continue
        assert (o.lost, o.duplicated) == (0, 0), f"{o.name}: {o.detail}"
        assert o.passed, f"{o.name}: {o.detail}"
