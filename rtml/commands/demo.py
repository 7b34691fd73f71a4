"""`rtml demo`: run the whole loop (stack, history, features, training, serving, streaming, drift, retraining)."""

from __future__ import annotations

import argparse
import logging
import os
import socket


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rtml.demo import DemoOptions

    d = DemoOptions()
    parser.add_argument("--users", type=int, default=d.users, help=f"card holders (default {d.users})")
    parser.add_argument("--merchants", type=int, default=d.merchants, help=f"merchants (default {d.merchants})")
    parser.add_argument("--days", type=int, default=d.days, help=f"days of history; the last is replayed live (default {d.days})")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--scenario", default=d.scenario, help="drift scenario: amount_shift, merchant_mix, new_fraud_pattern")
    parser.add_argument("--scenario-strength", type=float, default=d.scenario_strength)
    parser.add_argument("--window-size", type=int, default=d.window_size, help="predictions per drift window")
    parser.add_argument("--replay-rate", type=float, default=d.replay_rate, help="transactions/s of the replayed day")
    parser.add_argument("--port", type=int, default=d.port, help="HTTP port of the prediction service")
    parser.add_argument("--keep-running", action="store_true", help="leave the services up after the summary (Ctrl-C stops)")
    parser.add_argument("--s3", action="store_true",
                        help="keep the offline store on a local S3 server (s3proxy, RTML_DATA_DIR=s3://rtml-demo/data)")
    parser.add_argument("--keep-state", action="store_true", help="do not wipe the demo's state folder first")


def run(args: argparse.Namespace) -> int:
    from core.settings import settings

    # The demo works in a folder of its own, wiped at start, so it never touches your state.
    os.environ["RTML_STATE_DIR"] = str(settings().state_dir / "demo")
    os.environ.pop("RTML_DATA_DIR", None)
    if args.s3:
        os.environ["RTML_DATA_DIR"] = "s3://rtml-demo/data"
    from rtml.demo import Demo, DemoOptions, fresh_state

    root = logging.getLogger()
    if root.level == logging.INFO:  # the demo prints one line per step; the stages' INFO logs would repeat them
        root.setLevel(logging.WARNING)

    if not args.keep_state:
        fresh_state()
    _own_ports()
    options = DemoOptions(
        days=args.days, users=args.users, merchants=args.merchants, seed=args.seed, scenario=args.scenario,
        scenario_strength=args.scenario_strength, window_size=args.window_size, replay_rate=args.replay_rate,
        port=args.port, keep_running=args.keep_running, s3=args.s3,
    )
    return Demo(options).run()


def _free_port(pair: bool = False) -> int:
    """A free local TCP port (and the one after it, with ``pair``)."""
    from infra.proc import port_open

    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 65535 and not (pair and port_open("127.0.0.1", port + 1)):
            return port
    raise RuntimeError("no free local port pair found")


def _own_ports() -> None:
    """The demo starts a Kafka broker and a Redis of its own. When their default ports are taken by something
    else (typically your `rtml up` stack, whose credentials live in another state dir), it moves them to free
    ports instead of failing on, or writing into, that stack. Ports you set yourself are kept."""
    from core.settings import settings
    from infra.proc import port_open

    s = settings()
    if not os.environ.get("RTML_KAFKA_PORT") and not os.environ.get("RTML_KAFKA_BOOTSTRAP"):
        host, port = s.kafka_host_port
        if port_open(host, port) or port_open(host, port + 1):
            port = _free_port(pair=True)
            os.environ["RTML_KAFKA_PORT"] = str(port)
            os.environ["RTML_KAFKA_CONTROLLER_PORT"] = str(port + 1)
            print(f"demo: Kafka's default port is taken (another stack?): the demo's broker uses {port}")
    if not os.environ.get("RTML_REDIS_PORT") and not os.environ.get("RTML_REDIS_URL"):
        if port_open("127.0.0.1", 6379):
            port = _free_port()
            os.environ["RTML_REDIS_PORT"] = str(port)
            print(f"demo: Redis's default port is taken (another stack?): the demo's Redis uses {port}")
