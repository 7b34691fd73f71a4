"""`rtml models list | production | promote TAG | rollback | history | rollout TAG | complete | abort | rollout-status`:
the model registry and model rollouts from the command line.

A rollout declares a challenger beside the production model; the prediction service follows it without
a restart (shadow: the challenger scores every request, logged only; canary: a share of requests by
request hash; ab: a share of entities, sticky). ``--auto`` lets the monitor's rollout policy move it on
(shadow for N paired predictions, canary, complete) or abort it on a regression.
"""

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
    pr.add_argument("--force", action="store_true",
                    help="promote although the promotion gate refused TAG (or recorded no decision); audited as forced")
    pr.add_argument("--actor", default=None, help="who promotes (default: the OS user)")
    rb = sub.add_parser("rollback", help="restore the previous production model")
    rb.add_argument("--reason", default="manual rollback")
    sub.add_parser("history", help="promotions, rollbacks and rollout changes")
    ro = sub.add_parser("rollout", help="run TAG as a challenger of the production model (shadow, canary or ab)")
    ro.add_argument("tag", help="the challenger: MODEL:VERSION (or just VERSION)")
    ro.add_argument("--mode", choices=model_store.ROLLOUT_MODES, default="shadow", help="shadow (default), canary or ab")
    ro.add_argument("--share", default="5%", help="canary/ab share of requests or entities, e.g. 5%% (default)")
    ro.add_argument("--auto", action="store_true", help="let the monitor's rollout policy advance, complete or abort it")
    ro.add_argument("--policy", default=None, help='policy overrides as JSON, e.g. \'{"shadow_predictions": 5000}\'')
    ro.add_argument("--reason", default="manual rollout")
    ro.add_argument("--actor", default=None, help="who starts it (default: the OS user)")
    for name, text in (("complete", "make the challenger production and end the rollout"), ("abort", "end the rollout, keep production")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--reason", default=f"manual {name}")
        p.add_argument("--actor", default=None, help="who acts (default: the OS user)")
    st = sub.add_parser("rollout-status", help="the running rollout, its variant comparison and the policy's recommendation")
    st.add_argument("--json", action="store_true", help="machine-readable output")


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
        print(model_store.production_model().tag)  # UserFacingError when none was promoted yet
        return 0
    if args.action == "promote":
        reason = _gate_reason(args.tag, args.force, args.reason)
        print(f"production model: {model_store.promote(args.tag, reason=reason, actor=args.actor)}")
        return 0
    if args.action == "rollback":
        print(f"rolled back; production model: {model_store.rollback(reason=args.reason)}")
        return 0
    if args.action == "rollout":
        policy = json.loads(args.policy) if args.policy else None
        r = model_store.start_rollout(args.tag, args.mode, args.share, auto=args.auto, policy=policy, reason=args.reason,
                                     actor=args.actor)
        share = "every request, logged only" if r["mode"] == "shadow" else f"{r['share']:.1%}"
        print(f"rollout {r['id']}: {r['challenger']} as {r['mode']} challenger of {r['production']} ({share}){' [auto]' if r['auto'] else ''}")
        return 0
    if args.action == "complete":
        print(f"rollout complete; production model: {model_store.complete_rollout(reason=args.reason, actor=args.actor)}")
        return 0
    if args.action == "abort":
        print(f"rollout of {model_store.abort_rollout(reason=args.reason, actor=args.actor)} aborted; production model: {model_store.production_tag()}")
        return 0
    if args.action == "rollout-status":
        return _rollout_status(args.json)
    for event in model_store.history():
        print(f"{event['at']}  {event['action']:16} {event['tag']}  (was {event['previous']}; {event['reason']})")
    return 0


def _rollout_status(as_json: bool) -> int:
    from monitoring.rollout import read_status

    rollout = model_store.rollout_state()
    status = read_status()
    if status is not None and (rollout is None or status.get("rollout", {}).get("id") != rollout.get("id")):
        status = None  # the comparison of an earlier rollout
    if as_json:
        print(json.dumps({"rollout": rollout, "comparison": status}, indent=2, default=str))
        return 0
    if rollout is None:
        print(f"no rollout is running; production model: {model_store.production_tag()}")
        return 0
    share = "all requests (logged only)" if rollout["mode"] == "shadow" else f"{rollout['share']:.1%}"
    print(f"rollout {rollout['id']}: {rollout['challenger']} vs production {model_store.production_tag()}")
    print(f"  mode {rollout['mode']} ({share}), started {rollout['started_at']}{', auto' if rollout.get('auto') else ''}")
    if status is None:
        print("  no comparison yet: the monitor (`rtml monitor`) writes it once predictions arrive")
        return 0
    v = status["variants"]
    print(f"  {'':22}{'production':>14}{'challenger':>14}")
    for key in ("model_version", "predictions", "errors", "decision_rate", "score_mean", "latency_p99_ms", "labelled", "pr_auc"):
        print(f"  {key:22}{_fmt(v['production'][key]):>14}{_fmt(v['challenger'][key]):>14}")
    sh = status["shadow"]
    if sh["pairs"]:
        print(
            f"  shadow pairs {sh['pairs']}: decision agreement {_fmt(sh['decision_agreement'])}, "
            f"mean |score diff| {_fmt(sh['score_mean_abs_diff'])}, max {_fmt(sh['score_max_abs_diff'])}"
        )
    rec = status["recommendation"]
    print(f"  recommendation: {rec['action']} ({rec['reason']})")
    print(f"  report: {status.get('report')}")
    return 0


def _gate_reason(tag: str, force: bool, reason: str) -> str:
    """The promotion's audited reason; refuses a model the gate refused (or never judged) unless forced."""
    from core.errors import UserFacingError

    model = model_store.get_model(tag if ":" in tag else f"{model_store.model_name()}:{tag}")
    decision = ((model.info.metadata or {}).get("metrics") or {}).get("decision")
    if decision and decision.get("promote"):
        return reason
    why = decision.get("reason") if decision else "no promotion gate decision is recorded for it"
    if not force:
        raise UserFacingError(f"the promotion gate did not pass {model.tag}: {why}; `--force --reason WHY` overrides it")
    return f"forced past the gate ({why}): {reason}"
