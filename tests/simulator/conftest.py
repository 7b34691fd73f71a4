"""Small simulated histories shared by the simulator tests (generated once per session)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from streaming.simulator import simulate_history

START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
SMALL = dict(start=START, days=6, n_users=600, n_merchants=90, seed=7, progress=False)


@pytest.fixture(scope="session")
def history(tmp_path_factory) -> tuple[Path, object]:
    """(data dir, summary) of the reference small history."""
    out = tmp_path_factory.mktemp("history")
    return out, simulate_history(data_dir=out, **SMALL)


@pytest.fixture(scope="session")
def frames(history):
    """users, merchants, transactions (all parts, in file order), labels as pandas DataFrames."""
    import pandas as pd

    out, _ = history
    parts = sorted((out / "transactions").glob("part-*.parquet"))
    return {
        "users": pd.read_parquet(out / "users.parquet"),
        "merchants": pd.read_parquet(out / "merchants.parquet"),
        "transactions": pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True),
        "labels": pd.read_parquet(out / "labels.parquet"),
    }
