"""Rollout state in the model store's pointer file (no services): start, change, complete, abort, history."""

from __future__ import annotations

import pytest

from core.errors import UserFacingError


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("BENTOML_HOME", raising=False)
    from core import model_store
    from tests.fixtures.models import save_test_model

    model_store._home_set_by_us = None
    model_store.bentoml_home()
    return save_test_model(n_rows=200, rounds=2), save_test_model(n_rows=200, rounds=2, seed=1, promote_it=False)


def test_rollout_lifecycle_and_history(models):
    from core import model_store

    prod, chal = models
    r = model_store.start_rollout(chal, "shadow")
    assert (r["challenger"], r["production"], r["mode"], r["share"]) == (chal, prod, "shadow", 0.05)
    with pytest.raises(UserFacingError, match="is running"):
        model_store.start_rollout(chal, "canary")
    assert model_store.set_rollout_mode("canary", "12.5%")["share"] == 0.125
    assert model_store.rollout_state()["id"] == r["id"]
    assert model_store.complete_rollout("ok") == chal
    assert model_store.production_tag() == chal and model_store.rollout_state() is None
    model_store.start_rollout(prod, "ab", "50%")
    assert model_store.abort_rollout("no") == prod and model_store.production_tag() == chal
    assert model_store.rollback("back") == prod  # a completed rollout is an ordinary promotion
    actions = [(e["action"], e["tag"], e["previous"]) for e in model_store.history()]
    assert actions[1:] == [
        ("rollout-shadow", chal, prod), ("rollout-canary", chal, prod), ("rollout-complete", chal, prod),
        ("rollout-ab", prod, chal), ("rollout-abort", prod, chal), ("rollback", prod, chal),
    ]


@pytest.mark.parametrize(("share", "message"), [("0%", "more than 0%"), ("150%", "at most 100%"), ("five", "not a number")])
def test_bad_shares_and_modes_are_clear_errors(models, share, message):
    from core import model_store

    with pytest.raises(UserFacingError, match=message):
        model_store.start_rollout(models[1], "canary", share)
    with pytest.raises(UserFacingError, match="rollout mode 'blue'"):
        model_store.start_rollout(models[1], "blue")
    with pytest.raises(UserFacingError, match="already the production model"):
        model_store.start_rollout(models[0], "shadow")
    with pytest.raises(UserFacingError, match="no rollout is running"):
        model_store.complete_rollout()


def test_cli_rollout_status_complete_abort(models, capsys):
    from core import model_store
    from rtml.cli import main as cli

    prod, chal = models
    assert cli(["models", "rollout", chal.split(":")[1], "--mode", "canary", "--share", "10%"]) == 0
    assert f"{chal} as canary challenger of {prod} (10.0%)" in capsys.readouterr().out
    assert cli(["models", "rollout-status"]) == 0
    out = capsys.readouterr().out
    assert "mode canary (10.0%)" in out and "no comparison yet" in out
    assert cli(["models", "complete"]) == 0
    assert model_store.production_tag() == chal
    assert cli(["models", "abort"]) == 1
    assert "no rollout is running" in capsys.readouterr().err
    assert cli(["models", "rollout", prod, "--policy", '{"shadow_predictions": 7}', "--auto"]) == 0
    assert model_store.rollout_state()["policy"] == {"shadow_predictions": 7} and model_store.rollout_state()["auto"] is True
    assert cli(["models", "history"]) == 0
    assert "rollout-shadow" in capsys.readouterr().out
