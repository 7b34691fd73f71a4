"""Fixtures of the serving tests: known feature values in Redis (through Feast), a test model in the
registry, and the real service started with `bentoml serve` (detached) on a free port.

Everything lives in a temporary state/data dir; Redis and Kafka are the session's real stack
(``RTML_REDIS_URL`` / ``RTML_KAFKA_BOOTSTRAP`` point at them). Entity ids are in a range no other
test uses (9_100_000+), so the shared Redis is not disturbed.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

warnings.filterwarnings("ignore", message="Stream feature views are experimental")

USER_BASE = 9_100_000
MERCHANT_BASE = 9_200_000
N_USERS = 20
N_MERCHANTS = 8
# Users with a profile but no stream aggregates, and merchants without aggregates: partly missing rows.
USERS_WITHOUT_AGGREGATES = (USER_BASE + N_USERS + 1,)
UNKNOWN_USER = 9_199_999
UNKNOWN_MERCHANT = 9_299_999


_TOKENS: dict[Path, str] = {}


def api_headers() -> dict[str, str]:
    """``Authorization`` header with an ``admin`` API key of the current settings' key file (created once per
    file, with a rate no test reaches): the service requires a key on every endpoint but the health probes."""
    from bentos import auth

    path = auth.keys_path()
    token = _TOKENS.get(path)
    if token is None or not path.exists():
        token = _TOKENS[path] = auth.create_key("serving-tests", ["admin"], rate_per_s=1e6, path=path)
    return {"authorization": f"Bearer {token}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_aggregate_names() -> list[tuple[str, str]]:
    out = []
    for label in ("10m", "1h", "24h"):
        for fn in ("count", "sum", "mean", "max"):
            out.append((f"txn_{fn}_{label}", "int" if fn == "count" else "float"))
    out += [("distinct_merchants_1h", "int"), ("secs_since_prev_txn", "float")]
    return out


def write_feature_data(
    data_dir: Path, now: pd.Timestamp, seed: int = 11, n_users: int = N_USERS, n_merchants: int = N_MERCHANTS
) -> dict[str, pd.DataFrame]:
    """Profiles and stream aggregates with known values (us timestamps), as the pipeline would write them.
    Users ``USER_BASE + 1 .. + n_users`` have aggregates, ``+ n_users + 1`` only a profile; merchants
    ``MERCHANT_BASE + 1 .. + n_merchants``, the last without aggregates."""
    N_USERS, N_MERCHANTS = n_users, n_merchants  # noqa: N806
    rng = np.random.default_rng(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    users_ids = np.arange(USER_BASE + 1, USER_BASE + N_USERS + 2, dtype="int64")  # last one: no aggregates
    users = pd.DataFrame(
        {
            "user_id": users_ids,
            "home_country": rng.choice(["DE", "FR", "NL"], len(users_ids)),
            "card_type": rng.choice(["debit", "credit"], len(users_ids)),
            "account_age_days": rng.integers(1, 3000, len(users_ids)).astype("int64"),
            "credit_limit": np.round(rng.uniform(500, 9000, len(users_ids)), 2),
            "event_timestamp": now - pd.Timedelta(days=3),
        }
    )
    merchant_ids = np.arange(MERCHANT_BASE + 1, MERCHANT_BASE + N_MERCHANTS + 1, dtype="int64")
    merchants = pd.DataFrame(
        {
            "merchant_id": merchant_ids,
            "category": rng.choice(["grocery", "travel"], len(merchant_ids)),
            "merchant_country": rng.choice(["DE", "US", "FR"], len(merchant_ids)),
            "risk_tier": rng.integers(0, 3, len(merchant_ids)).astype("int64"),
            "event_timestamp": now - pd.Timedelta(days=3),
        }
    )
    agg_users = users_ids[:N_USERS]
    user_aggs = pd.DataFrame({"user_id": agg_users})
    for name, kind in user_aggregate_names():
        if kind == "int":
            user_aggs[name] = rng.integers(0, 40, len(agg_users)).astype("int64")
        else:
            user_aggs[name] = np.round(rng.gamma(2.0, 40.0, len(agg_users)), 3)
    user_aggs.loc[::4, "secs_since_prev_txn"] = np.nan  # first transaction in the window: null
    user_aggs["event_timestamp"] = now - pd.Timedelta(minutes=30)
    merchant_aggs = pd.DataFrame(
        {
            "merchant_id": merchant_ids[:-1],  # the last merchant has a profile but no aggregates
            "merchant_txn_count_1h": rng.integers(0, 500, len(merchant_ids) - 1).astype("int64"),
            "merchant_amount_mean_1h": np.round(rng.gamma(2.0, 30.0, len(merchant_ids) - 1), 3),
            "event_timestamp": now - pd.Timedelta(minutes=20),
        }
    )
    opts = dict(coerce_timestamps="us", allow_truncated_timestamps=True, index=False)
    users.to_parquet(data_dir / "users.parquet", **opts)
    merchants.to_parquet(data_dir / "merchants.parquet", **opts)
    for name, df in (("user_txn_features", user_aggs), ("merchant_txn_features", merchant_aggs)):
        (data_dir / name).mkdir(exist_ok=True)
        df.to_parquet(data_dir / name / "part-0.parquet", **opts)
    return {"users": users, "merchants": merchants, "user_aggs": user_aggs, "merchant_aggs": merchant_aggs}


@dataclass
class ServingEnv:
    url: str
    port: int
    model_tag: str
    now: pd.Timestamp
    data: dict[str, pd.DataFrame]
    stack: object  # the stack's Settings (its own state dir: needed to stop/start Redis and Kafka)
    env: dict[str, str]  # RTML_* of the test


def load_online(now: pd.Timestamp, data: dict[str, pd.DataFrame]) -> None:
    """Profiles by Feast materialization; stream aggregates through Feast's write_to_online_store (what the
    stream job's plain-Feast writer does: Feast's local engine cannot materialize windowed aggregations)."""
    from core.feast_store import get_store
    from rtml.materialize import materialize

    materialize(views=["user_profile", "merchant_profile"], end=(now + pd.Timedelta(seconds=5)).to_pydatetime())
    store = get_store()
    store.write_to_online_store("user_txn_aggregates", data["user_aggs"])
    store.write_to_online_store("merchant_txn_aggregates", data["merchant_aggs"])


@pytest.fixture(scope="module")
def serving(stack, tmp_path_factory) -> Iterator[ServingEnv]:
    """Known features in Redis, a test model, and `bentoml serve` for it; everything stopped afterwards."""
    from bentos.commands import serve

    root = tmp_path_factory.mktemp("serving")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RTML_STATE_DIR", str(root / "state"))
        mp.setenv("RTML_DATA_DIR", str(root / "data"))
        mp.setenv("RTML_KAFKA_BOOTSTRAP", stack.kafka_bootstrap)
        mp.setenv("RTML_REDIS_URL", stack.redis_url)
        mp.delenv("BENTOML_HOME", raising=False)
        from core import model_store
        from tests.fixtures import models as fixture_models
        model_store._home_set_by_us = None
        model_store.bentoml_home()
        from core.feast_store import apply_repo

        now = pd.Timestamp.now(tz="UTC").floor("s")
        data = write_feature_data(root / "data", now)
        apply_repo()
        load_online(now, data)
        tag = fixture_models.save_test_model(n_rows=3000, rounds=30, promote_it=True)
        api_headers()  # the tests' admin key, before the service starts
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k.startswith(("RTML_", "BENTOML_HOME"))}
        pid, url = serve.start_detached("prediction", "127.0.0.1", port, workers=1, timeout=240)  # a loaded 2-core machine
        try:
            yield ServingEnv(url=url, port=port, model_tag=tag, now=now, data=data, stack=stack, env=env)
        finally:
            serve.stop(port)
