"""Feast imported after ``core`` skips typeguard's import-time instrumentation (core/feast_import.py) and works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
{first}
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64
import feast.feature_view as fv
names = fv.FeatureView.__init__.__code__.co_names
view = FeatureView(name="v", entities=[Entity(name="e", join_keys=["e"])], ttl=timedelta(days=1),
                   schema=[Field(name="x", dtype=Float64)],
                   source=FileSource(path="x.parquet", timestamp_field="ts"))
print("instrumented" if "typeguard" in names else "plain", view.name, [f.name for f in view.features])
"""


def _probe(first: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE.format(first=first)], capture_output=True, text=True, timeout=120,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_feast_after_core_is_not_instrumented_and_builds_views():
    assert _probe("import core") == "plain v ['x']"
    assert _probe("") == "instrumented v ['x']"  # Feast alone instruments: the probe can tell them apart


def test_skipping_after_feast_was_imported_changes_nothing():
    import feast  # noqa: F401

    from core.feast_import import skip_typeguard

    assert skip_typeguard() is False
