"""`rtml status`: each service, its address, pid and whether it answers. Exit code 1 if one is down."""

from __future__ import annotations

import argparse

from infra.commands import quiet_client_logs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    quiet_client_logs()
    from core.settings import settings
    from infra import maven, spark_deps
    from infra.stack import status

    services = status()
    print(f"state dir: {settings().state_dir}")
    for service in services:
        print(service.line())
    folder = spark_deps.connector_dir(resolve=False)
    jars = f"cached in {folder}" if maven.is_resolved(folder) else "not resolved yet (run `rtml up`)"
    print(f"{'spark':<6} {'Kafka connector jars':<28} {jars}")
    return 0 if all(service.answers for service in services) else 1
