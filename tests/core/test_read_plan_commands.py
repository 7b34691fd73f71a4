"""A batch read's RESP commands (ReadPlan.commands_many) are byte for byte the row-by-row commands, and
values the int64 template cannot take go the row-by-row way (with its errors)."""

from __future__ import annotations

import random
import struct

import pytest

from core import online_format as fmt
from core.online_store import EntityRead, ReadPlan


def _read(join_key: str, n_fields: int, key_type: int = fmt.INT64) -> EntityRead:
    fields = [b"f%d" % i for i in range(n_fields)] + [f"_ts:{join_key}_view".encode()]
    parts = fmt.int64_key_parts(join_key, "rtml_fraud") if key_type == fmt.INT64 else None
    return EntityRead(join_key, fmt.entity_key_encoder(join_key, key_type, "rtml_fraud"), fields, [], parts)


def _one_by_one(plan: ReadPlan, rows: list[dict]) -> bytes:
    return b"".join(plan.commands(r) for r in rows)


def test_int64_commands_equal_the_row_by_row_commands():
    rng = random.Random(3)
    plan = ReadPlan([_read("user_id", 18), _read("merchant_id", 5)])
    rows = [{"user_id": rng.randint(-(2**63), 2**63 - 1), "merchant_id": rng.randint(0, 10**6)} for _ in range(300)]
    rows += [{"user_id": 0, "merchant_id": -1}, {"user_id": 2**63 - 1, "merchant_id": -(2**63)}]
    assert plan.commands_many(rows) == _one_by_one(plan, rows)
    assert plan.commands_many(rows[:1]) == plan.commands(rows[0])
    assert plan.commands_many([]) == b""


def test_other_keys_and_values_take_the_row_by_row_way():
    mixed = ReadPlan([_read("user_id", 3), _read("merchant", 2, fmt.STRING)])
    rows = [{"user_id": 5, "merchant": "m-1"}, {"user_id": 6, "merchant": "ünï"}]
    assert mixed.commands_many(rows) == _one_by_one(mixed, rows)
    plan = ReadPlan([_read("user_id", 3)])
    assert plan.commands_many([{"user_id": True}, {"user_id": 2}]) == _one_by_one(plan, [{"user_id": True}, {"user_id": 2}])
    with pytest.raises(struct.error):  # a float id is refused, as the row-by-row encoder refuses it
        plan.commands_many([{"user_id": 1}, {"user_id": 2.5}])
    with pytest.raises(struct.error):  # beyond int64
        plan.commands_many([{"user_id": 2**64}])
