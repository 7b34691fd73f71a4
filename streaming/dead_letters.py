"""Dead letters: one message per bad record, its bytes once and bounded, sent once, never lost silently.

A dead letter carries the reason, the offending field, where the record came from (topic, partition,
offset: also the message key) and the original bytes, base64, once. Records larger than
``settings().dlq_max_raw_bytes`` keep that many leading bytes (``raw_truncated``, with the full size
and SHA-256): the original stays readable at its offset in the source topic, and a 150 KB binary
record can no longer push a batch past the producer's maximum request size.

:func:`send` checks every send future after the flush (a broker-side failure fails the micro-batch,
which Spark then replays: nothing is lost silently) and marks what was delivered in Redis, one hash per
(source partition, block of offsets) under the Feast project's key space, so a replayed micro-batch
does not send its dead letters again. Only a crash between the flush and the marking can repeat a
letter; its key (the source coordinates) lets a reader drop that copy.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

from core.settings import settings

MARK_PREFIX = b"rtml:dlq:"
MARK_BLOCK = 100_000  # offsets per marker hash
MARK_TTL_S = 7 * 24 * 3600


class DeadLetterError(RuntimeError):
    """Some dead letters were not acknowledged by Kafka (the micro-batch fails and is replayed)."""


def letter(source_topic: str, partition: int, offset: int, reason: str, field: str | None, raw: bytes,
           batch_id: int, max_raw_bytes: int | None = None) -> tuple[str, dict]:
    """(key, value) of the dead letter of one record."""
    limit = settings().dlq_max_raw_bytes if max_raw_bytes is None else max_raw_bytes
    kept = raw[:limit]
    value = {
        "reason": reason, "field": field, "raw_base64": base64.b64encode(kept).decode("ascii"),
        "raw_bytes": len(raw), "raw_truncated": len(kept) < len(raw),
        "source_topic": source_topic, "partition": int(partition), "offset": int(offset), "batch_id": int(batch_id),
    }
    if value["raw_truncated"]:
        value["raw_sha256"] = hashlib.sha256(raw).hexdigest()
    return f"{source_topic}:{partition}:{offset}", value


def _mark_key(dlq_topic: str, value: dict, project: str) -> bytes:
    block = int(value["offset"]) // MARK_BLOCK
    return MARK_PREFIX + f"{dlq_topic}:{value['source_topic']}:{value['partition']}:{block}:{project}".encode()


def _by_node(redis_client, keys: list[bytes]) -> list[tuple[object, list[int]]]:
    """(client, indices of ``keys``) per Redis node: a writers' router (``core.redis_client.SyncRouter``, cluster
    aware) groups the keys by owner; a plain client takes them all."""
    if hasattr(redis_client, "owners"):
        return [(redis_client.client(addr), idx) for addr, idx in redis_client.owners(keys).items()]
    return [(redis_client, list(range(len(keys))))]


def send(producer, dlq_topic: str, letters: Iterable[tuple[str, dict]], redis_client=None, project: str = "",
         timeout_s: float = 30.0) -> int:
    """Send the letters not yet delivered (per the Redis marks); raise :class:`DeadLetterError` if Kafka did
    not acknowledge all of them. Returns the number sent. ``redis_client``: a redis-py client or the writers'
    router (the marks may live on several cluster nodes)."""
    letters = list(letters)
    if redis_client is not None and letters:
        keys = [_mark_key(dlq_topic, value, project) for _, value in letters]
        done = [False] * len(letters)
        for client, idx in _by_node(redis_client, keys):
            pipe = client.pipeline(transaction=False)
            for i in idx:
                pipe.hexists(keys[i], str(letters[i][1]["offset"]))
            for i, hit in zip(idx, pipe.execute(), strict=True):
                done[i] = bool(hit)
        letters = [lv for lv, hit in zip(letters, done, strict=True) if not hit]
    futures = [producer.send(dlq_topic, key=key, value=value) for key, value in letters]
    producer.flush(timeout=timeout_s)
    failed = []
    for future in futures:
        try:
            future.get(timeout=0)
        except Exception as exc:  # noqa: BLE001 - KafkaError or timeout: counted, then raised
            failed.append(exc)
    if failed:
        raise DeadLetterError(f"{len(failed)} of {len(futures)} dead letters not acknowledged by Kafka: {failed[0]!r}")
    if redis_client is not None and letters:
        keys = [_mark_key(dlq_topic, value, project) for _, value in letters]
        for client, idx in _by_node(redis_client, keys):
            pipe = client.pipeline(transaction=False)
            for i in idx:
                pipe.hset(keys[i], str(letters[i][1]["offset"]), 1)
            for key in {keys[i] for i in idx}:
                pipe.expire(key, MARK_TTL_S)
            pipe.execute()
    return len(letters)
