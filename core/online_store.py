"""The online store: reads and writes Feast-format Redis (one class, like Feast's ``RedisOnlineStore``).

:class:`OnlineStore` knows the online views of the Feast registry (stored name with Feast's version
suffix, entity key type, feature value types, TTL) and where Redis lives (one server, a Redis Cluster
or a Sentinel-managed primary, see :mod:`core.redis_client`).

Write (stream job, ``rtml materialize``, backfill): :meth:`OnlineStore.write` upserts one row per
entity, forward-only in event time (a row older than the stored one is skipped; the same event time
overwrites), as server-side script calls pipelined per node. Each write also moves the entity hash's
expiry to ``max(write time, event time) + view TTL`` unless it already expires later, so a hash lives
as long as the longest-lived view written to it. A batch that fails on a node (failover, MOVED,
connection loss) is replayed on the node that owns the keys now, for up to ``retry_s``.

Read (serving hot path): :meth:`OnlineStore.read_plan` precomputes per entity key the RESP ``HMGET``
of every needed field; :meth:`OnlineStore.read` sends a request's commands in one pipelined round
trip (per node on a cluster) and decodes them without protobuf objects; :meth:`OnlineStore.read_columns`
reads many rows at once and decodes them column by column (:mod:`core.online_columns`).

The store pickles without its connections (``from_settings`` on the driver, ``write`` on executors).
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from core import online_format as fmt
from core.online_columns import ColumnLayout, Columns
from core.redis_client import AsyncRouter, RedisTarget, RedisUnavailable, SyncRouter
from core.resp import RespBatch

log = logging.getLogger(__name__)

TS = "event_timestamp"


@dataclass(frozen=True)
class OnlineView:
    """One online feature view as stored in Redis."""

    name: str
    stored_name: str  # name, or name_v<N> with online feature view versioning
    join_key: str
    key_type: int  # feast ValueType of the join key
    features: tuple[tuple[str, int], ...]  # (feature, feast ValueType), Feast's order
    ttl_s: float = 0.0  # 0: never expires

    @property
    def ts_field(self) -> bytes:
        return fmt.ts_field(self.stored_name)

    def field(self, feature: str) -> bytes:
        return fmt.field_hash(self.stored_name, feature)


def online_view(fv, versioning: bool = False) -> OnlineView:
    """The :class:`OnlineView` of a Feast (stream) feature view with a single join key."""
    cols = list(fv.entity_columns)
    if len(cols) != 1:
        raise ValueError(f"{fv.name}: only single-key entities are supported, got {[c.name for c in cols]}")
    return OnlineView(
        name=fv.name,
        stored_name=fmt.versioned_name(fv.name, fmt.view_version(fv), versioning),
        join_key=cols[0].name,
        key_type=int(cols[0].dtype.to_value_type().value),
        features=tuple((f.name, int(f.dtype.to_value_type().value)) for f in fv.features),
        ttl_s=fv.ttl.total_seconds() if fv.ttl else 0.0,
    )


def online_views(feast_store) -> dict[str, OnlineView]:
    """Every online single-key feature view (batch and stream) of a Feast ``FeatureStore``'s registry."""
    config = feast_store.config
    if getattr(config, "entity_key_serialization_version", 3) != fmt.ENTITY_KEY_SERIALIZATION_VERSION:
        raise RuntimeError("rtml's online store implements Feast's entity key serialization v3 only")
    versioning = bool(getattr(config.registry, "enable_online_feature_view_versioning", False))
    views = [*feast_store.list_feature_views(), *feast_store.list_stream_feature_views()]
    return {fv.name: online_view(fv, versioning) for fv in views if fv.online and len(list(fv.entity_columns)) == 1}


# ---- read plan ------------------------------------------------------------------------------------
@dataclass
class ViewRead:
    """The part of one HMGET reply that belongs to one feature view."""

    name: str
    ts_index: int
    features: list[tuple[str, int]]  # (feature name, index in the reply)
    double_names: tuple[str, ...] = ()  # DOUBLE features: decoded together in one struct call
    double_fields: Callable[[Sequence], tuple] | None = None  # reply -> their raw values
    double_decode: Callable[[Sequence], tuple | None] | None = None
    others: list[tuple[str, int]] = field(default_factory=list)  # decoded one by one
    floats: tuple[str, ...] = ()  # features typed DOUBLE / FLOAT


@dataclass
class EntityRead:
    """One HMGET per request: the fields of all needed views sharing this entity key."""

    join_key: str
    encode_key: Callable[[Any], bytes]
    fields: list[bytes]
    views: list[ViewRead]
    int64_key: tuple[bytes, bytes] | None = None  # an int64 key's bytes around its value (fmt.int64_key_parts)

    def __post_init__(self) -> None:
        self.finish()

    def finish(self) -> None:
        self._tail = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in self.fields)
        self._head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(self.fields) + 2)
        self._template: tuple[np.ndarray, int] | None = None
        if self.int64_key is not None:  # the command of every int64 value: one template, 8 bytes set per value
            before, after = self.int64_key
            head = b"%s$%d\r\n%s" % (self._head, len(before) + 8 + len(after), before)
            self._template = (np.frombuffer(head + bytes(8) + after + b"\r\n" + self._tail, np.uint8), len(head))

    def commands_of(self, values: np.ndarray) -> np.ndarray:
        """:meth:`command` of many int64 values, one per row of a uint8 matrix (int64 keys only)."""
        template, at = self._template
        out = np.tile(template, (len(values), 1))
        out[:, at : at + 8] = values.astype("<i8", copy=False).view(np.uint8).reshape(-1, 8)
        return out

    def command(self, entity_value: Any) -> bytes:
        key = self.encode_key(entity_value)
        return b"%s$%d\r\n%s\r\n%s" % (self._head, len(key), key, self._tail)

    def keyed(self, entity_value: Any) -> tuple[bytes, bytes]:
        key = self.encode_key(entity_value)
        return key, b"%s$%d\r\n%s\r\n%s" % (self._head, len(key), key, self._tail)


@dataclass
class FetchResult:
    """Decoded online features of one entity row."""

    values: dict[str, Any]
    missing: list[str]  # features of views with no row for this entity
    oldest_ts: float | None


@dataclass
class ReadPlan:
    """Which fields to read per entity key, resolved once; :meth:`decode` turns replies into values."""

    reads: list[EntityRead]
    n: int = field(init=False)

    def __post_init__(self) -> None:
        self.n = len(self.reads)

    def commands(self, entity_values: Mapping[str, Any]) -> bytes:
        return b"".join(r.command(entity_values[r.join_key]) for r in self.reads)

    def commands_many(self, rows: Sequence[Mapping[str, Any]]) -> bytes:
        """:meth:`commands` of many rows, in order. Int64 keys (Python ints) are written into each read's
        command template at once; anything else is encoded row by row."""
        if not rows or any(r._template is None for r in self.reads):
            return b"".join(self.commands(row) for row in rows)
        parts = []
        for r in self.reads:
            values = [row[r.join_key] for row in rows]
            if set(map(type, values)) != {int}:
                return b"".join(self.commands(row) for row in rows)
            try:
                parts.append(r.commands_of(np.array(values, dtype=np.int64)))
            except OverflowError:  # beyond int64: the row-by-row encoder raises its own error
                return b"".join(self.commands(row) for row in rows)
        return (parts[0] if len(parts) == 1 else np.hstack(parts)).tobytes()

    def decode(self, replies: Sequence[list]) -> FetchResult:
        values: dict[str, Any] = {}
        missing: list[str] = []
        oldest: float | None = None
        decode_ts, decode_value = fmt.decode_timestamp, fmt.decode_value
        for read, reply in zip(self.reads, replies, strict=True):
            for view in read.views:
                ts = decode_ts(reply[view.ts_index])
                if ts is None:
                    for name, _ in view.features:
                        values[name] = None
                        missing.append(name)
                    continue
                if oldest is None or ts < oldest:
                    oldest = ts
                rest = view.others
                if view.double_names:
                    doubles = view.double_decode(view.double_fields(reply))
                    if doubles is None:
                        rest = view.features  # some null or absent: one by one
                    else:
                        values.update(zip(view.double_names, doubles, strict=True))
                for name, idx in rest:
                    values[name] = decode_value(reply[idx])
        return FetchResult(values, missing, oldest)

    @property
    def layout(self) -> ColumnLayout:
        layout = self.__dict__.get("_layout")
        if layout is None:
            layout = self.__dict__["_layout"] = ColumnLayout.of(self.reads)
        return layout

    def columns(self, replies: Sequence[list] | RespBatch, n_rows: int) -> Columns:
        """``n_rows`` rows' replies (``n`` per row, in order; parsed, or raw as one :class:`core.resp.RespBatch`)
        decoded column by column: the same values as :meth:`decode` of each row, in one compiled pass."""
        if replies.__class__ is RespBatch:
            return Columns.from_resp(self.layout, replies, n_rows)  # type: ignore[arg-type]
        return Columns(self.layout, list(chain.from_iterable(replies)), n_rows)


# ---- the store ------------------------------------------------------------------------------------
class OnlineStore:
    """Feast-format Redis: :meth:`write` for the writers, :meth:`read_plan` + :meth:`read` for serving."""

    def __init__(self, project: str, views: Mapping[str, OnlineView], target: RedisTarget,
                 timeout_s: float = 0.1, retry_s: float = 30.0, read_target: RedisTarget | None = None):
        self.project = project
        self.views = dict(views)
        self.target = target  # the writers' connections (ACL user rtml-writer)
        self.read_target = read_target or target  # the hot path's (read-only rtml-serving)
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._sync: SyncRouter | None = None
        self._async: AsyncRouter | None = None
        self._loaded: set = set()
        self.replayed_batches = 0
        self.replica_wait_ms = 500

    @classmethod
    def from_settings(cls, s=None, feast_store=None, **kwargs) -> OnlineStore:
        """The store of the current settings (views from ``feast_store`` or the settings' registry)."""
        if feast_store is None:
            from core.feast_store import get_store

            feast_store = get_store()
        return cls(feast_store.config.project, online_views(feast_store), RedisTarget.from_settings(s, "writer"),
                   read_target=RedisTarget.from_settings(s, "serving"), **kwargs)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_sync=None, _async=None, _loaded=set())
        return state

    def view(self, view: Any) -> OnlineView:
        """The :class:`OnlineView` for a name, an ``OnlineView`` or anything with a ``.name``."""
        if isinstance(view, OnlineView):
            return view
        name = view if isinstance(view, str) else view.name
        try:
            return self.views[name]
        except KeyError:
            raise KeyError(f"{name!r} is not an online feature view of project {self.project}") from None

    def redis_keys(self, view: Any, entity_values: Sequence[Any] | np.ndarray) -> list[bytes]:
        v = self.view(view)
        return fmt.entity_keys(v.join_key, v.key_type, entity_values, self.project)

    def entity_values(self, view: Any, keys: Sequence[bytes]) -> np.ndarray:
        """The entity values of a view's Redis keys (the inverse of :meth:`redis_keys`): integer ids (int64), or
        strings (an object array)."""
        v = self.view(view)
        if v.key_type == fmt.INT64:
            return fmt.int64_entity_values(v.join_key, keys, self.project)
        if v.key_type == fmt.INT32:
            return fmt.int32_entity_values(v.join_key, keys, self.project)
        if v.key_type == fmt.STRING:
            return fmt.string_entity_values(v.join_key, keys, self.project)
        raise ValueError(f"{v.name}: only integer and string entity keys can be listed back (key type {v.key_type})")

    def scan_keys(self, match: bytes, count: int = 2000) -> Iterator[list[bytes]]:
        """Keys matching the glob ``match`` on every primary, a SCAN page at a time (non-blocking; a key may
        come twice, and keys written meanwhile may be missed)."""
        for client in self.sync.nodes():
            cursor = 0
            while True:
                cursor, keys = client.scan(cursor, match=match, count=count)
                if keys:
                    yield list(keys)
                if not cursor:
                    break

    # ---- write ----------------------------------------------------------------------------------
    @property
    def sync(self) -> SyncRouter:
        if self._sync is None:
            self._sync = SyncRouter(self.target)
        return self._sync

    def encode(self, view: Any, rows) -> tuple[list[bytes], list[list]]:
        """Redis keys and, per key, the script arguments ``[event us, _ts field, Timestamp, field, value, ...]``."""
        v = self.view(view)
        missing = [f for f, _ in v.features if f not in rows.columns]
        if missing:
            raise ValueError(f"rows for {v.name} lack the feature columns {missing}")
        ts_us = _event_us(rows[TS])
        columns: list[list] = [ts_us.tolist(), [v.ts_field] * len(rows), fmt.encode_timestamps(ts_us)]
        for feature, value_type in v.features:
            columns.append([v.field(feature)] * len(rows))
            columns.append(fmt.encode_column(value_type, rows[feature]))
        keys = self.redis_keys(v, rows[v.join_key].to_numpy())
        return keys, [list(r) for r in zip(*columns, strict=True)]

    def write(self, view: Any, rows, chunk: int = 2000) -> int:
        """Upsert each entity's latest row of ``rows`` (pandas: join key, ``event_timestamp``, features).

        ``event_timestamp`` is int64 epoch microseconds or a datetime column. Returns the rows written
        (rows older than the stored ones are skipped).
        """
        if rows is None or len(rows) == 0:
            return 0
        v = self.view(view)
        rows = rows.assign(**{TS: _event_us(rows[TS])})
        rows = rows.sort_values(TS, kind="stable").drop_duplicates(v.join_key, keep="last")
        keys, args = self.encode(v, rows)
        ttl_ms = int(v.ttl_s * 1000)
        width = len(args[0]) - 1
        written = 0

        def issue(pipe, sha: str, call: list[int]) -> None:
            flat = [a for i in call for a in args[i]]
            pipe.evalsha(sha, len(call), *[keys[i] for i in call], width, ttl_ms, *flat)

        def done(_call: list[int], result) -> None:
            nonlocal written
            written += int(result)

        self._keyed(keys, issue, done, chunk, _UPSERT_LUA, f"{v.name} rows")
        return written

    # ---- tile hashes (the stream job's tiled state, see streaming.tile_store) ---------------------
    def write_tiles(self, keys: Sequence[bytes], fields: Sequence[Mapping[bytes, bytes]], ttl_s: int,
                    chunk: int = 500) -> list[dict[bytes, bytes]]:
        """HSET each key's ``fields`` (absolute tile values), refresh its expiry to ``ttl_s`` and read the whole
        hash back: one script call per chunk of keys, pipelined per node; on a cluster a call's keys share a
        hash slot. Idempotent, so a group that failed (failover, MOVED, connection loss) is replayed."""
        out: list[dict[bytes, bytes]] = [{} for _ in keys]

        def issue(pipe, sha: str, call: list[int]) -> None:
            args: list = [ttl_s]
            for i in call:
                args.append(len(fields[i]))
                for f, v in fields[i].items():
                    args.extend((f, v))
            pipe.evalsha(sha, len(call), *[keys[i] for i in call], *args)

        def done(call: list[int], result) -> None:
            for i, flat in zip(call, result, strict=True):
                out[i] = dict(zip(flat[0::2], flat[1::2], strict=True))

        self._keyed(keys, issue, done, chunk, _TILES_LUA, "tiles")
        return out

    def update_tile_fields(self, keys: Sequence[bytes], sets: Sequence[Mapping[bytes, bytes]],
                           deletes: Sequence[Sequence[bytes]]) -> None:
        """HSET ``sets[i]`` (rolled-up tiles), then HDEL ``deletes[i]`` (tiles that left every window or were
        rolled up) on ``keys[i]``, routed like :meth:`write_tiles`; idempotent, so a failed group is replayed."""
        todo = [i for i in range(len(keys)) if sets[i] or deletes[i]]

        def issue(pipe, sha: str, call: list[int]) -> None:
            (j,) = call
            i = todo[j]
            pairs = [x for kv in sets[i].items() for x in kv]
            pipe.evalsha(sha, 1, keys[i], len(sets[i]), *pairs, *deletes[i])

        if todo:
            self._keyed([keys[i] for i in todo], issue, None, 1, _UPDATE_TILES_LUA, "tile updates")

    def _keyed(self, keys: Sequence[bytes], issue: Callable, done: Callable | None, chunk: int,
               script: str | None, what: str) -> None:
        """Run idempotent per-key commands on the nodes that own ``keys``: ``issue(pipe, sha, call)`` queues one
        command for the key indices ``call`` (one hash slot on a cluster), ``done(call, result)`` takes its
        reply. Groups that fail with a retryable error are replayed on the current owner for ``retry_s``."""
        pending = list(range(len(keys)))
        deadline = time.monotonic() + self.retry_s
        attempt = 0
        while pending:
            failed: list[int] = []
            last: Exception | None = None
            for addr, local in self.sync.owners([keys[i] for i in pending]).items():
                idx = [pending[j] for j in local]
                try:
                    failed += self._keyed_on(addr, idx, keys, issue, done, chunk, script)
                except Exception as exc:  # connection lost / refused / timeout: replay the whole group
                    if not _retryable(exc):
                        raise
                    failed, last = failed + idx, exc
            if not failed:
                return
            attempt += 1
            if time.monotonic() >= deadline:
                raise RedisUnavailable(f"online store write of {what} failed after {attempt} attempts", repr(last))
            self.replayed_batches += 1
            log.warning("online write of %d %s failed (%s); replaying", len(failed), what, last or "redirect")
            time.sleep(min(0.05 * 2**attempt, 1.0))
            try:
                self.sync.refresh()
            except RedisUnavailable:
                pass
            pending = failed

    def _keyed_on(self, addr, idx: list[int], keys, issue: Callable, done: Callable | None, chunk: int,
                  script: str | None) -> list[int]:
        import redis

        client = self.sync.client(addr)
        sha = ""
        if script is not None:
            import hashlib

            sha = hashlib.sha1(script.encode()).hexdigest()
            if (id(client), sha) not in self._loaded:
                client.script_load(script)
                self._loaded.add((id(client), sha))
        calls = _slot_calls(idx, keys, chunk, self.target.mode == "cluster")
        pipe = client.pipeline(transaction=False)
        for call in calls:
            issue(pipe, sha, call)
        replicated = self.target.mode != "standalone"
        if replicated:  # acknowledged writes must survive a failover
            pipe.execute_command("WAIT", 1, self.replica_wait_ms)
        results = pipe.execute(raise_on_error=False)
        if replicated:
            acks = results.pop()
            if isinstance(acks, Exception) or (acks < 1 and _has_replicas(client)):
                return idx
        bad: list[int] = []
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, Exception):
                if isinstance(result, redis.exceptions.NoScriptError):
                    self._loaded.discard((id(client), sha))
                elif not _retryable(result):
                    raise result
                bad += call
            elif done is not None:
                done(call, result)
        return bad

    # ---- read -----------------------------------------------------------------------------------
    def read_plan(self, wanted: Mapping[str, Sequence[str]]) -> ReadPlan:
        """A :class:`ReadPlan` for ``{view: [feature, ...]}``; views of one entity share one HMGET."""
        groups: dict[str, EntityRead] = {}
        for view_name, feats in wanted.items():
            v = self.view(view_name)
            read = groups.get(v.join_key)
            if read is None:
                read = groups[v.join_key] = EntityRead(
                    v.join_key, fmt.entity_key_encoder(v.join_key, v.key_type, self.project), [], [],
                    fmt.int64_key_parts(v.join_key, self.project) if v.key_type == fmt.INT64 else None,
                )
            types = dict(v.features)
            features = []
            for feat in feats:
                if feat not in types:
                    raise KeyError(f"feature view {v.name} has no feature {feat!r}")
                read.fields.append(v.field(feat))
                features.append((feat, len(read.fields) - 1))
            read.fields.append(v.ts_field)
            view_read = ViewRead(v.name, len(read.fields) - 1, features,
                                 floats=tuple(f for f, _ in features if types[f] in (fmt.DOUBLE, fmt.FLOAT)))
            doubles = [(f, i) for f, i in features if types[f] == fmt.DOUBLE]
            if len(doubles) >= 2:
                view_read.double_names = tuple(f for f, _ in doubles)
                view_read.double_fields = operator.itemgetter(*(i for _, i in doubles))
                view_read.double_decode = fmt.doubles_decoder(len(doubles))
                view_read.others = [(f, i) for f, i in features if types[f] != fmt.DOUBLE]
            else:
                view_read.others = features
            read.views.append(view_read)
        reads = list(groups.values())
        for r in reads:
            r.finish()
        return ReadPlan(reads)

    @property
    def reader(self) -> AsyncRouter:
        if self._async is None:
            self._async = AsyncRouter(self.read_target, timeout_s=self.timeout_s)
        return self._async

    async def read(self, plan: ReadPlan, entity_values: Mapping[str, Any]) -> FetchResult:
        """One entity row's features: one pipelined round trip (per node holding a key)."""
        router = self.reader
        if not router.cluster:
            return plan.decode(await router.execute(plan.commands(entity_values), plan.n))
        keyed = [r.keyed(entity_values[r.join_key]) for r in plan.reads]
        return plan.decode(await router.execute_keyed([c for _, c in keyed], [k for k, _ in keyed]))

    async def _replies(self, plan: ReadPlan, rows: Sequence[Mapping[str, Any]]) -> list:
        router = self.reader
        if not router.cluster:
            return await router.execute(plan.commands_many(rows), plan.n * len(rows))
        keyed = [r.keyed(row[r.join_key]) for row in rows for r in plan.reads]
        return await router.execute_keyed([c for _, c in keyed], [key for key, _ in keyed])

    async def read_many(self, plan: ReadPlan, rows: Sequence[Mapping[str, Any]]) -> list[FetchResult]:
        """Many entity rows in one pipelined round trip (per node), decoded row by row."""
        replies = await self._replies(plan, rows)
        k = plan.n
        return [plan.decode(replies[i * k : (i + 1) * k]) for i in range(len(rows))]

    async def read_columns(self, plan: ReadPlan, rows: Sequence[Mapping[str, Any]]) -> Columns:
        """Many entity rows in one pipelined round trip (per node), decoded column by column (the batch
        hot path: :class:`core.online_columns.Columns`)."""
        router = self.reader
        if router.cluster:  # replies gathered from several nodes: parsed
            return plan.columns(await self._replies(plan, rows), len(rows))
        got = await router.execute_resp(plan.commands_many(rows), plan.n * len(rows))
        return plan.columns(got, len(rows))

    async def ping(self) -> bool:
        return await self.reader.ping()

    def close(self) -> None:
        if self._async is not None:
            self._async.close()
            self._async = None
        if self._sync is not None:
            self._sync.close()
            self._sync = None
            self._loaded.clear()


def _event_us(col) -> np.ndarray:
    """Event times as int64 epoch microseconds (from int64 us or a datetime column)."""
    import pandas as pd

    if pd.api.types.is_integer_dtype(col.dtype):
        return col.to_numpy(np.int64)
    ts = pd.to_datetime(col, utc=True)
    return ts.astype("datetime64[us, UTC]").astype("int64").to_numpy()


def _has_replicas(client) -> bool:
    """True if the primary behind ``client`` has a connected replica (``ROLE``)."""
    try:
        role = client.execute_command("ROLE")
    except Exception:  # noqa: BLE001
        return True  # unknown: be safe, replay
    return bool(role and len(role) > 2 and role[2])


def _retryable(exc: Exception) -> bool:
    """Errors a replay on the current owner can fix (failover, resharding, connection loss)."""
    import redis

    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError, RedisUnavailable)):
        return True
    if isinstance(exc, (redis.exceptions.ReadOnlyError, redis.exceptions.NoScriptError,
                        redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError)):
        return True  # (redis-py strips the CLUSTERDOWN / TRYAGAIN code from these messages)
    text = str(exc)
    return text.startswith(("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN", "LOADING", "READONLY", "MASTERDOWN")) or \
        isinstance(exc, redis.exceptions.ResponseError) and text.split(" ", 1)[0] in ("MOVED", "ASK")


# KEYS: entity keys (one hash slot). ARGV[1]: HSET arguments per key (the _ts pair + feature pairs);
# ARGV[2]: the view's TTL in ms (0: none). Then per key: the new event time in us, followed by the
# HSET arguments, whose first pair is (_ts field, Timestamp bytes).
_UPSERT_LUA = fmt.LUA_TIMESTAMP_US + """
local width = tonumber(ARGV[1])
local ttl_ms = tonumber(ARGV[2])
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local pos = 3
local written = 0
for _, key in ipairs(KEYS) do
  local new_us = tonumber(ARGV[pos])
  local old = redis.call('HGET', key, ARGV[pos + 1])
  if (not old) or timestamp_us(old) <= new_us then
    local current = redis.call('PEXPIRETIME', key)  -- -2: new hash, -1: kept forever
    redis.call('HSET', key, unpack(ARGV, pos + 1, pos + width))
    if ttl_ms > 0 and current ~= -1 then
      local expire_at = math.max(now_ms, math.floor(new_us / 1000)) + ttl_ms
      if current < expire_at then redis.call('PEXPIREAT', key, expire_at) end
    elseif ttl_ms == 0 and current >= 0 then
      redis.call('PERSIST', key)
    end
    written = written + 1
  end
  pos = pos + 1 + width
end
return written
"""


def _slot_calls(idx: list[int], keys: Sequence[bytes], chunk: int, cluster: bool) -> list[list[int]]:
    """``idx`` split into calls of at most ``chunk`` keys; on a cluster each call's keys share a hash slot."""
    if not cluster:
        return [idx[k : k + chunk] for k in range(0, len(idx), chunk)]
    from redis.crc import key_slot

    by_slot: dict[int, list[int]] = {}
    for i in idx:
        by_slot.setdefault(key_slot(keys[i]), []).append(i)
    return [same[k : k + chunk] for same in by_slot.values() for k in range(0, len(same), chunk)]


# KEYS: tile hashes (one hash slot). ARGV[1]: TTL (s); then per key: number of fields n, followed by n
# (field, value) pairs. Per key: HSET the fields, EXPIRE, and return the whole hash (HGETALL).
# HSET the first ARGV[1] field/value pairs, then HDEL the remaining fields (one key; few fields).
_UPDATE_TILES_LUA = """
local n = tonumber(ARGV[1])
for i = 2, 2 * n, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 2 * n + 2, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
return 0
"""
_TILES_LUA = """
local ttl = tonumber(ARGV[1])
local pos = 2
local out = {}
for i, key in ipairs(KEYS) do
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  local last = pos + 2 * n - 1
  local s = pos
  while s <= last do  -- HSET in slices of 1000 pairs: Lua's unpack has a small stack limit
    local e = math.min(s + 1999, last)
    redis.call('HSET', key, unpack(ARGV, s, e))
    s = e + 1
  end
  pos = pos + 2 * n
  redis.call('EXPIRE', key, ttl)
  out[i] = redis.call('HGETALL', key)
end
return out
"""
