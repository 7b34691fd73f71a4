"""Redis connections of the online store: one Redis, a Redis Cluster, or a Sentinel-managed primary.

* :class:`FastRedis` - asyncio, one connection per node, pre-encoded RESP commands pipelined across
  concurrent requests, replies parsed by hiredis, every call bounded in time (the serving hot path).
* :class:`AsyncRouter` - the hot path's view of the deployment: sends each command to the node that
  owns its key (hash slots from ``CLUSTER SLOTS``), one pipelined write per node, follows MOVED/ASK,
  refreshes the topology after a redirect or a failed node; for Sentinel it asks the sentinels for
  the primary again after a failure. With one Redis it is a single :class:`FastRedis` write.
* :class:`SyncRouter` - the same routing for the writers (redis-py connections, one pipeline per node).

Errors reach callers as :class:`RedisUnavailable`, whose message names no host or port (it can be
shown to API clients); ``.where`` keeps the address for logs.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import random
import socket
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

import hiredis
from redis.crc import key_slot

from core.resp import RespBatch, parse, resp, scan

SLOTS = 16384
_ReplyError = hiredis.ReplyError
Address = tuple[str, int]


class RedisUnavailable(RuntimeError):
    """The online store did not answer in time, refused the connection or is failing over."""

    def __init__(self, message: str, where: str = ""):
        super().__init__(message)
        self.where = where


@dataclass(frozen=True)
class RedisTarget:
    """Where the online store lives: ``mode`` is ``standalone``, ``cluster`` or ``sentinel``."""

    mode: str
    nodes: tuple[Address, ...]  # the server, the cluster's seed nodes, or the sentinels
    db: int = 0
    sentinel_master: str = "mymaster"
    username: str | None = field(default=None, repr=False)  # Redis ACL user of the data nodes (None: default user)
    password: str | None = field(default=None, repr=False)
    tls: bool = False  # TLS to every node, the certificate verified against ``tls_ca`` (None: the system's CAs)
    tls_ca: str | None = None

    def ssl_context(self):
        """The asyncio client's SSL context (None without TLS); one per CA file."""
        return _ssl_context(self.tls_ca) if self.tls else None

    def redis_py_tls(self) -> dict:
        """redis-py keyword arguments for TLS (certificate and host name verified: redis-py's defaults)."""
        return {"ssl": True, "ssl_ca_certs": self.tls_ca} if self.tls else {}

    def credentials_for(self, addr: Address) -> tuple[str | None, str | None]:
        """AUTH credentials for a data node (sentinels are not data nodes: they get none)."""
        if self.mode == "sentinel" and addr in self.nodes:
            return None, None
        return self.username, self.password

    @classmethod
    def from_settings(cls, s=None, role: str = "writer") -> RedisTarget:
        """The settings' Redis, authenticating as ``role``'s ACL user (:func:`core.redis_auth.credentials`)."""
        from core.redis_auth import credentials
        from core.settings import settings

        s = s or settings()
        user, password = credentials(role, s) or (None, None)
        return cls(s.redis_mode, tuple(s.redis_nodes), s.redis_db, s.redis_sentinel_master,
                   username=user, password=password, tls=s.redis_tls,
                   tls_ca=str(s.redis_ca_file) if s.redis_ca_file else None)


@functools.cache
def _ssl_context(cafile: str | None):
    from core.redis_auth import client_ssl_context

    return client_ssl_context(cafile)


_PING = resp(b"PING")
_ASKING = resp(b"ASKING")
_CLUSTER_SLOTS = resp(b"CLUSTER", b"SLOTS")


# ---- one node, asyncio -------------------------------------------------------------------------------
class _Pending:
    __slots__ = ("future", "expected", "replies", "deadline", "done", "simple")

    def __init__(self, future: asyncio.Future, expected: int, deadline: float):
        self.future = future
        self.expected = expected
        self.replies: list = []
        self.deadline = deadline
        self.done = 0  # replies framed so far (raw connection)
        self.simple = True  # all of them arrays of bulk strings (raw connection)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: FastRedis):
        self.owner = owner
        self.reader = hiredis.Reader()
        self.pending: collections.deque[_Pending] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.watchdog: asyncio.TimerHandle | None = None  # one timer per connection, not one per request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if not pending:  # reply nobody waits for: protocol out of sync
                self.fail(RedisUnavailable("unexpected reply from Redis", self.owner.where))
                return
            head = pending[0]
            head.replies.append(reply)
            if len(head.replies) == head.expected:
                pending.popleft()
                if not head.future.done():
                    head.future.set_result(head.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisUnavailable("connection to Redis lost", self.owner.where))

    def fail(self, exc: Exception) -> None:
        if self.closed:
            return
        self.closed = True
        while self.pending:
            p = self.pending.popleft()
            if not p.future.done():
                p.future.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()
        self.owner._lost(self)


class _RawProtocol(_Protocol):
    """A connection that frames replies itself (:func:`core.resp.scan`, compiled): a request whose replies are
    all arrays of bulk strings (``HMGET``) gets them as one :class:`core.resp.RespBatch`, any other request
    the list hiredis parses (errors included), so nothing but the form of plain batch replies changes."""

    def __init__(self, owner: FastRedis):
        super().__init__(owner)
        self.buf = b""  # bytes not yet handed out: the head request's framed replies, then a partial one
        self.pos = 0  # where the head request's next reply starts in ``buf``

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos = self.pos
        pending = self.pending
        while pos < len(buf):
            if not pending:  # reply nobody waits for: protocol out of sync
                self.fail(RedisUnavailable("unexpected reply from Redis", self.owner.where))
                return
            head = pending[0]
            got, pos, simple = scan(buf, pos, head.expected - head.done)
            head.done += got
            head.simple = head.simple and simple
            if head.done < head.expected:
                break
            pending.popleft()
            framed, buf, pos = buf[:pos], buf[pos:], 0
            if not head.future.done():
                head.future.set_result(RespBatch(framed, head.expected) if head.simple else parse(framed, head.expected))
        self.buf, self.pos = buf, pos


class FastRedis:
    """Send pre-encoded RESP commands to one node, get their replies within ``timeout_s``."""

    def __init__(self, host: str, port: int, db: int = 0, timeout_s: float = 0.1, connect_timeout_s: float = 0.2,
                 username: str | None = None, password: str | None = None, ssl=None):
        self._ssl = ssl  # an ssl.SSLContext: TLS, the server's certificate verified for ``host``
        self._auth = None if password is None else resp(b"AUTH", *((username.encode(),) if username else ()),
                                                          password.encode())
        self.host = host
        self.port = port
        self.db = db
        self.where = f"{host}:{port}"
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.dead_after_s = max(1.0, 10 * timeout_s)  # no reply for this long past a deadline: reconnect
        self._proto: _Protocol | None = None
        self._raw: _RawProtocol | None = None  # the batch reads' connection (replies framed, not parsed)
        self._connecting: dict[bool, asyncio.Future] = {}
        self.errors = 0
        self.last_error: str | None = None
        self.last_error_at = 0.0

    def _lost(self, proto: _Protocol) -> None:
        if self._proto is proto:
            self._proto = None
        if self._raw is proto:
            self._raw = None

    async def _connect(self, raw: bool = False) -> _Protocol:
        """A new connection (authenticated, its database selected): the hiredis one, or the raw one."""
        loop = asyncio.get_running_loop()
        connecting = self._connecting.get(raw)
        if connecting is not None:
            return await asyncio.shield(connecting)
        fut = loop.create_future()
        self._connecting[raw] = fut
        kind = _RawProtocol if raw else _Protocol
        try:
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda: kind(self), self.host, self.port, ssl=self._ssl,
                                           server_hostname=self.host if self._ssl is not None else None),
                    self.connect_timeout_s,
                )
            except (TimeoutError, OSError) as exc:
                raise RedisUnavailable(
                    f"Redis unreachable ({exc.__class__.__name__})", f"{self.where}: {exc}"
                ) from None
            sock = proto.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if raw:
                self._raw = proto
            else:
                self._proto = proto
            if self._auth is not None:
                reply = await self._submit(proto, self._auth, 1)
                if isinstance(reply[0], hiredis.ReplyError):  # the reason names no secret (WRONGPASS, ...)
                    raise RedisUnavailable(f"Redis refused the credentials: {str(reply[0]).split(' ', 1)[0]}", self.where)
            if self.db:
                reply = await self._submit(proto, resp(b"SELECT", str(self.db).encode()), 1)
                if isinstance(reply[0], hiredis.ReplyError):
                    raise RedisUnavailable(f"SELECT {self.db} failed: {reply[0]}", self.where)
            fut.set_result(proto)
            return proto
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            del self._connecting[raw]

    def _watch(self, proto: _Protocol) -> None:
        """Fail the requests past their deadline, only those; re-arm for the next deadline.

        Replies come back in order, so a request that timed out stays in the queue (its replies, when they
        come, are read and dropped) and the requests behind it keep their own deadlines: one slow request
        does not fail every request in flight. A connection whose oldest request got no reply for
        ``dead_after_s`` past its deadline is closed (the next request reconnects). A single timer per
        connection replaces a timer per request (no allocation on the hot path)."""
        proto.watchdog = None
        if proto.closed or not proto.pending:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        head = proto.pending[0]
        if head.deadline + self.dead_after_s <= now:
            proto.fail(RedisUnavailable(f"Redis did not answer within {self.timeout_s * 1000:.0f} ms", self.where))
            return
        next_at = head.deadline + self.dead_after_s
        for p in proto.pending:  # deadlines grow along the queue
            if p.deadline > now:
                next_at = min(next_at, p.deadline)
                break
            if not p.future.done():
                p.future.set_exception(RedisUnavailable(f"Redis did not answer within {self.timeout_s * 1000:.0f} ms",
                                                        self.where))
        proto.watchdog = loop.call_at(next_at, self._watch, proto)

    def _submit(self, proto: _Protocol, payload: bytes, n_replies: int) -> asyncio.Future:
        """Write ``payload``; the future gets its ``n_replies`` replies (a plain call: no extra coroutine)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        deadline = loop.time() + self.timeout_s
        proto.pending.append(_Pending(future, n_replies, deadline))
        proto.transport.write(payload)  # type: ignore[union-attr]
        if proto.watchdog is None:
            proto.watchdog = loop.call_at(deadline, self._watch, proto)
        return future

    def _count(self, exc: RedisUnavailable) -> None:
        self.errors += 1
        self.last_error = f"{exc} ({exc.where})"
        self.last_error_at = time.time()

    async def execute_raw(self, payload: bytes, n_replies: int) -> list:
        """Replies (error replies included as ``hiredis.ReplyError``); raise :class:`RedisUnavailable`."""
        try:
            proto = self._proto
            if proto is None or proto.closed:
                proto = await self._connect()
            return await self._submit(proto, payload, n_replies)
        except RedisUnavailable as exc:
            self._count(exc)
            raise

    async def execute(self, payload: bytes, n_replies: int) -> list:
        """Replies of the ``n_replies`` commands in ``payload``; any error reply raises."""
        try:
            proto = self._proto
            if proto is None or proto.closed:
                proto = await self._connect()
            replies = await self._submit(proto, payload, n_replies)
        except RedisUnavailable as exc:
            self._count(exc)
            raise
        for r in replies:
            if r.__class__ is _ReplyError:
                raise RedisUnavailable(f"Redis error: {str(r).split(' ', 1)[0]}", f"{self.where}: {r}")
        return replies

    async def execute_resp(self, payload: bytes, n_replies: int) -> RespBatch | list:
        """:meth:`execute` on the raw connection: replies that are all arrays of bulk strings (``HMGET``) come
        as one :class:`core.resp.RespBatch`, others as a list; any error reply raises."""
        try:
            proto = self._raw
            if proto is None or proto.closed:
                proto = await self._connect(raw=True)
            replies = await self._submit(proto, payload, n_replies)
        except RedisUnavailable as exc:
            self._count(exc)
            raise
        if replies.__class__ is not RespBatch:
            for r in replies:
                if r.__class__ is _ReplyError:
                    raise RedisUnavailable(f"Redis error: {str(r).split(' ', 1)[0]}", f"{self.where}: {r}")
        return replies

    async def ping(self) -> bool:
        try:
            replies = await self.execute(_PING, 1)
        except RedisUnavailable:
            return False
        return replies[0] in (b"PONG", "PONG")

    def close(self) -> None:
        for proto in (self._proto, self._raw):
            if proto is not None and proto.transport is not None:
                proto.closed = True
                try:
                    proto.transport.close()
                except RuntimeError:  # its event loop is already closed: nothing left to close
                    pass
        self._proto = self._raw = None


# ---- cluster topology -------------------------------------------------------------------------------
def _addr(node_reply: Sequence, seed_host: str) -> Address:
    host = node_reply[0]
    host = host.decode() if isinstance(host, bytes) else host
    return (host or seed_host, int(node_reply[1]))


def slot_table(cluster_slots_reply: Sequence, seed_host: str = "127.0.0.1") -> list[Address | None]:
    """Owner (primary) of every hash slot from a ``CLUSTER SLOTS`` reply."""
    table: list[Address | None] = [None] * SLOTS
    for entry in cluster_slots_reply:
        owner = _addr(entry[2], seed_host)
        for slot in range(int(entry[0]), int(entry[1]) + 1):
            table[slot] = owner
    return table


def redirect(error: str) -> tuple[str, int, Address] | None:
    """``("MOVED"|"ASK", slot, address)`` of a redirection error, else ``None``."""
    parts = error.split()
    if len(parts) == 3 and parts[0] in ("MOVED", "ASK"):
        host, _, port = parts[2].rpartition(":")
        return parts[0], int(parts[1]), (host or "127.0.0.1", int(port))
    return None


# ---- the hot path's router -----------------------------------------------------------------------------
class AsyncRouter:
    """Pipelined command batches for one Redis, a Redis Cluster or a Sentinel primary (asyncio)."""

    MAX_REDIRECTS = 5

    def __init__(self, target: RedisTarget, timeout_s: float = 0.1, connect_timeout_s: float = 0.2,
                 refresh_interval_s: float = 0.25):
        self.target = target
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.refresh_interval_s = refresh_interval_s
        self.cluster = target.mode == "cluster"
        self._nodes: dict[Address, FastRedis] = {}
        self._slots: list[Address | None] | None = None
        self._refreshing: asyncio.Task | None = None
        self._refreshed_at = 0.0
        self._refresh_due = False
        self._primary: FastRedis | None = None
        self.topology_refreshes = 0
        if target.mode == "standalone":
            self._primary = self._node(target.nodes[0])

    def _node(self, addr: Address) -> FastRedis:
        node = self._nodes.get(addr)
        if node is None:
            user, password = self.target.credentials_for(addr)
            node = self._nodes[addr] = FastRedis(addr[0], addr[1], self.target.db if not self.cluster else 0,
                                                 self.timeout_s, self.connect_timeout_s, user, password,
                                                 self.target.ssl_context())
        return node

    # -- topology
    async def _load_slots(self) -> None:
        seeds = list({*(a for a in (self._slots or []) if a is not None), *self.target.nodes})
        random.shuffle(seeds)
        last: Exception | None = None
        for addr in seeds:
            try:
                reply = (await self._node(addr).execute(_CLUSTER_SLOTS, 1))[0]
            except RedisUnavailable as exc:
                last = exc
                continue
            table = slot_table(reply, addr[0])
            if any(owner is None for owner in table):
                last = RedisUnavailable("Redis Cluster does not cover all hash slots", str(addr))
                continue
            self._slots = table
            self.topology_refreshes += 1
            return
        raise last or RedisUnavailable("no Redis Cluster node answers")

    async def _load_primary(self) -> None:
        name = self.target.sentinel_master.encode()
        last: Exception | None = None
        for addr in self.target.nodes:
            try:
                reply = (await self._node(addr).execute(resp(b"SENTINEL", b"get-master-addr-by-name", name), 1))[0]
            except RedisUnavailable as exc:
                last = exc
                continue
            if reply:
                host, port = (reply[0].decode(), int(reply[1]))
                primary = FastRedis(host, port, self.target.db, self.timeout_s, self.connect_timeout_s,
                                    self.target.username, self.target.password, self.target.ssl_context())
                role = await primary.execute_raw(resp(b"ROLE"), 1)
                if isinstance(role[0], list) and role[0][0] in (b"master", "master"):
                    if self._primary is not None and self._primary is not primary:
                        self._primary.close()
                    self._primary = primary
                    return
                primary.close()
        raise last or RedisUnavailable("no sentinel knows a Redis primary")

    async def refresh(self, force: bool = False) -> None:
        """Reload the slot table (cluster) or the primary's address (sentinel); coalesced and rate-limited."""
        if self.target.mode == "standalone":
            return
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        if not force and time.monotonic() - self._refreshed_at < self.refresh_interval_s:
            return
        self._refreshed_at = time.monotonic()
        self._refreshing = asyncio.ensure_future(self._load_slots() if self.cluster else self._load_primary())
        try:
            await asyncio.shield(self._refreshing)
        finally:
            self._refreshing = None

    def _stale(self) -> None:
        """A redirect or a failed node: refresh the topology in the background (at most once per
        ``refresh_interval_s``; a refresh asked for sooner runs when the interval is over)."""
        if self._refresh_due:
            return
        wait = self.refresh_interval_s - (time.monotonic() - self._refreshed_at)
        self._refresh_due = True
        asyncio.get_running_loop().call_later(max(0.0, wait), self._start_refresh)

    def _start_refresh(self) -> None:
        self._refresh_due = False
        task = asyncio.ensure_future(self.refresh())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # -- commands
    def execute(self, payload: bytes, n_replies: int) -> Awaitable[list]:
        """Replies of a batch of commands on a single (non-cluster) deployment (awaitable; with one Redis
        the node's own coroutine, no extra frame on the hot path)."""
        if self.target.mode == "standalone":
            return self._primary.execute(payload, n_replies)  # type: ignore[union-attr]
        return self._execute_on_primary(payload, n_replies)

    def execute_resp(self, payload: bytes, n_replies: int) -> Awaitable[RespBatch | list]:
        """:meth:`execute` on the nodes' raw connections (:meth:`FastRedis.execute_resp`: plain ``HMGET``
        replies as one :class:`core.resp.RespBatch`); not for a cluster."""
        if self.target.mode == "standalone":
            return self._primary.execute_resp(payload, n_replies)  # type: ignore[union-attr]
        return self._execute_on_primary(payload, n_replies, raw=True)

    async def _execute_on_primary(self, payload: bytes, n_replies: int, raw: bool = False) -> RespBatch | list:
        primary = self._primary
        if primary is None:
            await self.refresh(force=True)
            primary = self._primary
        try:
            if raw:
                return await primary.execute_resp(payload, n_replies)  # type: ignore[union-attr]
            return await primary.execute(payload, n_replies)  # type: ignore[union-attr]
        except RedisUnavailable:
            if self.target.mode == "sentinel":
                self._primary = None
            raise

    async def execute_keyed(self, commands: Sequence[bytes], keys: Sequence[bytes]) -> list:
        """Replies of single-key ``commands`` (``keys[i]`` is the key of ``commands[i]``), in order.

        Cluster: one pipelined write per node owning one of the keys, all nodes concurrently; MOVED and
        ASK replies are followed (and trigger a topology refresh); a failed node fails the batch.
        """
        if not self.cluster:
            return await self.execute(b"".join(commands), len(commands))
        if self._slots is None:
            await self.refresh(force=True)
        slots = self._slots
        assert slots is not None
        groups: dict[Address, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(slots[key_slot(key)], []).append(i)  # type: ignore[arg-type]
        replies: list = [None] * len(commands)
        if len(groups) == 1:
            ((addr, idx),) = groups.items()
            await self._run_on(addr, idx, commands, replies)
        else:
            await asyncio.gather(*(self._run_on(addr, idx, commands, replies) for addr, idx in groups.items()))
        return replies

    async def _run_on(self, addr: Address, idx: list[int], commands: Sequence[bytes], out: list) -> None:
        try:
            got = await self._node(addr).execute_raw(b"".join(commands[i] for i in idx), len(idx))
        except RedisUnavailable:
            self._stale()
            raise
        for i, reply in zip(idx, got, strict=True):
            if isinstance(reply, hiredis.ReplyError):
                reply = await self._redirected(str(reply), commands[i])
            out[i] = reply

    async def _redirected(self, error: str, command: bytes) -> object:
        for _ in range(self.MAX_REDIRECTS):
            moved = redirect(error)
            if moved is None:
                if error.startswith(("CLUSTERDOWN", "TRYAGAIN", "LOADING")):
                    self._stale()
                    raise RedisUnavailable("Redis is failing over (no primary for a slot yet)", error)
                raise RedisUnavailable(f"Redis error: {error.split(' ', 1)[0]}", error)
            kind, slot, addr = moved
            if kind == "MOVED":
                if self._slots is not None:
                    self._slots[slot] = addr
                self._stale()
                reply = (await self._node(addr).execute_raw(command, 1))[0]
            else:
                reply = (await self._node(addr).execute_raw(_ASKING + command, 2))[1]
            if not isinstance(reply, hiredis.ReplyError):
                return reply
            error = str(reply)
        raise RedisUnavailable("Redis redirected too often", error)

    async def ping(self) -> bool:
        try:
            if self.cluster:
                if self._slots is None:
                    await self.refresh(force=True)
                nodes = {a for a in self._slots or [] if a is not None}
                replies = await asyncio.gather(*(self._node(a).execute(_PING, 1) for a in nodes))
                return all(r[0] in (b"PONG", "PONG") for r in replies)
            return (await self.execute(_PING, 1))[0] in (b"PONG", "PONG")
        except RedisUnavailable:
            return False

    @property
    def errors(self) -> int:
        return sum(n.errors for n in self._nodes.values())

    def close(self) -> None:
        for node in self._nodes.values():
            node.close()
        if self._primary is not None:
            self._primary.close()


# ---- the writers' router -------------------------------------------------------------------------------
class SyncRouter:
    """redis-py connections for the writers: one ``redis.Redis`` per node, keys grouped by owner."""

    def __init__(self, target: RedisTarget, socket_timeout_s: float = 30.0, connect_timeout_s: float = 2.0):
        self.target = target
        self.socket_timeout_s = socket_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._clients: dict[Address, object] = {}
        self._slots: list[Address | None] | None = None
        self._primary: Address | None = target.nodes[0] if target.mode == "standalone" else None

    def client(self, addr: Address):
        import redis

        c = self._clients.get(addr)
        if c is None:
            from core.redis_auth import no_retry

            user, password = self.target.credentials_for(addr)
            c = self._clients[addr] = redis.Redis(
                host=addr[0], port=addr[1], db=0 if self.target.mode == "cluster" else self.target.db,
                socket_connect_timeout=self.connect_timeout_s, socket_timeout=self.socket_timeout_s,
                username=user, password=password, retry=no_retry(),  # the router retries, after a refresh
                **self.target.redis_py_tls(),
            )
        return c

    def refresh(self) -> None:
        """Reload the slot table (cluster) or the primary's address (sentinel)."""
        import redis

        if self.target.mode == "cluster":
            seeds = list({*(a for a in (self._slots or []) if a is not None), *self.target.nodes})
            random.shuffle(seeds)
            for addr in seeds:
                try:
                    reply = self.client(addr).execute_command("CLUSTER SLOTS")
                except (redis.RedisError, OSError):
                    continue
                table = slot_table(reply, addr[0])
                if all(owner is not None for owner in table):
                    self._slots = table
                    return
            raise RedisUnavailable("no cluster node answers with a full slot table")
        if self.target.mode == "sentinel":
            for addr in self.target.nodes:
                try:
                    got = self.client(addr).execute_command("SENTINEL", "get-master-addr-by-name",
                                                            self.target.sentinel_master)
                except (redis.RedisError, OSError):
                    continue
                if got:
                    self._primary = (got[0].decode() if isinstance(got[0], bytes) else got[0], int(got[1]))
                    return
            raise RedisUnavailable("no sentinel knows a Redis primary")

    def slot_owners(self) -> list[Address | None]:
        """Owner of every hash slot (cluster; refreshed when not known yet)."""
        if self._slots is None:
            self.refresh()
        return list(self._slots or [])

    def owners(self, keys: Sequence[bytes]) -> dict[Address, list[int]]:
        """Indices of ``keys`` grouped by the node that owns them."""
        if self.target.mode != "cluster":
            if self._primary is None:
                self.refresh()
            return {self._primary: list(range(len(keys)))}  # type: ignore[dict-item]
        if self._slots is None:
            self.refresh()
        slots = self._slots
        groups: dict[Address, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(slots[key_slot(key)], []).append(i)  # type: ignore[index,arg-type]
        return groups

    def nodes(self) -> list:
        """Clients of every primary (cluster) or of the one primary."""
        if self.target.mode != "cluster":
            if self._primary is None:
                self.refresh()
            return [self.client(self._primary)]  # type: ignore[arg-type]
        if self._slots is None:
            self.refresh()
        return [self.client(a) for a in sorted({a for a in self._slots if a is not None})]  # type: ignore[union-attr]

    def close(self) -> None:
        for c in self._clients.values():
            c.close()  # type: ignore[attr-defined]
        self._clients.clear()
