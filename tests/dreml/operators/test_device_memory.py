"""Shards as dask-cuda device objects: the registration, and dask-cuda's own storage where present."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from dask.sizeof import sizeof
from dask.utils import Dispatch

from dreml.backend import cuda_available
from dreml.operators.device_memory import holds_device_memory, register_shard
from dreml.operators.shard import Shard, load_shard, plan_shards


def _dask_cuda_default() -> Dispatch:
    """A dispatch with dask-cuda's default rule (dask_cuda/is_device_object.py): the value
    itself exposes `__cuda_array_interface__`."""
    dispatch = Dispatch(name="is_device_object")
    dispatch.register(object, lambda o: hasattr(o, "__cuda_array_interface__"))
    return dispatch


class _DeviceArray:
    """A host array presented as device memory (`__cuda_array_interface__`, as CuPy arrays)."""

    def __init__(self, host: np.ndarray) -> None:
        self.host = host
        self.nbytes = host.nbytes

    @property
    def __cuda_array_interface__(self) -> dict:
        return {**self.host.__array_interface__, "version": 3}


def _host_shard(cohort) -> Shard:
    store = cohort.store
    spec = plan_shards([str(store.path)], [np.arange(60)], [0], np.array([60]), [store.variant_allele_frequency], 100)[0]
    return load_shard(spec, None, "float32", "numpy")


def _on_device(shard: Shard) -> Shard:
    """The shard with its largest array (the genotypes) presented as device memory."""
    device = copy.copy(shard)
    name = max(vars(shard), key=lambda k: getattr(vars(shard)[k], "nbytes", 0))
    setattr(device, name, _DeviceArray(getattr(shard, name)))
    return device


def test_register_shard__device_shard_counts_as_device_memory(cohort):
    host, device = _host_shard(cohort), _on_device(_host_shard(cohort))
    is_device_object = _dask_cuda_default()
    # unregistered, dask-cuda takes a GPU-resident shard for host memory (spilled to disk by host accounting)
    assert is_device_object(device) is False
    register_shard(is_device_object)
    assert is_device_object(device) is True
    assert is_device_object(host) is False
    assert holds_device_memory(device) and not holds_device_memory(host)


def test_register_shard__weighed_by_resident_bytes(cohort):
    # dask-cuda's device LRU weighs a value with dask's sizeof: a shard weighs its resident bytes
    shard = _host_shard(cohort)
    assert sizeof(shard) == shard.nbytes >= max(v.nbytes for v in vars(shard).values() if isinstance(v, np.ndarray))


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")
def test_device_host_file__cupy_shard_in_device_buffer(cohort, tmp_path):
    pytest.importorskip("dask_cuda", reason="needs dask-cuda")
    from dask_cuda.device_host_file import DeviceHostFile

    import dreml.operators.device_memory  # noqa: F401  (registers Shard with dask-cuda)

    store = cohort.store
    spec = plan_shards([str(store.path)], [np.arange(60)], [0], np.array([60]), [store.variant_allele_frequency], 100)[0]
    shard = load_shard(spec, None, "float32", "cupy")
    data = DeviceHostFile(str(tmp_path), device_memory_limit=4 * shard.nbytes, memory_limit=shard.nbytes // 2)
    data["shard"] = shard
    assert "shard" in data.device_keys and "shard" in data.device
    assert "shard" not in data.host  # a host LRU of half its size would have spilled it to disk
