"""Online writers of the stream job, one interface: ``write(view_spec, rows) -> int``.

* :class:`core.online_store.OnlineStore` (``--online-writer pipelined``, the default) encodes Feast's
  Redis format itself and upserts with server-side scripts (forward-only, TTL-bounded expiry).
* :class:`FeastOnlineWriter` (``--online-writer feast``) goes through Feast's own
  ``FeatureStore.write_to_online_store``: the plain-Feast baseline of the benchmarks.

Both only move a key forward in event time: a row older than what Redis holds for the entity is
skipped; a row at the same event time overwrites it (a late event inside the watermark corrects the
latest row), so a replayed micro-batch rewrites identical bytes and changes nothing.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

from core import online_format as fmt
from core.online_store import TS, OnlineStore


class OnlineWriter(Protocol):
    def write(self, spec, rows: pd.DataFrame) -> int: ...


class FeastOnlineWriter:
    """Writes through ``FeatureStore.write_to_online_store`` (the plain Feast path).

    Feast's own dedup skips rows whose event time equals the stored one, which would drop the
    correction of an entity's latest row by a late event; rows older than Redis are filtered here
    instead and Feast runs with ``skip_dedup`` (same forward-only rule as the online store).
    """

    def __init__(self, online: OnlineStore):
        from core.feast_store import get_store

        # a private store: skip_dedup must not leak into the caller's FeatureStore
        self.store = get_store()
        self.store.config.online_store.skip_dedup = True
        self.online = online

    def write(self, spec, rows: pd.DataFrame) -> int:
        if rows.empty:
            return 0
        view = self.online.view(spec)
        rows = rows.sort_values(TS, kind="stable").drop_duplicates(view.join_key, keep="last")
        keys = self.online.redis_keys(view, rows[view.join_key].to_numpy())
        stored = []
        router = self.online.sync
        for addr, idx in router.owners(keys).items():
            pipe = router.client(addr).pipeline(transaction=False)
            for i in idx:
                pipe.hget(keys[i], view.ts_field)
            for i, raw in zip(idx, pipe.execute(), strict=True):
                stored.append((i, -1 if raw is None else fmt.decode_timestamp_us(raw)))
        old = np.full(len(keys), -1, dtype=np.int64)
        for i, us in stored:
            old[i] = us
        rows = rows[old <= rows[TS].to_numpy(np.int64)]
        if rows.empty:
            return 0
        df = rows.copy()
        df[TS] = pd.to_datetime(df[TS].to_numpy(np.int64), unit="us", utc=True)
        self.store.write_to_online_store(view.name, df)
        return int(len(df))
