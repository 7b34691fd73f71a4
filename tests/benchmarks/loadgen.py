"""Closed-loop HTTP load generator (its own process, so the client's CPU use is visible and bounded).

``concurrency`` keep-alive connections each send one request, wait for the full response, record the
latency and send the next, for ``duration_s``. Requests are pre-encoded HTTP/1.1 bytes and responses are
parsed by Content-Length with asyncio streams on uvloop: a few microseconds of client CPU per request,
so on a 2-core machine the client takes as little as possible from the server.

Run: ``python loadgen.py URL_PATH HOST PORT CONCURRENCY DURATION_S BODIES_JSON_FILE`` -> JSON on stdout
(latencies in seconds, status counts, when requests failed). ``RTML_API_KEY`` in the environment (never on
the command line) is sent as ``Authorization: Bearer``: the prediction service requires a key.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time


def encode_requests(host: str, port: int, path: str, bodies: list[bytes], api_key: str | None = None) -> list[bytes]:
    auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
    return [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {len(b)}\r\nConnection: keep-alive\r\n\r\n"
        ).encode()
        + b
        for b in bodies
    ]


async def _worker(host: str, port: int, requests: list[bytes], offset: int, deadline: float, lat: list[float], status: dict,
                  warmup_until: float, failures: list) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = offset
    n = len(requests)
    perf = time.perf_counter
    try:
        while True:
            t0 = perf()
            if t0 >= deadline:
                break
            writer.write(requests[i % n])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            code = int(head[9:12])
            length = 0
            lower = head.lower()
            k = lower.find(b"content-length:")
            if k >= 0:
                length = int(lower[k + 15 : lower.find(b"\r\n", k)])
            body = await reader.readexactly(length) if length else b""
            t1 = perf()
            if t0 >= warmup_until:
                lat.append(t1 - t0)
                status[code] = status.get(code, 0) + 1
                if code != 200:  # when (s after the warm-up) and, for the first few, what
                    failures.append([t0 - warmup_until, code, body[:300].decode(errors="replace") if len(failures) < 3 else ""])
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        status[type(exc).__name__] = status.get(type(exc).__name__, 0) + 1
    finally:
        writer.close()


async def run(host: str, port: int, path: str, concurrency: int, duration_s: float, bodies: list[bytes], warmup_s: float = 1.0,
              api_key: str | None = None) -> dict:
    requests = encode_requests(host, port, path, bodies, api_key)
    lat: list[float] = []
    status: dict = {}
    failures: list = []
    start = time.perf_counter()
    warmup_until = start + warmup_s
    start_epoch = time.time() + warmup_s
    deadline = warmup_until + duration_s
    cpu0 = time.process_time()
    await asyncio.gather(
        *(_worker(host, port, requests, j * 997, deadline, lat, status, warmup_until, failures) for j in range(concurrency))
    )
    elapsed = time.perf_counter() - warmup_until
    return {
        "latencies_s": lat,
        "status": {str(k): v for k, v in status.items()},
        "elapsed_s": elapsed,
        "client_cpu_s": time.process_time() - cpu0,
        "start_epoch": start_epoch,
        "failures": failures,  # [seconds after the warm-up, status, body (first three)]
    }


def main() -> None:
    path, host, port, conc, duration, bodies_file = sys.argv[1:7]
    bodies = [json.dumps(b, separators=(",", ":")).encode() for b in json.loads(open(bodies_file).read())]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(host, int(port), path, int(conc), float(duration), bodies, api_key=os.environ.get("RTML_API_KEY")))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
