"""`rtml up`: start the local stack (Redis, Kafka + topics, Spark's Kafka connector jars; `--s3`: s3proxy) or reuse
what runs."""

from __future__ import annotations

import argparse

from infra.commands import quiet_client_logs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-spark-jars", action="store_true", help="skip pre-resolving Spark's Kafka connector jars")
    parser.add_argument("--s3", action="store_true",
                        help="also start a local S3 server (s3proxy) and resolve Spark's s3a jars")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")


def run(args: argparse.Namespace) -> int:
    quiet_client_logs()
    from infra.stack import up

    up(progress=not args.quiet, spark_jars=not args.no_spark_jars, s3=args.s3)
    return 0
