"""Import Feast without typeguard's instrumentation (the one place rtml patches a library at import).

Feast decorates its definition classes and functions (``FeatureView``, ``OnDemandFeatureView``, ``DataSource``
... about 40) with typeguard's ``@typechecked``, which instruments each one when its module is imported by
re-reading, re-parsing and re-compiling that module's source. That made ``import feast`` cost 10.3 s of CPU on
a slow day here (3.5 s without it), paid by every ``rtml`` command, serving worker and stream job that reads the
registry. The checks only guard the argument types of Feast's own constructors (what ``python -O`` turns off
too); rtml's definitions are validated by ``rtml apply`` and Feast itself. :func:`skip_typeguard` makes
``typeguard.typechecked`` return what it decorates, unchanged, for the modules imported after it; it must run
before Feast's first import (``core/__init__.py`` calls it), and does nothing once Feast is imported.
"""

from __future__ import annotations

import sys
from typing import Any


def _unchecked(target: Any = None, **_options: Any) -> Any:
    """``typechecked`` that returns its target (also as ``@typechecked(...)`` with options)."""
    return target if target is not None else _unchecked


def skip_typeguard() -> bool:
    """Turn ``typeguard.typechecked`` into the identity before Feast is imported; True when it took effect."""
    if "feast" in sys.modules:
        return False
    try:
        import typeguard
    except ImportError:  # no typeguard, nothing to skip
        return False
    typeguard.typechecked = _unchecked
    return True
