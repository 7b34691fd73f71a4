"""Strimzi KafkaUser resources grant exactly the local broker's per-role ACLs (core.kafka_io.role_acls)."""

from __future__ import annotations

from core.contracts import domain_topics
from core.kafka_io import ROLES, SPARK_GROUP_PREFIX, role_acls
from core.settings import Topics
from tests.deploy.manifests import objects_of


def _granted(user: dict) -> set[tuple[str, str, str, str]]:
    out = set()
    for acl in user["spec"]["authorization"]["acls"]:
        r = acl["resource"]
        assert acl.get("host", "*") == "*"
        for op in acl["operations"]:
            out.add((r["type"], r["name"], r["patternType"], op))
    return out


def _expected(role: str) -> set[tuple[str, str, str, str]]:
    grants = role_acls(Topics())[role]
    out = {("topic", t, "literal", op) for t in grants.write for op in ("Write", "Describe")}
    out |= {("topic", t, "literal", op) for t in grants.read for op in ("Read", "Describe")}
    if grants.read:
        out.add(("group", f"rtml-{role}", "prefix", "Read"))
    if role == "stream":
        out.add(("group", SPARK_GROUP_PREFIX, "prefix", "Read"))
    return out


def test_every_role_has_a_scram_kafka_user_with_the_same_acls():
    kafka = objects_of("Kafka")[0]
    users = {u["metadata"]["name"]: u for u in objects_of("KafkaUser")}
    assert sorted(users) == sorted(f"rtml-{role}" for role in ROLES if role != "admin")
    for role in role_acls(Topics()):
        user = users[f"rtml-{role}"]
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
        assert user["spec"]["authorization"]["type"] == "simple"
        assert _granted(user) == _expected(role), role


def test_product_cannot_write_predictions_and_serving_cannot_write_transactions():
    users = {u["metadata"]["name"]: _granted(u) for u in objects_of("KafkaUser")}
    t, d = Topics(), domain_topics()
    assert ("topic", t.predictions, "literal", "Write") not in users["rtml-product"]
    assert ("topic", d.events, "literal", "Write") not in users["rtml-serving"]
    assert {name for _kind, name, _pattern, op in users["rtml-stream"] if op == "Write"} == {d.dead_letters}


def test_cluster_requires_scram_and_an_authorizer_and_runs_the_user_operator():
    kafka = objects_of("Kafka")[0]["spec"]
    listeners = kafka["kafka"]["listeners"]
    assert listeners and all(li["authentication"]["type"] == "scram-sha-512" for li in listeners)
    assert kafka["kafka"]["authorization"]["type"] == "simple"
    assert "userOperator" in kafka["entityOperator"]
