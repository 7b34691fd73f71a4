"""Fixtures of the training tests: an isolated state dir per test (own BentoML store, registry, MLflow
store), and one crafted history + saved training set shared by the training tests."""

from __future__ import annotations

import warnings

import pytest

warnings.filterwarnings("ignore", message="Stream feature views are experimental")

ROUNDS = 120  # enough for the crafted history (early stopping usually stops sooner); keeps the tests quick


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


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A crafted history registered with Feast, one saved training set (fast join), and an empty MLflow
    sqlite store (its schema migrations take seconds: tests copy it instead of creating their own)."""
    from core.settings import settings
    from tests.training.history import make_history, write_history
    from tests.training.oracle import fresh_apply

    root = tmp_path_factory.mktemp("train")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RTML_STATE_DIR", str(root / "state"))
        mp.setenv("RTML_DATA_DIR", str(root / "data"))
        for name in ("RTML_OFFLINE_STORE", "RTML_PROMOTION_MARGIN", "RTML_MLFLOW_URI", "RTML_MLFLOW_EXPERIMENT"):
            mp.delenv(name, raising=False)
        from core import model_store
        from training import tracking
        from training.datasets import build_training_set

        if model_store._home_set_by_us is None:
            mp.delenv("BENTOML_HOME", raising=False)
        model_store.bentoml_home()
        h = make_history(n_users=150, n_merchants=30, days=12, seed=0)
        write_history(h, settings().data_dir)
        fresh_apply()
        ts = build_training_set(join="fast")
        tracking.client().search_experiments()  # creates the store's tables
        template = settings().mlflow_dir / "mlflow.db"
    # the environment is restored here: each test sets its own (fresh_registry)
    return {"history": h, "training_set": ts, "root": root, "mlflow_template": template}


@pytest.fixture
def fresh_registry(world, tmp_path, monkeypatch):
    """Same data, but an empty model store, production pointer and MLflow store for this test."""
    from core import model_store

    state = tmp_path / "state"
    (state / "mlflow").mkdir(parents=True)
    (state / "registry.db").write_bytes((world["root"] / "state" / "registry.db").read_bytes())
    (state / "mlflow" / "mlflow.db").write_bytes(world["mlflow_template"].read_bytes())
    monkeypatch.setenv("RTML_STATE_DIR", str(state))
    monkeypatch.setenv("RTML_DATA_DIR", str(world["root"] / "data"))
    for name in ("RTML_OFFLINE_STORE", "RTML_PROMOTION_MARGIN", "RTML_MLFLOW_URI", "RTML_MLFLOW_EXPERIMENT"):
        monkeypatch.delenv(name, raising=False)
    model_store.bentoml_home()
    return state
