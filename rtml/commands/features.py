"""`rtml features`: print online features of some users and merchants (what the model would see)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", nargs="*", type=int, default=[], help="user ids")
    parser.add_argument("--merchants", nargs="*", type=int, default=[], help="merchant ids")


def online_features(user_ids: list[int], merchant_ids: list[int]) -> dict[str, list[dict]]:
    """Online feature values per entity kind, read through Feast from Redis."""
    from core.feast_store import get_store

    store = get_store()
    out: dict[str, list[dict]] = {}
    for kind, key, ids in (("user", "user_id", user_ids), ("merchant", "merchant_id", merchant_ids)):
        if not ids:
            continue
        refs = [
            f"{view.name}:{field.name}"
            for view in [*store.list_feature_views(), *store.list_stream_feature_views()]
            if key in view.join_keys
            for field in view.features
        ]
        result = store.get_online_features(features=refs, entity_rows=[{key: i} for i in ids]).to_dict()
        out[kind] = [{**{n: v[row] for n, v in result.items()}, key: ids[row]} for row in range(len(ids))]
    return out


def run(args: argparse.Namespace) -> int:
    from core.errors import UserFacingError

    if not args.users and not args.merchants:
        raise UserFacingError("name some entities: --users 1 2 3 and/or --merchants 4 5")
    for kind, rows in online_features(args.users, args.merchants).items():
        for row in rows:
            entity = row.pop(f"{kind}_id")
            values = ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(row.items()))
            print(f"{kind} {entity}: {values}")
    return 0
