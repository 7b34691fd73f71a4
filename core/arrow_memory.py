"""Arrow's memory pool for rtml's large columnar work (point-in-time joins, batch scoring).

pyarrow's default pool here is mimalloc. On these machines fresh memory is expensive (first-touch page
faults cost ~4 ms per MB in a VM), and mimalloc's pool made a 1M-row, 10M-feature-row join 25-30 % slower
and S3-sourced joins (objects held in memory) ~40 % slower than jemalloc or the system allocator, measured
side by side (tests/benchmarks: bench_training, pit_s3). jemalloc is pyarrow's own choice on Linux when
built with it. ``ARROW_DEFAULT_MEMORY_POOL`` set by the operator always wins.
"""

from __future__ import annotations

import os

_done = False


def use_fast_pool() -> None:
    """Make jemalloc (else the system allocator) Arrow's default pool for new buffers; idempotent, cheap."""
    global _done
    if _done:
        return
    _done = True
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    import pyarrow as pa

    for make in (pa.jemalloc_memory_pool, pa.system_memory_pool):
        try:
            pa.set_memory_pool(make())
            return
        except (NotImplementedError, pa.ArrowNotImplementedError):  # pyarrow built without it
            continue
