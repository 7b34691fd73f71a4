"""The tile store's write-and-read script against a real Redis: an entity with many tiles (a busy merchant over
days of 1-minute tiles) is written whole, past Lua's unpack limit (the demo's backfill hit it)."""

import pytest

from streaming.tile_store import write_and_read

pytestmark = pytest.mark.integration


def test_many_tile_fields_for_one_entity_are_written_and_read_back(redis_client):
    key = b"rtml:tiles:test_many_fields:k1"
    fields = {f"f{i}".encode(): str(i).encode() for i in range(20_000)}
    try:
        (stored,) = write_and_read(redis_client, [key], [fields], 60)
        assert stored == fields
        assert 0 < redis_client.ttl(key) <= 60
    finally:
        redis_client.delete(key)
