"""The one way to import the feature repo's definition modules (``feature_repo/*.py``).

Feast imports the repo's modules by file name with the repo folder on ``sys.path`` and chdirs into
it; these helpers do the same and undo both, so definitions are read with the current settings
(data paths, Kafka bootstrap) and a second domain is only another ``RTML_FEATURE_REPO``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from core.errors import UserFacingError
from core.settings import settings


def repo_path() -> Path:
    """Folder of the feature repo of the current settings."""
    return settings().feature_repo


def _forget_definition_modules(repo: Path) -> None:
    for path in repo.glob("*.py"):
        sys.modules.pop(path.stem, None)


@contextlib.contextmanager
def repo_on_path() -> Iterator[Path]:
    """Feast's import context: fresh definition modules, the repo first on ``sys.path``; restored afterwards."""
    repo = repo_path()
    cwd = os.getcwd()
    _forget_definition_modules(repo)
    sys.path.insert(0, str(repo))
    try:
        yield repo
    finally:
        os.chdir(cwd)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(repo))


def import_definitions(module: str) -> ModuleType:
    """A definition module of the repo (``services``, ``on_demand``, ...), imported as Feast would."""
    with repo_on_path() as repo:
        if not (repo / f"{module}.py").exists():
            raise UserFacingError(f"the feature repo {repo} has no {module}.py")
        return importlib.import_module(module)


def repo_contents():
    """Every Feast object the repo defines (``feast.repo_contents.RepoContents``), as ``feast apply`` sees them."""
    from feast.repo_operations import parse_repo

    with repo_on_path() as repo:
        os.chdir(repo)
        return parse_repo(repo)
