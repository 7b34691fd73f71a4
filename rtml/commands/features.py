"""`rtml features`: print the online features of some entities (what the model would see).

Entities are named by join key, so every feature repo works: ``rtml features user_id=1 user_id=2 merchant_id=4``
(fraud) or ``rtml features viewer_id=7`` (examples/ads). ``--json`` prints one JSON object per entity.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("entities", nargs="+", metavar="KEY=ID", help="join key and entity id, e.g. user_id=42")
    parser.add_argument("--json", action="store_true", help="one JSON object per entity")


def parse_entities(items: list[str]) -> list[tuple[str, object]]:
    """``["user_id=42", ...]`` -> ``[("user_id", 42), ...]`` (ids that look like integers become ints)."""
    from core.errors import UserFacingError

    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UserFacingError(f"entity {item!r} is not of the form KEY=ID (e.g. user_id=42)")
        out.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return out


def online_features(entities: list[tuple[str, object]]) -> list[dict]:
    """Online feature values of each entity (every view keyed by its join key alone), read through Feast."""
    from core.errors import UserFacingError
    from core.feast_store import get_store

    store = get_store()
    views = [*store.list_feature_views(), *store.list_stream_feature_views()]
    out = []
    for key, value in entities:
        refs = [f"{v.name}:{f.name}" for v in views if list(v.join_keys) == [key] for f in v.features]
        if not refs:
            keys = sorted({k for v in views for k in v.join_keys})
            raise UserFacingError(f"no feature view is keyed by {key!r} alone (join keys: {', '.join(keys)})")
        result = store.get_online_features(features=refs, entity_rows=[{key: value}]).to_dict()
        out.append({**{name: values[0] for name, values in result.items() if name != key}, key: value})
    return out


def run(args: argparse.Namespace) -> int:
    entities = parse_entities(args.entities)
    for (key, value), row in zip(entities, online_features(entities), strict=True):
        row.pop(key)
        if args.json:
            print(json.dumps({key: value, "features": row}, default=str))
        else:
            values = ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(row.items()))
            print(f"{key}={value}: {values}")
    return 0
