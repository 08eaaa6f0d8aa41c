"""Scaling model on paper: one REML fit at n = m = 500,000 on 1-8 NVIDIA H100 GPUs.

`python -m benchmarks.scaling_model` prints the tables of docs/scaling.md, which lists every
assumption and where each number comes from (vendor datasheet, measured, or assumed).

The modelled design (int8-resident shards, issue 9): each GPU keeps its genotype codes as
int8 (1 byte per genotype), decodes a block of variants at a time into a float32 scratch
block and runs the two GEMMs of a pass on it (T_b = Z_b V, then accumulates Z_b^T T_b), so
every genotype is decoded once per pass. One pass costs 4 n m k flops for k columns. V
(n x k, float32 on the workers) is broadcast to every GPU; each GPU returns one n x k partial
that Dask sums pairwise on the host (NumPy partials, Dask TCP); the driver gathers the sum
and runs the PCG algebra in float64 on its CPU. Nothing in a pass overlaps with anything
else except the PCIe genotype stream with the GPU work (double buffering): each PCG
iteration needs the previous product, so the chain broadcast -> GPU -> reduce -> gather ->
driver is sequential.

A fit costs `passes x (one pass) + (one load of the genotypes)`. The default pass count and
columns per pass are parameters (`PASSES_PER_FIT`, `COLUMNS_PER_PASS`, or `--passes`,
`--columns`); they come from docs/performance.md's measured fits, not from this model.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from distributed import Client, LocalCluster, wait

# Workload defaults. Passes per fit: issue 9's target at n = 20,000 is <= 150, measured fits
# took 64-235 (docs/performance.md); replace with the reworked engine's measured count.
N_SAMPLES = 500_000
N_VARIANTS = 500_000
PASSES_PER_FIT = 100
# Average columns per pass: the main block starts near 100 probes + y + X and falls as
# columns converge; the AI solve carries G + 1 columns.
COLUMNS_PER_PASS = 60.0

GOAL_8_GPUS_S = 5 * 60.0  # issue 9: one component on 8 H100s in at most 5 minutes
GOAL_1_GPU_STREAMED_S = 15 * 60.0  # one H100 streaming shards from host memory: 15 minutes

Precision = Literal["fp32", "tf32", "tf32x2"]
Residency = Literal["resident", "streamed", "hybrid"]
Collectives = Literal["dask", "nvlink"]

# Operand splits per product: "tf32x2" splits the float32 operand into a TF32 head and tail
# (V = V_hi + V_lo: twice the columns, with the int8 codes exact in TF32).
_PRECISION_SPLITS: dict[str, int] = {"fp32": 1, "tf32": 1, "tf32x2": 2}


@dataclass(frozen=True)
class Gpu:
    """Vendor figures of one NVIDIA H100 SXM5 80 GB (datasheet, see docs/scaling.md)."""

    memory_bytes: float = 80e9
    hbm_bytes_per_s: float = 3.35e12
    fp32_flops: float = 67e12  # FP32 on CUDA cores, no tensor cores
    tf32_flops: float = 989e12 / 2  # TF32 tensor cores, dense (989 is with 2:4 sparsity)
    nvlink_bytes_per_s: float = 900e9  # NVLink 4, total of both directions
    pcie_bytes_per_s: float = 128e9 / 2  # PCIe Gen5 x16, per direction


@dataclass(frozen=True)
class Assumptions:
    """Everything the model does not take from the datasheet. Units: bytes, seconds, flop.

    Measured figures come from the 2-core development VM (docs/performance.md and
    docs/scaling.md); the rest are assumptions stated in docs/scaling.md.
    """

    precision: Precision = "fp32"
    fp32_efficiency: float = 0.70  # achieved fraction of FP32 peak in SGEMM (assumed)
    tf32_efficiency: float = 0.60  # achieved fraction of dense TF32 peak (assumed)
    hbm_efficiency: float = 0.80  # achieved fraction of HBM bandwidth (assumed)
    usable_memory_fraction: float = 0.90  # of HBM, after CUDA context and cuBLAS workspace
    scratch_bytes: float = 0.5e9  # float32 decode block per GPU
    decode_bytes_per_genotype: float = 5.0  # decode kernel: int8 read + float32 write
    gemm_bytes_per_genotype: float = 8.0  # each GEMM reads the float32 scratch once
    stream_bytes_per_genotype: float = 1.0  # int8 codes over PCIe (0.25: 2-bit packed)
    pcie_efficiency: float = 50 / 64  # 50 GB/s achieved of 64 per direction per GPU (assumed)
    nvlink_efficiency: float = 0.80  # achieved fraction of NVLink per direction (assumed)
    collectives: Collectives = "dask"
    relay_hops: int = 2  # driver <-> worker transfers relayed by the scheduler (Dask default)
    tcp_bytes_per_s: float = 1.0e9  # Dask TCP, one 120 MB block between processes (measured)
    host_add_bytes_per_s: float = 5e9  # NumPy a + b, bytes moved (measured)
    partials_per_gpu: int = 1  # 1: one partial per GPU; today's code: one per shard
    dask_latency_s: float = 0.020  # per pass (measured: 10-30 ms)
    dask_latency_per_task_s: float = 0.003  # per shard task (measured)
    driver_flops: float = 100e9  # float64 small algebra on the driver's CPU (assumed)
    driver_bytes_per_s: float = 20e9  # driver memory traffic for n x k blocks (assumed)
    driver_block_touches: float = 16.0  # n x k float64 reads + writes per PCG iteration
    precond_rank: int = 64  # a rank-64 projected-core preconditioner (FitConfig default is 0: a conservative driver term)
    load_bytes_per_s_per_thread: float = 1e9  # store decode into int8 (documented rate)
    load_threads: int = 8


@dataclass(frozen=True)
class Workload:
    """The problem: n samples, m variants, k columns per pass, passes per fit."""

    n: int = N_SAMPLES
    m: int = N_VARIANTS
    k: float = COLUMNS_PER_PASS
    passes: float = PASSES_PER_FIT


@dataclass(frozen=True)
class Placement:
    """Where a GPU's share of the genotypes lives; bytes per GPU."""

    share_bytes: float  # n m / GPUs int8 codes
    resident_bytes: float
    streamed_bytes: float  # codes copied over PCIe every pass
    needed_bytes: float  # resident codes + scratch + staging + working n x k blocks
    usable_bytes: float
    fits: bool


@dataclass(frozen=True)
class PassTime:
    """One pass, seconds, per term (the GPU terms are per GPU, all GPUs in parallel)."""

    flops_per_gpu: float
    decode: float
    gemm: float
    stream: float  # PCIe genotype stream, overlapped with decode + gemm
    pcie_blocks: float  # V in and partials out over PCIe
    tcp: float  # Dask transfers of n x k blocks between processes
    nvlink: float
    host_adds: float
    latency: float
    driver: float

    @property
    def gpu(self) -> float:
        """Decode and GEMM kernels, one after the other."""
        return self.decode + self.gemm

    @property
    def core(self) -> float:
        """GPU work or the genotype stream, whichever is longer."""
        return max(self.gpu, self.stream)

    @property
    def communication(self) -> float:
        """Every transfer of n x k blocks, and the host-side sums."""
        return self.pcie_blocks + self.tcp + self.nvlink + self.host_adds

    @property
    def total(self) -> float:
        """The pass: nothing overlaps except the stream with the GPU work."""
        return self.core + self.communication + self.latency + self.driver


@dataclass(frozen=True)
class Scenario:
    """A named configuration checked against a wall-time goal."""

    name: str
    gpus: int
    residency: Residency
    goal_s: float
    assumptions: Assumptions = Assumptions()


@dataclass(frozen=True)
class FitTime:
    """A scenario's placement, pass and fit time, and its verdict against the goal."""

    scenario: Scenario
    placement: Placement
    pass_time: PassTime
    passes: float
    load_s: float

    @property
    def fit_s(self) -> float:
        """Passes x pass time."""
        return self.passes * self.pass_time.total

    @property
    def total_s(self) -> float:
        """Fit plus the one load of the genotypes."""
        return self.fit_s + self.load_s

    @property
    def met(self) -> bool:
        """The placement fits in GPU memory and fit + load is within the goal."""
        return self.placement.fits and self.total_s <= self.scenario.goal_s

    @property
    def passes_allowed(self) -> float:
        """Break-even passes per fit: (goal - load) / pass time."""
        return max(0.0, (self.scenario.goal_s - self.load_s) / self.pass_time.total)

    @property
    def tcp_break_even_bytes_per_s(self) -> float:
        """The Dask TCP bandwidth at which the total meets the goal (inf: no bandwidth does)."""
        tcp_s = self.passes * self.pass_time.tcp
        rest_s = self.total_s - tcp_s
        if rest_s >= self.scenario.goal_s:
            return math.inf
        return self.scenario.assumptions.tcp_bytes_per_s * tcp_s / (self.scenario.goal_s - rest_s)


def block_bytes(w: Workload) -> float:
    """One n x k float32 block (V or a partial) as the workers hold it."""
    return w.n * w.k * 4


def placement(w: Workload, gpus: int, residency: Residency, a: Assumptions, gpu: Gpu = Gpu()) -> Placement:
    """Bytes per GPU for a residency policy.

    resident: the whole share on the GPU; streamed: every code over PCIe each pass;
    hybrid: as much resident as fits, the rest streamed.
    """
    share = w.n * w.m / gpus
    usable = gpu.memory_bytes * a.usable_memory_fraction
    working = a.scratch_bytes + 4 * block_bytes(w) * _PRECISION_SPLITS[a.precision]
    staging = 2 * a.scratch_bytes / 4 * a.stream_bytes_per_genotype  # double-buffered codes
    if residency == "resident":
        resident = share
    elif residency == "streamed":
        resident = 0.0
    else:
        resident = min(share, max(0.0, usable - working - staging))
    streamed = share - resident
    needed = resident + working + (staging if streamed > 0 else 0.0)
    return Placement(share, resident, streamed, needed, usable, needed <= usable)


def _replicate_hops(gpus: int) -> int:
    """Sequential transfers of `Client.scatter(..., broadcast=True)` after the first copy.

    The scheduler's replicate adds up to 2 copies per holder per round (branching factor 2,
    holders 1 -> 3 -> 9); a holder sends its copies one after another.
    """
    hops, holders = 0, 1
    while holders < gpus:
        count = min(gpus - holders, 2 * holders)
        hops += math.ceil(count / holders)
        holders += count
    return hops


def _reduction_levels(partials: int, gpus: int) -> list[int]:
    """Sequential transfer-and-add steps per level of the pairwise tree over `partials`.

    Pairs are spread over the GPUs' workers; a worker does its pairs one after another.
    """
    steps = []
    while partials > 1:
        pairs = partials // 2
        steps.append(math.ceil(pairs / gpus))
        partials -= pairs
    return steps


def pass_time(w: Workload, gpus: int, residency: Residency, a: Assumptions, gpu: Gpu = Gpu()) -> PassTime:
    """Seconds of one pass of k columns on `gpus` GPUs."""
    p = placement(w, gpus, residency, a, gpu)
    splits = _PRECISION_SPLITS[a.precision]
    if a.precision == "fp32":
        rate = gpu.fp32_flops * a.fp32_efficiency
    else:
        rate = gpu.tf32_flops * a.tf32_efficiency
    hbm = gpu.hbm_bytes_per_s * a.hbm_efficiency
    pcie = gpu.pcie_bytes_per_s * a.pcie_efficiency
    genotypes = p.share_bytes  # this GPU's share, resident or streamed (1 byte each)
    flops = 4 * w.n * w.m * w.k / gpus
    blocks = math.ceil(w.m / gpus / (a.scratch_bytes / (4 * w.n)))  # scratch blocks per pass
    # per block: V read, output read + write (accumulating Z_b^T T_b)
    gemm_bytes = genotypes * a.gemm_bytes_per_genotype + blocks * 3 * block_bytes(w) * splits
    decode = genotypes * a.decode_bytes_per_genotype / hbm
    gemm = max(flops * splits / rate, gemm_bytes / hbm)
    stream = p.streamed_bytes * a.stream_bytes_per_genotype / pcie

    block = block_bytes(w)
    hop = block / a.tcp_bytes_per_s
    add = 3 * block / a.host_add_bytes_per_s
    if a.collectives == "dask":
        broadcast_hops = a.relay_hops + _replicate_hops(gpus)
        steps = _reduction_levels(gpus * a.partials_per_gpu, gpus)
        reduce_hops = sum(steps) if gpus > 1 else 0
        tcp = (broadcast_hops + reduce_hops + a.relay_hops) * hop
        host_adds = sum(steps) * add
        pcie_blocks = (1 + a.partials_per_gpu) * block / pcie
        nvlink = 0.0
    else:
        # V reaches one GPU's worker, NCCL broadcast and reduce over NVLink, the sum returns
        tcp = 2 * a.relay_hops * hop
        host_adds = 0.0
        pcie_blocks = 2 * block / pcie
        nvlink = 2 * block / (gpu.nvlink_bytes_per_s / 2 * a.nvlink_efficiency) if gpus > 1 else 0.0
    tasks = gpus * a.partials_per_gpu
    latency = a.dask_latency_s + a.dask_latency_per_task_s * tasks
    driver_flops = w.n * w.k**2 + 6 * w.n * a.precond_rank * w.k
    driver = driver_flops / a.driver_flops + a.driver_block_touches * w.n * w.k * 8 / a.driver_bytes_per_s
    return PassTime(flops, decode, gemm, stream, pcie_blocks, tcp, nvlink, host_adds, latency, driver)


def fit_time(s: Scenario, w: Workload, gpu: Gpu = Gpu()) -> FitTime:
    """A scenario's fit: placement, one pass, passes per fit and the genotype load."""
    a = s.assumptions
    load = w.n * w.m / (a.load_bytes_per_s_per_thread * a.load_threads)
    return FitTime(s, placement(w, s.gpus, s.residency, a, gpu), pass_time(w, s.gpus, s.residency, a, gpu), w.passes, load)


def goal_scenarios() -> list[Scenario]:
    """Scenario (a), 8 resident GPUs, and (b), one streaming GPU, with their variants."""
    base = Assumptions()
    a8, b1 = GOAL_8_GPUS_S, GOAL_1_GPU_STREAMED_S
    packed = replace(base, stream_bytes_per_genotype=0.25, decode_bytes_per_genotype=4.25)
    return [
        Scenario("(a) 8 GPUs resident, FP32", 8, "resident", a8),
        Scenario("(a) same, 2xTF32", 8, "resident", a8, replace(base, precision="tf32x2")),
        Scenario("(a) same, TF32", 8, "resident", a8, replace(base, precision="tf32")),
        Scenario("(a) same, today's tree: 8 partials/GPU", 8, "resident", a8, replace(base, partials_per_gpu=8)),
        Scenario("(a) same, direct scatter/gather", 8, "resident", a8, replace(base, relay_hops=1)),
        Scenario(
            "(a) same, direct + NVLink collectives",
            8,
            "resident",
            a8,
            replace(base, relay_hops=1, collectives="nvlink"),
        ),
        Scenario("(b) 1 GPU streamed, int8", 1, "streamed", b1),
        Scenario("(b) 1 GPU streamed, 2-bit packed", 1, "streamed", b1, packed),
        Scenario("(b) 1 GPU hybrid, int8", 1, "hybrid", b1),
    ]


def gpu_count_scenarios(w: Workload) -> list[Scenario]:
    """1, 2, 4, 8 GPUs: resident where the share fits, else streamed and hybrid."""
    rows = []
    for g in (1, 2, 4, 8):
        fits = placement(w, g, "resident", Assumptions()).fits
        for residency in ("resident",) if fits else ("streamed", "hybrid"):
            rows.append(Scenario(f"{g} GPU(s) {residency}", g, residency, GOAL_8_GPUS_S))
    return rows


def pass_row(f: FitTime) -> dict[str, str]:
    """Per-pass columns of the printed table."""
    p, t = f.placement, f.pass_time
    return {
        "scenario": f.scenario.name,
        "resident GB/GPU": f"{p.resident_bytes / 1e9:.1f}",
        "streamed GB/GPU": f"{p.streamed_bytes / 1e9:.1f}",
        "needs/usable GB": f"{p.needed_bytes / 1e9:.1f}/{p.usable_bytes / 1e9:.0f}",
        "Tflop/GPU": f"{t.flops_per_gpu / 1e12:.2f}",
        "GPU s": f"{t.gpu:.3f}",
        "PCIe stream s": f"{t.stream:.3f}",
        "comm s": f"{t.communication:.3f}",
        "latency s": f"{t.latency:.3f}",
        "driver s": f"{t.driver:.3f}",
        "pass s": f"{t.total:.3f}",
    }


def fit_row(f: FitTime) -> dict[str, str]:
    """Per-fit columns of the printed table."""
    tcp = f.tcp_break_even_bytes_per_s
    return {
        "scenario": f.scenario.name,
        "passes": f"{f.passes:.0f}",
        "fit s": f"{f.fit_s:.0f}",
        "load s": f"{f.load_s:.0f}",
        "total s": f"{f.total_s:.0f}",
        "goal s": f"{f.scenario.goal_s:.0f}",
        "met": ("yes" if f.met else "no") if f.placement.fits else "does not fit",
        "passes allowed": f"{f.passes_allowed:.0f}",
        "TCP GB/s needed": "never" if math.isinf(tcp) else f"{tcp / 1e9:.2f}",
    }


def format_table(rows: list[dict[str, str]]) -> str:
    """Rows of equal keys as a Markdown table."""
    keys = list(rows[0])
    rule = "|" + "|".join("---" if k == "scenario" else "---:" for k in keys) + "|"
    lines = ["| " + " | ".join(keys) + " |", rule]
    lines += ["| " + " | ".join(row[k] for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def measure_host_transfers(w: Workload, repeats: int = 5) -> dict[str, float]:
    """Median seconds to move and add one n x k float32 block as a pass does, on this machine.

    Two local worker processes (TCP on 127.0.0.1, one thread each): one worker -> worker
    transfer (a hop of the broadcast or the reduction), one gather to this client relayed by
    the scheduler (`relay_hops` = 2), and one NumPy sum of two blocks in this process.
    """
    data = np.random.default_rng(0).standard_normal((w.n, int(w.k)), dtype=np.float32)
    hop, gather, add = [], [], []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        first, second = list(client.scheduler_info()["workers"])
        for _ in range(repeats):
            block = client.scatter(data, workers=[second], hash=False)  # a new key each time
            wait(block)
            start = time.perf_counter()
            client.submit(np.shape, block, workers=[first], allow_other_workers=False, pure=False).result()
            hop.append(time.perf_counter() - start)
            start = time.perf_counter()
            local = block.result()
            gather.append(time.perf_counter() - start)
            start = time.perf_counter()
            np.add(local, local)
            add.append(time.perf_counter() - start)
            del block
    return {"hop_s": statistics.median(hop), "gather_s": statistics.median(gather), "add_s": statistics.median(add)}


def main() -> None:
    """Print the model's tables, or with --measure-host the host transfer timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=float, default=PASSES_PER_FIT, help="passes per fit (measured count)")
    parser.add_argument("--columns", type=float, default=COLUMNS_PER_PASS, help="average columns per pass")
    parser.add_argument(
        "--measure-host",
        action="store_true",
        help="time one n x k block's Dask TCP hop, relayed gather and NumPy sum on this machine",
    )
    args = parser.parse_args()
    w = Workload(k=args.columns, passes=args.passes)
    if args.measure_host:
        block = block_bytes(w)
        t = measure_host_transfers(w)
        print(
            f"one {block / 1e6:.0f} MB block: worker -> worker {t['hop_s']:.3f} s "
            f"({block / t['hop_s'] / 1e9:.2f} GB/s), gather via the scheduler {t['gather_s']:.3f} s, "
            f"a + b {t['add_s']:.3f} s ({3 * block / t['add_s'] / 1e9:.1f} GB/s moved)"
        )
        return
    print(f"n = {w.n:,}, m = {w.m:,}, k = {w.k:g} columns per pass, {w.passes:g} passes per fit, H100 SXM5 80 GB\n")
    for title, scenarios in (("Goals", goal_scenarios()), ("GPU count (goal: 5 min)", gpu_count_scenarios(w))):
        fits = [fit_time(s, w) for s in scenarios]
        print(f"## {title}: one pass\n\n{format_table([pass_row(f) for f in fits])}\n")
        print(f"## {title}: one fit\n\n{format_table([fit_row(f) for f in fits])}\n")


if __name__ == "__main__":
    main()
