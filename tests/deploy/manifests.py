"""Loading and checking the deployment files (docker-compose, Kubernetes, Grafana, Prometheus) for the
tests in tests/deploy: pure parsing, no cluster, no Docker."""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from core.settings import REPO_ROOT

INFRA = REPO_ROOT / "infra"
COMPOSE = INFRA / "docker-compose.yml"
K8S = INFRA / "k8s"
GRAFANA = INFRA / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "rtml.json"
PROMETHEUS = INFRA / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
PROMETHEUS_RULE = K8S / "prometheus-rule.yaml"
CODE_DIRS = ("core", "rtml", "streaming", "training", "bentos", "monitoring", "infra")


def load_yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_objects() -> list[dict]:
    """Every object of the Kubernetes manifests, with the namespace kustomize would set."""
    return [doc for path in k8s_files() for doc in load_yaml_docs(path)]


def objects_of(kind: str) -> list[dict]:
    return [o for o in k8s_objects() if o["kind"] == kind]


def one(kind: str, name: str) -> dict:
    found = [o for o in objects_of(kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs() -> Iterator[tuple[dict, dict]]:
    """(workload object, pod template spec) for every Deployment / StatefulSet / Job."""
    for obj in k8s_objects():
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield obj, obj["spec"]["template"]


# ---- code facts ------------------------------------------------------------------------------------

def python_sources() -> Iterator[Path]:
    for folder in CODE_DIRS:
        yield from (p for p in (REPO_ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def rtml_env_vars() -> set[str]:
    """Names of RTML_* variables the code reads (string literals anywhere in the sources)."""
    names: set[str] = set()
    for path in python_sources():
        names.update(re.findall(r"[\"'](RTML_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


_METRIC_CALL = re.compile(
    r"\b(Gauge|Counter|Histogram|Summary|Info|Enum)(?:MetricFamily)?\(\s*(?:name\s*=\s*)?[\"']([a-zA-Z_:][a-zA-Z0-9_:]*)[\"']"
)


def declared_metrics() -> dict[str, str]:
    """Metric name -> type, for every prometheus_client / bentoml.metrics metric created in the sources."""
    found: dict[str, str] = {}
    for path in python_sources():
        for kind, name in _METRIC_CALL.findall(path.read_text()):
            found[name] = kind
    return found


def bentoml_metrics() -> dict[str, str]:
    """BentoML's own request metrics of a 1.4 service, read from the installed bentoml sources: the
    namespace of the default configuration + the names the traffic middleware registers."""
    import bentoml

    root = Path(bentoml.__file__).parent
    config = yaml.safe_load((root / "_internal/configuration/v2/default_configuration.yaml").read_text())
    namespace = config["services"]["metrics"]["namespace"]
    source = (root / "_internal/server/http/instruments.py").read_text()
    runner_mw = source[source.index("class RunnerTrafficMetricsMiddleware") :]
    found = {}
    for kind, name in re.findall(r"metrics_client\.(Histogram|Counter|Gauge)\(\s*namespace=self\.namespace,\s*name=\"(\w+)\"", runner_mw):
        found[f"{namespace}_{name}"] = kind
    return found


def exposed_series(metrics: dict[str, str]) -> set[str]:
    """Series names Prometheus sees for metrics declared with prometheus_client conventions."""
    series: set[str] = set()
    for name, kind in metrics.items():
        if kind == "Counter":
            base = name[: -len("_total")] if name.endswith("_total") else name
            series.update({base + "_total", base + "_created"})
        elif kind in ("Histogram", "Summary"):
            series.update({name + "_bucket", name + "_sum", name + "_count", name + "_created", name})
        elif kind == "Info":
            series.add(name + "_info")
        else:
            series.add(name)
    return series


_PROMQL_NAME = re.compile(r"\b((?:rtml|bentoml)_[a-zA-Z0-9_:]+)\b")


def promql_metric_names(expr: str) -> set[str]:
    """rtml_* / bentoml_* metric names used in a PromQL expression."""
    return set(_PROMQL_NAME.findall(expr))


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def alert_rules(groups: list[dict]) -> list[dict]:
    return [rule for g in groups for rule in g["rules"]]


def cli_default(command: str, option: str) -> Any:
    """Default of ``--option`` of ``rtml <command>``, from the subcommand's own argparse definition."""
    from rtml.cli import COMMANDS

    module = importlib.import_module(COMMANDS[command][0])
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.get_default(option.lstrip("-").replace("-", "_"))


def module_constant(module_path: Path, name: str) -> Any:
    """A module-level literal constant, read without importing the module."""
    tree = ast.parse(module_path.read_text())
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id == name and node.value is not None:
                return ast.literal_eval(node.value)
    raise KeyError(f"{name} not found in {module_path}")


# ---- strict validation of custom resources against pydantic models --------------------------------

def unknown_keys(data: Any, annotation: Any, path: str = "") -> list[str]:
    """Keys of ``data`` that the pydantic model ``annotation`` does not define, recursively (models of
    CRD generators ignore extra keys, so a typo would otherwise pass validation)."""
    import pydantic

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return unknown_keys(data, args[0], path)
    if origin in (typing.Union, types.UnionType):
        candidates = [a for a in args if a is not type(None)]
        if isinstance(data, (dict, list)):
            structured = [a for a in candidates if typing.get_origin(a) is not None or isinstance(a, type) and issubclass(a, pydantic.BaseModel)]
            candidates = structured or candidates
        results = [unknown_keys(data, a, path) for a in candidates]
        return min(results, key=len) if results else []
    if origin in (list, typing.List) and isinstance(data, list):  # noqa: UP006
        return [e for i, item in enumerate(data) for e in unknown_keys(item, args[0], f"{path}[{i}]")]
    if origin in (dict, typing.Dict) and isinstance(data, dict):  # noqa: UP006
        return [e for k, v in data.items() for e in unknown_keys(v, args[1], f"{path}.{k}")]
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel) and isinstance(data, dict):
        by_key = {}
        for field_name, info in annotation.model_fields.items():
            by_key[field_name] = info.annotation
            if info.alias:
                by_key[info.alias] = info.annotation
        errors = []
        for key, value in data.items():
            if key not in by_key:
                errors.append(f"{path}.{key}".lstrip("."))
            else:
                errors.extend(unknown_keys(value, by_key[key], f"{path}.{key}"))
        return errors
    return []


# ---- docker-compose: variables and the Kafka broker's environment -------------------------------------

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
COMPOSE_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
KAFKA_START = INFRA / "docker" / "kafka-start.sh"
# Variables the apache/kafka image's launcher (and kafka-start.sh) reads itself instead of turning them into
# broker properties.
KAFKA_NOT_PROPERTIES = {"KAFKA_VERSION", "KAFKA_HEAP_OPTS", "KAFKA_LOG4J_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS",
                        "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_GC_LOG_OPTS", "KAFKA_LOG4J_ROOT_LOGLEVEL",
                        "KAFKA_LOG4J_LOGGERS", "KAFKA_TOOLS_LOG4J_LOGLEVEL", "KAFKA_JMX_HOSTNAME"}


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${...}`` substitution of ``value`` with ``variables`` (the env file); a required variable
    (``:?``) that is missing or empty raises, as Compose refuses to start."""

    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        got = variables.get(name)
        if op == ":?" and not got:
            raise KeyError(f"{name}: {arg}")
        if op == ":-" and not got:
            return arg
        return got or ""

    return COMPOSE_INTERPOLATION.sub(one, value)


def kafka_env_to_properties(env: dict[str, str]) -> dict[str, str]:
    """apache/kafka's rule (kafka-start.sh applies it too): strip KAFKA_, lower-case, ``___`` -> ``-``,
    ``__`` -> ``_``, ``_`` -> ``.``."""
    props = {}
    for name, value in env.items():
        if not name.startswith("KAFKA_") or name in KAFKA_NOT_PROPERTIES:
            continue
        key = name[len("KAFKA_"):].lower().replace("___", "-").replace("__", "\0").replace("_", ".").replace("\0", "_")
        props[key] = str(value)
    return props
