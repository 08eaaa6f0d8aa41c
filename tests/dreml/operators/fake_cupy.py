"""A test-only array module that behaves like CuPy, with NumPy underneath (no CUDA needed).

Installed as `sys.modules["cupy"]` (`install`, or `FakeCupyPlugin` on Dask workers), it lets
the CuPy branch of dreml run in CI: shard load, the memory budget, passes, traces and fits.
It imitates what that branch relies on, and refuses what CuPy refuses, so code that runs
here does not silently depend on host arrays:

- `ndarray` is a wrapper (not a NumPy subclass) whose type lives in module "cupy".
  Arithmetic, ufuncs, `@`, slicing, methods and NumPy functions applied to it return
  `ndarray`s (views stay views). Mixing it with a NumPy array raises TypeError, and so does
  implicit conversion (`np.asarray(x)`): copies to the host are explicit, `x.get()` or
  `asnumpy(x)`; copies to the device are `asarray` / `array`.
- Module functions: `asarray`, `array`, `asnumpy`, `get_array_module`, and every NumPy
  function or ufunc by name (arguments unwrapped, results wrapped); dtypes pass through.
- Device memory: every buffer behind an `ndarray` is counted while it is alive.
  `get_default_memory_pool().used_bytes()` (CuPy's own call, so tests read the same number
  on a real device, up to CuPy's 512-byte rounding) and `cuda.Device().mem_info` (free,
  total) report it; `cuda.runtime.getDeviceCount()` is 1.
- Sparse matrices: `install` also makes `import cupyx.scipy.sparse` return `sparse`, whose
  `csr_matrix((data, indices, indptr), shape=)` takes device arrays only (TypeError for
  host arrays), float32/float64 data only (ValueError otherwise, as cuSPARSE), int32
  indices; `@` with a device array, and `.T`, return device arrays and matrices
  (scipy.sparse underneath).
"""

from __future__ import annotations

import sys
import weakref
from types import ModuleType, SimpleNamespace

import numpy as np
import scipy.sparse
from distributed.diagnostics.plugin import WorkerPlugin
from numpy.lib.mixins import NDArrayOperatorsMixin

import dreml.backend

DEFAULT_DEVICE_BYTES = 4 * 2**30
_device = {"total": DEFAULT_DEVICE_BYTES, "used": 0}
_buffers: dict[int, int] = {}  # id of a live NumPy buffer owner -> its bytes


def _release(key: int) -> None:
    _device["used"] -= _buffers.pop(key)


def _track(a: np.ndarray) -> None:
    """Count the buffer behind `a` (its owner, for a view) once, until the owner is collected."""
    owner = a
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    key = id(owner)
    if key not in _buffers:
        _buffers[key] = owner.nbytes
        _device["used"] += owner.nbytes
        weakref.finalize(owner, _release, key)


def _unwrap(x):
    """The NumPy array behind a device array; TypeError for host arrays, as CuPy raises."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}: a NumPy array mixed with a (fake) CuPy array")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _wrap(x):
    if isinstance(x, np.ndarray):
        return ndarray(x)
    if isinstance(x, np.generic):  # CuPy reductions return 0-d device arrays, not scalars
        return ndarray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    return x


def _on_device(func):
    """`func` (a NumPy function or ufunc method) taking and returning device arrays."""

    def call(*args, **kwargs):
        out = kwargs.get("out")
        kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
        result = func(*_unwrap(args), **kwargs)
        return out if out is not None else _wrap(result)

    call.__name__ = getattr(func, "__name__", "function")
    return call


class ndarray(NDArrayOperatorsMixin):  # noqa: N801 (CuPy's name)
    """A device array: NumPy data behind CuPy's interface (see the module docstring)."""

    __module__ = "cupy"

    def __init__(self, a: np.ndarray) -> None:
        _track(a)
        self._a = a

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
        result = getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        return _on_device(func)(*args, **kwargs)

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly."
        )

    def get(self) -> np.ndarray:
        """A host copy."""
        return self._a.copy()

    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key, value) -> None:
        self._a[_unwrap(key)] = _unwrap(value)

    def __getattr__(self, name: str):
        # private names and protocols (__array_interface__, ...) are not NumPy's: no host
        # conversion through them, and no recursion while `_a` is unset (copy, unpickling)
        if name.startswith("_"):
            raise AttributeError(name)
        value = getattr(self._a, name)
        return _on_device(value) if callable(value) else _wrap(value)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        return (_wrap(row) for row in self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __repr__(self) -> str:
        return f"fake_cupy.{self._a!r}"

    def __reduce__(self):
        return (asarray, (self.get(),))


def asarray(a, dtype=None, order=None) -> ndarray:
    """`a` on the device: a device array itself when it already has `dtype`, else a copy."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == np.dtype(dtype) else a.astype(dtype)
    return ndarray(np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(a, dtype=None, copy: bool = True, order=None) -> ndarray:
    """A device copy of `a` (host or device)."""
    return ndarray(np.array(a._a if isinstance(a, ndarray) else a, dtype=dtype, order=order or "K", copy=True))


def asnumpy(a) -> np.ndarray:
    """A host copy of a device array (host arrays are returned as they are)."""
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def get_array_module(*args) -> ModuleType:
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else np


class _MemoryPool:
    def used_bytes(self) -> int:
        """Bytes of device buffers alive now."""
        return _device["used"]

    def total_bytes(self) -> int:
        return _device["used"]

    def free_all_blocks(self) -> None:
        """Nothing is pooled: buffers are released when their arrays are collected."""


_POOL = _MemoryPool()


def get_default_memory_pool() -> _MemoryPool:
    return _POOL


class _Device:
    def __init__(self, device: int | None = None) -> None:
        self.id = device or 0

    @property
    def mem_info(self) -> tuple[int, int]:
        """(free, total) bytes of the fake device."""
        return _device["total"] - _device["used"], _device["total"]


cuda = SimpleNamespace(Device=_Device, runtime=SimpleNamespace(getDeviceCount=lambda: 1))


class spmatrix:  # noqa: N801 (cupyx's name)
    """A device sparse matrix (a subset of cupyx.scipy.sparse's): scipy.sparse underneath."""

    __module__ = "cupyx.scipy.sparse"

    def __init__(self, matrix) -> None:
        self._m = matrix

    @property
    def shape(self) -> tuple[int, int]:
        return self._m.shape

    @property
    def dtype(self) -> np.dtype:
        return self._m.dtype

    @property
    def nnz(self) -> int:
        return self._m.nnz

    @property
    def T(self) -> spmatrix:  # noqa: N802 (scipy's name)
        return spmatrix(self._m.T)

    def __matmul__(self, other) -> ndarray:
        if not isinstance(other, ndarray):
            raise TypeError(f"Unsupported type {type(other)}: a (fake) cupyx sparse matrix times a host array")
        return ndarray(np.asarray(self._m @ other._a))

    dot = __matmul__

    def get(self):
        """A host copy (scipy.sparse)."""
        return self._m.copy()


def _csr_matrix(arg1, shape=None) -> spmatrix:
    """cupyx.scipy.sparse.csr_matrix((data, indices, indptr), shape=...) of device arrays."""
    data, indices, indptr = arg1
    for name, a in (("data", data), ("indices", indices), ("indptr", indptr)):
        if not isinstance(a, ndarray):
            raise TypeError(f"csr_matrix {name}: expected a device array, got {type(a)}")
    if data.dtype not in (np.float32, np.float64):
        raise ValueError("Only float32, float64, complex64 and complex128 are supported")
    if indices.dtype != np.int32 or indptr.dtype != np.int32:
        raise ValueError("csr_matrix indices and indptr must be int32 (as cuSPARSE's)")
    return spmatrix(scipy.sparse.csr_matrix((data._a, indices._a, indptr._a), shape=shape))


sparse = ModuleType("cupyx.scipy.sparse")
sparse.csr_matrix = _csr_matrix
sparse.spmatrix = spmatrix
_cupyx = ModuleType("cupyx")
_cupyx.scipy = ModuleType("cupyx.scipy")
_cupyx.scipy.sparse = sparse
_CUPYX_MODULES = {"cupyx": _cupyx, "cupyx.scipy": _cupyx.scipy, "cupyx.scipy.sparse": sparse}


def __getattr__(name: str):
    if name.startswith("_"):  # module dunders (__path__, ...) must not come from NumPy
        raise AttributeError(name)
    value = getattr(np, name)
    if isinstance(value, (type, ModuleType)) or not callable(value):
        return value  # dtypes (cupy.float32 is numpy.float32) and constants
    return _on_device(value)


_displaced: dict[str, object] = {}  # the real modules `install` replaced, by name


def install(device_bytes: int = DEFAULT_DEVICE_BYTES) -> None:
    """Make `import cupy` return this module in this process, with a device of `device_bytes`."""
    _device["total"] = device_bytes
    # a real CuPy already imported (a CUDA machine) is put back by `uninstall`: a fresh second
    # import of it would break cupyx's lazy submodules
    for name in ("cupy", *_CUPYX_MODULES):
        if name in sys.modules and name not in _displaced:
            _displaced[name] = sys.modules[name]
    sys.modules["cupy"] = sys.modules[__name__]
    sys.modules.update(_CUPYX_MODULES)
    dreml.backend.cuda_available.cache_clear()


def uninstall() -> None:
    """Undo `install`: `import cupy` fails again (no CuPy in CI) and dreml sees no CUDA."""
    if sys.modules.get("cupy") is sys.modules[__name__]:
        del sys.modules["cupy"]
    for name, module in _CUPYX_MODULES.items():
        if sys.modules.get(name) is module:
            del sys.modules[name]
    sys.modules.update(_displaced)
    _displaced.clear()
    dreml.backend.cuda_available.cache_clear()


def used_bytes() -> int:
    """Device bytes alive in this process (for `client.run`)."""
    return _device["used"]


class FakeCupyPlugin(WorkerPlugin):
    """Installs this module as CuPy on every Dask worker (`client.register_plugin`), until removed."""

    def __init__(self, device_bytes: int = DEFAULT_DEVICE_BYTES) -> None:
        self.device_bytes = device_bytes

    def setup(self, worker) -> None:
        install(self.device_bytes)

    def teardown(self, worker) -> None:
        uninstall()
