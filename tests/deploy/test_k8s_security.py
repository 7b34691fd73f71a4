"""infra/k8s is locked down: default-deny NetworkPolicies with only the flows rtml needs (checked by
evaluating the policies for each flow), a restricted securityContext on every pod, every credential from
a Secret (none in the repository), third-party images pinned by digest or documented, a Spark driver Role
that cannot delete claims, Redis bounded and with ACL users, and an exact served model tag."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import COMPOSE, K8S, REPO_ROOT, k8s_objects

_OBJECTS = k8s_objects()  # parsed once: the flow checks below evaluate the policies many times


def objects_of(kind: str) -> list[dict]:
    return [o for o in _OBJECTS if o["kind"] == kind]


def one(kind: str, name: str) -> dict:
    found = [o for o in objects_of(kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs():
    return [(o, o["spec"]["template"]) for o in _OBJECTS if o["kind"] in ("Deployment", "StatefulSet", "Job")]

NAMESPACE = "rtml"
NAMESPACE_LABELS = {"kubernetes.io/metadata.name": NAMESPACE}
OPERATORS_DOC = REPO_ROOT / "docs" / "operators.md"
OWN_IMAGES = {"rtml", "rtml-fraud-scorer"}
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|(^|_)AUTH$|API_KEY$")


# ---- the pods: templates of the workloads and the SparkApplication's driver / executors -------------

def _spark_pods() -> list[tuple[str, dict, dict, list[dict]]]:
    """(name, labels, pod-level spec, containers) of the Spark driver and executors, as the operator builds them."""
    app = one("SparkApplication", "rtml-stream")["spec"]
    out = []
    for role in ("driver", "executor"):
        spec = app[role]
        container = {"name": f"spark-{role}", "image": app["image"], "securityContext": spec.get("securityContext"),
                     "env": spec.get("env", []), "volumeMounts": spec.get("volumeMounts", [])}
        pod = {"securityContext": spec.get("podSecurityContext"), "volumes": app.get("volumes", [])}
        out.append((f"rtml-stream-{role}", {**spec["labels"], "spark-role": role}, pod, [container]))
    return out


def _pods() -> list[tuple[str, dict, dict, list[dict]]]:
    pods = []
    for obj, template in pod_specs():
        spec = template["spec"]
        containers = spec["containers"] + spec.get("initContainers", [])
        pods.append((obj["metadata"]["name"], template["metadata"]["labels"], spec, containers))
    return pods + _spark_pods()


def _pod_labels(name: str) -> dict:
    return next(labels for n, labels, _s, _c in _pods() if n == name)


# ---- NetworkPolicy evaluation -------------------------------------------------------------------------

def _selects(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return False
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict, endpoint: dict) -> bool:
    """``endpoint``: {"ns": labels of its namespace, "pod": labels} for a pod, {"external": True} otherwise."""
    if endpoint.get("external"):
        return "ipBlock" in peer
    if "ipBlock" in peer:
        return False
    ns_ok = _selects(peer["namespaceSelector"], endpoint["ns"]) if "namespaceSelector" in peer else endpoint["ns"] == NAMESPACE_LABELS
    pod_ok = _selects(peer["podSelector"], endpoint["pod"]) if "podSelector" in peer else True
    return ns_ok and pod_ok


def _rule_allows(rule: dict, peers_key: str, other: dict, port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    if ports and not any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports):
        return False
    peers = rule.get(peers_key)
    return not peers or any(_peer_matches(peer, other) for peer in peers)


def _direction_allows(direction: str, own: dict, other: dict, port: int, protocol: str) -> bool:
    """Whether the policies selecting ``own`` (a pod of namespace rtml) allow this flow in ``direction``."""
    policies = [p for p in objects_of("NetworkPolicy")
                if _selects(p["spec"]["podSelector"], own["pod"]) and direction in p["spec"].get("policyTypes", ["Ingress"])]
    if not policies:
        return True  # not isolated
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    return any(_rule_allows(rule, peers_key, other, port, protocol) for p in policies for rule in p["spec"].get(key) or [])


def allowed(src: dict, dst: dict, port: int, protocol: str = "TCP") -> bool:
    ok = True
    if not src.get("external") and src["ns"] == NAMESPACE_LABELS:
        ok &= _direction_allows("Egress", src, dst, port, protocol)
    if not dst.get("external") and dst["ns"] == NAMESPACE_LABELS:
        ok &= _direction_allows("Ingress", dst, src, port, protocol)
    return ok


def pod(labels: dict, ns: dict | None = None) -> dict:
    return {"pod": labels, "ns": ns or NAMESPACE_LABELS}


KAFKA_BROKER = pod({"strimzi.io/cluster": "rtml-kafka", "strimzi.io/kind": "Kafka", "strimzi.io/name": "rtml-kafka-kafka",
                    "strimzi.io/broker-role": "true"})
ENTITY_OPERATOR = pod({"strimzi.io/cluster": "rtml-kafka", "strimzi.io/kind": "Kafka", "strimzi.io/name": "rtml-kafka-entity-operator"})
PRODUCT_CLIENT = pod({"app": "checkout", "rtml.dev/product-client": "true"}, {"kubernetes.io/metadata.name": "shop"})
UNLABELLED_OUTSIDER = pod({"app": "checkout"}, {"kubernetes.io/metadata.name": "shop"})
PROMETHEUS = pod({"app.kubernetes.io/name": "prometheus"}, {"kubernetes.io/metadata.name": "monitoring"})
DNS = pod({"k8s-app": "kube-dns"}, {"kubernetes.io/metadata.name": "kube-system"})
INTRUDER = pod({"app": "debug-shell"})  # any other pod of namespace rtml
EXTERNAL = {"external": True}


def rtml(name: str) -> dict:
    return pod(_pod_labels(name))


def _flows() -> tuple[list, list]:
    scoring, redis, monitor, apply = rtml("fraud-scoring"), rtml("redis"), rtml("rtml-monitor"), rtml("rtml-apply")
    driver, executor = rtml("rtml-stream-driver"), rtml("rtml-stream-executor")
    consistency = rtml("rtml-consistency")
    allowed_flows = [
        (PRODUCT_CLIENT, scoring, 3000), (PRODUCT_CLIENT, KAFKA_BROKER, 9092),
        (scoring, redis, 6379), (scoring, KAFKA_BROKER, 9092),
        (driver, KAFKA_BROKER, 9092), (driver, redis, 6379), (executor, KAFKA_BROKER, 9092), (executor, redis, 6379),
        (driver, executor, 7079), (executor, driver, 7078), (executor, executor, 7337), (driver, EXTERNAL, 443),
        (monitor, KAFKA_BROKER, 9092), (apply, redis, 6379), (apply, KAFKA_BROKER, 9092),
        (PROMETHEUS, scoring, 3000), (PROMETHEUS, monitor, 9109), (PROMETHEUS, driver, 9108),
        (KAFKA_BROKER, KAFKA_BROKER, 9091), (KAFKA_BROKER, KAFKA_BROKER, 9090), (ENTITY_OPERATOR, KAFKA_BROKER, 9091),
        (ENTITY_OPERATOR, EXTERNAL, 443), (consistency, KAFKA_BROKER, 9092), (PROMETHEUS, consistency, 9110),
    ] + [(p, DNS, 53) for p in (scoring, redis, monitor, apply, driver, executor, KAFKA_BROKER, consistency)]
    denied_flows = [
        (UNLABELLED_OUTSIDER, scoring, 3000), (INTRUDER, scoring, 3000), (INTRUDER, redis, 6379),
        (PRODUCT_CLIENT, redis, 6379), (PRODUCT_CLIENT, monitor, 9109), (PRODUCT_CLIENT, driver, 9108),
        (monitor, redis, 6379), (scoring, monitor, 9109), (scoring, driver, 7078), (scoring, EXTERNAL, 443),
        (redis, EXTERNAL, 443), (redis, KAFKA_BROKER, 9092), (monitor, EXTERNAL, 443), (executor, EXTERNAL, 443),
        (PROMETHEUS, redis, 6379), (PROMETHEUS, scoring, 8080), (apply, KAFKA_BROKER, 9091), (scoring, KAFKA_BROKER, 9091),
        (KAFKA_BROKER, EXTERNAL, 443), (scoring, DNS, 80),
        (consistency, redis, 6379), (consistency, EXTERNAL, 443), (PRODUCT_CLIENT, consistency, 9110),
        (scoring, consistency, 9110),
    ]
    return allowed_flows, denied_flows


def _ident(src: dict, dst: dict, port: int) -> str:
    def name(e):
        return "external" if e.get("external") else (e["pod"].get("app.kubernetes.io/name") or e["pod"].get("spark-role")
                                                     or e["pod"].get("strimzi.io/name") or e["pod"].get("k8s-app") or e["pod"].get("app"))
    return f"{name(src)}->{name(dst)}:{port}"


def test_default_deny_ingress_and_egress_for_every_pod():
    deny = [p for p in objects_of("NetworkPolicy") if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert len(deny) == 1
    assert not allowed(INTRUDER, rtml("redis"), 6379) and not allowed(rtml("redis"), INTRUDER, 1234)


def test_needed_flows_are_allowed():
    wanted, _denied = _flows()
    blocked = [_ident(s, d, p) for s, d, p in wanted if not allowed(s, d, p, "UDP" if p == 53 else "TCP")]
    assert blocked == []


def test_other_flows_are_denied():
    _wanted, unwanted = _flows()
    open_ = [_ident(s, d, p) for s, d, p in unwanted if allowed(s, d, p)]
    assert open_ == []


def test_evaluator_sees_a_missing_policy():
    """Not vacuous: without the fraud-scoring policy, product clients cannot reach the service."""
    policies = objects_of("NetworkPolicy")
    import tests.deploy.test_k8s_security as me

    original = me.objects_of
    me.objects_of = lambda kind: [p for p in policies if p["metadata"]["name"] != "fraud-scoring"] if kind == "NetworkPolicy" else original(kind)
    try:
        assert not allowed(PRODUCT_CLIENT, rtml("fraud-scoring"), 3000)
    finally:
        me.objects_of = original


def test_every_rtml_pod_is_isolated_by_a_policy_of_its_own():
    for name, labels, _spec, _containers in _pods():
        own = [p["metadata"]["name"] for p in objects_of("NetworkPolicy")
               if p["spec"]["podSelector"] and _selects(p["spec"]["podSelector"], labels)]
        assert own, f"{name} has no NetworkPolicy beyond the defaults"


# ---- securityContext ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,labels,spec,containers", _pods(), ids=[p[0] for p in _pods()])
def test_restricted_security_context(name, labels, spec, containers):
    pod_ctx = spec.get("securityContext") or {}
    assert pod_ctx.get("runAsNonRoot") is True, name
    assert isinstance(pod_ctx.get("runAsUser"), int) and pod_ctx["runAsUser"] > 0, name
    assert pod_ctx.get("seccompProfile") == {"type": "RuntimeDefault"}, name
    writable = {m["mountPath"] for c in containers for m in c.get("volumeMounts", []) if not m.get("readOnly")}
    for container in containers:
        ctx = container.get("securityContext") or {}
        assert ctx.get("allowPrivilegeEscalation") is False, (name, container["name"])
        assert ctx.get("readOnlyRootFilesystem") is True, (name, container["name"])
        assert ctx.get("capabilities") == {"drop": ["ALL"]}, (name, container["name"])
        assert not ctx.get("privileged"), (name, container["name"])
    if any(c["image"] in OWN_IMAGES for c in containers):
        assert "/tmp" in writable, f"{name}: read-only root filesystem needs a writable /tmp"
        mounts = {m["mountPath"]: m["name"] for c in containers for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_only_the_spark_driver_gets_a_service_account_token():
    for obj, template in pod_specs():
        assert template["spec"].get("automountServiceAccountToken") is False, obj["metadata"]["name"]


# ---- Strimzi: the operator builds the Kafka and entity-operator pods from the custom resources' templates ----

def _strimzi_templates() -> list[tuple[str, dict, list[str]]]:
    """(where, template, its container templates) of every Strimzi-built pod."""
    kafka = one("Kafka", "rtml-kafka")["spec"]
    out = [("Kafka spec.kafka.template", kafka["kafka"]["template"], ["kafkaContainer", "initContainer"]),
           ("Kafka spec.entityOperator.template", kafka["entityOperator"]["template"],
            ["topicOperatorContainer", "userOperatorContainer"])]
    out += [(f"KafkaNodePool {p['metadata']['name']}", p["spec"]["template"], ["kafkaContainer", "initContainer"])
            for p in objects_of("KafkaNodePool")]
    return out


@pytest.mark.parametrize("where,template,containers", _strimzi_templates(), ids=[t[0] for t in _strimzi_templates()])
def test_strimzi_pods_run_restricted(where, template, containers):
    # a template securityContext replaces the one of Strimzi's pod security provider: it must be complete
    pod_ctx = template["pod"]["securityContext"]
    assert pod_ctx["runAsNonRoot"] is True and pod_ctx["runAsUser"] > 0, where
    assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}, where
    for name in containers:
        ctx = template[name]["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False, (where, name)
        assert ctx["readOnlyRootFilesystem"] is True, (where, name)
        assert ctx["capabilities"] == {"drop": ["ALL"]}, (where, name)
        assert ctx.get("runAsNonRoot") is True and not ctx.get("privileged"), (where, name)


def test_kafka_pods_keep_their_volumes_writable_and_every_pool_has_the_cluster_template():
    kafka = one("Kafka", "rtml-kafka")["spec"]["kafka"]["template"]
    assert kafka["pod"]["securityContext"]["fsGroup"] == 0  # what Strimzi sets for persistent storage without a template
    for pool in objects_of("KafkaNodePool"):  # the pool's template wins: it must not be weaker than the cluster's
        assert pool["spec"]["template"] == kafka, pool["metadata"]["name"]


def test_the_sasl_listener_admits_the_clients_the_network_policy_admits():
    """Strimzi writes its own NetworkPolicy per listener (open to every pod unless networkPolicyPeers is set)."""
    [listener] = one("Kafka", "rtml-kafka")["spec"]["kafka"]["listeners"]
    kafka_policy = one("NetworkPolicy", "rtml-kafka")["spec"]["ingress"]
    [clients] = [rule["from"] for rule in kafka_policy if {p["port"] for p in rule.get("ports", [])} == {listener["port"]}]
    assert listener["networkPolicyPeers"] == clients
    rule = {"from": listener["networkPolicyPeers"], "ports": [{"protocol": "TCP", "port": listener["port"]}]}
    for client in (rtml("fraud-scoring"), rtml("rtml-monitor"), rtml("rtml-apply"), rtml("rtml-stream-driver"),
                   rtml("rtml-stream-executor"), rtml("rtml-consistency"), PRODUCT_CLIENT):
        assert _rule_allows(rule, "from", client, listener["port"], "TCP"), _ident(client, KAFKA_BROKER, listener["port"])
    for outsider in (INTRUDER, UNLABELLED_OUTSIDER, PROMETHEUS, rtml("redis")):
        assert not _rule_allows(rule, "from", outsider, listener["port"], "TCP"), _ident(outsider, KAFKA_BROKER, listener["port"])


# ---- credentials ----------------------------------------------------------------------------------------

def test_no_secret_values_in_the_repository():
    assert objects_of("Secret") == []
    for name, _labels, _spec, containers in _pods():
        for container in containers:
            for env in container.get("env", []):
                if _SECRET_NAME.search(env["name"]):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], (name, env["name"])


def _secret_refs() -> set[tuple[str, str]]:
    refs = set()
    for _name, _labels, spec, containers in _pods():
        for container in containers:
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                refs.add((volume["secret"]["secretName"], "*"))
    for monitor in objects_of("ServiceMonitor"):
        for endpoint in monitor["spec"]["endpoints"]:
            credentials = (endpoint.get("authorization") or {}).get("credentials")
            if credentials:
                refs.add((credentials["name"], credentials["key"]))
    return refs


METRICS_KEY = "rtml_abcdef12_" + "s" * 40


def _run_create_secrets(tmp_path: Path) -> tuple[dict[str, dict[str, str]], list[list[str]]]:
    """Runs create-secrets.sh against a stand-in kubectl that records what a cluster would receive."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "kubectl.log"
    (bin_dir / "kubectl").write_text(
        "#!/usr/bin/env bash\n"
        f'printf "%s\\0" "$@" >> {log}; printf "\\n" >> {log}\n'
        'for a in "$@"; do case "$a" in --from-env-file=*) cat "${a#--from-env-file=}" >> '
        f'{tmp_path}/env-files;; esac; done\n'
        'case " $* " in *" get secret "*) exit 1;; *" --dry-run=client "*) echo "kind: Secret";; *" -f - "*) cat > /dev/null;; esac\n')
    (bin_dir / "kubectl").chmod(0o755)
    keys = tmp_path / "api_keys.json"
    keys.write_text('{"keys": {}}')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "METRICS_API_KEY": METRICS_KEY}
    done = subprocess.run(["bash", str(K8S / "create-secrets.sh"), str(keys)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    calls = [line.split("\0")[:-1] for line in log.read_text().splitlines() if line]
    created: dict[str, dict[str, str]] = {}
    for args in calls:
        if "create" in args and "secret" in args:
            name = args[args.index("generic") + 1]
            data = created.setdefault(name, {})
            for arg in args:
                if arg.startswith("--from-file="):
                    data[arg.removeprefix("--from-file=").split("=", 1)[0]] = "<file>"
    env_lines = (tmp_path / "env-files").read_text().splitlines()
    created["rtml-redis-users"] = dict(line.split("=", 1) for line in env_lines)
    return created, calls


def test_create_secrets_provides_every_referenced_secret(tmp_path):
    created, calls = _run_create_secrets(tmp_path)
    strimzi_users = {u["metadata"]["name"] for u in objects_of("KafkaUser")}
    for name, key in sorted(_secret_refs()):
        if name in strimzi_users:
            assert key == "password", name  # the Secret Strimzi's user operator writes for a KafkaUser
        else:
            assert name in created and (key == "*" or key in created[name]), (name, key)
    passwords = list(created["rtml-redis-users"].values())
    assert len(passwords) == 3 and len(set(passwords)) == 3
    assert all(re.fullmatch(r"[0-9a-f]{48}", p) for p in passwords)
    for args in calls:  # passwords and keys never on a command line
        assert not any(p in a for p in [*passwords, METRICS_KEY] for a in args)
    assert ("rtml-metrics-key", "token") in _secret_refs() and created["rtml-metrics-key"] == {"token": "<file>"}


def test_create_secrets_refuses_to_run_without_the_metrics_key(tmp_path):
    keys = tmp_path / "api_keys.json"
    keys.write_text("{}")
    env = {k: v for k, v in os.environ.items() if k != "METRICS_API_KEY"}
    done = subprocess.run(["bash", str(K8S / "create-secrets.sh"), str(keys)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "METRICS_API_KEY" in done.stderr


@pytest.mark.skipif(not objects_of("KafkaUser"), reason="KafkaUsers are declared by the kafka branch (kafka.yaml)")
def test_kafka_secrets_are_those_of_declared_kafka_users():
    users = {u["metadata"]["name"] for u in objects_of("KafkaUser")}
    kafka_refs = {name for name, key in _secret_refs() if key == "password"}
    assert kafka_refs and kafka_refs <= users


def _env(containers: list[dict]) -> dict[str, dict]:
    return {e["name"]: e for c in containers for e in c.get("env", [])}


@pytest.mark.parametrize("pod_name,redis_user,kafka_user", [
    ("fraud-scoring", "rtml-serving", "rtml-serving"),
    ("rtml-stream-driver", "rtml-writer", "rtml-stream"),
    ("rtml-stream-executor", "rtml-writer", "rtml-stream"),
    ("rtml-monitor", None, "rtml-monitor"),
    ("rtml-consistency", None, "rtml-monitor"),
    ("rtml-apply", "rtml-writer", "rtml-operator"),  # its audit entry goes to the `audit` topic
])
def test_each_component_uses_its_own_users(pod_name, redis_user, kafka_user):
    containers = next(c for n, _l, _s, c in _pods() if n == pod_name)
    env = _env(containers)
    if redis_user:
        assert env["RTML_REDIS_USER"]["value"] == redis_user
        key = "serving-password" if redis_user == "rtml-serving" else "writer-password"
        assert env["RTML_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "rtml-redis-users", "key": key}
    else:
        assert "RTML_REDIS_PASSWORD" not in env
    if kafka_user:
        assert env["RTML_KAFKA_USER"]["value"] == kafka_user
        assert env["RTML_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": kafka_user, "key": "password"}
    else:
        assert "RTML_KAFKA_PASSWORD" not in env


@pytest.mark.parametrize("pod_name", ["rtml-monitor", "rtml-apply"])
def test_pods_that_audit_authenticate_as_a_kafka_user_that_may_write_the_audit_topic(pod_name):
    """core.audit publishes as RTML_KAFKA_USER when set: the monitor (the rollout policy's steps, the promotions of
    the retraining it starts) and the rtml-apply Job (feature applies) must be allowed to write `audit`."""
    from core.settings import Topics

    env = _env(next(c for n, _l, _s, c in _pods() if n == pod_name))
    user = next(u for u in objects_of("KafkaUser") if u["metadata"]["name"] == env["RTML_KAFKA_USER"]["value"])
    writes = {acl["resource"]["name"] for acl in user["spec"]["authorization"]["acls"]
              if acl["resource"]["type"] == "topic" and "Write" in acl["operations"]}
    assert Topics().audit in writes, (pod_name, writes)


def test_api_keys_come_from_a_secret_volume(monkeypatch):
    deployment = one("Deployment", "fraud-scoring")["spec"]["template"]["spec"]
    container = deployment["containers"][0]
    path = Path(_env([container])["RTML_API_KEYS_FILE"]["value"])
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent)
    assert mount["readOnly"] is True
    volume = next(v for v in deployment["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "rtml-api-keys"
    assert "items" not in volume["secret"] and "subPath" not in mount  # updates reach the pod: revocation without restart
    from bentos import auth

    monkeypatch.setenv("RTML_API_KEYS_FILE", str(path))
    assert auth.keys_path() == path


# ---- images ---------------------------------------------------------------------------------------------

def documented_unpinned_images() -> set[str]:
    """Images listed in docs/operators.md, section "Images not pinned by digest" (first column)."""
    text = OPERATORS_DOC.read_text()
    section = text.split("### Images not pinned by digest", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\|\s*`([^`]+)`\s*\|", section, flags=re.M))


def unpinned(images: set[str], documented: set[str]) -> set[str]:
    """Third-party images neither pinned by digest nor documented (own images are set by kustomize / the build)."""
    def own(image: str) -> bool:
        name = image.split("@")[0].rsplit(":", 1)[0] if not image.startswith("${") else "rtml-fraud-scorer"
        return name in OWN_IMAGES
    return {i for i in images if not own(i) and not re.search(r"@sha256:[0-9a-f]{64}$", i) and i not in documented}


def _all_images() -> set[str]:
    images = {c["image"] for _n, _l, _s, cs in _pods() for c in cs}
    images |= {s["image"] for s in yaml.safe_load(COMPOSE.read_text())["services"].values() if "image" in s}
    return images


def test_third_party_images_pinned_or_documented():
    images = _all_images()
    assert {"redis:7.4-alpine", "prom/prometheus:v3.5.0"} <= {i.split("@")[0] for i in images}
    assert unpinned(images, documented_unpinned_images()) == set()


def test_image_check_is_not_vacuous():
    assert unpinned({"redis:7.4-alpine", "rtml", "rtml:latest"}, set()) == {"redis:7.4-alpine"}
    assert unpinned({"redis:7.4-alpine@sha256:" + "a" * 64}, set()) == set()
    documented = documented_unpinned_images()
    assert documented and all(":" in i for i in documented)
    # every documented image is used (the list does not grow stale) and has its pin command
    assert documented <= _all_images()
    for image in documented:
        assert f"docker buildx imagetools inspect {image}" in OPERATORS_DOC.read_text(), image


# ---- RBAC -----------------------------------------------------------------------------------------------

def test_spark_driver_role_manages_executors_but_cannot_delete_claims():
    role = one("Role", "rtml-spark-driver")
    grants: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""]
        assert "*" not in rule["resources"] and "*" not in rule["verbs"]
        for resource in rule["resources"]:
            grants.setdefault(resource, set()).update(rule["verbs"])
    for resource in ("pods", "services", "configmaps"):
        assert {"create", "get", "list", "watch", "delete"} <= grants[resource], resource
    assert grants.get("persistentvolumeclaims", set()) <= {"get", "list", "watch"}
    assert set(grants) <= {"pods", "services", "configmaps", "persistentvolumeclaims"}
    binding = one("RoleBinding", "rtml-spark-driver")
    assert binding["roleRef"]["name"] == "rtml-spark-driver"
    driver_sa = one("SparkApplication", "rtml-stream")["spec"]["driver"]["serviceAccount"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": driver_sa, "namespace": NAMESPACE}]


# ---- Redis and the served model -------------------------------------------------------------------------

def _size(value: str) -> int:
    units = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "ki": 1024, "mi": 1024**2, "gi": 1024**3}
    number, unit = re.fullmatch(r"(\d+)([a-zA-Z]*)", value).groups()
    return int(number) * units.get(unit.lower(), 1)


def _kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def test_redis_is_bounded_refuses_writes_and_starts_with_the_acl_script():
    spec = one("StatefulSet", "redis")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    args = container["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert 0 < _size(args[args.index("--maxmemory") + 1]) <= 0.8 * _size(container["resources"]["limits"]["memory"])
    assert container["command"] == ["sh", "/opt/rtml/start-redis.sh"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/opt/rtml")
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    generator = next(g for g in _kustomization()["configMapGenerator"] if g["name"] == volume["configMap"]["name"])
    assert generator["files"] == ["start-redis.sh=redis/start-redis.sh"]
    compose_redis = yaml.safe_load(COMPOSE.read_text())["services"]["redis"]
    assert "./k8s/redis/start-redis.sh:/usr/local/bin/start-redis.sh:ro" in compose_redis["volumes"]  # one script for both
    acl = next(v for v in spec["volumes"] if v["name"] == next(m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/run/redis"))
    assert acl["emptyDir"]["medium"] == "Memory"
    env = _env([container])
    assert env["REDIS_ACL_DIR"]["value"] == "/run/redis"
    probe = " ".join(container["readinessProbe"]["exec"]["command"])
    assert "--user rtml-serving" in probe and "grep -qx PONG" in probe


def test_served_model_tag_comes_from_a_git_ignored_env_file():
    generator = next(g for g in _kustomization()["configMapGenerator"] if g["name"] == "rtml-serving-model")
    assert generator["envs"] == ["serving-model.env"]
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/k8s/serving-model.env"], cwd=REPO_ROOT)
    assert ignored.returncode == 0
    example = (K8S / "serving-model.env.example").read_text()
    assert re.search(r"^RTML_SERVING_MODEL_TAG=$", example, flags=re.M)
    assert "rtml models production" in example


# ---- the kustomization as kubectl renders it --------------------------------------------------------------

def _kustomize(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) not installed")
def test_kustomize_renders_generated_config_maps_and_their_references(tmp_path):
    import kubernetes_validate

    folder = tmp_path / "k8s"
    shutil.copytree(K8S, folder)
    assert _kustomize(folder).returncode != 0  # no serving-model.env: no default model
    (folder / "serving-model.env").write_text("RTML_SERVING_MODEL_TAG=fraud_model:abc123\n")
    done = _kustomize(folder)
    assert done.returncode == 0, done.stderr
    objects = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert all(o["metadata"].get("namespace") == NAMESPACE for o in objects if o["kind"] != "Namespace")
    assert not [o for o in objects if o["kind"] == "Secret"]
    maps = {o["metadata"]["name"].rsplit("-", 1)[0]: o for o in objects if o["kind"] == "ConfigMap"}
    assert maps["rtml-serving-model"]["data"] == {"RTML_SERVING_MODEL_TAG": "fraud_model:abc123"}
    assert maps["rtml-redis-start"]["data"] == {"start-redis.sh": (K8S / "redis" / "start-redis.sh").read_text()}
    scoring = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "fraud-scoring")
    env = {e["name"]: e for e in scoring["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RTML_SERVING_MODEL_TAG"]["valueFrom"]["configMapKeyRef"]["name"] == maps["rtml-serving-model"]["metadata"]["name"]
    redis = next(o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "redis")
    names = {v["configMap"]["name"] for v in redis["spec"]["template"]["spec"]["volumes"] if "configMap" in v}
    assert names == {maps["rtml-redis-start"]["metadata"]["name"]}
    for generated in maps.values():
        kubernetes_validate.validate(generated, "1.33.0", strict=True)
