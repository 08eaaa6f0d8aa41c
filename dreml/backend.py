"""The array backend of a worker: CuPy where the process sees a CUDA GPU, NumPy otherwise.

The choice is made once per process (each Dask worker decides for itself), never per call
site, so a CPU driver can drive GPU workers without importing CuPy. Results crossing
process boundaries are always NumPy (`to_numpy`).
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

Backend = Literal["auto", "numpy", "cupy"]


@functools.cache
def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CuPy raises CUDARuntimeError without a driver; any failure means no GPU
        return False


def array_module(backend: Backend = "auto") -> ModuleType:
    """`numpy` or `cupy` for this process.

    Arguments:
        backend: "auto" picks CuPy when `cuda_available()`, else NumPy; "numpy" and "cupy"
            force one (forcing "cupy" without CUDA raises RuntimeError).
    """
    if backend == "numpy":
        return np
    if backend == "cupy" or (backend == "auto" and cuda_available()):
        if not cuda_available():
            raise RuntimeError("backend 'cupy' requested but CuPy or a CUDA device is unavailable")
        import cupy

        return cupy
    if backend != "auto":
        raise ValueError(f"backend must be 'auto', 'numpy' or 'cupy', got {backend!r}")
    return np


def array_module_of(x) -> ModuleType:
    """The module (`numpy` or `cupy`) that owns the array `x`.

    Decided from the array's type, so a process holding only NumPy arrays never imports CuPy.
    """
    if type(x).__module__.partition(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def to_numpy(x) -> np.ndarray:
    """A NumPy copy (or view) of a NumPy or CuPy array."""
    get = getattr(x, "get", None)
    return get() if callable(get) and not isinstance(x, np.ndarray) else np.asarray(x)
