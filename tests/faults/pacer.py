"""Open-loop HTTP load at a fixed rate (its own process): each second's successes and failures, by wall clock.

Unlike the closed-loop ``tests/benchmarks/loadgen.py`` (whose request encoding it reuses), a slow or
failing server does not slow the offered load: request ``i`` is due at ``start + i / rate`` on one of
``connections`` keep-alive connections, and a request that fails (non-200, reset, refused, no answer
within ``timeout_s``) is counted in the second it was sent. The fault matrix compares those seconds with
the moments a fault started and ended. SIGTERM stops it early.

Run: ``python -m tests.faults.pacer HOST PORT PATH RATE DURATION_S CONNECTIONS BODIES_JSON OUT_JSON``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

from tests.benchmarks.loadgen import encode_requests


async def _worker(host: str, port: int, requests: list[bytes], j: int, conns: int, rate: float, start: float,
                  deadline: float, buckets: dict, stop: asyncio.Event, timeout_s: float, failures: list) -> None:
    reader = writer = None
    i = j
    while not stop.is_set():
        due = start + i / rate
        now = time.time()
        if due >= deadline:
            break
        if due > now:
            await asyncio.sleep(due - now)
        sec = int(time.time())
        b = buckets.setdefault(sec, [0, 0])
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
            writer.write(requests[i % len(requests)])
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
            code = int(head[9:12])
            lower = head.lower()
            k = lower.find(b"content-length:")
            length = int(lower[k + 15 : lower.find(b"\r\n", k)]) if k >= 0 else 0
            body = await asyncio.wait_for(reader.readexactly(length), timeout_s) if length else b""
            if code == 200:
                b[0] += 1
            else:
                b[1] += 1
                if len(failures) < 20:
                    failures.append([sec, code, body[:200].decode(errors="replace")])
        except (OSError, asyncio.IncompleteReadError, TimeoutError, asyncio.LimitOverrunError) as exc:
            b[1] += 1
            if len(failures) < 20:
                failures.append([sec, type(exc).__name__, ""])
            if writer is not None:
                writer.close()
            reader = writer = None
        i += conns
    if writer is not None:
        writer.close()


async def run(host: str, port: int, path: str, rate: float, duration_s: float, conns: int, bodies: list[bytes],
              timeout_s: float = 2.0, api_key: str | None = None) -> dict:
    requests = encode_requests(host, port, path, bodies, api_key=api_key)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    buckets: dict[int, list[int]] = {}
    failures: list = []
    start = time.time()
    await asyncio.gather(*(_worker(host, port, requests, j, conns, rate, start, start + duration_s, buckets, stop,
                                   timeout_s, failures) for j in range(conns)))
    return {"start": start, "end": time.time(), "rate": rate, "buckets": {str(k): v for k, v in sorted(buckets.items())},
            "failures": failures}


def main() -> None:
    host, port, path, rate, duration, conns, bodies_file, out_file = sys.argv[1:9]
    bodies = [json.dumps(b, separators=(",", ":")).encode() for b in json.loads(open(bodies_file).read())]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(host, int(port), path, float(rate), float(duration), int(conns), bodies,
                             api_key=os.environ.get("RTML_API_KEY")))  # the key from the environment, never argv
    with open(out_file, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
