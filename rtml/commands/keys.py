"""`rtml keys create|list|revoke`: API keys of the prediction service (only salted hashes are stored)."""

from __future__ import annotations

import argparse
import json

from bentos import auth


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="who or what uses the key (e.g. checkout-service)")
    create.add_argument("--scope", action="append", choices=auth.SCOPES, required=True,
                        help="endpoint scope; repeat for several (predict, predict_batch, metrics, admin)")
    create.add_argument("--rate", type=float, default=auth.DEFAULT_RATE_PER_S, help="requests per second (burst = rate)")
    create.add_argument("--reason", default="new API client", help="recorded in the audit trail")
    ls = sub.add_parser("list", help="keys with scopes and dates (never the secret)")
    ls.add_argument("--json", action="store_true")
    revoke = sub.add_parser("revoke", help="revoke a key by id; the service refuses it within seconds")
    revoke.add_argument("key_id")
    revoke.add_argument("--reason", default="manual revocation", help="recorded in the audit trail")


def create(name: str, scopes: list[str], rate_per_s: float = auth.DEFAULT_RATE_PER_S, reason: str = "new API client") -> str:
    """Create a key and record it in the audit trail (without its secret); returns the token."""
    from core import audit

    token = auth.create_key(name, scopes, rate_per_s)
    key_id = token[len(auth.PREFIX):].split("_", 1)[0]
    audit.record("key.create", after={"id": key_id, "name": name, "scopes": sorted(set(scopes)), "rate_per_s": rate_per_s},
                 reason=reason)
    return token


def run(args: argparse.Namespace) -> int:
    from core import audit

    if args.action == "create":
        print(create(args.name, args.scope, args.rate, args.reason))
        return 0
    if args.action == "revoke":
        record = auth.revoke_key(args.key_id)
        audit.record("key.revoke", before={"id": record["id"], "name": record["name"], "scopes": record["scopes"]},
                     after={"revoked_at": record["revoked_at"]}, reason=args.reason)
        print(f"revoked {record['id']} ({record['name']}) at {record['revoked_at']}")
        return 0
    rows = auth.list_keys()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no API keys in {auth.keys_path()}; create one with `rtml keys create --name NAME --scope predict`")
        return 0
    print(f"{'id':10} {'name':24} {'scopes':30} {'rate/s':>8}  created / revoked")
    for r in rows:
        print(f"{r['id']:10} {r['name']:24} {','.join(r['scopes']):30} {r['rate_per_s']:>8.0f}  "
              f"{r['created_at']}{'  REVOKED ' + r['revoked_at'] if r['revoked_at'] else ''}")
    return 0
