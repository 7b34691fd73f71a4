"""XGBoost scoring of one row with the least per-call overhead.

``Booster.inplace_predict`` rebuilds its JSON configuration and the array interface of the input on
every call (~40 us of Python on this machine). :class:`RowPredictor` builds both once, for a
preallocated one-row float32 buffer, and calls the same C entry point (``XGBoosterPredictFromDense``)
that ``inplace_predict`` calls, with one thread, through a ``ctypes.PyDLL`` handle: the GIL stays held
during the ~0.1 ms call, so the request thread does not have to win the GIL back from the prediction
log's threads afterwards. It checks itself against ``inplace_predict`` at construction and falls back
to it if the private API differs (xgboost is pinned, but be safe).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)


class RowPredictor:
    """``predict_row(values) -> float`` and ``predict_rows(rows) -> ndarray`` for a binary:logistic booster."""

    def __init__(self, booster, n_features: int):
        booster.set_param({"nthread": 1})
        self.booster = booster
        self.n_features = n_features
        self._buf = np.zeros((1, n_features), dtype=np.float32)
        self._row = self._buf[0]
        self._fast = None
        try:
            self._fast = self._build_fast()
            probe = np.random.default_rng(0).normal(size=(8, n_features)).astype(np.float32)
            probe[0, ::3] = np.nan
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
        if self._fast is None:
            return float(self.booster.inplace_predict(np.asarray([values], dtype=np.float32))[0])
        self._row[:] = values
        return self._fast()

    def predict_rows(self, rows: Sequence[Sequence[float]]) -> np.ndarray:
        return self.booster.inplace_predict(np.asarray(rows, dtype=np.float32))
