"""The service's one-round-trip Redis read returns exactly what Feast's get_online_features returns."""

from __future__ import annotations

import asyncio
import math

import pytest

from tests.serving.conftest import (
    MERCHANT_BASE,
    N_MERCHANTS,
    N_USERS,
    UNKNOWN_MERCHANT,
    UNKNOWN_USER,
    USER_BASE,
)

pytestmark = pytest.mark.integration


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def test_pipelined_read_equals_feast_get_online_features(serving):
    from bentos.feature_plan import build_plan
    from core import model_store
    from core.feast_store import get_store
    from core.online_store import OnlineStore

    meta = model_store.get_model(serving.model_tag).info.metadata
    store = get_store()
    online = OnlineStore.from_settings(feast_store=store, timeout_s=2.0)
    plan = build_plan(store, meta["feature_refs"], meta["features"], {}, online)
    stored_refs = [f"{v.name}:{f}" for r in plan.reads for v in r.views for f, _ in v.features]
    assert len(stored_refs) >= 20  # model features + on-demand inputs (home_country, merchant_country)

    users = [USER_BASE + i for i in range(1, N_USERS + 2)] + [UNKNOWN_USER]
    merchants = [MERCHANT_BASE + 1 + (i % N_MERCHANTS) for i in range(len(users) - 1)] + [UNKNOWN_MERCHANT]
    rows = [{"user_id": u, "merchant_id": m} for u, m in zip(users, merchants, strict=True)]
    expected = store.get_online_features(features=stored_refs, entity_rows=rows).to_dict()

    async def read_all():
        try:
            one_by_one = [await online.read(plan.read, row) for row in rows]
            many = await online.read_many(plan.read, rows)  # decoded view by view
            assert many == one_by_one
            assert [list(f.values) for f in many] == [list(f.values) for f in one_by_one]  # same order too
            return one_by_one
        finally:
            online.close()

    fetched = asyncio.run(read_all())
    compared = 0
    for i, got in enumerate(fetched):
        for ref in stored_refs:
            name = ref.split(":")[1]
            assert _same(got.values[name], expected[name][i]), (rows[i], name, got.values[name], expected[name][i])
            compared += 1
    assert compared == len(rows) * len(stored_refs)
    # Unknown entities are reported missing; known ones are not (except views without rows for them).
    assert fetched[-1].missing and set(fetched[-1].missing) == {r.split(":")[1] for r in stored_refs}
    assert fetched[0].missing == []
    # Null aggregates of a known user are values (None), not missing.
    nulls = [f for f in fetched[:N_USERS] if f.values["secs_since_prev_txn"] is None]
    assert nulls and all("secs_since_prev_txn" not in f.missing for f in nulls)
    # The oldest feature timestamp of a known pair is the profile snapshot (3 days before `now`).
    assert fetched[0].oldest_ts == pytest.approx((serving.now - __import__("pandas").Timedelta(days=3)).timestamp())
