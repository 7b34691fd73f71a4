"""Helpers of the monitoring tests: a fake Kafka consumer (unit tests only) and message builders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kafka.structs import TopicPartition


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int  # ms
    value: bytes
    key: bytes | None = None


@dataclass
class FakeConsumer:
    """Replays prepared records through ``poll`` like kafka-python, remembers commits. Unit tests only:
    the integration tests use the real broker."""

    records: list[FakeRecord]
    batch: int = 700
    commits: list[dict] = field(default_factory=list)
    pos: int = 0

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[FakeRecord]]:
        chunk = self.records[self.pos : self.pos + self.batch]
        self.pos += len(chunk)
        out: dict[TopicPartition, list[FakeRecord]] = {}
        for rec in chunk:
            out.setdefault(TopicPartition(rec.topic, rec.partition), []).append(rec)
        return out

    def commit(self, offsets: dict) -> None:
        self.commits.append({tp: om.offset for tp, om in offsets.items()})

    def assignment(self) -> set:
        return set()


def records(
    topic: str, messages: list[Any], start_ts_ms: int = 1_700_000_000_000, step_ms: int = 10, first_offset: int = 0
) -> list[FakeRecord]:
    """One-partition records; dict messages are JSON-encoded, bytes/str kept as they are."""
    out = []
    for i, msg in enumerate(messages):
        value = msg if isinstance(msg, bytes) else (msg.encode() if isinstance(msg, str) else json.dumps(msg).encode())
        out.append(FakeRecord(topic, 0, first_offset + i, start_ts_ms + i * step_ms, value))
    return out
