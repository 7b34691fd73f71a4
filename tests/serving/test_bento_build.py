"""`bentoml build` makes a Bento of the service with the production model packed in (no containerizing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from core.settings import REPO_ROOT


def test_bentoml_build_packs_service_sources_and_the_production_model(tmp_path, monkeypatch):
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("BENTOML_HOME", raising=False)
    from core import model_store
    from tests.fixtures import models as fixture_models
    model_store._home_set_by_us = None
    home = model_store.bentoml_home()
    tag = fixture_models.save_test_model(n_rows=500, rounds=5, promote_it=True)
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "bentoml"), "build", "-f", "bentos/bentofile.yaml", "--output", "tag", "."],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    bentos = list((home / "bentos" / "rtml-fraud-scorer").glob("*/bento.yaml"))
    assert len(bentos) == 1
    info = yaml.safe_load(bentos[0].read_text())
    assert info["service"] == "bentos.service:PredictionService"
    assert [m["tag"] for m in info["services"][0]["models"]] == [tag]
    src = bentos[0].parent / "src"
    for path in ("bentos/service.py", "bentos/feature_plan.py", "feature_repo/on_demand.py", "core/settings.py",
                 "core/model_store.py"):
        assert (src / path).exists(), path
    # serving packs the ground floor, not training or the app (floors follow the flow)
    assert not (src / "training").exists() and not (src / "rtml").exists() and not (src / "streaming").exists()
    assert not list(src.rglob("test_*.py"))
