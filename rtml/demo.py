"""`rtml demo`: the whole loop on embedded defaults, in about ten minutes on two cores.

1. stack up (Kafka, Redis)           6. stream job (Spark) started on the transactions topic
2. 15 days of history, drift on day 15  7. drift monitor started on the predictions topic
3. feast apply                        8. day 15 replayed: a product service scores each transaction
4. backfill days 1-14 -> Parquet+Redis    (POST /predict_batch), then it is published to Kafka
5. train + gate -> production model   9. drift alert -> retraining -> gate -> summary

Day 15 is replayed from the simulator's history at a high rate with its original event times, so the
features the service sees have the same meaning as in training (a live stream at a demo-friendly rate
would make every card holder hundreds of times more active than in the history). The replay compresses
a day into a minute or two, so it is paced by the stream job: every ``stream_sync_minutes`` of event
time it waits until the stream job has processed every transaction sent so far (its committed Kafka
offsets), so served features are never older than that much event time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.errors import UserFacingError
from core.settings import settings
from rtml.steps import Timeline, run_steps


@dataclass
class DemoOptions:
    days: int = 15
    users: int = 2000
    merchants: int = 300
    seed: int = 42
    scenario: str = "amount_shift"
    scenario_strength: float = 1.5
    drift_after_hours: float = 10.0  # into the replayed day
    window_size: int = 1500
    replay_rate: float = 400.0  # transactions/s sent by the simulated product service
    stream_sync_minutes: float = 30.0  # of event time between waits for the stream job to catch up
    port: int = 3000
    keep_running: bool = False
    retrain_timeout_s: float = 420.0
    train_trials: int = 1
    s3: bool = False  # the offline store on a local s3proxy (RTML_DATA_DIR=s3://rtml-demo/data)


def api_key_file() -> Path:
    """The demo product service's API key (scopes predict, predict_batch, metrics; a 0600 file in the state dir's
    secrets): docs/product-services.md tells readers to ``export RTML_API_KEY=$(cat ...)`` from it."""
    return settings().secrets_dir / "demo_api_key"


@dataclass
class Demo:
    options: DemoOptions
    timeline: Timeline = field(default_factory=Timeline)
    background: dict[str, subprocess.Popen] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    api_key: str | None = field(default=None, repr=False)
    stream_job: str = ""

    # -- helpers -----------------------------------------------------------------------------
    @property
    def start(self) -> datetime:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return today - timedelta(days=self.options.days)

    @property
    def live_start(self) -> datetime:
        return self.start + timedelta(days=self.options.days - 1)

    def rtml(self, *args: str) -> None:
        """Run an `rtml` stage in the foreground; its progress bars show through."""
        cmd = [sys.executable, "-m", "rtml.cli", *args]
        done = subprocess.run(cmd, env=os.environ.copy())
        if done.returncode:
            raise UserFacingError(f"`rtml {' '.join(args)}` failed (exit {done.returncode}); see its output above")

    def spawn(self, name: str, *args: str, ready_line: str | None = None, timeout: float = 240.0) -> Path:
        """Start an `rtml` stage detached, logging to a file; wait until ``ready_line`` appears in its log."""
        log_path = settings().run_dir / f"demo-{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "w")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "rtml.cli", *args], stdout=log, stderr=subprocess.STDOUT,
            env=os.environ.copy(), start_new_session=True,
        )
        self.background[name] = proc
        deadline = time.monotonic() + timeout
        while ready_line and ready_line not in log_path.read_text(errors="replace"):
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-1500:]
                raise UserFacingError(f"{name} exited with {proc.returncode}; last lines of {log_path}:\n{tail}")
            if time.monotonic() > deadline:
                raise UserFacingError(f"{name} not ready after {timeout:.0f} s; see {log_path}")
            time.sleep(0.5)
        return log_path

    def stop_background(self) -> None:
        for name, proc in reversed(list(self.background.items())):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                print(f"   stopped {name}")
        self.background.clear()
        subprocess.run([sys.executable, "-m", "rtml.cli", "serve", "--stop", "--port", str(self.options.port)],
                       capture_output=True)

    # -- steps -------------------------------------------------------------------------------
    def stack_up(self) -> str:
        from infra import stack

        info = stack.up(progress=True, s3=self.options.s3)
        self.facts["stack_started"] = "yes" if getattr(info, "started", False) else "reused"
        return f"Kafka {settings().kafka_bootstrap}, Redis {settings().redis_url}, data {settings().data_url}"

    def history(self) -> str:
        o = self.options
        at = self.live_start + timedelta(hours=o.drift_after_hours)
        self.facts["drift_starts_at"] = at.isoformat()
        self.rtml("simulate", "--days", str(o.days), "--users", str(o.users), "--merchants", str(o.merchants),
                  "--seed", str(o.seed), "--start", self.start.isoformat(), "--scenario", o.scenario,
                  "--scenario-at", at.isoformat(), "--scenario-strength", str(o.scenario_strength))
        return f"{o.days} days from {self.start:%Y-%m-%d}, drift '{o.scenario}' from {at:%Y-%m-%d %H:%M} UTC"

    def apply(self) -> None:
        self.rtml("apply")

    def materialize(self) -> str:
        self.rtml("materialize", "--end", self.live_start.isoformat())
        return "user and merchant profiles as of the replayed day, in Redis"

    def backfill(self) -> str:
        self.rtml("backfill", "--start", self.start.isoformat(), "--end", self.live_start.isoformat())
        return f"stream features for {self.start:%m-%d} .. {self.live_start:%m-%d}, materialized to Redis"

    def train(self) -> str:
        self.rtml("train", "--end", self.live_start.isoformat(), "--cutoff", self.live_start.isoformat(),
                  "--trials", str(self.options.train_trials), "--join", "fast")
        from core.model_store import production_tag

        tag = production_tag()
        if not tag:
            raise UserFacingError("the first model did not pass its checks; see the training output above")
        self.facts["first_model"] = tag
        return f"production model {tag}"

    def serve(self) -> str:
        """The service requires API keys: the demo's product service gets its own (kept in a 0600 file, never printed)."""
        from rtml.commands.keys import create

        key_file = api_key_file()
        token = create("demo-product-service", ["predict", "predict_batch", "metrics"], reason="rtml demo product service")
        key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_file.write_text(token)
        key_file.chmod(0o600)
        self.api_key = token
        self.facts["api_key_file"] = str(key_file)
        self.rtml("serve", "--detach", "--port", str(self.options.port))
        self.facts["api"] = f"http://127.0.0.1:{self.options.port}"
        return f"{self.facts['api']}/predict (API key in {key_file})"

    def stream(self) -> str:
        self.stream_job = f"demo-{int(time.time())}"
        log = self.spawn("stream", "stream", "--job-name", self.stream_job, "--starting-offsets", "latest",
                         "--trigger-seconds", "0.5", ready_line="rtml stream: running")
        self.facts["stream_log"] = str(log)
        return f"Kafka transactions -> Spark -> Redis + Parquet (metrics :{settings().stream_metrics_port})"

    def monitor(self) -> str:
        o = self.options
        log = self.spawn(
            "monitor", "monitor", "--window-size", str(o.window_size), "--group", f"rtml-monitor-demo-{int(time.time())}",
            # default drift settings: the model's calibration (seasonal reference, thresholds measured on
            # its training period) keeps the daily cycle quiet; only the retraining is hurried for the demo
            "--retrain-windows", "2",
            "--retrain-command", f"{sys.executable} -m rtml.cli train --trials {o.train_trials} --join fast",
            "--retrain-cooldown-minutes", "30", "--latest-report-minutes", "0.1",
        )
        self.facts["monitor_log"] = str(log)
        return f"windows of {o.window_size} predictions (metrics :{settings().monitor.metrics_port})"

    def replay(self) -> str:
        from rtml.product_traffic import replay_day

        report = replay_day(self.live_start, self.live_start + timedelta(days=1), self.facts["api"],
                            rate_per_s=self.options.replay_rate, api_key=self.api_key, sync=self.stream_caught_up,
                            sync_every_s=self.options.stream_sync_minutes * 60)
        self.facts.update({k: str(v) for k, v in report.items()})
        return (f"{report['scored']} transactions scored ({report['errors']} errors), p50 {report['p50_ms']:.1f} ms, "
                f"p99 {report['p99_ms']:.1f} ms per batch; {report['stream_syncs']} waits for the stream job "
                f"({report['stream_wait_s']:.0f} s)")

    def stream_caught_up(self, published: dict[int, int], timeout_s: float = 180.0) -> float:
        """Block until the stream job committed a micro-batch past ``published`` (partition -> highest offset
        sent) on the transactions topic; the seconds waited."""
        from core.contracts import domain_topics
        from streaming.evolution import committed_offsets
        from streaming.stream_job import StreamOptions

        topic = domain_topics().events
        folder = StreamOptions(job_name=self.stream_job).checkpoint()  # where `rtml stream --job-name` keeps it
        log = self.facts.get("stream_log", "the stream job's log")
        t0 = time.monotonic()
        while True:
            queries = sorted(folder.glob("spark-*"), key=lambda p: p.stat().st_mtime)
            done = json.loads(committed_offsets(queries[-1]) or "{}").get(topic, {}) if queries else {}
            if all(int(done.get(str(p), 0)) > offset for p, offset in published.items()):
                return time.monotonic() - t0
            proc = self.background.get("stream")
            if proc is not None and proc.poll() is not None:
                raise UserFacingError(f"the stream job exited ({proc.returncode}); see {log}")
            if time.monotonic() - t0 > timeout_s:
                raise UserFacingError(f"the stream job has not caught up after {timeout_s:.0f} s; see {log}")
            time.sleep(0.1)

    def wait_for_alert_and_retraining(self) -> str:
        from core.model_store import list_models
        from rtml.product_traffic import wait_for_alert

        alert = wait_for_alert(timeout_s=120, since_ms=self.started_ms)
        if alert is None:
            raise UserFacingError(f"no drift alert within 120 s; see {self.facts['monitor_log']}")
        self.facts["alert"] = f"{alert.get('alert')}: {alert.get('summary')}"
        self.timeline.note("alert raised", self.facts["alert"])
        before = {m["tag"] for m in list_models()}
        deadline = time.monotonic() + self.options.retrain_timeout_s
        while time.monotonic() < deadline:
            new = [m for m in list_models() if m["tag"] not in before]
            if new:
                break
            time.sleep(2)
        else:
            raise UserFacingError(f"no retrained model within {self.options.retrain_timeout_s:.0f} s; see {self.facts['monitor_log']}")
        from core.model_store import history, production_tag

        tag = new[0]["tag"]
        self.facts["retrained_model"] = tag
        # The model is registered before its gate decides: report the registry once the run has finished.
        finished = self._wait_for_retraining_run(deadline)
        self.facts["production_after"] = production_tag() or ""
        promotions = [e for e in history() if e["action"] == "promote" and e["tag"] == tag]
        if self.facts["production_after"] == tag:
            verdict = f"promoted ({promotions[-1]['reason']})" if promotions else "promoted"
        elif finished:
            verdict = f"kept, not promoted by the gate; production stays {self.facts['production_after']}"
        else:
            verdict = "gate decision still pending when the demo stopped waiting"
        return f"retrained {tag}: {verdict}"

    def _wait_for_retraining_run(self, deadline: float) -> bool:
        """Wait until the monitor has seen its retraining run finish (decisions.jsonl); False at the deadline."""
        decisions = settings().state_dir / "monitor" / "retrain" / "decisions.jsonl"
        since = self.started_ms / 1000
        while time.monotonic() < deadline:
            if decisions.exists():
                for line in decisions.read_text().splitlines():
                    entry = json.loads(line)
                    if entry.get("event") == "finished" and entry.get("at", 0) >= since:
                        return True
            time.sleep(1)
        return False

    def summary(self) -> None:
        s = settings()
        print("\n=== rtml demo: what happened ===")
        print(self.timeline.render())
        print("\nWhere to look:")
        for label, value in (
            ("prediction API", f"{self.facts.get('api', '')}/predict  (docs: {self.facts.get('api', '')}/docs)"),
            ("service metrics", f"{self.facts.get('api', '')}/metrics"),
            ("API key", f"export RTML_API_KEY=$(cat {self.facts.get('api_key_file', '')}); "
                        "curl -H \"Authorization: Bearer $RTML_API_KEY\" ..."),
            ("stream job metrics", f"http://127.0.0.1:{s.stream_metrics_port}/metrics"),
            ("monitor metrics", f"http://127.0.0.1:{s.monitor.metrics_port}/metrics"),
            ("drift reports", str(s.state_dir / "reports" / "drift")),
            ("model reports", str(s.state_dir / "reports" / "models")),
            ("logs", str(s.run_dir)),
        ):
            print(f"  {label:20s} {value}")
        print("\nFacts:", json.dumps(self.facts, indent=2))

    def run(self) -> int:
        steps = [
            ("Start the local stack", self.stack_up),
            ("Simulate history with a drift scenario", self.history),
            ("Register the feature repo (feast apply)", self.apply),
            ("Backfill stream features (Spark) and materialize", self.backfill),
            ("Materialize batch features (profiles) to Redis", self.materialize),
            ("Train, evaluate, gate and register the first model", self.train),
            ("Start the prediction service (BentoML)", self.serve),
            ("Start the stream job (Spark Structured Streaming)", self.stream),
            ("Start the drift monitor", self.monitor),
            ("Replay the last day as live traffic", self.replay),
            ("Wait for the drift alert and the retraining", self.wait_for_alert_and_retraining),
        ]
        try:
            run_steps(steps, self.timeline)
            self.summary()
            if self.options.keep_running:
                print("\nServices keep running; Ctrl-C stops them.")
                while True:
                    time.sleep(3600)
        finally:
            print("\nShutting down ...")
            self.stop_background()
            from infra import stack

            stack.down(progress=False)
        return 0


def fresh_state() -> None:
    """Stop leftovers of an earlier demo in this state dir and start from an empty one."""
    from infra import stack

    s = settings()
    stack.down(progress=False)
    if s.state_dir.exists():
        shutil.rmtree(s.state_dir)
