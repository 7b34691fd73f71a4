"""Feast's duckdb offline store, rtml's fast join and saved training sets with the data dir on a real S3 API:
the same training frame as with the same data in a local folder."""

from __future__ import annotations

import pandas as pd
import pytest

from core import storage
from core.settings import settings
from tests.training.history import make_history, write_history
from tests.training.oracle import fresh_apply

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def history():
    return make_history(n_users=50, n_merchants=10, days=6, seed=5)


@pytest.fixture(scope="module")
def local_frames(history, tmp_path_factory):
    from training.datasets import training_frame

    root = tmp_path_factory.mktemp("local")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RTML_STATE_DIR", str(root / "state"))
        mp.setenv("RTML_DATA_DIR", str(root / "data"))
        mp.delenv("RTML_OFFLINE_STORE", raising=False)
        write_history(history, settings().data_dir)
        fresh_apply()
        yield {join: training_frame(join=join) for join in ("feast", "fast")}


def test_feast_duckdb_store_and_training_sets_on_s3(history, local_frames, s3_data_dir, tmp_path, monkeypatch):
    from core.feast_store import get_store
    from training.datasets import build_training_set, load_training_set, training_frame

    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("RTML_OFFLINE_STORE", raising=False)
    write_history(history, storage.data_root())
    fresh_apply()
    source = get_store().get_data_source("users")
    assert source.path == f"s3arrow://{s3_data_dir[5:]}/users.parquet"  # the pyarrow route, not httpfs
    for join in ("feast", "fast"):
        frame = training_frame(join=join)
        assert len(frame) == len(local_frames[join]) > 100
        pd.testing.assert_frame_equal(frame, local_frames[join])
    assert local_frames["feast"]["txn_count_1h"].notna().sum() > 100  # real features, not all missing

    ts = build_training_set(join="fast")
    assert str(ts.path).startswith(f"{s3_data_dir}/training_sets/")
    assert ts.manifest["data_dir"] == s3_data_dir
    assert not (tmp_path / "state" / "training_sets").exists()  # nothing fell back to the local state dir
    again = load_training_set(ts.path)
    assert again.manifest == ts.manifest
    pd.testing.assert_frame_equal(again.frame, ts.frame)
