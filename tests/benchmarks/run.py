"""`make bench`: start the local stack, run every ``bench_*.py`` (or those named), render BENCHMARKS.md.

Usage: python -m tests.benchmarks.run [NAME[:PART] ...]   (NAME = streaming, training, serving, monitoring, rollout)

``NAME:PART`` measures one part of a benchmark that has parts (``serving:cluster``: Redis Cluster and failover;
``serving:standalone``: the rest; ``training:s3``: the join on s3proxy vs local files) and merges its figures into the benchmark's earlier JSON.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.benchmarks.report import render

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    from infra import stack

    info = stack.up()
    failed = []
    try:
        for name in names:
            print(f"== benchmark {name}", flush=True)
            t0 = time.monotonic()
            module, _, part = name.partition(":")
            code = subprocess.call([sys.executable, "-m", f"tests.benchmarks.bench_{module}", *([part] if part else [])],
                                   cwd=HERE.parent.parent)
            print(f"== benchmark {name}: exit {code} after {time.monotonic() - t0:.0f} s", flush=True)
            if code:
                failed.append(name)
    finally:
        if getattr(info, "started", None):
            stack.down()
    path = render()
    print(f"wrote {path}")
    if failed:
        print(f"failed benchmarks: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
