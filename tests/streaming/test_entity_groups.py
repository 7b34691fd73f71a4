"""Executors merge tiles a bounded number of entities at a time: every row written once, no entity split."""

from types import SimpleNamespace

import numpy as np
import pandas as pd

from streaming import tile_store

INT_KEYED, STRING_KEYED = SimpleNamespace(string_key=False), SimpleNamespace(string_key=True)


def test_rows_go_out_in_groups_of_whole_entities(monkeypatch):
    calls: list[pd.DataFrame] = []

    def fake(spec, rows, writer, ttl_s, epoch, epochs, final_before_us):
        calls.append(rows)
        return len(rows), rows["k"].nunique()

    monkeypatch.setattr(tile_store, "write_view_partition", fake)
    rng = np.random.default_rng(5)
    rows = pd.DataFrame({"k": rng.integers(0, 23, 500), "tile": np.arange(500)})
    assert tile_store.write_view_rows(INT_KEYED, rows, None, 60, max_entities=4) == (500, 23)
    assert len(calls) == 6  # ceil(23 / 4)
    seen = pd.concat(calls)
    assert sorted(seen["tile"]) == list(range(500))  # every row once
    groups = [set(c["k"]) for c in calls]
    assert all(len(g) <= 4 for g in groups) and sum(len(g) for g in groups) == 23  # no entity in two groups
    calls.clear()
    assert tile_store.write_view_rows(INT_KEYED, rows, None, 60, max_entities=23) == (500, 23)
    assert len(calls) == 1 and calls[0] is rows  # few entities: one call, as before


def test_string_keyed_rows_are_grouped_by_the_string_not_its_hash(monkeypatch):
    """Of a string key, ``k`` is its 64-bit hash; two strings sharing a hash still go out as two entities."""
    calls: list[pd.DataFrame] = []
    monkeypatch.setattr(tile_store, "write_view_partition",
                        lambda spec, rows, *a: (calls.append(rows), (len(rows), rows["ks"].nunique()))[1])
    ks = np.array([f"id-{i % 7}" for i in range(70)], dtype=object)
    rows = pd.DataFrame({"k": np.zeros(70, np.int64), "ks": ks, "tile": np.arange(70)})  # one hash for all
    assert tile_store.write_view_rows(STRING_KEYED, rows, None, 60, max_entities=2) == (70, 7)
    assert len(calls) == 4 and sorted(pd.concat(calls)["tile"]) == list(range(70))
    assert [len(set(c["ks"])) for c in calls] == [2, 2, 2, 1]
