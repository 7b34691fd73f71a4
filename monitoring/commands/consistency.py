"""`rtml consistency`: online/offline consistency of the production model's features.

Samples the predictions topic (records older than ``--settle-minutes``, so the offline store is final
for them), recomputes the served features with the point-in-time join over the offline store,
writes ``<state_dir>/monitor/consistency.json`` (read by the promotion gate) and exports
``rtml_consistency_*`` on ``--metrics-port``. ``--every-minutes`` repeats the check until Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import time

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=20_000, help="prediction records compared per check")
    parser.add_argument("--every", type=int, default=1, help="take every N-th record (sampling)")
    parser.add_argument("--settle-minutes", type=float, default=15.0, help="only records this old (offline store final)")
    # the monitor's Kafka principal reads predictions; its ACLs allow consumer groups named rtml-monitor*
    parser.add_argument("--group", default="rtml-monitor-consistency", help="Kafka consumer group")
    parser.add_argument("--predictions-topic", default=None, help="default: settings().topics.predictions")
    parser.add_argument("--metrics-port", type=int, default=9110, help="0: do not serve metrics")
    parser.add_argument("--every-minutes", type=float, default=None, help="repeat the check this often")


def check_once(args: argparse.Namespace, consumer, topic: str, metrics) -> dict:
    from core.consistency import write_report
    from core.model_store import production_model
    from monitoring.consistency import check, model_specs, sample_predictions

    model = production_model()
    refs = list(model.info.metadata.get("feature_refs") or [])
    specs, not_checked = model_specs(refs)
    records = sample_predictions(consumer, topic, args.settle_minutes * 60, args.rows, args.every)
    report = check(records, specs, not_checked)
    metrics.export(report)
    data = {**report.to_dict(), "model": str(model.tag)}
    path = write_report(data)
    if report.features:
        ref, rate = report.worst()
        log.info("consistency of %s over %d rows: worst %s %.4f; report %s", model.tag, report.rows, ref, rate, path)
    else:
        log.info("no settled prediction records to check yet")
    return data


def run(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from core.kafka_io import make_consumer
    from core.settings import settings
    from monitoring.consistency import ConsistencyMetrics

    topic = args.predictions_topic or settings().topics.predictions
    metrics = ConsistencyMetrics()
    if args.metrics_port:
        start_http_server(args.metrics_port, registry=metrics.registry)
    consumer = make_consumer([topic], args.group, role="monitor", max_poll_records=5000)
    try:
        while True:
            data = check_once(args, consumer, topic, metrics)
            consumer.commit()
            if args.every_minutes is None:
                break
            time.sleep(args.every_minutes * 60)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close(autocommit=False)
    worst = min((f["rate"] for f in data["features"].values()), default=float("nan"))
    print(f"rtml consistency: {data['rows']} rows compared, worst feature {worst:.4f}; {len(data['not_checked'])} on-demand not checked")
    return 0
