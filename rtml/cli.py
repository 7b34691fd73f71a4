"""The `rtml` command: one subcommand per stage.

Each subcommand lives in the module named below, which defines ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their subcommand runs, so `rtml --help`
stays instant and a missing heavy dependency only affects the stage that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
import warnings

from core.errors import UserFacingError

# name -> (module, one-line help). Add a stage by adding a line.
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("infra.commands.up", "Start the local stack (Kafka, Redis) or reuse what already runs."),
    "down": ("infra.commands.down", "Stop what `rtml up` started (by pid)."),
    "status": ("infra.commands.status", "Show what runs: broker, Redis, their pids and addresses."),
    "apply": ("rtml.commands.apply", "Register the feature repo (`feast apply` with rtml's settings)."),
    "materialize": ("rtml.commands.materialize", "Load the latest offline feature values into Redis (full or incremental)."),
    "features": ("rtml.commands.features", "Print the online features of some entities (KEY=ID, e.g. user_id=42)."),
    "train": ("training.commands.train", "Build a point-in-time training set, train XGBoost, evaluate, register (gated promotion)."),
    "models": ("rtml.commands.models", "Model registry and rollouts: list, promote, rollback, history, rollout, complete, abort, rollout-status."),
    "score": ("bentos.commands.score", "Batch-score historical events with point-in-time features (Parquet with scores and decisions)."),
    "audit": ("rtml.commands.audit", "Show the audit trail: feature applies, promotions, rollbacks, API keys (who, when, why)."),
    "experiments": ("training.commands.experiments", "MLflow training runs: list, compare RUN RUN."),
    "demo": ("rtml.commands.demo", "Run the whole loop on embedded defaults: stack, history, training, serving, drift, retraining."),
    "simulate": ("streaming.commands.simulate", "Generate history to Parquet and/or a live transaction stream to Kafka."),
    "stream": ("streaming.commands.stream", "Run the Kafka -> Spark -> Feast (Redis + Parquet) stream feature job."),
    "backfill": ("streaming.commands.backfill", "Recompute stream features from historical events (Spark batch) and re-materialize Redis."),
    "keys": ("rtml.commands.keys", "API keys of the prediction service: create, list, revoke."),
    "serve": ("bentos.commands.serve", "Run the online prediction service (BentoML); --detach waits for readiness."),
    "monitor": ("monitoring.commands.monitor", "Watch predictions for drift and decay: Prometheus metrics, alerts, retraining trigger."),
    "consistency": ("monitoring.commands.consistency", "Online/offline consistency of the served features (report for the promotion gate)."),
}


def quiet_third_parties() -> None:
    """One line per step for users: no library INFO spam, no known third-party warnings."""
    for noisy in ("kafka", "py4j", "urllib3", "httpx", "feast", "bentoml", "_bentoml_impl", "evidently", "mlflow",
                  "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="Stream feature views are experimental", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(feast|bentoml|evidently|pandas|sklearn)\b.*")
    # Feast's modules put `simplefilter("once", ...)` in front of every filter when they are first imported, so
    # filters alone lose: the known warnings are also dropped where they would be shown.
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not _KNOWN_WARNING.search(str(message)) and not issubclass(category, DeprecationWarning):
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


# the last: prometheus_client warns whenever Feast has set PROMETHEUS_MULTIPROC_DIR, but our processes keep in-process
# values (core/__init__.py), where clearing labels works
_KNOWN_WARNING = re.compile(r"Stream feature views are experimental|On demand feature view is an experimental"
                            r"|Clearing labels has not been implemented in multi-process mode")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtml", description="Real-time ML serving on Feast, Kafka, Spark and BentoML.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    # Split global options from the subcommand and its own arguments.
    idx = next((i for i, a in enumerate(argv) if a in COMMANDS), None)
    if idx is None:
        top.parse_args(argv)  # handles --help and errors
        top.print_help()
        return 2
    global_args = top.parse_args(argv[:idx])
    name = argv[idx]
    module_name, help_text = COMMANDS[name]
    logging.basicConfig(
        level=logging.DEBUG if global_args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    quiet_third_parties()
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"rtml {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(argv[idx + 1 :])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"rtml {name}: interrupted", file=sys.stderr)
        return 130
    except UserFacingError as exc:
        print(f"rtml {name}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
