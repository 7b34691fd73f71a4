"""XGBoost scoring with the least per-call overhead, the same for one request, a batch and batch scoring.

``Booster.inplace_predict`` costs ~130 us of CPU for one row of a 300-tree model on this machine, ~15 us of
which walk the trees: the rest is per-call set-up (JSON configuration, array interface, proxy matrix).
:class:`CompiledTrees` flattens a ``gbtree`` + ``binary:logistic`` booster once into node arrays (children,
split feature, float32 threshold, default direction, leaf value) and walks them with numba-compiled kernels
(no GIL held): a single row costs the tree walk only (~20 us instead of ~130 us), a matrix about what
XGBoost's own single-threaded predictor costs. It reproduces XGBoost's
arithmetic (float32 comparisons ``x < threshold``, missing -> default branch, float32 margin starting at
the base margin and adding leaves in tree order, float32 sigmoid) and checks itself against
``inplace_predict`` at construction on random rows with missing values; a model it does not reproduce
(other objectives, categorical splits, multi-target) keeps XGBoost.

:class:`RowPredictor` is what the service holds per model: the compiled trees, else a direct call of the
C entry point ``inplace_predict`` uses (``XGBoosterPredictFromDense``, configuration built once), else
``inplace_predict`` itself.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

MAX_ABS_DIFF = 1e-6  # compiled vs XGBoost on the probe rows; beyond it the model keeps XGBoost
BLOCK = 64  # rows walked together through one tree (XGBoost's CPU predictor uses the same block size)
COLUMN_BLOCK = 128  # rows walked together level by level in batch scoring's complete trees
COLUMNS_MIN_ROWS = 8  # from this many rows a request's matrix is walked feature-major (2.7x faster at 100 rows)
MAX_COMPLETE_DEPTH = 10  # deeper models: the node-array walk instead of complete trees (2**depth slots per tree)


# ---- numba kernels (compiled once per process, on first use) ---------------------------------------------
_KERNELS = None


def _kernels():
    """(row kernel, matrix kernel), compiled on first use (numba import ~0.5 s, compilation ~1 s)."""
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    from numba import njit

    @njit(nogil=True, cache=False, fastmath=False)
    def margin(x, roots, left, right, feat, value, dleft, base):
        # XGBoost allocates children in pairs (right = left + 1): the step is branch-free
        s = base
        for t in range(roots.shape[0]):
            n = roots[t]
            child = left[n]
            while child != -1:
                v = x[feat[n]]
                go_right = dleft[n] ^ 1 if v != v else np.uint8(not v < value[n])
                n = child + go_right
                child = left[n]
            s += value[n]
        return s

    @njit(nogil=True, cache=False)
    def sigmoid(m):
        return np.float32(1.0) / (np.exp(-m) + np.float32(1.0))

    @njit(nogil=True, cache=False)
    def row(x, roots, left, right, feat, value, dleft, base):
        return sigmoid(margin(x, roots, left, right, feat, value, dleft, base))

    @njit(nogil=True, cache=False)
    def block(X, lo, hi, roots, left, right, feat, value, dleft, base, out):
        # rows lo..hi tree by tree (a tree stays in cache); each row still adds its leaves in tree order
        for i in range(lo, hi):
            out[i] = base
        for t in range(roots.shape[0]):
            root = roots[t]
            for i in range(lo, hi):
                n = root
                child = left[n]
                while child != -1:
                    v = X[i, feat[n]]
                    go_right = dleft[n] ^ 1 if v != v else np.uint8(not v < value[n])
                    n = child + go_right
                    child = left[n]
                out[i] += value[n]
        for i in range(lo, hi):
            out[i] = sigmoid(out[i])

    @njit(nogil=True, cache=False)
    def matrix(X, roots, left, right, feat, value, dleft, base, out):
        n = X.shape[0]
        for lo in range(0, n, BLOCK):
            block(X, lo, min(lo + BLOCK, n), roots, left, right, feat, value, dleft, base, out)

    _KERNELS = (row, matrix)
    return _KERNELS


def _walk_columns(Xt, lo, hi, offset, thr, leaf, depth, base, out):  # pragma: no cover - runs compiled
    """Rows ``lo..hi`` of a feature-major matrix (``Xt[f, i]``, ``n`` rows) through complete trees of
    ``depth`` levels (node k's children 2k+1 / 2k+2; ``offset`` = ``f * n << 1 | default_left``):
    ``COLUMN_BLOCK`` rows walk two trees at once, level by level, without branches (two independent
    chains of loads in flight per row); each row still adds its leaves in tree order, then the same
    float32 sigmoid as the ``sigmoid`` kernel."""
    n_inner = np.uint32((1 << depth) - 1)
    n_leaves = n_inner + np.uint32(1)
    n_trees = thr.shape[0] // n_inner
    xs = Xt.ravel()
    at = np.zeros(COLUMN_BLOCK, np.uint32)
    at2 = np.zeros(COLUMN_BLOCK, np.uint32)
    acc = np.zeros(COLUMN_BLOCK, np.float32)
    one = np.uint64(1)
    two = np.uint32(2)
    for lo_b in range(lo, hi, COLUMN_BLOCK):
        m = min(lo_b + COLUMN_BLOCK, hi) - lo_b
        for j in range(m):
            acc[j] = base
        t = 0
        while t + 1 < n_trees:  # trees t and t + 1 together
            first = np.uint32(t) * n_inner
            first2 = first + n_inner
            for j in range(m):
                at[j] = 0
                at2[j] = 0
            for _ in range(depth):
                for j in range(m):
                    row = np.uint64(lo_b + j)
                    k = first + at[j]
                    k2 = first2 + at2[j]
                    o = offset[k]
                    o2 = offset[k2]
                    v = xs[(o >> one) + row]
                    v2 = xs[(o2 >> one) + row]
                    go_left = (v < thr[k]) | ((v != v) & ((o & one) != 0))
                    go_left2 = (v2 < thr[k2]) | ((v2 != v2) & ((o2 & one) != 0))
                    at[j] = two * at[j] + two - np.uint32(go_left)
                    at2[j] = two * at2[j] + two - np.uint32(go_left2)
            leaves = np.uint32(t) * n_leaves - n_inner
            for j in range(m):
                acc[j] += leaf[leaves + at[j]]
                acc[j] += leaf[leaves + n_leaves + at2[j]]
            t += 2
        if t < n_trees:  # an odd last tree
            first = np.uint32(t) * n_inner
            for j in range(m):
                at[j] = 0
            for _ in range(depth):
                for j in range(m):
                    k = first + at[j]
                    o = offset[k]
                    v = xs[(o >> one) + np.uint64(lo_b + j)]
                    go_left = (v < thr[k]) | ((v != v) & ((o & one) != 0))
                    at[j] = two * at[j] + two - np.uint32(go_left)
            leaves = np.uint32(t) * n_leaves - n_inner
            for j in range(m):
                acc[j] += leaf[leaves + at[j]]
        for j in range(m):
            out[lo_b + j] = np.float32(1.0) / (np.exp(-acc[j]) + np.float32(1.0))


_COLUMNS = None


def _columns_kernel():
    """:func:`_walk_columns` compiled, cached on disk by numba (``__pycache__``; compiling costs seconds
    on a busy machine, loading the cache ~0.1 s); without a writable cache, compiled per process."""
    global _COLUMNS
    if _COLUMNS is None:
        from core.compiled import compile_nogil

        _COLUMNS = compile_nogil(_walk_columns)
    return _COLUMNS


def _logistic_margin(base_score: float) -> np.float32:
    """The logistic objective's ``ProbToMargin`` as XGBoost computes it, in float32: ``-logf(1.0f / p - 1.0f)``
    (the float64 formula rounds differently for some base scores, e.g. 0.543: one ulp off every score)."""
    p = np.float32(base_score)
    return np.float32(-math.log(float(np.float32(np.float32(1.0) / p - np.float32(1.0)))))


class CompiledTrees:
    """A ``gbtree`` / ``binary:logistic`` booster as flat node arrays walked by compiled kernels."""

    def __init__(self, booster, n_features: int):
        model = json.loads(booster.save_raw("json"))["learner"]
        objective = model["objective"]["name"]
        if objective != "binary:logistic":
            raise ValueError(f"objective {objective} (compiled: binary:logistic only)")
        gb = model["gradient_booster"]
        if gb["name"] != "gbtree":
            raise ValueError(f"booster {gb['name']} (compiled: gbtree only)")
        param = model["learner_model_param"]
        if int(param.get("num_target", "1")) != 1 or int(param.get("num_class", "0")) > 1:
            raise ValueError("multi-target / multi-class model")
        trees = gb["model"]["trees"]
        roots, left, right, feat, value, dleft = [], [], [], [], [], []
        offset = 0
        for tree in trees:
            if any(tree["split_type"]) or tree["categories"]:
                raise ValueError("categorical splits")
            n = len(tree["left_children"])
            roots.append(offset)
            lc, rc = np.asarray(tree["left_children"], np.int32), np.asarray(tree["right_children"], np.int32)
            if np.any((lc != -1) & (rc != lc + 1)):
                raise ValueError("children not allocated in pairs")
            left.append(np.where(lc == -1, -1, lc + offset))
            right.append(np.where(rc == -1, -1, rc + offset))
            feat.append(np.asarray(tree["split_indices"], np.int32))
            value.append(np.asarray(tree["split_conditions"], np.float32))  # leaves: the leaf value
            dleft.append(np.asarray(tree["default_left"], np.uint8))
            offset += n
        self.n_features = n_features
        if any(int(f.max(initial=0)) >= n_features for f in feat):
            raise ValueError("a split on a feature beyond the model's inputs")
        base_score = float(str(param["base_score"]).strip("[]"))
        self.arrays = (
            np.asarray(roots, np.int32), np.concatenate(left), np.concatenate(right), np.concatenate(feat),
            np.concatenate(value), np.concatenate(dleft),
            _logistic_margin(base_score),
        )
        self.row_kernel, self.matrix_kernel = _kernels()
        self.n_trees = len(trees)
        self._complete: tuple | None | bool = False  # not built yet

    def complete_trees(self) -> tuple | None:
        """The trees padded to complete binary trees of the deepest tree's depth (``MAX_COMPLETE_DEPTH``
        at most, else ``None``): per tree ``2**depth - 1`` inner nodes (split feature, default-left flag,
        float32 threshold) and ``2**depth`` leaves; a leaf above the bottom fills every bottom slot below
        it, so a walk through its padding nodes (feature 0, any direction) ends on its value."""
        if self._complete is not False:
            return self._complete
        roots, left, _right, feat, value, dleft, base = self.arrays

        def depth_of(n: int) -> int:
            return 0 if left[n] == -1 else 1 + max(depth_of(left[n]), depth_of(left[n] + 1))

        depth = max(1, max(depth_of(int(r)) for r in roots))
        if depth > MAX_COMPLETE_DEPTH:
            self._complete = None
            return None
        n_inner = (1 << depth) - 1
        node = np.zeros((len(roots), n_inner), np.uint64)
        default_left = np.zeros((len(roots), n_inner), np.uint64)
        thr = np.zeros((len(roots), n_inner), np.float32)
        leaf = np.zeros((len(roots), n_inner + 1), np.float32)
        for t, root in enumerate(roots):
            stack = [(int(root), 0)]
            while stack:
                n, k = stack.pop()
                if left[n] == -1:
                    lo = hi = k
                    while lo < n_inner:
                        lo, hi = 2 * lo + 1, 2 * hi + 2
                    leaf[t, lo - n_inner : hi - n_inner + 1] = value[n]
                    continue
                node[t, k], default_left[t, k] = feat[n], dleft[n]
                thr[t, k] = value[n]
                stack += [(int(left[n]), 2 * k + 1), (int(left[n]) + 1, 2 * k + 2)]
        complete = (node.ravel(), default_left.ravel(), thr.ravel(), leaf.ravel(), depth, base)
        self._complete = complete
        return complete

    def predict_buffer(self, x: np.ndarray) -> float:
        """Score of one float32 row (a preallocated buffer)."""
        return float(self.row_kernel(x, *self.arrays))

    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        """float32 scores of a C-contiguous float32 matrix (64-row blocks walked tree by tree, like XGBoost)."""
        out = np.empty(X.shape[0], dtype=np.float32)
        self.matrix_kernel(X, *self.arrays, out)
        return out

    def predict_columns(self, Xt: np.ndarray, out: np.ndarray, lo: int = 0, hi: int | None = None) -> None:
        """float32 scores of rows ``lo..hi`` of a feature-major float32 matrix (``Xt[feature, row]``,
        C-contiguous) into ``out[lo:hi]``; the GIL is released, so threads can score disjoint ranges.
        Same arithmetic as :meth:`predict_matrix` (complete trees when shallow enough, ~2x faster)."""
        hi = Xt.shape[1] if hi is None else hi
        # the kernel reads without bounds checks: wrong shapes or types must not reach it
        if Xt.dtype != np.float32 or Xt.ndim != 2 or Xt.shape[0] != self.n_features or not Xt.flags.c_contiguous:
            raise ValueError(f"need a C-contiguous float32 matrix of {self.n_features} feature rows, got {Xt.dtype} {Xt.shape}")
        if out.dtype != np.float32 or not 0 <= lo <= hi <= min(Xt.shape[1], len(out)):
            raise ValueError(f"rows {lo}..{hi} do not fit a matrix of {Xt.shape[1]} rows and {len(out)} {out.dtype} outputs")
        complete = self.complete_trees()
        if complete is not None:
            feature, default_left, thr, leaf, depth, base = complete
            offset = (feature * np.uint64(Xt.shape[1])) << np.uint64(1) | default_left
            _columns_kernel()(Xt, lo, hi, offset, thr, leaf, depth, base, out)
        else:
            out[lo:hi] = self.predict_matrix(np.ascontiguousarray(Xt[:, lo:hi].T))


def probe_rows(n_features: int, n: int = 256, seed: int = 0) -> np.ndarray:
    """Random float32 rows with missing values, around typical feature scales, for self-checks."""
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, n_features)) * rng.choice([1.0, 10.0, 100.0, 1000.0], size=(n, n_features))).astype(np.float32)
    X[rng.random(X.shape) < 0.15] = np.nan
    X[: n // 8] = np.round(X[: n // 8])  # values on typical split points (integers)
    return X


def compile_booster(booster, n_features: int, extra_rows: np.ndarray | None = None) -> CompiledTrees | None:
    """:class:`CompiledTrees` of ``booster`` if it reproduces ``inplace_predict`` within ``MAX_ABS_DIFF`` on
    probe rows (and ``extra_rows``), else ``None`` (logged): callers keep XGBoost."""
    from core.settings import settings

    if not settings().serving.compiled_trees:
        return None
    try:
        compiled = CompiledTrees(booster, n_features)
        X = probe_rows(n_features)
        if extra_rows is not None and len(extra_rows):
            X = np.vstack([X, np.ascontiguousarray(extra_rows[:4096], dtype=np.float32)])
        expected = booster.inplace_predict(X)
        got = compiled.predict_matrix(X)
        diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
        single = compiled.predict_buffer(np.ascontiguousarray(X[0]))
        if diff > MAX_ABS_DIFF or abs(single - float(expected[0])) > MAX_ABS_DIFF:
            raise ValueError(f"compiled trees differ from XGBoost by {diff:.2e}")
        return compiled
    except Exception as exc:  # noqa: BLE001 - any surprise: keep XGBoost
        log.warning("compiled trees unavailable (%s); scoring with XGBoost", exc)
        return None


def compile_columns(booster, n_features: int, extra_rows: np.ndarray | None = None) -> CompiledTrees | None:
    """:class:`CompiledTrees` for :meth:`~CompiledTrees.predict_columns` (batch scoring) if it gives
    ``inplace_predict``'s scores bit for bit on probe rows (and ``extra_rows``), else ``None`` (logged):
    callers keep XGBoost. Off with the service's compiled trees (``RTML_SERVING_COMPILED_TREES=0``)."""
    from core.settings import settings

    if not settings().serving.compiled_trees:
        return None
    try:
        compiled = CompiledTrees(booster, n_features)
        X = probe_rows(n_features, n=1024)
        if extra_rows is not None and len(extra_rows):
            X = np.vstack([X, np.asarray(extra_rows[:4096], dtype=np.float32)])
        got = np.empty(len(X), dtype=np.float32)
        compiled.predict_columns(np.ascontiguousarray(X.T), got)
        expected = booster.inplace_predict(X)
        if not np.array_equal(got, expected):
            diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
            raise ValueError(f"compiled trees differ from XGBoost by up to {diff:.2e}")
        return compiled
    except Exception as exc:  # noqa: BLE001 - any surprise: keep XGBoost
        log.warning("compiled trees unavailable for batch scoring (%s); scoring with XGBoost", exc)
        return None


def _columns_agree(compiled: CompiledTrees, n_features: int) -> bool:
    """True if the feature-major kernel gives the row kernel's scores bit for bit on probe rows (same
    arithmetic; checked, not assumed): then many-row requests use it."""
    try:
        X = probe_rows(n_features, n=512)
        got = np.empty(len(X), dtype=np.float32)
        compiled.predict_columns(np.ascontiguousarray(X.T), got)
        return bool(np.array_equal(got, compiled.predict_matrix(X)))
    except Exception as exc:  # noqa: BLE001 - any surprise: the row kernel only
        log.warning("feature-major kernel unavailable for request batches (%s)", exc)
        return False


class RowPredictor:
    """``predict_row(values) -> float`` and ``predict_rows(rows) -> ndarray`` for a binary:logistic booster."""

    def __init__(self, booster, n_features: int):
        booster.set_param({"nthread": 1})
        self.booster = booster
        self.n_features = n_features
        self._buf = np.zeros((1, n_features), dtype=np.float32)
        self._row = self._buf[0]
        self.compiled = compile_booster(booster, n_features)
        self._fast = None
        self._columns = False
        if self.compiled is not None:
            self._columns = _columns_agree(self.compiled, n_features)
            return
        try:
            self._fast = self._build_fast()
            probe = probe_rows(n_features, n=8)
            for row in probe:
                slow = float(booster.inplace_predict(row[None, :])[0])
                fast = self.predict_row(row.tolist())
                if slow != fast:
                    raise RuntimeError(f"fast path disagrees with inplace_predict ({fast} != {slow})")
        except Exception as exc:  # noqa: BLE001 - any surprise: use the public API
            log.warning("XGBoost fast path unavailable (%s); using inplace_predict", exc)
            self._fast = None

    def _build_fast(self):
        from xgboost._data_utils import array_interface
        from xgboost.core import _LIB, _check_call, c_bst_ulong, make_jcargs

        args = make_jcargs(
            type=0, training=False, iteration_begin=0, iteration_end=0, missing=np.nan, strict_shape=False, cache_id=0
        )
        interface = array_interface(self._buf)
        shape = ctypes.POINTER(c_bst_ulong)()
        dims = c_bst_ulong()
        preds = ctypes.POINTER(ctypes.c_float)()
        handle = self.booster.handle
        no_proxy = ctypes.c_void_p()
        fn = ctypes.PyDLL(_LIB._name).XGBoosterPredictFromDense  # same library, GIL held during the call
        fn.restype = ctypes.c_int
        byref = ctypes.byref
        shape_ref, dims_ref, preds_ref = byref(shape), byref(dims), byref(preds)

        def call() -> float:
            _check_call(fn(handle, interface, args, no_proxy, shape_ref, dims_ref, preds_ref))
            return float(preds[0])

        return call

    def predict_row(self, values: Sequence[float]) -> float:
        """Score of one row of ``n_features`` values (NaN = missing)."""
        self._row[:] = values
        if self.compiled is not None:
            return self.compiled.predict_buffer(self._row)
        if self._fast is None:
            return float(self.booster.inplace_predict(self._buf)[0])
        return self._fast()

    def predict_rows(self, rows: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """Scores of many rows (float32, in order; the GIL is released while the trees are walked)."""
        X = np.ascontiguousarray(rows, dtype=np.float32)
        if self.compiled is not None:
            if self._columns and len(X) >= COLUMNS_MIN_ROWS:
                out = np.empty(len(X), dtype=np.float32)
                self.compiled.predict_columns(np.ascontiguousarray(X.T), out)
                return out
            return self.compiled.predict_matrix(X)
        return self.booster.inplace_predict(X)
