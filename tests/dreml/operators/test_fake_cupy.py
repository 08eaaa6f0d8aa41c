"""The CuPy branch of the operators, run on the fake CuPy of fake_cupy.py (NumPy underneath).

Every CuPy-specific line of dreml runs here without CUDA: shard load (codes on the device,
1 byte per genotype), the budget from device memory, stacked and weighted passes, traces,
and a whole REML fit, against the independent reference (bed-reader + NumPy) or against
the NumPy backend. The real-device tests are in test_gpu.py.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import fake_cupy
import numpy as np
import pytest
from genotype_reference import N, reference_KV, reference_Z, rel_err

from dreml.backend import array_module, array_module_of, cuda_available, to_numpy
from dreml.components import by_chromosome
from dreml.errors import InputError
from dreml.operators import GenotypeOperator, StreamingOperator
from dreml.operators.shard import decode_rows, load_shard, plan_shards, resident_row_bytes

# With a real device the workers' "auto" backend is the real CuPy, so "NumPy workers" cannot be
# compared with fake-CuPy ones; test_gpu.py runs the CuPy branch there instead.
pytestmark = pytest.mark.skipif(cuda_available(), reason="a real CUDA device is present: test_gpu.py covers the CuPy branch")

TOLERANCE = {np.float32: 1e-6, np.float64: 1e-12}
SHARD_ROWS = 37  # divides neither the chunks (50) nor the component sizes
K = 4


@pytest.fixture
def cupy() -> Iterator:
    """The fake CuPy as `cupy` in this process."""
    fake_cupy.install()
    yield fake_cupy
    fake_cupy.uninstall()


@contextlib.contextmanager
def _on_workers(client, device_bytes: int = fake_cupy.DEFAULT_DEVICE_BYTES) -> Iterator:
    """The fake CuPy as `cupy` on every worker of `client` (a fake device of `device_bytes`)."""
    client.register_plugin(fake_cupy.FakeCupyPlugin(device_bytes), name="fake-cupy")
    try:
        yield client
    finally:
        client.unregister_worker_plugin("fake-cupy")
    # the session's clusters serve other tests: their workers must be NumPy workers again
    assert set(client.run(lambda: array_module("auto").__name__).values()) == {"numpy"}


@pytest.fixture(params=["client1", "client2"])
def cupy_client(request) -> Iterator:
    """A Dask client of 1 or 2 workers whose `cupy` is the fake (removed afterwards)."""
    with _on_workers(request.getfixturevalue(request.param)) as client:
        yield client


def _chromosomes(cohort) -> list[np.ndarray]:
    contig = cohort.store.variant_contig
    return [np.flatnonzero(contig == c) for c in range(3)]


def test_fake_cupy__behaves_like_cupy(cupy):
    before = cupy.get_default_memory_pool().used_bytes()
    x = cupy.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    y = (x @ x.T) * 2 + x.sum()

    assert type(y).__module__ == "cupy" and array_module_of(y) is cupy and array_module_of(y.get()) is np
    np.testing.assert_array_equal(to_numpy(y), [[25.0, 43.0], [43.0, 115.0]])
    assert cupy.get_default_memory_pool().used_bytes() - before >= x.nbytes + y.nbytes
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(x)
    with pytest.raises(TypeError, match="NumPy array mixed"):
        x + np.ones(3)
    del x, y
    assert cupy.get_default_memory_pool().used_bytes() == before
    free, total = cupy.cuda.Device().mem_info
    assert total == fake_cupy.DEFAULT_DEVICE_BYTES and free == total - before


def test_array_module__cupy_is_the_fake(cupy):
    assert array_module("cupy") is cupy and array_module("auto") is cupy


@pytest.mark.parametrize("max_rows", [37, 1000])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_load_shard__int8_codes_on_device(cohort, cupy, max_rows, dtype):
    store = cohort.store
    indices = [np.arange(0, 90), np.arange(40, 97)]  # polymorphic variants (98 is not)
    samples = np.random.default_rng(3).permutation(N)[:101]
    spec = plan_shards([str(store.path)], indices, [0, 0], np.array([90, 57]), [store.variant_allele_frequency], max_rows)[0]
    before = cupy.get_default_memory_pool().used_bytes()

    shard = load_shard(spec, samples, dtype, "cupy")

    assert type(shard.codes).__module__ == "cupy" and shard.codes.dtype == np.int8
    # the device holds the codes only: 1 byte per genotype
    assert cupy.get_default_memory_pool().used_bytes() - before == spec.n_rows * len(samples)
    assert shard.nbytes == spec.n_rows * resident_row_bytes(len(samples)) + shard.inv_m.nbytes
    Z, _ = reference_Z(cohort.genotypes, samples)
    np.testing.assert_allclose(decode_rows(shard, 0, spec.n_rows), Z[:, spec.start + spec.rows].T, rtol=1e-15, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streaming__cupy_matches_reference(cohort, cupy, dtype):
    V = np.random.default_rng(0).standard_normal((N, K))
    theta = np.array([0.5, 2.0, 0.25])
    expected, _ = reference_KV(cohort.genotypes, _chromosomes(cohort), V)
    op = StreamingOperator(cohort.store, by_chromosome(cohort.store), dtype=dtype, backend="cupy", shard_variants=SHARD_ROWS)
    before = cupy.get_default_memory_pool().used_bytes()

    stacked, weighted = op.matmat(V), op.matmat(V, weights=theta)

    assert isinstance(stacked, np.ndarray) and isinstance(weighted, np.ndarray)
    assert rel_err(stacked, expected) <= TOLERANCE[dtype]
    assert rel_err(weighted, np.einsum("g,gnk->nk", theta, expected)) <= TOLERANCE[dtype]
    assert cupy.get_default_memory_pool().used_bytes() == before  # shards and scratch released


def _device_bytes(client) -> dict[str, int]:
    return client.run(fake_cupy.used_bytes)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_genotype_operator__cupy_workers(cohort, cupy_client, dtype):
    client = cupy_client
    V = np.random.default_rng(1).standard_normal((N, K))
    theta = np.array([0.5, 2.0, 0.25])
    chroms = _chromosomes(cohort)
    expected, _ = reference_KV(cohort.genotypes, chroms, V)
    Z, polymorphic = reference_Z(cohort.genotypes)
    before = _device_bytes(client)

    op = GenotypeOperator(
        cohort.store, by_chromosome(cohort.store), client=client, dtype=dtype, shard_variants=SHARD_ROWS, backend="cupy"
    )
    loaded = _device_bytes(client)
    stacked, weighted, traces = op.matmat(V), op.matmat(V, weights=theta), op.traces()

    # budget: half of the (fake) device memory that worker_capacity read from mem_info
    assert op.memory_budget == fake_cupy.DEFAULT_DEVICE_BYTES // 2
    # resident on each worker: exactly its shards' int8 codes, 1 byte per genotype
    rows, who_has = dict.fromkeys(loaded, 0), client.who_has(op.shards)
    for spec, shard in zip(op.shard_specs, op.shards):
        rows[who_has[shard.key][0]] += spec.n_rows
    assert {w: loaded[w] - before[w] for w in loaded} == {w: r * N for w, r in rows.items()}
    assert _device_bytes(client) == loaded  # a pass leaves nothing behind on the device
    assert rel_err(stacked, expected) <= TOLERANCE[dtype]
    assert rel_err(weighted, np.einsum("g,gnk->nk", theta, expected)) <= TOLERANCE[dtype]
    exact_traces = [np.sum(Z[:, c[polymorphic[c]]] ** 2) / np.sum(polymorphic[c]) for c in chroms]
    np.testing.assert_allclose(traces, exact_traces, rtol=1e-12)
    op.close()
    # releasing shards is asynchronous: wait, so the next test's `before` does not count them
    deadline = time.monotonic() + 30
    while _device_bytes(client) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _device_bytes(client) == before


def test_GenotypeOperator__raise_on_device_too_small(cohort, client1):
    # 403 rows x 157 samples = 63 kB of int8 codes; a 40 kB device gives a 20 kB budget
    with (
        _on_workers(client1, device_bytes=40_000),
        pytest.raises(
            InputError, match=r"the shards need .* per worker but memory_budget is 19.53 kiB \(genotypes resident as int8"
        ),
    ):
        GenotypeOperator(cohort.store, client=client1, backend="cupy")


def test_fit_reml__cupy_workers_equal_numpy_workers(cohort, client2):
    from dreml.reml import FitConfig, fit_reml

    Z, polymorphic = reference_Z(cohort.genotypes)
    rng = np.random.default_rng(11)
    y = Z[:, polymorphic] @ rng.standard_normal(polymorphic.sum()) * np.sqrt(0.5 / polymorphic.sum()) + rng.standard_normal(
        N
    ) * np.sqrt(0.5)
    X = np.ones((N, 1))
    config = FitConfig(method="randomised", seed=5)

    def fit(backend: str):
        with GenotypeOperator(cohort.store, client=client2, dtype=np.float64, shard_variants=SHARD_ROWS, backend=backend) as op:
            return fit_reml(op, y, X, config), op.passes

    (numpy_fit, numpy_passes) = fit("numpy")
    with _on_workers(client2):
        cupy_fit, cupy_passes = fit("cupy")

    assert cupy_passes == numpy_passes > 0
    np.testing.assert_allclose(cupy_fit.theta, numpy_fit.theta, rtol=1e-10)
