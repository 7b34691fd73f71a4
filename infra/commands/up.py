"""`rtml up`: start the local stack (Redis, Kafka + topics, Spark's Kafka connector jars) or reuse what runs."""

from __future__ import annotations

import argparse

from infra.commands import quiet_client_logs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-spark-jars", action="store_true", help="skip pre-resolving Spark's Kafka connector jars")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    parser.add_argument(
        "--mlflow", action="store_true", help="also start `mlflow server` (tracking API + UI) on the local tracking store"
    )


def run(args: argparse.Namespace) -> int:
    quiet_client_logs()
    from infra.stack import up

    up(progress=not args.quiet, spark_jars=not args.no_spark_jars)
    if args.mlflow:
        from infra import mlflow_server

        mlflow_server.start(progress=not args.quiet)
    return 0
