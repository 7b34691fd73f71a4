"""The stream job's counters per micro-batch, kept in its checkpoint, bounded.

Each micro-batch writes its counts (tiles and online rows per view, dead letters per reason; the progress
listener adds events read and late or duplicate events dropped) to ``<checkpoint>/batches/<batch>.json``,
so a replayed batch overwrites its own file and is counted once. Only the newest :data:`KEEP` files stay:
older ones are folded into ``totals.json`` (their sums and the last batch folded), which is replaced
atomically before those files are deleted. A crash in between leaves files the totals already cover;
they are skipped and deleted next time. Spark replays only the newest batches, which are still files.

Without the folding, a job with a 1 s trigger left 86,400 files a day in its checkpoint, read them all
to report its counters, and never deleted one.
"""

from __future__ import annotations

import json
from pathlib import Path

KEEP = 100  # batch files kept (Spark keeps ``spark.sql.streaming.minBatchesToRetain``, 100, of its own logs)
TOTALS = "totals.json"


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _batch_files(folder: Path) -> list[tuple[int, Path]]:
    out = []
    for f in folder.glob("*.json"):
        if f.stem.isdigit():
            out.append((int(f.stem), f))
    return sorted(out)


def _totals(folder: Path) -> tuple[int, dict[str, int]]:
    path = folder / TOTALS
    if not path.exists():
        return -1, {}
    data = json.loads(path.read_text())
    return int(data["through"]), {k: int(v) for k, v in data["counts"].items()}


def record(folder: Path, batch_id: int, counts: dict[str, int], keep: int = KEEP) -> None:
    """Write (or overwrite, for a replay) ``batch_id``'s counts, then fold batches older than the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / f"{batch_id:012d}.json", counts)
    fold(folder, keep)


def add(folder: Path, batch_id: int, counts: dict[str, int]) -> bool:
    """Set more counts of a recorded batch (the progress listener's); False if the batch has no file."""
    path = folder / f"{batch_id:012d}.json"
    if not path.exists():
        return False
    data = json.loads(path.read_text())
    data.update(counts)
    _write(path, data)
    return True


def fold(folder: Path, keep: int = KEEP) -> int:
    """Fold all but the newest ``keep`` batch files into the totals; returns how many were folded."""
    files = _batch_files(folder)
    through, counts = _totals(folder)
    old = [(b, f) for b, f in files[: max(len(files) - keep, 0)]]
    new = [(b, f) for b, f in old if b > through]
    if new:
        for _b, f in new:
            for key, value in json.loads(f.read_text()).items():
                counts[key] = counts.get(key, 0) + int(value)
        _write(folder / TOTALS, {"through": new[-1][0], "counts": counts})
    for _b, f in old:  # covered by the totals now (or already: a crash after the totals were written)
        f.unlink(missing_ok=True)
    return len(new)


def counters(folder: Path) -> dict[str, int]:
    """Cumulative counters of every batch: the folded totals plus the batch files after them."""
    if not folder.exists():
        return {}
    through, out = _totals(folder)
    for b, f in _batch_files(folder):
        if b <= through:
            continue
        for key, value in json.loads(f.read_text()).items():
            out[key] = out.get(key, 0) + int(value)
    return out
