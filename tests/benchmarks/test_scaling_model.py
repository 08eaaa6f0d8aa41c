"""The scaling model's arithmetic against closed forms computed by hand (docs/scaling.md).

The module is loaded from its file, so the test runs under `pytest` as well as
`python -m pytest` (the repository root is not on sys.path under the former).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "scaling_model.py"
_SPEC = importlib.util.spec_from_file_location("benchmarks_scaling_model_under_test", _PATH)
sm = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = sm  # dataclasses resolve annotations through sys.modules
_SPEC.loader.exec_module(sm)

W = sm.Workload(n=500_000, m=500_000, k=60, passes=100)
A = sm.Assumptions()


def test_flops_and_resident_bytes_per_gpu():
    for gpus in (1, 2, 4, 8):
        t = sm.pass_time(W, gpus, "resident", A)
        p = sm.placement(W, gpus, "resident", A)
        assert t.flops_per_gpu == pytest.approx(4 * 500_000 * 500_000 * 60 / gpus)
        assert p.resident_bytes == pytest.approx(500_000**2 / gpus)
    assert sm.placement(W, 8, "resident", A).resident_bytes == pytest.approx(31.25e9)


def test_which_gpu_counts_hold_the_int8_matrix():
    # 72 GB usable per GPU (0.9 x 80 GB): 250 and 125 GB do not fit, 62.5 and 31.25 GB do
    fits = {g: sm.placement(W, g, "resident", A).fits for g in (1, 2, 4, 8)}
    assert fits == {1: False, 2: False, 4: True, 8: True}


def test_eight_resident_gpus_pass_by_hand():
    block = 500_000 * 60 * 4  # 120 MB float32 n x k block
    decode = 31.25e9 * 5 / (3.35e12 * 0.8)  # int8 read + float32 write per genotype
    gemm = 7.5e12 / (67e12 * 0.7)  # FP32 compute-bound: 4 n m k / 8 flops at 70% of 67 TF/s
    # Dask TCP hops of one block at 1 GB/s: scatter relayed by the scheduler (2), replicate
    # 1 -> 3 -> 8 holders (2 + 2), tree over 8 partials (3 levels), gather relayed (2)
    tcp = (2 + 4 + 3 + 2) * block / 1e9
    adds = 3 * (3 * block) / 5e9
    pcie = 2 * block / 50e9
    latency = 0.020 + 8 * 0.003
    driver = (500_000 * 60**2 + 6 * 500_000 * 64 * 60) / 100e9 + 16 * 500_000 * 60 * 8 / 20e9
    expected = decode + gemm + tcp + adds + pcie + latency + driver
    assert expected == pytest.approx(2.1282, abs=1e-4)

    f = sm.fit_time(sm.Scenario("a", 8, "resident", 300.0), W)
    assert f.pass_time.total == pytest.approx(expected)
    assert f.load_s == pytest.approx(250e9 / 8e9)
    assert f.fit_s == pytest.approx(100 * expected)
    assert f.passes_allowed == pytest.approx((300 - 250e9 / 8e9) / expected)
    assert f.met


def test_one_streaming_gpu_is_pcie_bound():
    f = sm.fit_time(sm.Scenario("b", 1, "streamed", 900.0), W)
    assert f.pass_time.stream == pytest.approx(250e9 / 50e9)  # 5 s per pass
    assert f.pass_time.core == pytest.approx(5.0)
    # one worker: V relayed in (2 hops), the sum relayed out (2 hops), no reduction
    block = 500_000 * 60 * 4
    assert f.pass_time.tcp == pytest.approx(4 * block / 1e9)
    assert f.pass_time.host_adds == 0.0


def test_todays_tree_over_shard_partials():
    # 64 partials on 8 workers: levels of 32, 16, 8, 4, 2, 1 pairs -> 4 + 2 + 1 + 1 + 1 + 1 steps
    t = sm.pass_time(W, 8, "resident", replace(A, partials_per_gpu=8))
    block = 500_000 * 60 * 4
    assert t.tcp == pytest.approx((2 + 4 + 10 + 2) * block / 1e9)
    assert t.latency == pytest.approx(0.020 + 64 * 0.003)
