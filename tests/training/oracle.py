"""Independent point-in-time oracle (pandas.merge_asof), and helpers to point Feast at crafted data."""

from __future__ import annotations

import sys
from datetime import timedelta

import numpy as np
import pandas as pd

from core.settings import FEATURE_REPO


def oracle_join(
    entity: pd.DataFrame,
    views: list[tuple[pd.DataFrame, list[str], list[str], timedelta | None]],
    ts_col: str = "event_timestamp",
    allow_exact: bool = True,
) -> pd.DataFrame:
    """Entity rows (in order) + per view (frame, keys, features, ttl): the latest row with feature time
    <= entity time (< with ``allow_exact=False``), nulled when older than ``entity time - ttl``."""
    out = entity.reset_index(drop=True).copy()
    out["__i"] = np.arange(len(out))
    for frame, keys, feats, ttl in views:
        right = frame[[*keys, "event_timestamp", *feats]].rename(columns={"event_timestamp": "__fts"})
        right = right.sort_values("__fts", kind="stable")
        left = out[["__i", *keys, ts_col]].sort_values(ts_col, kind="stable")
        if ts_col == "event_timestamp":
            left = left.rename(columns={ts_col: "__ets"})
        else:
            left = left.assign(__ets=left[ts_col]).drop(columns=[ts_col])
        left["__ets"] = left["__ets"].astype("datetime64[us, UTC]")
        right["__fts"] = right["__fts"].astype("datetime64[us, UTC]")
        m = pd.merge_asof(
            left,
            right,
            left_on="__ets",
            right_on="__fts",
            by=keys,
            direction="backward",
            allow_exact_matches=allow_exact,
        )
        if ttl is not None:
            stale = m["__fts"] < m["__ets"] - pd.Timedelta(ttl)
            m[feats] = m[feats].astype(object).where(~stale, None)
        out = out.merge(m[["__i", *feats]], on="__i", how="left")
    return out.sort_values("__i").drop(columns="__i").reset_index(drop=True)


def mismatches(actual: pd.DataFrame, expected: pd.DataFrame, columns: list[str]) -> dict[str, int]:
    """Cells that differ per column (null == null; numbers compared exactly as float)."""
    bad = {}
    for c in columns:
        a, e = actual[c].reset_index(drop=True), expected[c].reset_index(drop=True)
        a_null, e_null = a.isna().to_numpy(), e.isna().to_numpy()
        try:
            av, ev = a.astype(float).to_numpy(), e.astype(float).to_numpy()
            same = (a_null & e_null) | (~a_null & ~e_null & (av == ev))
        except (TypeError, ValueError):
            same = (a_null & e_null) | (~a_null & ~e_null & (a.astype(str).to_numpy() == e.astype(str).to_numpy()))
        n = int((~same).sum())
        if n:
            bad[c] = n
    return bad


def fresh_apply() -> None:
    """`feast apply` after dropping cached feature_repo modules: their sources read RTML_DATA_DIR at import."""
    from core.feast_store import apply_repo

    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if path.startswith(str(FEATURE_REPO)):
            del sys.modules[name]
    apply_repo()
