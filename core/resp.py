"""RESP2, the Redis protocol: commands encoded, and replies framed in compiled kernels.

The serving batch read gets ~200 ``HMGET`` replies (~2,700 fields) per 100-row request. Parsed by hiredis
they become one Python object per field (~350 us of CPU to parse, flatten, measure and join again for the
decoder); framed here they stay one ``bytes`` (:class:`RespBatch`): :func:`scan` finds where replies end
as chunks arrive (the raw connection of :class:`core.redis_client.FastRedis`), :func:`array_fields`
locates the fields of array-of-bulk-string replies for the compiled value decoder
(:func:`core.online_format.decode_resp`). Anything else (an error, a status, a nested array) is handed
to hiredis (:func:`parse`), so callers see exactly the replies a hiredis connection gives.
"""

from __future__ import annotations

from typing import NamedTuple

import hiredis
import numpy as np


def resp(*parts: bytes) -> bytes:
    """RESP encoding of one command."""
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


class RespBatch(NamedTuple):
    """``n`` complete replies, each an array of bulk strings or nils (``HMGET``), laid end to end in ``data``."""

    data: bytes
    n: int


def parse(data: bytes, n: int) -> list:
    """The ``n`` replies in ``data`` as hiredis parses them (error replies as ``hiredis.ReplyError``)."""
    reader = hiredis.Reader()
    reader.feed(data)
    return [reader.gets() for _ in range(n)]


def _scan(buf, pos, need):  # pragma: no cover - compiled by numba
    """Up to ``need`` complete replies from ``pos``: (how many, where the last one ends, every one of them an
    array of bulk strings / nils). A reply cut short by the end of ``buf`` is not counted."""
    size = buf.size
    done = 0
    simple = True
    while done < need:
        p = pos
        remaining = 1  # values still to read in this reply (arrays add their elements)
        depth_top = True
        complete = True
        while remaining > 0:
            q = p + 1
            while q + 1 < size and not (buf[q] == 13 and buf[q + 1] == 10):
                q += 1
            if q + 1 >= size:
                complete = False
                break
            kind = buf[p]
            line_end = q + 2
            if kind == 36 or kind == 42:  # '$' bulk string, '*' array: a signed length
                i = p + 1
                negative = buf[i] == 45
                if negative:
                    i += 1
                v = 0
                while i < q:
                    v = v * 10 + (buf[i] - 48)
                    i += 1
                if negative:
                    v = -v
                if kind == 36:
                    if depth_top:
                        simple = False
                    if v >= 0:
                        if line_end + v + 2 > size:
                            complete = False
                            break
                        p = line_end + v + 2
                    else:
                        p = line_end
                    remaining -= 1
                else:
                    if not depth_top or v < 0:
                        simple = False
                    p = line_end
                    remaining -= 1
                    if v > 0:
                        remaining += v
            else:  # '+' status, '-' error, ':' integer: one line
                simple = False
                p = line_end
                remaining -= 1
            depth_top = False
        if not complete:
            break
        pos = p
        done += 1
    return done, pos, simple


def _array_fields(buf, n_replies, counts, starts, lens):  # pragma: no cover - compiled by numba
    """Start and length (-1: nil) of every field of ``n_replies`` arrays of bulk strings laid end to end, reply
    ``r`` holding ``counts[r % counts.size]`` fields. False if any reply has another shape or length."""
    size = buf.size
    p = 0
    f = 0
    period = counts.size
    for r in range(n_replies):
        if p + 3 >= size or buf[p] != 42:
            return False
        q = p + 1
        v = 0
        while q < size and buf[q] != 13:
            v = v * 10 + (buf[q] - 48)
            q += 1
        if v != counts[r % period]:
            return False
        p = q + 2
        for _ in range(v):
            if p + 4 >= size or buf[p] != 36:
                return False
            q = p + 1
            if buf[q] == 45:  # $-1: nil
                lens[f] = -1
                starts[f] = p
                p = q + 4
            else:
                n = 0
                while q < size and buf[q] != 13:
                    n = n * 10 + (buf[q] - 48)
                    q += 1
                starts[f] = q + 2
                lens[f] = n
                p = q + 4 + n
            f += 1
    return p == size


_KERNELS: dict = {}


def _kernel(fn):
    kernel = _KERNELS.get(fn.__name__)
    if kernel is None:
        from core.compiled import compile_nogil

        kernel = _KERNELS[fn.__name__] = compile_nogil(fn)
    return kernel


def scan(buf: bytes, pos: int, need: int) -> tuple[int, int, bool]:
    """:func:`_scan` of ``buf`` (compiled): (complete replies, end of the last one, all arrays of bulk strings)."""
    done, end, simple = _kernel(_scan)(np.frombuffer(buf, np.uint8), pos, need)
    return int(done), int(end), bool(simple)


def array_fields(data: bytes, n_replies: int, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(starts, lengths) of the fields of ``n_replies`` array replies in ``data`` (reply ``r`` has
    ``counts[r % len(counts)]`` fields, ``n_replies`` a multiple of ``len(counts)``; length -1: nil), or
    ``None`` if the replies are not shaped so."""
    if not len(counts) or n_replies % len(counts):
        return None
    total = int(counts.sum()) * (n_replies // len(counts))
    starts = np.empty(total, np.int64)
    lens = np.empty(total, np.int64)
    if not n_replies:
        return (starts, lens) if not data else None
    if not _kernel(_array_fields)(np.frombuffer(data, np.uint8), n_replies, counts, starts, lens):
        return None
    return starts, lens


def compile_kernels() -> None:
    """Compile (or load) both kernels now, not on the first request."""
    sample = b"*2\r\n$-1\r\n$1\r\nx\r\n"
    scan(sample, 0, 1)
    array_fields(sample, 1, np.array([2], np.int64))
