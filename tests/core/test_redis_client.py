"""core.redis_client without a Redis: the hot-path client's time bound (one watchdog per connection),
pipelined replies in order, hash slots, CLUSTER SLOTS and redirect parsing."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.redis_client import FastRedis, RedisUnavailable, key_slot, redirect, slot_table
from core.resp import resp


class _FakeRedis(asyncio.Protocol):
    """Answers ``+PONG`` to each command after ``delay_s`` (or never, with ``None``)."""

    def __init__(self, delay_s: float | None):
        self.delay_s = delay_s

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        if self.delay_s is None:
            return
        n = data.count(b"PING")
        asyncio.get_running_loop().call_later(self.delay_s, self.transport.write, b"+PONG\r\n" * n)


async def _with_server(delay_s, body):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _FakeRedis(delay_s), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = FastRedis("127.0.0.1", port, timeout_s=0.1)
    try:
        return await body(client, port)
    finally:
        client.close()
        server.close()


def test_a_silent_server_fails_every_pending_request_within_the_timeout_without_its_address():
    async def body(client, port):
        t0 = time.monotonic()
        results = await asyncio.gather(*(client.execute(resp(b"PING"), 1) for _ in range(5)), return_exceptions=True)
        return time.monotonic() - t0, results, port

    elapsed, results, port = asyncio.run(_with_server(None, body))
    assert all(isinstance(r, RedisUnavailable) for r in results)
    assert 0.09 <= elapsed < 1.0  # bounded by the timeout, not by the silent server
    assert all("127.0.0.1" not in str(r) and str(port) not in str(r) and str(port) in r.where for r in results)


def test_replies_slower_than_one_request_but_within_the_timeout_succeed():
    async def body(client, _port):
        out = []
        for _ in range(8):  # sequential requests re-arm the single watchdog many times
            out.append(await client.execute(resp(b"PING"), 1))
        out += await asyncio.gather(*(client.execute(resp(b"PING") * 2, 2) for _ in range(10)))
        return out

    out = asyncio.run(_with_server(0.03, body))
    assert out[:8] == [[b"PONG"]] * 8 and out[8:] == [[b"PONG", b"PONG"]] * 10


class _StallRedis(_FakeRedis):
    """Answers nothing until ``stall_s`` after the connection, then every PING at once (in order)."""

    def connection_made(self, transport):
        super().connection_made(transport)
        self.resume_at = asyncio.get_running_loop().time() + self.delay_s

    def data_received(self, data: bytes):
        loop = asyncio.get_running_loop()
        loop.call_at(max(loop.time(), self.resume_at), self.transport.write, b"+PONG\r\n" * data.count(b"PING"))


def test_one_timed_out_request_does_not_fail_the_requests_behind_it():
    """Request A times out (the server stalls 150 ms, the timeout is 100 ms); request B, sent 80 ms later on the
    same connection, gets its reply at 150 ms, inside its own deadline: only A fails, and the connection lives."""

    async def body():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _StallRedis(0.15), "127.0.0.1", 0)
        client = FastRedis("127.0.0.1", server.sockets[0].getsockname()[1], timeout_s=0.1)
        try:
            await client._connect()
            a = asyncio.ensure_future(client.execute(resp(b"PING"), 1))
            await asyncio.sleep(0.08)
            b = asyncio.ensure_future(client.execute(resp(b"PING"), 1))
            results = await asyncio.gather(a, b, return_exceptions=True)
            c = await client.execute(resp(b"PING"), 1)  # the same connection still serves
            return results, c
        finally:
            client.close()
            server.close()

    (a, b), c = asyncio.run(body())
    assert isinstance(a, RedisUnavailable)
    assert b == [b"PONG"]
    assert c == [b"PONG"]


@pytest.mark.parametrize("key,slot", [(b"foo", 12182), (b"{user1000}.following", key_slot(b"user1000")), (b"a{}b", key_slot(b"a{}b"))])
def test_hash_slots_follow_redis(key, slot):
    assert key_slot(key) == slot
    assert 0 <= key_slot(key) < 16384


def test_slot_table_and_redirects():
    table = slot_table([[0, 5460, [b"", 7000, b"id0"], [b"10.0.0.2", 7003, b"id3"]], [5461, 16383, [b"10.0.0.1", 7001, b"id1"]]],
                       seed_host="10.0.0.9")
    assert table[0] == table[5460] == ("10.0.0.9", 7000) and table[5461] == table[16383] == ("10.0.0.1", 7001)
    assert redirect("MOVED 3999 127.0.0.1:6381") == ("MOVED", 3999, ("127.0.0.1", 6381))
    assert redirect("ASK 3999 127.0.0.1:6381") == ("ASK", 3999, ("127.0.0.1", 6381))
    assert redirect("ERR unknown command") is None
