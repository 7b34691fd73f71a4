"""infra/k8s: built-in objects valid against the Kubernetes schemas (kubernetes-validate), Spark operator
and Prometheus operator resources against their published models, Strimzi resources structurally; names,
ports, labels and settings consistent with each other and with the code."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest

from core.contracts import all_topics
from tests.deploy.manifests import (
    K8S,
    REPO_ROOT,
    cli_default,
    k8s_files,
    k8s_objects,
    load_yaml_docs,
    objects_of,
    one,
    pod_specs,
    rtml_env_vars,
    unknown_keys,
)

KUBERNETES_VERSION = "1.33.0"
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CUSTOM_GROUPS = ("kafka.strimzi.io/", "sparkoperator.k8s.io/", "monitoring.coreos.com/")


def _builtin_objects() -> list[tuple[str, dict]]:
    return [
        (f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in k8s_files()
        for doc in load_yaml_docs(path)
        if not doc["apiVersion"].startswith(CUSTOM_GROUPS)
    ]


@pytest.mark.parametrize("ident,obj", _builtin_objects(), ids=[i for i, _ in _builtin_objects()])
def test_builtin_objects_valid_against_kubernetes_schema(ident, obj):
    import kubernetes_validate

    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_kubernetes_schema_check_is_strict():
    """A misspelt field fails (strict schemas reject unknown properties)."""
    import kubernetes_validate

    deployment = one("Deployment", "fraud-scoring")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_every_object_named_validly_and_unique():
    seen = set()
    for obj in k8s_objects():
        name = obj["metadata"]["name"]
        assert DNS_1123.match(name) and len(name) <= 63, f"{obj['kind']} {name!r} is not a valid object name"
        key = (obj["apiVersion"].split("/")[0], obj["kind"], name)
        assert key not in seen, f"duplicate {key}"
        seen.add(key)


# ---- custom resources ------------------------------------------------------------------------------

def test_spark_application_valid_against_operator_model():
    from kubeflow_spark_api.models import SparkV1beta2SparkApplication

    app = one("SparkApplication", "rtml-stream")
    assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2"
    SparkV1beta2SparkApplication.model_validate(app)  # required fields and types
    assert unknown_keys(app, SparkV1beta2SparkApplication) == []
    broken = {**app, "spec": {**app["spec"], "driver": {**app["spec"]["driver"], "memroy": "1g"}}}
    assert unknown_keys(broken, SparkV1beta2SparkApplication) == ["spec.driver.memroy"]


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PodMonitor", "PrometheusRule"])
def test_prometheus_operator_resources_valid_against_model(kind):
    from cloudcoil.models.prometheus_operator import v1

    model = getattr(v1, kind)
    objects = objects_of(kind)
    assert objects
    for obj in objects:
        model.model_validate(obj)
        assert unknown_keys(obj, model) == [], obj["metadata"]["name"]


def test_stream_job_runs_rtml_stream_through_the_cli_script():
    app = one("SparkApplication", "rtml-stream")
    spec = app["spec"]
    assert spec["type"] == "Python" and spec["mode"] == "cluster"
    main_file = spec["mainApplicationFile"]
    assert main_file.startswith("local:///app/")
    assert (REPO_ROOT / main_file.removeprefix("local:///app/")).exists(), main_file
    assert spec["arguments"][0] == "stream"
    assert "--master" not in spec["arguments"], "the operator sets the master"
    # rtml's session builder sets the master from RTML_SPARK_MASTER: it must be the cluster, not local[*].
    driver_env = {e["name"]: e.get("value") for e in spec["driver"]["env"]}
    assert driver_env["RTML_SPARK_MASTER"].startswith("k8s://https://")
    import pyspark

    assert spec["sparkVersion"] == pyspark.__version__
    scala = _scala_binary_version()
    assert spec["deps"]["packages"] == [f"org.apache.spark:spark-sql-kafka-0-10_{scala}:{pyspark.__version__}"]
    assert spec["driver"]["serviceAccount"] in {o["metadata"]["name"] for o in objects_of("ServiceAccount")}
    claim_names = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
    assert claim_names
    assert claim_names <= {o["metadata"]["name"] for o in objects_of("PersistentVolumeClaim")}
    for role in ("driver", "executor"):
        assert {m["name"] for m in spec[role]["volumeMounts"]} <= {v["name"] for v in spec["volumes"]}
        assert spec[role]["envFrom"] == [{"configMapRef": {"name": "rtml-config"}}]


def _scala_binary_version() -> str:
    from pathlib import Path

    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    core = next(jars.glob("spark-core_*.jar")).name
    return re.match(r"spark-core_(\d+\.\d+)-", core).group(1)


def test_spark_connector_matches_infra_pom():
    pom = (REPO_ROOT / "infra" / "spark" / "pom.xml").read_text()
    artifact = re.search(r"<artifactId>(spark-sql-kafka[^<]+)</artifactId>", pom).group(1)
    package = one("SparkApplication", "rtml-stream")["spec"]["deps"]["packages"][0]
    assert package.split(":")[1] == artifact


def test_stream_metrics_port_scraped_from_the_driver():
    app = one("SparkApplication", "rtml-stream")
    driver = app["spec"]["driver"]
    ports = {p["name"]: p["containerPort"] for p in driver["ports"]}
    default = cli_default("stream", "--metrics-port")
    assert ports["metrics"] == default
    monitor = one("PodMonitor", "rtml-stream")
    selector = monitor["spec"]["selector"]["matchLabels"]
    driver_labels = {**driver["labels"], "spark-role": "driver"}  # Spark labels its driver pod spark-role=driver
    assert selector.items() <= driver_labels.items()
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= set(ports)


# ---- Strimzi (no schema package on PyPI: structural checks) ----------------------------------------

def test_kafka_is_kraft_with_node_pools():
    kafka = objects_of("Kafka")
    assert len(kafka) == 1
    kafka = kafka[0]
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1beta2"
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    assert kafka["metadata"]["annotations"]["strimzi.io/node-pools"] == "enabled"
    assert "zookeeper" not in kafka["spec"]
    pools = objects_of("KafkaNodePool")
    assert pools and all(p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"] for p in pools)
    roles = {r for p in pools for r in p["spec"]["roles"]}
    assert roles == {"controller", "broker"}
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    config = kafka["spec"]["kafka"]["config"]
    assert config["min.insync.replicas"] < config["default.replication.factor"] <= brokers
    assert "topicOperator" in kafka["spec"]["entityOperator"]


def test_kafka_topics_are_the_code_topics():
    kafka_name = objects_of("Kafka")[0]["metadata"]["name"]
    topics = objects_of("KafkaTopic")
    assert sorted(t["spec"].get("topicName", t["metadata"]["name"]) for t in topics) == sorted(all_topics())
    brokers = sum(p["spec"]["replicas"] for p in objects_of("KafkaNodePool") if "broker" in p["spec"]["roles"])
    for topic in topics:
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka_name
        assert 1 <= topic["spec"]["replicas"] <= brokers and topic["spec"]["partitions"] >= 1


# ---- settings ---------------------------------------------------------------------------------------

def _config() -> dict[str, str]:
    return one("ConfigMap", "rtml-config")["data"]


def test_configmap_sets_only_variables_the_code_reads():
    assert set(_config()) <= rtml_env_vars()
    assert {"RTML_KAFKA_BOOTSTRAP", "RTML_REDIS_URL", "RTML_STATE_DIR"} <= set(_config())


def test_kafka_bootstrap_is_the_strimzi_bootstrap_service():
    kafka = objects_of("Kafka")[0]
    host, port = _config()["RTML_KAFKA_BOOTSTRAP"].rsplit(":", 1)
    assert host == f"{kafka['metadata']['name']}-kafka-bootstrap"
    plain = [li for li in kafka["spec"]["kafka"]["listeners"] if li["port"] == int(port)]
    assert plain and plain[0]["tls"] is False and plain[0]["type"] == "internal"


def test_redis_url_is_the_redis_service():
    url = urlparse(_config()["RTML_REDIS_URL"])
    service = one("Service", url.hostname)
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
    redis = one("StatefulSet", "redis")
    container_ports = {p["containerPort"] for c in redis["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    assert url.port in container_ports


def test_state_dir_is_where_the_shared_volume_is_mounted():
    state_dir = _config()["RTML_STATE_DIR"]
    assert _config()["RTML_DATA_DIR"].startswith(state_dir + "/")
    for obj, template in pod_specs():
        spec = template["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
        for container in spec["containers"]:
            if {"configMapRef": {"name": "rtml-config"}} in container.get("envFrom", []):
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                assert claims.get(mounts.get(state_dir)) == "rtml-state", f"{obj['metadata']['name']} lacks the state volume"
    pvc = one("PersistentVolumeClaim", "rtml-state")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


# ---- ports, probes, selectors ------------------------------------------------------------------------

def _named_ports(template: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", []) if "name" in p}


def test_probes_use_declared_ports():
    for obj, template in pod_specs():
        ports = _named_ports(template)
        for container in template["spec"]["containers"]:
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                action = container.get(probe, {}).get("httpGet") or container.get(probe, {}).get("tcpSocket")
                if action:
                    port = action["port"]
                    assert port in ports or port in ports.values(), f"{obj['metadata']['name']} {probe} uses unknown port {port}"


def test_services_select_pods_and_target_their_ports():
    workloads = list(pod_specs())
    for service in objects_of("Service"):
        selector = service["spec"]["selector"]
        matched = [(o, t) for o, t in workloads if selector.items() <= t["metadata"]["labels"].items()]
        assert matched, f"Service {service['metadata']['name']} selects no pod"
        for _obj, template in matched:
            ports = _named_ports(template)
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in ports or port["targetPort"] in ports.values()


def test_workload_selectors_match_their_templates():
    for obj, template in pod_specs():
        if obj["kind"] == "Job":
            continue
        assert obj["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()


def test_service_monitors_select_services_and_ports():
    for monitor in objects_of("ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [s for s in objects_of("Service") if selector.items() <= s["metadata"].get("labels", {}).items()]
        assert len(services) == 1, monitor["metadata"]["name"]
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names


def test_prediction_service_probes_port_and_autoscaling():
    deployment = one("Deployment", "fraud-scoring")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = _named_ports(deployment["spec"]["template"])
    assert ports["http"] == cli_default("serve", "--port")
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"], "the HPA needs a CPU request"
    service = one("Service", "fraud-scoring")
    assert service["spec"]["ports"][0]["port"] == ports["http"]
    hpa = one("HorizontalPodAutoscaler", "fraud-scoring")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fraud-scoring"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_monitor_port_and_command():
    deployment = one("Deployment", "rtml-monitor")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["rtml", "monitor"]
    assert _named_ports(deployment["spec"]["template"])["metrics"] == cli_default("monitor", "--metrics-port")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"


def test_images_are_set_by_kustomize():
    import yaml

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    managed = {i["name"] for i in kustomization["images"]}
    images = {c["image"] for _o, t in pod_specs() for c in t["spec"]["containers"]}
    images.add(one("SparkApplication", "rtml-stream")["spec"]["image"])
    assert {i for i in images if ":" not in i} <= managed


def test_prediction_service_serves_the_model_packed_in_its_image():
    """The exact tag from the generated ConfigMap rtml-serving-model (no literal, never `latest`)."""
    deployment = one("Deployment", "fraud-scoring")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    tag = env["RTML_SERVING_MODEL_TAG"]
    assert "value" not in tag
    assert tag["valueFrom"]["configMapKeyRef"] == {"name": "rtml-serving-model", "key": "RTML_SERVING_MODEL_TAG"}
    assert "BENTOML_HOME" not in env
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == _config()["RTML_STATE_DIR"])
    assert mount["readOnly"] is True
