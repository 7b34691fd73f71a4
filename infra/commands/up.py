"""`rtml up`: start the local stack (Redis, Kafka + topics, Spark's Kafka connector jars; `--s3`: s3proxy) or reuse
what runs."""

from __future__ import annotations

import argparse

from infra.commands import quiet_client_logs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-spark-jars", action="store_true", help="skip pre-resolving Spark's Kafka connector jars")
    parser.add_argument(
        "--redis-cluster", action="store_true",
        help="run Redis as a local Redis Cluster (3 primaries + 3 replicas on RTML_REDIS_CLUSTER_PORT, 7000..7005); "
        "other commands use it with RTML_REDIS_CLUSTER=1",
    )
    parser.add_argument("--brokers", type=int, default=None, help="Kafka nodes (default RTML_KAFKA_BROKERS or 1; 3 for replication)")
    parser.add_argument("--s3", action="store_true",
                        help="also start a local S3 server (s3proxy) and resolve Spark's s3a jars")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    parser.add_argument(
        "--mlflow", action="store_true", help="also start `mlflow server` (tracking API + UI) on the local tracking store"
    )


def run(args: argparse.Namespace) -> int:
    quiet_client_logs()
    import os

    from infra.stack import up

    if args.redis_cluster:
        if os.environ.get("RTML_REDIS_URL") and not os.environ["RTML_REDIS_URL"].startswith("redis-cluster://"):
            from core.errors import UserFacingError

            raise UserFacingError("--redis-cluster conflicts with RTML_REDIS_URL, which names a single Redis")
        os.environ["RTML_REDIS_CLUSTER"] = "1"
    if args.brokers is not None:  # settings() reads it (the one settings object); child processes inherit it
        os.environ["RTML_KAFKA_BROKERS"] = str(args.brokers)

    up(progress=not args.quiet, spark_jars=not args.no_spark_jars, s3=args.s3)
    if args.mlflow:
        from infra import mlflow_server

        mlflow_server.start(progress=not args.quiet)
    if args.redis_cluster and not args.quiet:
        print("redis: other rtml commands use this cluster with `export RTML_REDIS_CLUSTER=1`")
    return 0
