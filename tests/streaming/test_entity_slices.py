"""The backfill writes a partition's tiles (sorted by entity) in bounded slices that never split an entity."""

import numpy as np

from streaming.backfill import entity_slices


def test_slices_cover_every_complete_entity_once_and_keep_the_last_for_the_next_batch():
    keys = np.array([1, 1, 2, 3, 3, 3, 4, 5, 5])
    assert entity_slices(keys, 1) == [(0, 2), (2, 3), (3, 6), (6, 7)]
    assert entity_slices(keys, 3) == [(0, 3), (3, 6), (6, 7)]
    assert entity_slices(keys, 100) == [(0, 7)]
    assert entity_slices(np.array([7, 7]), 1) == []  # one entity: it may continue in the next batch
    assert entity_slices(np.array([], dtype=np.int64), 5) == []


def test_slices_never_split_an_entity_on_random_keys():
    rng = np.random.default_rng(3)
    keys = np.sort(rng.integers(0, 50, 1000))
    for chunk in (1, 7, 64):
        slices = entity_slices(keys, chunk)
        assert slices[0][0] == 0 and all(a[1] == b[0] for a, b in zip(slices, slices[1:], strict=False))
        assert slices[-1][1] == int(np.searchsorted(keys, keys[-1]))
        for lo, hi in slices:
            assert hi > lo and (lo == 0 or keys[lo - 1] != keys[lo])  # non-empty, starts on an entity edge
