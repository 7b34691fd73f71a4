"""infra/docker/rtml.Dockerfile, parsed by the official Dockerfile parser (the `dockerfile` package wraps
BuildKit's Go parser): syntax, and agreement with the project (Python version, packages, entrypoint,
ports, state directory)."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from tests.deploy.manifests import COMPOSE, INFRA, REPO_ROOT, cli_default

DOCKERFILE = INFRA / "docker" / "rtml.Dockerfile"


@pytest.fixture(scope="module")
def instructions():
    import dockerfile

    return dockerfile.parse_file(str(DOCKERFILE))


def _all(instructions, cmd: str):
    return [i for i in instructions if i.cmd == cmd]


def _env(instructions) -> dict[str, str]:
    env = {}
    for inst in _all(instructions, "ENV"):
        env.update(dict(zip(inst.value[::2], inst.value[1::2], strict=True)))
    return env


KNOWN = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER", "WORKDIR",
         "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def test_parser_rejects_a_broken_dockerfile():
    """The parser is BuildKit's: it fails where BuildKit's parse stage fails (it is lenient elsewhere,
    hence the instruction checks below)."""
    import dockerfile

    with pytest.raises(dockerfile.GoParseError):
        dockerfile.parse_string("FROM python:3.11-slim\nENV ONLY_A_NAME\n")


def test_only_known_instructions_with_arguments(instructions):
    for inst in instructions:
        assert inst.cmd in KNOWN, inst.original
        assert inst.value and all(v != "" for v in inst.value), inst.original
        if inst.cmd == "COPY":
            assert len(inst.value) >= 2, inst.original
        if inst.json:
            assert all(not v.startswith("[") for v in inst.value), inst.original


def test_base_image_has_the_project_python(instructions):
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minor = re.search(r">=3\.(\d+)", requires).group(1)
    base = _all(instructions, "FROM")[0].value[0]
    assert base.startswith(f"python:3.{minor}-")
    assert f"python3.{minor}/site-packages/pyspark" in _env(instructions)["SPARK_HOME"]


def test_copies_sources_that_exist_and_every_package(instructions):
    copied = set()
    for inst in _all(instructions, "COPY"):
        *sources, _dest = inst.value
        for source in sources:
            assert (REPO_ROOT / source).exists(), source
            copied.add(source.rstrip("/"))
    packages = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} | {"feature_repo", "requirements.lock", "pyproject.toml"} <= copied


def test_installs_the_lock_and_the_connector_and_the_entrypoint(instructions):
    runs = " ".join(" ".join(i.value) for i in _all(instructions, "RUN"))
    assert "pip install -q -r requirements.lock" in runs
    assert "connector_dir()" in runs  # Spark's Kafka connector resolved at build time (infra/spark_deps.py)
    entrypoint = _all(instructions, "ENTRYPOINT")[0]
    assert entrypoint.json, "exec form, so signals reach tini"
    assert f"infra/docker/spark-entrypoint.sh {entrypoint.value[0]}" in runs
    assert _all(instructions, "CMD")[0].json


def test_user_ports_and_state_dir(instructions):
    assert _all(instructions, "USER")[-1].value == ("185",)
    exposed = {int(p) for i in _all(instructions, "EXPOSE") for p in i.value}
    assert {cli_default("stream", "--metrics-port"), cli_default("monitor", "--metrics-port")} <= exposed
    env = _env(instructions)
    compose_state = yaml.safe_load(COMPOSE.read_text())["x-rtml-env"]["RTML_STATE_DIR"]
    assert env["RTML_STATE_DIR"] == compose_state
    assert _all(instructions, "VOLUME")[0].value == (compose_state,)
