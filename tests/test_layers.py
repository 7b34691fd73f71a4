"""Floors follow the flow: every package imports only packages below it, so there are no circles."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["core", "infra", "streaming", "training", "bentos", "monitoring", "rtml"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_packages_import_only_lower_floors():
    upward = []
    for floor, package in enumerate(ORDER):
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in _imports(path) & set(ORDER):
                if ORDER.index(name) > floor:
                    upward.append(f"{path.relative_to(ROOT)} imports {name}")
    assert upward == []


def test_feature_repo_imports_only_the_ground_floor():
    for path in (ROOT / "feature_repo").glob("*.py"):
        assert _imports(path) & set(ORDER) <= {"core"}, path


def test_no_module_shadows_an_installed_package():
    """Running a file as a script puts its folder first on sys.path (spark-submit does): no kafka.py etc."""
    shadowing = {"kafka", "redis", "feast", "bentoml", "pyspark", "mlflow", "xgboost"}
    names = {p.stem for package in ORDER for p in (ROOT / package).rglob("*.py")}
    assert names & shadowing == set()
