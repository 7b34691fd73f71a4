"""A minimal asyncio Redis client for the serving hot path: one connection, pipelined, bounded time.

Each request writes its pre-encoded commands in one ``write`` and awaits their replies, which Redis
sends back in order; concurrent requests share the connection (pipelining across requests), replies
are parsed by hiredis. Any timeout or connection error fails every in-flight request with
:class:`RedisUnavailable` and drops the connection; the next request reconnects (bounded connect
timeout), so a Redis restart is picked up without restarting the service.
"""

from __future__ import annotations

import asyncio
import collections
import time

import hiredis


class RedisUnavailable(RuntimeError):
    """Redis did not answer in time (or refused the connection)."""


class _Pending:
    __slots__ = ("future", "expected", "replies")

    def __init__(self, future: asyncio.Future, expected: int):
        self.future = future
        self.expected = expected
        self.replies: list = []


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: FastRedis):
        self.owner = owner
        self.reader = hiredis.Reader()
        self.pending: collections.deque[_Pending] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

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
                self.fail(RedisUnavailable("unexpected reply from Redis"))
                return
            head = pending[0]
            head.replies.append(reply)
            if len(head.replies) == head.expected:
                pending.popleft()
                if not head.future.done():
                    head.future.set_result(head.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisUnavailable(f"connection to Redis lost ({exc or 'closed by server'})"))

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


class FastRedis:
    """Send pre-encoded RESP commands, get their replies, within ``timeout_s``."""

    def __init__(self, host: str, port: int, db: int = 0, timeout_s: float = 0.1, connect_timeout_s: float = 0.2):
        self.host = host
        self.port = port
        self.db = db
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future | None = None
        self.errors = 0
        self.last_error: str | None = None
        self.last_error_at = 0.0

    def _lost(self, proto: _Protocol) -> None:
        if self._proto is proto:
            self._proto = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        fut = loop.create_future()
        self._connecting = fut
        try:
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda: _Protocol(self), self.host, self.port),
                    self.connect_timeout_s,
                )
            except (TimeoutError, OSError) as exc:
                raise RedisUnavailable(
                    f"Redis at {self.host}:{self.port} unreachable ({exc.__class__.__name__}: {exc or 'timeout'})"
                ) from None
            sock = proto.transport.get_extra_info("socket")
            if sock is not None:
                import socket

                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._proto = proto
            if self.db:
                reply = await self._send(proto, b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%d\r\n" % (len(str(self.db)), self.db), 1)
                if isinstance(reply[0], hiredis.ReplyError):
                    raise RedisUnavailable(f"SELECT {self.db} failed: {reply[0]}")
            fut.set_result(proto)
            return proto
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            self._connecting = None

    def _timeout(self, proto: _Protocol, future: asyncio.Future) -> None:
        if not future.done():
            proto.fail(RedisUnavailable(f"Redis at {self.host}:{self.port} did not answer within {self.timeout_s * 1000:.0f} ms"))

    async def _send(self, proto: _Protocol, payload: bytes, n_replies: int) -> list:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        proto.pending.append(_Pending(future, n_replies))
        proto.transport.write(payload)  # type: ignore[union-attr]
        handle = loop.call_at(loop.time() + self.timeout_s, self._timeout, proto, future)
        try:
            return await future
        finally:
            handle.cancel()

    async def execute(self, payload: bytes, n_replies: int) -> list:
        """Replies of the ``n_replies`` commands in ``payload``; raise :class:`RedisUnavailable`."""
        try:
            proto = self._proto
            if proto is None or proto.closed:
                proto = await self._connect()
            replies = await self._send(proto, payload, n_replies)
        except RedisUnavailable as exc:
            self.errors += 1
            self.last_error = str(exc)
            self.last_error_at = time.time()
            raise
        for r in replies:
            if isinstance(r, hiredis.ReplyError):
                raise RedisUnavailable(f"Redis error: {r}")
        return replies

    async def ping(self) -> bool:
        try:
            replies = await self.execute(b"*1\r\n$4\r\nPING\r\n", 1)
        except RedisUnavailable:
            return False
        return replies[0] in (b"PONG", "PONG")

    def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.closed = True
            self._proto.transport.close()
            self._proto = None
