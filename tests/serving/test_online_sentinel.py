"""The online store behind Redis Sentinel (a primary, a replica, a sentinel; real processes): Feast's own
get_online_features (``redis_type: redis_sentinel``) reads what the store writes, and when the primary
is killed reads fail only until the sentinel promotes the replica, while writes are replayed on the new
primary and lose nothing. Settings: ``RTML_REDIS_URL=redis-sentinel://host:port[,host:port]/<master>/<db>``."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pandas as pd
import pytest
import redis

from infra.proc import pid_alive, stop_pid, wait_until
from tests.infra.conftest import free_port
from tests.serving.conftest import MERCHANT_BASE

pytestmark = [pytest.mark.integration, pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")]


def _spawn(args: list[str], cwd) -> subprocess.Popen:
    return subprocess.Popen([shutil.which("redis-server"), *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)


def _answers(port: int) -> bool:
    c = redis.Redis(port=port, socket_connect_timeout=0.3, socket_timeout=0.3)
    try:
        return bool(c.ping())
    except redis.RedisError:
        return False
    finally:
        c.close()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    root = tmp_path_factory.mktemp("sentinel")
    primary, replica, sent = free_port(), free_port(), free_port()
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no",
              "--maxmemory", "256mb", "--maxmemory-policy", "noeviction"]
    procs = {primary: _spawn(["--port", str(primary), *common], root)}
    procs[replica] = _spawn(["--port", str(replica), "--replicaof", "127.0.0.1", str(primary), *common], root)
    conf = root / "sentinel.conf"
    conf.write_text(
        f"port {sent}\nbind 127.0.0.1\nprotected-mode no\ndir {root}\n"
        f"logfile {root / 'sentinel.log'}\nsentinel monitor mymaster 127.0.0.1 {primary} 1\n"
        "sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 10000\n"
    )
    procs[sent] = _spawn([str(conf), "--sentinel"], root)
    try:
        assert wait_until(lambda: all(_answers(p) for p in procs), 15, 0.1)
        s = redis.Redis(port=sent)
        assert wait_until(lambda: len(s.execute_command("SENTINEL", "REPLICAS", "mymaster")) == 1, 30, 0.2)
        s.close()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RTML_REDIS_URL", f"redis-sentinel://127.0.0.1:{sent}/mymaster/0")
            for name in ("RTML_REDIS_USER", "RTML_REDIS_PASSWORD"):  # these servers have no ACL users
                mp.delenv(name, raising=False)
            mp.setenv("RTML_STATE_DIR", str(root / "state"))
            mp.setenv("RTML_DATA_DIR", str(root / "data"))
            from core.feast_store import apply_repo, get_store

            apply_repo()
            yield {"store": get_store(), "primary": primary, "replica": replica, "procs": procs,
                   "log": root / "sentinel.log"}
    finally:
        for p in procs.values():
            if pid_alive(p.pid):
                stop_pid(p.pid, timeout_s=5)
            p.wait(5)


def _rows(merchants, version: int) -> pd.DataFrame:
    return pd.DataFrame({"merchant_id": merchants, "event_timestamp": int(time.time() * 1e6),
                         "merchant_txn_count_1h": version, "merchant_amount_mean_1h": version / 4})


def test_feast_reads_through_sentinel_what_the_store_writes(sentinel):
    from core.online_store import OnlineStore
    from core.settings import settings

    store = sentinel["store"]
    assert settings().redis_mode == "sentinel" and store.config.online_store.redis_type == "redis_sentinel"
    online = OnlineStore.from_settings(feast_store=store, timeout_s=2.0)
    merchants = np.arange(MERCHANT_BASE + 500, MERCHANT_BASE + 520, dtype=np.int64)
    assert online.write("merchant_txn_aggregates", _rows(merchants, 7)) == 20
    got = store.get_online_features(features=["merchant_txn_aggregates:merchant_txn_count_1h"],
                                    entity_rows=[{"merchant_id": int(m)} for m in merchants]).to_dict()
    assert got["merchant_txn_count_1h"] == [7] * 20
    plan = online.read_plan({"merchant_txn_aggregates": ["merchant_txn_count_1h", "merchant_amount_mean_1h"]})

    async def read():
        try:
            return await online.read_many(plan, [{"merchant_id": int(m)} for m in merchants])
        finally:
            online.close()

    assert [f.values for f in asyncio.run(read())] == [{"merchant_txn_count_1h": 7, "merchant_amount_mean_1h": 1.75}] * 20
    online.close()


def test_primary_killed_reads_recover_after_promotion_and_no_write_is_lost(sentinel):
    from core.online_store import OnlineStore
    from core.redis_client import RedisUnavailable

    store = sentinel["store"]
    online = OnlineStore.from_settings(feast_store=store, timeout_s=0.2)
    writer = OnlineStore.from_settings(feast_store=store)
    merchants = np.arange(MERCHANT_BASE + 600, MERCHANT_BASE + 640, dtype=np.int64)
    plan = online.read_plan({"merchant_txn_aggregates": ["merchant_txn_count_1h"]})
    written: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def write_loop():
        version = 0
        while not stop.is_set():
            version += 1
            try:
                assert writer.write("merchant_txn_aggregates", _rows(merchants, version)) == len(merchants)
                written.append(version)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return
            time.sleep(0.05)

    failures: list[float] = []

    async def load():
        """Reads until they have succeeded for 3 s after the kill's failures (or 60 s passed)."""
        killed_at = None
        while True:
            now = time.monotonic()
            if killed_at is None and len(written) >= 5:
                os.kill(sentinel["procs"][sentinel["primary"]].pid, signal.SIGKILL)
                killed_at = now
            if killed_at is not None and (now - killed_at > 60 or (failures and now - failures[-1] > 3.0)):
                return killed_at
            try:
                await online.read_many(plan, [{"merchant_id": int(m)} for m in merchants])
            except RedisUnavailable as exc:
                failures.append(time.monotonic())
                assert "127.0.0.1" not in str(exc)
                await asyncio.sleep(0.01)

    t = threading.Thread(target=write_loop, daemon=True)
    t.start()
    try:
        killed_at = asyncio.run(load())
    finally:
        stop.set()
        t.join(60)
        online.close()
    assert not errors, errors
    # Sentinel marks the primary down after 1 s and promotes the replica; its timer is the slow part on a
    # loaded machine (its TILT mode pauses failover after a stalled tick), so the bound is generous: the
    # point is that reads recover by themselves, without a restart.
    outage = failures[-1] - killed_at if failures else None
    log = sentinel["log"].read_text()[-2000:]
    assert outage is not None and outage <= 40.0 and time.monotonic() - failures[-1] > 3.0, (outage, log)
    print(f"reads failed for {outage:.2f} s after the primary was killed")
    r = redis.Redis(port=sentinel["replica"])
    assert r.execute_command("ROLE")[0] == b"master"  # the replica was promoted
    got = store.get_online_features(features=["merchant_txn_aggregates:merchant_txn_count_1h"],
                                    entity_rows=[{"merchant_id": int(m)} for m in merchants]).to_dict()
    assert got["merchant_txn_count_1h"] == [written[-1]] * len(merchants)  # no lost update
    writer.close()
    r.close()
