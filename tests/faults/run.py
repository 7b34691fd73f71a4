"""`make faults`: the fault matrix against the real local stack -> tests/benchmarks/results/reliability.json.

    python -m tests.faults.run            # full: 3-node Kafka, serving under load, soak 500 req/s for 10 min
    python -m tests.faults.run --short    # a few scenarios (< 3 min): what `make test` runs too
    python -m tests.faults.run --only redis_slow,poison
    python -m tests.faults.run --update a.json b.json   # rows of later --only runs replace the same rows of --out

Starts what it needs for the current settings (Kafka, Redis with its append-only file, the prediction
service on RTML_FAULTS_SERVE_PORT, default 3300) and stops, by pid, what it started.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.faults.harness import REPO_ROOT, Outcome

RESULT = REPO_ROOT / "tests" / "benchmarks" / "results" / "reliability.json"
SHORT = ("stream_after_online_write", "poison")
FULL = ("stream_before_online_write", "stream_after_online_write", "stream_after_batch_record",
        "stream_after_state_commit", "retention_gap", "poison", "kafka_lose_one", "kafka_sigkill", "redis_sigkill", "redis_slow",
        "monitor", "disk_full", "soak")
NEEDS_SERVING = {"kafka_sigkill", "redis_sigkill", "redis_slow", "soak"}


def _env(full: bool) -> None:
    os.environ.setdefault("RTML_REDIS_APPENDONLY", "yes")  # a SIGKILLed Redis comes back with its data
    if full:
        os.environ.setdefault("RTML_KAFKA_BROKERS", "3")
        os.environ.setdefault("RTML_KAFKA_HEAP", "384m")


def run_matrix(names: tuple[str, ...], work: Path, log=print) -> list[Outcome]:
    """Run the named scenarios against the stack of the current settings (started here if needed)."""
    from core.kafka_io import credentials
    from core.settings import settings
    from infra import kafka_broker, redis_server
    from infra.stack import up
    from tests.faults import scenarios as sc

    info = up(progress=False)
    s = settings()
    admin = credentials("admin", s)
    if admin is not None and not s.kafka_auth.user:  # scenario topics are throwaway: clients act as admin
        os.environ["RTML_KAFKA_USER"], os.environ["RTML_KAFKA_PASSWORD"] = admin
    serving = None
    outcomes: list[Outcome] = []
    try:
        from core import model_store
        from core.feast_store import apply_repo, get_store
        from streaming.feature_specs import load_stream_spec

        apply_repo()
        store = get_store()
        ctx = sc.Ctx(work=work, store=store, specs=load_stream_spec(store).views, brokers=s.broker.brokers)
        if set(names) & (NEEDS_SERVING | {"monitor"}) and not model_store.production_tag():
            from tests.fixtures.models import save_test_model

            save_test_model(n_rows=3000, rounds=30, promote_it=True)
        if set(names) & NEEDS_SERVING:
            serving = sc.Serving(work, int(os.environ.get("RTML_FAULTS_SERVE_PORT") or 3300))
            serving.start()
            ctx.serving = serving
        plan = {
            "stream_before_online_write": lambda: [sc.stream_kill(ctx, "before_online_write", 1)],
            "stream_after_online_write": lambda: [sc.stream_kill(ctx, "after_online_write", 2)],
            "stream_after_batch_record": lambda: [sc.stream_kill(ctx, "after_batch_record", 3)],
            "stream_after_state_commit": lambda: [sc.stream_kill(ctx, "after_state_commit", 4)],
            "retention_gap": lambda: [sc.retention_gap(ctx)],
            "poison": lambda: sc.poison(ctx),
            "kafka_lose_one": lambda: [sc.kafka_lose_one_acked(ctx)] if ctx.brokers >= 3 else [],
            "kafka_sigkill": lambda: [sc.kafka_sigkill(ctx, 5)],
            "redis_sigkill": lambda: [sc.redis_sigkill(ctx, 6)],
            "redis_slow": lambda: [sc.redis_slow(ctx, 7)],
            "monitor": lambda: [sc.monitor_sigkill(ctx)],
            "disk_full": lambda: [sc.offline_disk_full(ctx)],
            "soak": lambda: [sc.soak(ctx)],
        }
        for name in names:
            t0 = time.monotonic()
            try:
                got = plan[name]()
            except Exception as exc:  # noqa: BLE001 - a scenario that breaks is a failed scenario, the rest run
                got = [Outcome(name, detail=f"scenario raised {type(exc).__name__}: {exc}"[:1000])]
            for o in got:
                log(f"{'PASS' if o.passed else 'FAIL'} {o.name}: sent {o.sent}, lost {o.lost}, duplicated "
                    f"{o.duplicated}, failed requests {o.failed_requests_faulted}/{o.failed_requests_after_recovery} "
                    f"({time.monotonic() - t0:.0f} s) - {o.detail[:400]}")
            outcomes += got
    finally:
        if serving is not None:
            serving.stop()
        if info.kafka.started:
            kafka_broker.stop(progress=False, s=s)
        if info.redis.started:
            redis_server.stop(progress=False, s=s)
    return outcomes


def merge(parts: list[Path], out: Path) -> int:
    """One reliability.json from runs of disjoint groups (each part keeps its own load and duration)."""
    runs = [json.loads(p.read_text()) for p in parts]
    scenarios = [s for r in runs for s in r["scenarios"]]
    load = os.getloadavg()
    payload = {
        "scenarios": scenarios,
        "measured_at": max(r["measured_at"] for r in runs),
        "load": {"1m": round(load[0], 2), "5m": round(load[1], 2), "15m": round(load[2], 2),
                 "parts": [r["load"] for r in runs]},
        "mode": "full (groups run side by side: " + "; ".join(",".join(s["name"] for s in r["scenarios"]) for r in runs) + ")",
        "seconds": max(r["seconds"] for r in runs),
        "passed": sum(s["passed"] for s in scenarios),
        "total": len(scenarios),
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"{payload['passed']}/{payload['total']} scenarios passed -> {out}")
    return 0 if payload["passed"] == payload["total"] else 1


def update(parts: list[Path], out: Path) -> int:
    """--out with its rows replaced by the same-named rows of later partial runs (``--only``); each part's
    time, load and rows are kept under ``load.reruns`` so every figure keeps the load it was measured at."""
    payload = json.loads(out.read_text())
    rows = {s["name"]: s for s in payload["scenarios"]}
    reruns = payload.setdefault("load", {}).setdefault("reruns", [])
    for part in parts:
        run = json.loads(part.read_text())
        for group in run.get("groups", []):  # a group that raised left a row named after it
            rows.pop(group, None)
        for s in run["scenarios"]:
            rows[s["name"]] = s
        reruns.append({"measured_at": run["measured_at"], "load": run["load"], "seconds": run.get("seconds"),
                       "rows": [s["name"] for s in run["scenarios"]]})
    payload["scenarios"] = list(rows.values())
    if "rows re-run" not in payload.get("mode", ""):
        payload["mode"] = payload.get("mode", "") + "; rows re-run later replace theirs (load.reruns)"
    payload["measured_at"] = max([payload["measured_at"], *(r["measured_at"] for r in reruns)])
    payload["passed"] = sum(s["passed"] for s in payload["scenarios"])
    payload["total"] = len(payload["scenarios"])
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"{payload['passed']}/{payload['total']} scenarios passed -> {out}")
    return 0 if payload["passed"] == payload["total"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--short", action="store_true", help="a few scenarios (CI)")
    p.add_argument("--only", default=None, help="comma-separated scenario groups: " + ",".join(FULL))
    p.add_argument("--out", default=str(RESULT))
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="combine the results of runs of disjoint scenario groups into --out (no run)")
    p.add_argument("--update", nargs="+", default=None, metavar="JSON",
                   help="replace the rows of --out by the same-named rows of these partial runs (no run)")
    args = p.parse_args(argv)
    if args.update:
        return update([Path(f) for f in args.update], Path(args.out))
    if args.merge:
        return merge([Path(f) for f in args.merge], Path(args.out))
    names = tuple(args.only.split(",")) if args.only else (SHORT if args.short else FULL)
    _env(full=not args.short)
    work = Path(tempfile.mkdtemp(prefix="faults-", dir=os.environ.get("RTML_STATE_DIR") or None))
    started = time.time()
    load0 = os.getloadavg()
    outcomes = run_matrix(names, work)
    load = os.getloadavg()
    payload = {
        "scenarios": [o.row() for o in outcomes],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load": {"1m": round(load[0], 2), "5m": round(load[1], 2), "15m": round(load[2], 2),
                 "1m_at_start": round(load0[0], 2)},
        "mode": "short" if args.short else ("only" if args.only else "full"),
        "groups": list(names),
        "seconds": round(time.time() - started, 1),
        "passed": sum(o.passed for o in outcomes),
        "total": len(outcomes),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"{payload['passed']}/{payload['total']} scenarios passed in {payload['seconds']:.0f} s -> {args.out}")
    return 0 if payload["passed"] == payload["total"] else 1


if __name__ == "__main__":
    sys.exit(main())
