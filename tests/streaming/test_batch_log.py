"""The stream job's per-batch counters stay bounded in the checkpoint and still add up: a replayed batch counts
once, folded batches stay counted, and a crash between writing the totals and deleting the files counts nothing
twice."""

from __future__ import annotations

import json

from streaming import batch_log


def _numbered(folder):
    return sorted(int(f.stem) for f in folder.glob("*.json") if f.stem.isdigit())


def test_old_batches_fold_into_totals_and_the_counters_stay_exact(tmp_path):
    folder = tmp_path / "batches"
    for b in range(250):
        batch_log.record(folder, b, {"online_v": b, "tiles_v": 2}, keep=10)
        if b % 7 == 0:
            assert batch_log.add(folder, b, {"events_read": 3})
    assert _numbered(folder) == list(range(240, 250))  # only the newest 10 files
    expected = {"online_v": sum(range(250)), "tiles_v": 500, "events_read": 3 * len(range(0, 250, 7))}
    assert batch_log.counters(folder) == expected
    batch_log.record(folder, 245, {"online_v": 245, "tiles_v": 2}, keep=10)  # a recent batch replayed,
    batch_log.add(folder, 245, {"events_read": 3})  # and its progress reported again
    assert batch_log.counters(folder) == expected
    assert json.loads((folder / "totals.json").read_text())["through"] == 239


def test_a_crash_after_the_totals_were_written_counts_nothing_twice(tmp_path):
    folder = tmp_path / "batches"
    for b in range(5):
        batch_log.record(folder, b, {"n": 1}, keep=100)
    # as if fold() died right after replacing the totals: batches 0-2 are covered but their files remain
    (folder / "totals.json").write_text(json.dumps({"through": 2, "counts": {"n": 3}}))
    assert batch_log.counters(folder) == {"n": 5}
    assert batch_log.fold(folder, keep=2) == 0  # nothing new to add: 0-2 are in the totals already
    assert _numbered(folder) == [3, 4]
    assert batch_log.counters(folder) == {"n": 5}
    assert not batch_log.add(folder, 1, {"events_read": 9})  # a folded batch is not changed any more
