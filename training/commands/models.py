"""`rtml models list | production | promote TAG | rollback | history`: the model registry from the command line."""

from __future__ import annotations

import argparse
import json

from core import model_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="stored fraud_model versions with metrics; * marks production")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("production", help="print the production model's exact tag (for RTML_SERVING_MODEL_TAG of an image build)")
    pr = sub.add_parser("promote", help="make TAG the production model")
    pr.add_argument("tag", help="fraud_model:VERSION (or just VERSION)")
    pr.add_argument("--reason", default="manual promotion")
    rb = sub.add_parser("rollback", help="restore the previous production model")
    rb.add_argument("--reason", default="manual rollback")
    sub.add_parser("history", help="promotions and rollbacks")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        rows = model_store.list_models()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        if not rows:
            print(f"no models in {model_store.bentoml_home() / 'models'}; run `rtml train`")
            return 0
        print(f"{'':2}{'tag':32} {'created_at':26} {'pr_auc':>8} {'roc_auc':>8} {'rec@1%':>8} {'thresh':>8}  code")
        for r in rows:
            mark = "* " if r["production"] else "  "
            print(
                f"{mark}{r['tag']:32} {r['created_at']:26} {_fmt(r['pr_auc']):>8} {_fmt(r['roc_auc']):>8} "
                f"{_fmt(r['recall_at_1pct_fpr']):>8} {_fmt(r['threshold']):>8}  {r['code_version']}"
            )
        return 0
    if args.action == "production":
        tag = model_store.production_model().tag  # UserFacingError when none was promoted yet
        print(tag)
        return 0
    if args.action == "promote":
        print(f"production model: {model_store.promote(args.tag, reason=args.reason)}")
        return 0
    if args.action == "rollback":
        print(f"rolled back; production model: {model_store.rollback(reason=args.reason)}")
        return 0
    for event in model_store.history():
        print(f"{event['at']}  {event['action']:8} {event['tag']}  (was {event['previous']}; {event['reason']})")
    return 0
