"""KRaft cluster ids: never one the storage tool's argument parser reads as an option."""

from __future__ import annotations

import uuid

from infra import kafka_broker


def test_cluster_id_never_starts_with_a_dash(monkeypatch):
    dash_first = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))  # urlsafe base64 of 0xf8... starts with '-'
    plain = uuid.UUID(bytes=bytes(16))
    draws = iter([dash_first, dash_first, plain])
    monkeypatch.setattr(kafka_broker.uuid, "uuid4", lambda: next(draws))
    cid = kafka_broker._cluster_id()
    assert cid == "AAAAAAAAAAAAAAAAAAAAAA" and not cid.startswith("-")
