"""core.resp and the raw connection of core.redis_client: replies framed by the compiled scanner equal what
hiredis parses, however the bytes are cut into chunks; plain HMGET replies stay one RespBatch, anything else
(errors, statuses, nested arrays, nils) comes back as hiredis' list; against a real Redis too."""

from __future__ import annotations

import asyncio
import random

import hiredis
import numpy as np
import pytest

from core.redis_client import FastRedis, RedisUnavailable, _Pending, _RawProtocol
from core.resp import RespBatch, array_fields, parse, resp, scan


def _bulk_array(fields: list[bytes | None]) -> bytes:
    return b"*%d\r\n" % len(fields) + b"".join(b"$-1\r\n" if f is None else b"$%d\r\n%s\r\n" % (len(f), f)
                                              for f in fields)


def _random_fields(rng: random.Random, n: int) -> list[bytes | None]:
    """Fields of every awkward kind: nil, empty, CR/LF and '*'/'$' inside the data, long ones."""
    pool = [None, b"", b"\r\n", b"*3\r\n$1\r\n", b"$-1\r\n", b"x" * 300, bytes(range(256))]
    return [rng.choice(pool) if rng.random() < 0.5 else rng.randbytes(rng.randint(1, 20)) for _ in range(n)]


def test_scan_counts_complete_replies_at_every_cut():
    rng = random.Random(3)
    replies = [_bulk_array(_random_fields(rng, rng.randint(1, 6))) for _ in range(8)]
    data = b"".join(replies)
    ends = np.cumsum([len(r) for r in replies]).tolist()
    for cut in range(len(data) + 1):
        done, end, simple = scan(data[:cut], 0, 8)
        assert done == sum(e <= cut for e in ends)
        assert end == (ends[done - 1] if done else 0)
        assert simple
    assert scan(data, 0, 3)[:2] == (3, ends[2])  # no more than asked for
    assert scan(data, ends[2], 8)[:2] == (5, ends[-1])  # from a reply boundary


@pytest.mark.parametrize("reply,simple", [
    (b"+OK\r\n", False), (b"-MOVED 12 127.0.0.1:7001\r\n", False), (b":42\r\n", False), (b"$3\r\nabc\r\n", False),
    (b"$-1\r\n", False), (b"*-1\r\n", False), (b"*2\r\n*1\r\n$1\r\na\r\n:1\r\n", False), (b"*2\r\n$-1\r\n$0\r\n\r\n", True),
    (b"*0\r\n", True),
])
def test_scan_frames_every_reply_kind_and_flags_what_is_not_an_array_of_bulk_strings(reply, simple):
    data = reply + _bulk_array([b"a"])
    assert scan(data, 0, 2) == (2, len(data), simple)
    assert scan(data[:-1], 0, 2)[:2] == (1, len(reply))


def test_array_fields_locates_every_field_and_refuses_other_shapes():
    rng = random.Random(5)
    counts = np.array([3, 1, 4], np.int64)
    replies = [_random_fields(rng, int(counts[i % 3])) for i in range(6)]
    data = b"".join(map(_bulk_array, replies))
    starts, lens = array_fields(data, 6, counts)
    got = [None if n < 0 else data[s : s + n] for s, n in zip(starts.tolist(), lens.tolist(), strict=True)]
    assert got == [f for r in replies for f in r]
    assert array_fields(data, 6, np.array([3, 1, 5], np.int64)) is None  # a reply of another length
    assert array_fields(data + b"+OK\r\n", 6, counts) is None  # trailing bytes
    assert array_fields(data[:-1], 6, counts) is None  # cut short
    assert array_fields(b"+OK\r\n" + data, 6, counts) is None


class _Transport:
    def abort(self):
        pass


def _feed(chunks: list[bytes], requests: list[int]) -> list:
    """What each request's future gets when ``chunks`` arrive on a raw connection."""

    class _Owner:
        where = "here"

        def _lost(self, proto):
            pass

    loop = asyncio.new_event_loop()
    try:
        proto = _RawProtocol(_Owner())
        proto.transport = _Transport()
        futures = []
        for n in requests:
            fut = loop.create_future()
            proto.pending.append(_Pending(fut, n, 0.0))
            futures.append(fut)
        for chunk in chunks:
            proto.data_received(chunk)
        return [f.result() if f.done() else None for f in futures]
    finally:
        loop.close()


def test_the_raw_connection_hands_out_each_request_in_any_chunking():
    rng = random.Random(11)
    plain = [_bulk_array(_random_fields(rng, 4)) for _ in range(5)]
    mixed = [_bulk_array([b"x"]), b"-ERR wrong\r\n", _bulk_array([None])]
    status = [b"+OK\r\n"]
    data = b"".join(plain) + b"".join(mixed) + b"".join(status) + b"".join(plain[:2])
    want = [RespBatch(b"".join(plain), 5), parse(b"".join(mixed), 3), [b"OK"], RespBatch(b"".join(plain[:2]), 2)]
    for trial in range(200):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, 12))) if trial else list(range(1, len(data)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        got = _feed(chunks, [5, 3, 1, 2])
        assert got[0] == want[0] and got[2] == want[2] and got[3] == want[3]
        assert [type(x) for x in got[1]] == [list, hiredis.ReplyError, list]
        assert got[1][0] == [b"x"] and str(got[1][1]) == "ERR wrong" and got[1][2] == [None]
    assert _feed([data[:-3]], [5, 3, 1, 2])[3] is None  # not complete yet


def test_a_reply_nobody_waits_for_fails_the_connection():
    class _Owner:
        where = "here"
        lost = False

        def _lost(self, proto):
            self.lost = True

    proto = _RawProtocol(_Owner())
    proto.transport = _Transport()
    proto.data_received(b"+OK\r\n")
    assert proto.closed and proto.owner.lost


@pytest.mark.integration
def test_execute_resp_against_a_real_redis(stack, redis_client):
    """HMGETs come back as one RespBatch equal to hiredis' replies; an error reply raises; the connection goes on."""
    from core.redis_client import RedisTarget

    target = RedisTarget.from_settings(stack, role="admin")
    redis_client.hset("rtml:test:resp:1", mapping={b"a": b"1", b"b": b"\r\n*2"})
    redis_client.hset("rtml:test:resp:2", mapping={b"a": b"x" * 70_000})  # replies larger than one socket read

    async def body():
        client = FastRedis(*target.nodes[0], db=target.db, timeout_s=2.0, username=target.username,
                           password=target.password, ssl=target.ssl_context())
        try:
            cmds = [resp(b"HMGET", b"rtml:test:resp:%d" % k, b"a", b"b", b"c") for k in (1, 2, 3)] * 50
            got = await client.execute_resp(b"".join(cmds), len(cmds))
            plain = await client.execute(b"".join(cmds), len(cmds))
            with pytest.raises(RedisUnavailable, match="Redis error: WRONGTYPE"):
                await client.execute_resp(resp(b"LPUSH", b"rtml:test:resp:1", b"v"), 1)
            again = await client.execute_resp(cmds[0], 1)
            return got, plain, again
        finally:
            client.close()

    try:
        got, plain, again = asyncio.run(body())
    finally:
        redis_client.delete("rtml:test:resp:1", "rtml:test:resp:2")
    assert isinstance(got, RespBatch) and got.n == 150
    assert parse(got.data, got.n) == plain
    assert plain[0] == [b"1", b"\r\n*2", None] and plain[1] == [b"x" * 70_000, None, None]
    assert parse(again.data, 1) == [plain[0]]
