"""`make security`: every probe of :mod:`tests.security.probes` against the real local stack.

Starts what does not run yet for the current settings (Kafka, Redis: `infra.stack.up`; a prediction service
with a tiny test model and known features, on a free port, with its own API keys) and stops, by pid, only
what it started. Writes ``tests/benchmarks/results/security.json``::

    {"probes": [{"name", "group", "tried", "expected", "got", "passed", "detail", "seconds"}, ...],
     "passed": n, "failed": n, "measured_at": ..., "load": "<uptime>", "stack": {...}}

``--fast`` runs only the probes that need no prediction service (those of `make test`). Exit code 1 when a
probe failed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from core.settings import REPO_ROOT, settings
from tests.security.probes import PROBES, Context, run_probe

RESULT = REPO_ROOT / "tests" / "benchmarks" / "results" / "security.json"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class ServiceUnderTest:
    """A prediction service on the stack: known features in Redis, a test model, API keys (stopped on exit)."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.url: str | None = None

    def start(self) -> tuple[str, dict[str, str], dict]:
        import pandas as pd

        from bentos import auth
        from bentos.commands import serve
        from core import model_store
        from core.feast_store import apply_repo
        from tests.fixtures import models as fixture_models
        from tests.serving.conftest import MERCHANT_BASE, USER_BASE, load_online, write_feature_data

        model_store.bentoml_home()
        now = pd.Timestamp.now(tz="UTC").floor("s")
        data = write_feature_data(settings().data_dir, now)
        apply_repo()
        load_online(now, data)
        fixture_models.save_test_model(n_rows=2000, rounds=10, promote_it=True)
        keys = {scope: auth.create_key(f"security-probe-{scope}", [scope]) for scope in ("predict", "metrics", "admin")}
        self.port = _free_port()
        _pid, self.url = serve.start_detached("prediction", "127.0.0.1", self.port, workers=1, timeout=180)
        request = {"transaction_id": "t-security-probe", "user_id": USER_BASE + 1, "merchant_id": MERCHANT_BASE + 1,
                   "amount": 42.5, "currency": "EUR", "country": "DE", "channel": "web",
                   "timestamp": now.isoformat().replace("+00:00", "Z")}
        return self.url, keys, request

    def stop(self) -> None:
        if self.port is not None:
            from bentos.commands import serve

            serve.stop(self.port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="only the probes that need no prediction service")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("-k", dest="pattern", default=None, help="only probes whose name contains this")
    args = parser.parse_args(argv)

    from infra import kafka_broker, redis_server
    from infra.commands import quiet_client_logs
    from infra.stack import up

    quiet_client_logs()
    # The probes authenticate as each role with its own credentials: no session-wide override.
    for name in ("RTML_KAFKA_USER", "RTML_KAFKA_PASSWORD", "RTML_REDIS_USER", "RTML_REDIS_PASSWORD"):
        os.environ.pop(name, None)
    s = settings()
    info = up(progress=False, spark_jars=False)
    selected = [p for p in PROBES if (p.fast or not args.fast) and (args.pattern is None or args.pattern in p.name)]
    service = ServiceUnderTest()
    ctx = Context(s=s)
    if info.redis.managed:
        ctx.restart_redis = (redis_server.stop_redis, redis_server.start_redis)
    results = []
    try:
        if any(p.group == "api" for p in selected):
            from core.kafka_io import credentials

            # the service (and the demo data it needs) uses the admin credentials of this stack's own users
            kafka_admin = credentials("admin", s)
            if kafka_admin:
                os.environ["RTML_KAFKA_USER"], os.environ["RTML_KAFKA_PASSWORD"] = kafka_admin
            ctx.api_url, ctx.keys, ctx.request = service.start()
            for name in ("RTML_KAFKA_USER", "RTML_KAFKA_PASSWORD"):
                os.environ.pop(name, None)
        for p in selected:
            entry = run_probe(p, ctx)
            results.append(entry)
            print(f"{'PASS' if entry['passed'] else 'FAIL'}  {p.name:<52} {entry['got'][:100]}", flush=True)
    finally:
        service.stop()
        if info.kafka.started:
            kafka_broker.stop(progress=False, s=s)
        if info.redis.started:
            redis_server.stop(progress=False, s=s)
    failed = [r for r in results if not r["passed"]]
    out = {
        "probes": results,
        "passed": len(results) - len(failed),
        "failed": len(failed),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load": _load(),
        "stack": {"kafka": s.kafka_bootstrap, "kafka_security": s.kafka_auth.security, "redis": s.redis_url,
                  "redis_security": s.redis_security, "python": sys.version.split()[0]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{out['passed']}/{len(results)} probes passed -> {args.out.relative_to(REPO_ROOT) if args.out.is_relative_to(REPO_ROOT) else args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
