"""Resident shards seen as device memory by dask-cuda.

A Dask-CUDA worker keeps task results in dask-cuda's `DeviceHostFile`
(dask_cuda/device_host_file.py), which sorts every value with the dispatch
`dask_cuda.is_device_object.is_device_object` (default: the value itself has
`__cuda_array_interface__`):

- device objects are weighed with dask's `sizeof` against `device_memory_limit` and spilled
  to host memory beyond it (least recently used first);
- every other value is weighed against the host `memory_limit` and spilled to disk beyond it.

A `Shard` (or a `SparseShard`, `dreml.operators.sparse`) holds its arrays as attributes,
so by default a shard resident on a GPU is taken
for a host object: its device bytes count against host memory and it is spilled to disk
(through host memory) by host accounting, whatever `device_memory_limit` says. Registering
`Shard` makes dask-cuda count it as device memory, weighed by `sizeof(shard)` (the shard's
resident bytes, registered in `dreml.operators.shard`); with `device_memory_limit` above
the shard budget (see deploy/README.md) resident shards are never spilled.

The registration runs where this module is imported (`dreml.operators.distributed`, which
workers import with the `dreml` package when they unpickle a shard task), in processes that
see a CUDA device and have dask-cuda: elsewhere there is no device memory to account for.
"""

from __future__ import annotations

from dask.utils import Dispatch

from dreml.backend import cuda_available
from dreml.operators.shard import Shard
from dreml.operators.sparse import SparseShard


def holds_device_memory(shard: Shard | SparseShard) -> bool:
    """True when one of the shard's arrays lives in device memory.

    Device arrays are recognised as dask-cuda recognises them: they expose
    `__cuda_array_interface__` (CuPy arrays do; NumPy arrays do not).
    """
    return any(hasattr(value, "__cuda_array_interface__") for value in vars(shard).values())


def register_shard(is_device_object: Dispatch) -> None:
    """Register `Shard` and `SparseShard` with dask-cuda's `is_device_object` dispatch (or one like it)."""
    is_device_object.register(Shard, holds_device_memory)
    is_device_object.register(SparseShard, holds_device_memory)


def _register_with_dask_cuda() -> None:
    if not cuda_available():
        return
    try:
        from dask_cuda.is_device_object import is_device_object
    except ImportError:  # CuPy without dask-cuda: workers keep results in distributed's own storage
        return
    register_shard(is_device_object)


_register_with_dask_cuda()
