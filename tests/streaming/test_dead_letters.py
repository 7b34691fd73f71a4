"""Dead letters: the bytes once and bounded, every send acknowledged or the batch fails, none sent twice on
a replayed micro-batch (fakes for Kafka and Redis; the stream job path runs in the fault matrix)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from streaming import dead_letters
from streaming.dead_letters import DeadLetterError, letter


class _Future:
    def __init__(self, error: Exception | None = None):
        self.error = error

    def get(self, timeout=None):
        if self.error is not None:
            raise self.error
        return "ok"


class _Producer:
    def __init__(self, fail_every: int = 0):
        self.sent: list[tuple[str, dict]] = []
        self.fail_every = fail_every

    def send(self, topic, key, value):
        self.sent.append((key, value))
        failing = self.fail_every and len(self.sent) % self.fail_every == 0
        return _Future(RuntimeError("NOT_ENOUGH_REPLICAS") if failing else None)

    def flush(self, timeout=None):
        pass


class _Redis:
    """HEXISTS / HSET / EXPIRE through a pipeline, in memory."""

    def __init__(self):
        self.hashes: dict[bytes, dict[str, int]] = {}
        self.ttl: dict[bytes, int] = {}

    def pipeline(self, transaction=False):
        return _Pipe(self)


class _Pipe:
    def __init__(self, r: _Redis):
        self.r, self.ops = r, []

    def hexists(self, key, field):
        self.ops.append(lambda: field in self.r.hashes.get(key, {}))

    def hset(self, key, field, value):
        self.ops.append(lambda: self.r.hashes.setdefault(key, {}).__setitem__(field, value))

    def expire(self, key, ttl):
        self.ops.append(lambda: self.r.ttl.__setitem__(key, ttl))

    def execute(self):
        return [op() for op in self.ops]


def _letters(n: int, raw: bytes = b"{bad", batch: int = 7):
    return [letter("txns", 1, 100 + i, "unparseable_json", None, raw, batch) for i in range(n)]


def test_a_letter_holds_the_bytes_once_and_bounded():
    small_key, small = letter("txns", 0, 5, "bad_type", "user_id", b'{"user_id": "x"}', 3, max_raw_bytes=1000)
    assert small_key == "txns:0:5"
    assert base64.b64decode(small["raw_base64"]) == b'{"user_id": "x"}' and "raw" not in small
    assert small["raw_bytes"] == 16 and small["raw_truncated"] is False
    blob = bytes(range(256)) * 600  # 150 KB of binary
    _, big = letter("txns", 0, 6, "unparseable_json", None, blob, 3, max_raw_bytes=65536)
    assert base64.b64decode(big["raw_base64"]) == blob[:65536]
    assert big["raw_truncated"] is True and big["raw_bytes"] == len(blob)
    assert big["raw_sha256"] == hashlib.sha256(blob).hexdigest()
    assert len(json.dumps(big)) < 90_000  # far below the producer's 1 MB request limit


def test_a_failed_send_fails_the_batch_and_marks_nothing():
    redis = _Redis()
    with pytest.raises(DeadLetterError, match="1 of 3"):
        dead_letters.send(_Producer(fail_every=3), "dlq", _letters(3), redis, "proj")
    assert redis.hashes == {}  # the replay sends them all again
    producer = _Producer()
    assert dead_letters.send(producer, "dlq", _letters(3), redis, "proj") == 3


def test_a_replayed_batch_does_not_send_its_dead_letters_again():
    redis, producer = _Redis(), _Producer()
    assert dead_letters.send(producer, "dlq", _letters(5), redis, "proj") == 5
    assert dead_letters.send(producer, "dlq", _letters(5), redis, "proj") == 0  # replay of the same batch
    assert dead_letters.send(producer, "dlq", _letters(6), redis, "proj") == 1  # one new record
    assert sorted(k for k, _ in producer.sent) == sorted({f"txns:1:{100 + i}" for i in range(6)})
    [key] = redis.hashes
    assert key.endswith(b"proj") and redis.ttl[key] == dead_letters.MARK_TTL_S  # in the Feast project's key space
