"""bentos/bentofile.yaml (the serving helper's) as the deployments use it: valid for BentoML, packs every
module the service imports and the served model, and its name is the image the deployments run."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pathspec
import pytest
import yaml

from tests.deploy.manifests import COMPOSE, REPO_ROOT, one

BENTOFILE = REPO_ROOT / "bentos" / "bentofile.yaml"
pytestmark = pytest.mark.skipif(not BENTOFILE.exists(), reason="bentos/bentofile.yaml not written yet")
PROJECT_PACKAGES = ("rtml", "bentos", "training", "streaming", "monitoring", "infra")


def _config() -> dict:
    return yaml.safe_load(BENTOFILE.read_text())


def test_bentoml_accepts_the_bentofile():
    from bentoml._internal.bento.build_config import BentoBuildConfig

    with open(BENTOFILE) as fh:
        config = BentoBuildConfig.from_yaml(fh)
    assert config.service == "bentos.service:FraudScorer"
    assert (REPO_ROOT / config.python.requirements_txt).exists()


def test_service_class_exists():
    module, _, cls = _config()["service"].partition(":")
    tree = ast.parse((REPO_ROOT / (module.replace(".", "/") + ".py")).read_text())
    assert any(isinstance(n, ast.ClassDef) and n.name == cls for n in tree.body)


def _module_file(name: str) -> Path | None:
    base = REPO_ROOT / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def import_closure(start: Path) -> set[Path]:
    """Project files reachable from ``start`` through (module-level or local) imports."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.split(".")[0] in PROJECT_PACKAGES:
                    parts = name.split(".")
                    for i in range(1, len(parts) + 1):  # the package __init__ files run too
                        found = _module_file(".".join(parts[:i]))
                        if found:
                            todo.append(found)
    return seen


def test_include_covers_the_service_import_closure_and_the_feature_repo():
    spec = pathspec.PathSpec.from_lines("gitwildmatch", _config()["include"])
    closure = import_closure(REPO_ROOT / "bentos" / "service.py")
    assert len(closure) > 5
    closure |= set((REPO_ROOT / "feature_repo").glob("*.py")) | {REPO_ROOT / "feature_repo" / "feature_store.yaml"}
    missing = sorted(str(p.relative_to(REPO_ROOT)) for p in closure if not spec.match_file(str(p.relative_to(REPO_ROOT))))
    assert missing == []


def test_image_name_matches_the_deployments():
    """`bentoml containerize NAME:latest --image-tag NAME:latest` gives the image the deployments run."""
    name = _config()["name"]
    compose = yaml.safe_load(COMPOSE.read_text())
    image = compose["services"]["fraud-scoring"]["image"]
    assert image == f"${{RTML_BENTO_IMAGE:-{name}:latest}}"
    deployment = one("Deployment", "fraud-scoring")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == name


SAVE_TWO_MODELS = (
    "from tests.fixtures.models import save_test_model\n"
    "print(save_test_model(n_rows=300, rounds=2, seed=1))\n"  # promoted: the production model
    "print(save_test_model(n_rows=300, rounds=2, seed=2, promote_it=False))\n"  # newer, the gate's reject
)


@pytest.mark.timeout(300)
def test_bentoml_build_packs_code_and_the_served_model(tmp_path):
    """The documented build, for real (`bentoml build`, no Docker needed), in a registry whose newest model
    is NOT the production one (as after a retraining the gate rejected): `rtml models production` prints
    the production tag, and a build with RTML_SERVING_MODEL_TAG set to it packs that model, not
    `fraud_model:latest`; the Bento holds every file the service imports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RTML_", "BENTOML_"))}
    env.update(RTML_STATE_DIR=str(tmp_path / "state"), BENTOML_DO_NOT_TRACK="true")
    made = subprocess.run([sys.executable, "-c", SAVE_TWO_MODELS], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert made.returncode == 0, made.stderr[-2000:]
    production, rejected = made.stdout.strip().splitlines()[-2:]
    printed = subprocess.run([sys.executable, str(REPO_ROOT / "rtml" / "cli.py"), "models", "production"], cwd=REPO_ROOT,
                             env=env, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr[-2000:]
    tag = printed.stdout.strip().splitlines()[-1]
    assert tag == production != rejected
    env["BENTOML_HOME"] = str(tmp_path / "state" / "bentoml")  # where core.model_store keeps the store
    bentoml = Path(sys.executable).parent / "bentoml"
    latest = subprocess.run([str(bentoml), "models", "get", production.split(":")[0] + ":latest", "-o", "json"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert latest.returncode == 0 and rejected.split(":")[1] in latest.stdout  # `latest` would pack the reject
    done = subprocess.run([str(bentoml), "build", "-f", str(BENTOFILE), "."], cwd=REPO_ROOT,
                          env={**env, "RTML_SERVING_MODEL_TAG": tag}, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    bentos = [p for p in (tmp_path / "state" / "bentoml" / "bentos" / _config()["name"]).iterdir() if p.name != "latest"]
    assert len(bentos) == 1
    bento = bentos[0]
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["name"] == _config()["name"] and info["entry_service"] == "fraud_scorer"
    packed = [m["tag"] for svc in info["services"] for m in svc["models"]] + [m["tag"] for m in info["models"]]
    assert packed == [tag]
    src = bento / "src"
    for path in import_closure(REPO_ROOT / "bentos" / "service.py"):
        assert (src / path.relative_to(REPO_ROOT)).exists(), path
    assert (src / "feature_repo" / "feature_store.yaml").exists()
    assert (bento / "env" / "docker" / "Dockerfile").exists()


def test_models_production_fails_clearly_without_a_production_model(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RTML_", "BENTOML_"))}
    env.update(RTML_STATE_DIR=str(tmp_path / "state"), BENTOML_DO_NOT_TRACK="true")
    done = subprocess.run([sys.executable, str(REPO_ROOT / "rtml" / "cli.py"), "models", "production"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stdout == "" and "no production model yet" in done.stderr
