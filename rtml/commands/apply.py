"""`rtml apply`: register feature_repo/ definitions (`feast apply` with rtml's settings), audited.

Every apply that changes the registry appends a ``features.apply`` entry to the audit trail (core.audit):
which objects were added, changed or removed, with a fingerprint of each object's spec before and after.
"""

from __future__ import annotations

import argparse
import hashlib

KINDS = (
    ("entity", "list_entities"),
    ("data_source", "list_data_sources"),
    ("feature_view", "list_feature_views"),
    ("stream_feature_view", "list_stream_feature_views"),
    ("on_demand_feature_view", "list_on_demand_feature_views"),
    ("feature_service", "list_feature_services"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", action="store_true", help="only show what would change (`feast plan`)")
    parser.add_argument("--reason", default=None, help="why (recorded in the audit trail)")


def registry_snapshot() -> dict[str, str]:
    """``kind/name`` -> short fingerprint (sha256 of the spec proto) of every registered object ({} if none)."""
    from core.feast_store import get_store
    from core.settings import settings

    if not settings().registry_path.exists():
        return {}
    store = get_store()
    out = {}
    for kind, lister in KINDS:
        for obj in getattr(store, lister)():  # a fresh store: read from the registry file
            proto = obj.to_proto()
            spec = _without_meta(proto if kind == "data_source" else proto.spec)
            digest = hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()[:16]
            out[f"{kind}/{obj.name}"] = digest
    return out


VOLATILE = {"created_timestamp", "last_updated_timestamp"}


def _without_meta(message):
    """``message`` without what changes on every apply but is no definition: created/updated times, nested
    ``*Meta`` fields, pickled UDF bodies (their ``body_text`` source stays), and the order of repeated items."""
    from google.protobuf.descriptor import FieldDescriptor

    names = {f.name for f, _ in message.ListFields()}
    for field, value in message.ListFields():
        if field.name in VOLATILE or (field.name == "body" and "body_text" in names):
            message.ClearField(field.name)
        elif field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        elif field.name == "meta" and field.message_type.name.endswith("Meta"):
            message.ClearField(field.name)
        elif field.is_repeated:
            if field.message_type.GetOptions().map_entry:
                for item in value.values():
                    if hasattr(item, "ListFields"):
                        _without_meta(item)
                continue
            for item in value:
                _without_meta(item)
            # Feast orders some lists (a stream view's features) by set iteration: compare them as sets
            ordered = sorted(item.SerializeToString(deterministic=True) for item in value)
            del value[:]
            for data in ordered:
                value.add().ParseFromString(data)
        else:
            _without_meta(value)
    return message


def diff(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    """Added, changed and removed object keys between two snapshots."""
    return {
        "added": sorted(after.keys() - before.keys()),
        "changed": sorted(k for k in before.keys() & after.keys() if before[k] != after[k]),
        "removed": sorted(before.keys() - after.keys()),
    }


def run(args: argparse.Namespace) -> int:
    from core import audit
    from core.feast_store import apply_repo, plan_repo

    if args.plan:
        plan_repo()
        return 0
    before = registry_snapshot()
    apply_repo()
    after = registry_snapshot()
    changes = diff(before, after)
    if not any(changes.values()):
        print("apply: no feature definition changed (nothing audited)")
        return 0
    entry = audit.record(
        "features.apply",
        before={k: before[k] for k in changes["changed"] + changes["removed"]},
        after={k: after[k] for k in changes["added"] + changes["changed"]},
        reason=args.reason or "rtml apply",
        details=changes,
    )
    counts = ", ".join(f"{len(v)} {k}" for k, v in changes.items())
    print(f"apply: {counts} (audited as {entry['actor']} in {audit.path()})")
    return 0
