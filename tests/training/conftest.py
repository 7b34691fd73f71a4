"""Fixtures of the training tests: an isolated state dir per test module (own BentoML store, registry)."""

from __future__ import annotations

import warnings

import pytest

warnings.filterwarnings("ignore", message="Stream feature views are experimental")


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    """A fresh RTML_STATE_DIR (and data dir) for one test; BentoML follows it via model_store.bentoml_home()."""
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("RTML_DATA_DIR", raising=False)
    from core import model_store
    if model_store._home_set_by_us is None:
        monkeypatch.delenv("BENTOML_HOME", raising=False)
    model_store.bentoml_home()
    return tmp_path / "state"
