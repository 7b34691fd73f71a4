"""The tile store's write-and-read script against a real Redis: an entity with many tiles (a busy merchant over
days of 1-minute tiles) is written whole, past Lua's unpack limit (the demo's backfill hit it)."""

import pytest

from streaming.tile_store import write_and_read

pytestmark = pytest.mark.integration


def test_many_tile_fields_for_one_entity_are_written_and_read_back(redis_client, feast_store):
    from core.online_store import OnlineStore

    online = OnlineStore.from_settings(feast_store=feast_store)
    keys = [b"rtml:tiles:test_many_fields:k1", b"rtml:tiles:test_many_fields:k2"]
    fields = [{f"f{i}".encode(): str(i).encode() for i in range(20_000)}, {b"a": b"1"}]
    try:
        stored = write_and_read(online, keys, fields, 60)
        assert stored == fields
        assert 0 < redis_client.ttl(keys[0]) <= 60
        online.update_tile_fields(keys, [{b"r": b"2"}, {}], [[b"f0", b"f1"], [b"a"]])
        assert redis_client.hlen(keys[0]) == 19_999 and redis_client.hget(keys[0], b"r") == b"2"
        assert not redis_client.exists(keys[1])
    finally:
        redis_client.delete(*keys)
        online.close()
