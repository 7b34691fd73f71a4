"""Numba-compiled kernels: cached on disk beside the source when that is writable, else compiled per
process (a read-only image). The one place that decides, for every package that compiles a kernel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def compile_nogil(fn: Callable) -> Any:
    """``numba.njit(nogil=True)`` of ``fn``, with an on-disk cache when numba has a writable location."""
    from numba import njit

    try:
        return njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # no writable cache location: compiled per process
        return njit(nogil=True, cache=False)(fn)
