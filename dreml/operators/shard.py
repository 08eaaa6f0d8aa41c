"""SNP shards: contiguous variant ranges of one store and the arithmetic done on them.

Notation (as in `dreml.operators.protocol`): n samples, k columns of the block V, G components.
A shard s covers the variants [start, stop) of one store. Its `rows` list, component by
component, the variants of each component g that fall in the range (a variant in several
components appears once per component), so each component's rows are contiguous
(planning: `dreml.operators.plan`).

Two kinds of shard behind the same functions (`load_shard`, `shard_matmat`, `shard_zt`,
`shard_z`, `shard_diagonal`, `shard_traces`): the dense `Shard` below (int8 codes) and the
`dreml.operators.sparse.SparseShard` of a store's sparse rare variants (carriers and
missing calls); each function dispatches on the kind, and both give the same products to
rounding. The rest of this docstring is the dense kind:

    X_s   shape (c, n): the store's int8 codes of the shard rows (ALT dosage 0/1/2, -1 missing),
          variant-major as stored: the only genotype data a loaded shard keeps (1 byte each)
    Z_s   = diag(s) C_s, C_s = X_s - t 1^T with missing calls set to 0: the standardised rows
    T     = Z_s V, shape (c, k): the per-variant products Z_g^T V of the design notes
    K_g V += Z_s[rows_g]^T T[rows_g] / m_g           (stacked products)
    sum_g theta_g K_g V += Z_s^T (T * theta_g / m_g)  (weighted)

Standardisation (GCTA): z = (x - 2p) / sqrt(2p(1-p)), missing -> 0, with p the frequency the
driver chose for the variant: z_j = s_j (x_j - t_j), s_j = 1 / sqrt(2 p_j (1 - p_j)), t_j = 2 p_j.

A pass never holds Z_s: it walks the shard in row blocks b (within one component at a time),
decodes C_b into one reusable scratch block of the worker dtype, and uses it for both GEMMs
while it is in cache, so each block is decoded once per pass. With t = h + l, h the centre
rounded to the worker dtype (float64 workers: l = 0):

    C_b = X_b - h_b 1^T, missing calls 0         (the decode; s is left to the k columns)
    T_b = C_b V - l_b (1^T V)                    (= diag(1/s_b) Z_b V)
    U_b = T_b * s_b^2 * f_g,   f_g = 1/m_g (stacked) or theta_g/m_g (weighted)
    out_g += C_b^T U_b - 1 (l_b^T U_b)           (= Z_b^T Z_b V f_g)

The rank-one terms in l make the centre exact: without them every float32 row would be off
by the same s_j l_j, a bias that adds up over the samples (K_g V of a V with column means
was 7 times less accurate than with float rows at n = 157, and the bias grows with n).
They are exact except at missing calls, which they move from 0 to -s_j l_j
(|l_j| <= 2^-24 t_j), less than the rounding float32 rows had everywhere.

Decoding is a cast, a subtraction of h and, for blocks with missing calls, a multiplication
by the observed mask. Centring in the decode keeps the GEMMs as accurate as float rows were;
an uncentred GEMM with a rank-one correction for all of t, tried as well, was up to 3 times
less accurate in float32 for variants whose counted allele is common
(docs/performance.md, "Genotype operator").

The same functions serve the in-process streaming operator (a shard is loaded, used and
dropped every pass) and the Dask operator (shards loaded once, resident on workers), on
NumPy or CuPy workers alike: a CuPy shard keeps its codes on the device and decodes there.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
from dask.sizeof import sizeof

from dreml.backend import Backend, array_module, array_module_of, to_numpy
from dreml.operators.plan import ShardSpec, plan_shards, resident_row_bytes, sparse_row_bytes  # noqa: F401 (re-exported)
from dreml.operators.sparse import (
    DeviceArray,
    SparseShard,
    load_sparse_shard,
    sparse_diagonal,
    sparse_matmat,
    sparse_scratch_bytes,  # noqa: F401 (re-exported)
    sparse_z,
    sparse_zt,
)
from dreml.operators.standardise import row_standardisation, standardisation_table  # noqa: F401 (re-exported)
from dreml.store import open_store

logger = logging.getLogger(__name__)

# rows counted at once at load are bounded so the boolean temporaries stay near this size
_COUNT_BYTES = 32 * 2**20
# the scratch block of a pass holds about this many bytes of decoded rows, but at least
# _MIN_BLOCK_ROWS rows: every block rereads V and updates the n x k output, which only a
# block of a few hundred rows amortises. Measured at n = 20,000, k = 64 (float32, one
# core): blocks of 200-420 rows (16-32 MiB) best, 104 rows 15% and 838 rows 20% slower
_SCRATCH_BYTES = 32 * 2**20
_MIN_BLOCK_ROWS = 256
# On a GPU each block costs several kernel launches, two small GEMMs and Python work that do
# not shrink with the block: blocks of 32 MiB left an H100 pass at 8.7x its GEMM pair
# (n = 20,000, 420 rows a block), so device blocks are larger (docs/performance.md, "GPU").
_DEVICE_SCRATCH_BYTES = 512 * 2**20

Partial = dict[int, np.ndarray] | np.ndarray
"""A shard's contribution: {g: K_g V part, shape (n, k)} (stacked) or one (n, k) array (weighted)."""


@dataclass(eq=False)
class Shard:
    """A loaded shard: the store's int8 codes resident in the worker's backend (NumPy or CuPy).

    Attributes:
        codes: the shard rows' genotype codes (ALT dosage 0/1/2, -1 missing), on the device
            for a CuPy worker; standardised block by block in every pass, never stored as floats.
        frequencies: p_j of each row (host, float64).
        counts: calls of code -1 (missing), 0, 1 and 2 in each row over the shard's samples
            (host): exact traces without a decode, and which row blocks need the missing mask.
        dtype: the worker arithmetic (float32 or float64) of the pass.
        components, bounds, inv_m: as in `ShardSpec`.
    """

    codes: DeviceArray  # shape: (c, n), int8 numpy or cupy array
    frequencies: np.ndarray  # shape: (c,)
    counts: np.ndarray  # shape: (c, 4)
    dtype: np.dtype
    components: tuple[int, ...]
    bounds: tuple[int, ...]
    inv_m: np.ndarray  # shape: (len(components),)

    @property
    def n_rows(self) -> int:
        return int(self.codes.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.codes.shape[1])

    @property
    def nbytes(self) -> int:
        """Resident bytes: the codes (1 per genotype) and the small per-row and per-group arrays.

        A pass's scratch block (`scratch_bytes`) lives only while the pass runs.
        """
        return int(self.codes.nbytes + self.frequencies.nbytes + self.counts.nbytes + self.inv_m.nbytes)


@sizeof.register(Shard)
def _sizeof_shard(shard: Shard) -> int:
    # the scheduler's memory accounting and work stealing must see the real size
    return shard.nbytes


def _block_rows(n: int, dtype: np.dtype, device: bool) -> int:
    size = _DEVICE_SCRATCH_BYTES if device else _SCRATCH_BYTES
    return max(_MIN_BLOCK_ROWS, size // max(1, n * dtype.itemsize))


def scratch_bytes(n: int, dtype: np.dtype | str, max_rows: int, device: bool = False) -> int:
    """Bytes of the decode block (and its observed mask) that one pass task over a shard of at
    most `max_rows` rows holds on a host (`device` False) or GPU worker; the pass's n x k
    blocks come on top."""
    dtype = np.dtype(dtype)
    return min(_block_rows(n, dtype, device), max_rows) * n * (dtype.itemsize + 1)


@dataclass(frozen=True, eq=False)
class _Scratch:
    """A pass's working blocks, allocated once per pass and reused by every row block.

    No row block allocates: a Dask worker returns every large freed block to the operating
    system at once (distributed sets MALLOC_TRIM_THRESHOLD_), so a fresh allocation per block
    page-faults its memory in again; that made passes 30% slower (measured).
    """

    rows: DeviceArray  # shape: (r, n), worker dtype: the decoded block C_b
    observed: DeviceArray  # shape: (r, n), bool: non-missing calls of the block
    product: DeviceArray  # shape: (n, k), worker dtype: C_b^T U_b

    @classmethod
    def allocate(cls, xp, shard: Shard, k: int) -> _Scratch:
        r, n = min(_block_rows(shard.n_samples, shard.dtype, xp is not np), shard.n_rows), shard.n_samples
        return cls(xp.empty((r, n), dtype=shard.dtype), xp.empty((r, n), dtype=bool), xp.empty((n, k), dtype=shard.dtype))


def code_counts(codes: DeviceArray) -> np.ndarray:  # shape: (c, n) int8 -> (c, 4) int64, host
    """Calls of code -1 (missing), 0, 1 and 2 in each row, counted where the codes live
    (on a GPU: milliseconds, against ~30 s on one host core for 1e10 codes)."""
    xp = array_module_of(codes)
    counts = np.empty((len(codes), 4), dtype=np.int64)
    step = max(1, _COUNT_BYTES // max(1, codes.shape[1]))
    for a in range(0, len(codes), step):
        block = codes[a : a + step]
        for code in (-1, 0, 1):
            counts[a : a + step, code + 1] = to_numpy(xp.count_nonzero(block == code, axis=1))
    counts[:, 3] = codes.shape[1] - counts[:, :3].sum(axis=1)
    return counts


def load_shard(
    spec: ShardSpec,
    samples: np.ndarray | None,  # shape: (n,) indices into the store's samples
    dtype: str = "float32",
    backend: Backend = "auto",
) -> Shard | SparseShard:
    """Read a shard's int8 codes from its store, in component order, and keep them in the backend.

    A CuPy worker copies the codes to its device once, here; the counts stay on the host.
    A sparse spec loads a `SparseShard` (its calls, `dreml.operators.sparse`).
    """
    if spec.sparse:
        return load_sparse_shard(spec, samples, dtype, backend)
    xp = array_module(backend)
    dosage = open_store(spec.store_path).dosage(spec.start, spec.stop, samples)  # shape: (stop - start, n)
    # a shard of one component reads its rows in order: keep the block read, without a copy
    codes = dosage if np.array_equal(spec.rows, np.arange(len(dosage))) else dosage[spec.rows]  # shape: (c, n)
    resident = xp.asarray(codes)
    return Shard(
        codes=resident,
        frequencies=np.asarray(spec.frequencies, dtype=np.float64),
        counts=code_counts(resident),
        dtype=np.dtype(dtype),
        components=spec.components,
        bounds=spec.bounds,
        inv_m=spec.inv_m,
    )


def decode_rows(shard: Shard | SparseShard, a: int, b: int) -> np.ndarray:  # shape: (b - a, n)
    """Rows [a, b) of Z_s as float64 host rows (dense references and tests; not used by passes)."""
    table = standardisation_table(shard.frequencies[a:b])  # shape: (b - a, 4)
    codes = to_numpy(shard.codes[a:b]).astype(np.intp) + 1
    return np.take_along_axis(table, codes, axis=1)


def _decode_centred(
    shard: Shard,
    a: int,
    b: int,
    centre,  # shape: (c,), h: t rounded to the worker dtype, in the backend
    scratch: _Scratch,
):  # -> shape: (b - a, n), a view of scratch.rows
    """C = X - h 1^T for rows [a, b), missing calls 0, written into the scratch block."""
    xp = array_module_of(scratch.rows)
    C = scratch.rows[: b - a]
    codes = shard.codes[a:b]
    if hasattr(xp, "ElementwiseKernel"):  # CuPy: one kernel reads each code once (5 bytes a genotype, not ~23)
        _centred_kernel(xp)(codes, centre[a:b, None], C)
        return C
    # a plain cast, then in-place float operations: faster than one mixed int8 - float
    # subtraction (buffered casting), and a multiply by the mask than a masked copy (measured)
    xp.copyto(C, codes, casting="unsafe")
    C -= centre[a:b, None]
    if shard.counts[a:b, 0].any():
        observed = scratch.observed[: b - a]
        xp.greater_equal(codes, 0, out=observed)
        C *= observed
    return C


@functools.cache
def _centred_kernel(xp):
    """C = x - h for observed calls, 0 for missing (code -1): the decode of `_decode_centred` fused."""
    return xp.ElementwiseKernel("int8 code, T centre", "T out", "out = code >= 0 ? (T)code - centre : (T)0", "dreml_centred")


def _row_blocks(shard: Shard, scratch: _Scratch, centre_high, skip: frozenset = frozenset()):
    """(g, lo, hi, inv_m, C) for every row block of every group whose component is not in
    `skip`: C = C_b, decoded into the scratch block (valid until the next block is decoded)."""
    step = len(scratch.rows)
    for g, a, b, inv_m in zip(shard.components, shard.bounds[:-1], shard.bounds[1:], shard.inv_m):
        if g in skip:
            continue
        for lo in range(a, b, step):
            hi = min(lo + step, b)
            yield g, lo, hi, inv_m, _decode_centred(shard, lo, hi, centre_high, scratch)


@dataclass(frozen=True, eq=False)
class _Centring:
    """A shard's row centres split for exact centring (module docstring), in the worker dtype.

    high: h = t rounded to the worker dtype; low: l = t - h; scale: s (float64, host);
    scale_sq: s^2.
    """

    high: DeviceArray  # shape: (c,)
    low: DeviceArray  # shape: (c,)
    scale: np.ndarray  # shape: (c,)
    scale_sq: DeviceArray  # shape: (c,)

    @classmethod
    def of(cls, shard: Shard, xp) -> _Centring:
        centre, scale = row_standardisation(shard.frequencies)
        high = centre.astype(shard.dtype)
        return cls(
            xp.asarray(high), xp.asarray((centre - high).astype(shard.dtype)), scale, xp.asarray((scale**2).astype(shard.dtype))
        )


class _Transposed:
    """Accumulates sum_b Z_b^T U_b per output key: C_b^T U_b - 1 (l_b^T U_b), summed over blocks.

    U_b is already in the s-weighted form (rows scaled by s_b), so the sum is Z^T (U / s).
    """

    def __init__(self, xp, scratch: _Scratch, n: int, k: int, dtype: np.dtype) -> None:
        self.xp, self.scratch, self.n, self.k, self.dtype = xp, scratch, n, k, dtype
        self.out: dict = {}
        self.shift: dict = {}

    def add(self, key, C, U, low) -> None:  # C shape: (r, n); U shape: (r, k); low shape: (r,)
        if key not in self.out:
            self.out[key] = self.xp.zeros((self.n, self.k), dtype=self.dtype)
            self.shift[key] = self.xp.zeros(self.k, dtype=self.dtype)
        self.xp.matmul(C.T, U, out=self.scratch.product)
        self.out[key] += self.scratch.product
        self.shift[key] += low @ U

    def result(self) -> dict:
        """{key: (n, k) host array} for every key added to."""
        return {key: to_numpy(self.out[key] - self.shift[key]) for key in self.out}

    def total(self) -> np.ndarray:
        """The one output of a weighted sum (zeros when nothing was added), shape (n, k)."""
        return self.result().get(None, np.zeros((self.n, self.k), dtype=self.dtype))


def shard_matmat(
    shard: Shard | SparseShard,
    V: np.ndarray,  # shape: (n, k), already of the worker dtype
    weights: np.ndarray | None = None,  # shape: (G,) theta
) -> Partial:
    """The shard's part of K_g V for each of its components, or of sum_g theta_g K_g V.

    Per row block b of component g, as in the module docstring: T_b = C_b V - l_b (1^T V),
    U_b = T_b * s_b^2 * f_g, out_g += C_b^T U_b - 1 (l_b^T U_b), with f_g = 1 / m_g (stacked)
    or theta_g / m_g (weighted, every component summed into one output; a component of
    weight 0 is skipped, so a model without it costs only its own components' work).
    """
    if isinstance(shard, SparseShard):
        return sparse_matmat(shard, V, weights)
    xp = array_module_of(shard.codes)
    dtype = shard.dtype
    V = xp.asarray(V, dtype=dtype)
    rows = _Centring.of(shard, xp)
    column_sums = V.sum(axis=0)  # shape: (k,), 1^T V
    scratch = _Scratch.allocate(xp, shard, V.shape[1])
    acc = _Transposed(xp, scratch, shard.n_samples, V.shape[1], dtype)
    skip = frozenset() if weights is None else frozenset(g for g in shard.components if weights[g] == 0)
    for g, lo, hi, inv_m, C in _row_blocks(shard, scratch, rows.high, skip):
        T = C @ V  # shape: (hi - lo, k)
        T -= rows.low[lo:hi, None] * column_sums
        T *= rows.scale_sq[lo:hi, None] * dtype.type(inv_m if weights is None else weights[g] * inv_m)
        acc.add(g if weights is None else None, C, T, rows.low[lo:hi])
    return acc.result() if weights is None else acc.total()


def shard_zt(
    shard: Shard | SparseShard,
    U: np.ndarray,  # shape: (n, k), already of the worker dtype
) -> np.ndarray:  # shape: (c, k)
    """Z_s U: the per-variant products z_j^T U of the shard rows, in row order, float64.

    Per row block: Z_b U = diag(s_b) (C_b U - l_b (1^T U)); the scale is applied in float64.
    """
    if isinstance(shard, SparseShard):
        return sparse_zt(shard, U)
    xp = array_module_of(shard.codes)
    U = xp.asarray(U, dtype=shard.dtype)
    rows = _Centring.of(shard, xp)
    column_sums = U.sum(axis=0)
    scratch = _Scratch.allocate(xp, shard, U.shape[1])
    out = np.empty((shard.n_rows, U.shape[1]))
    for _, lo, hi, _, C in _row_blocks(shard, scratch, rows.high):
        T = C @ U
        T -= rows.low[lo:hi, None] * column_sums
        out[lo:hi] = to_numpy(T) * rows.scale[lo:hi, None]
    return out


def shard_z(
    shard: Shard | SparseShard,
    B: np.ndarray,  # shape: (c, k): one row per shard row, in row order
) -> Partial:
    """The shard's part of Z_g B_g for each of its components: {g: (n, k)}.

    Per row block: Z_b^T B_b = C_b^T (s_b B_b) - 1 (l_b^T (s_b B_b)).
    """
    if isinstance(shard, SparseShard):
        return sparse_z(shard, B)
    xp = array_module_of(shard.codes)
    rows = _Centring.of(shard, xp)
    scaled = xp.asarray((np.asarray(B, dtype=np.float64) * rows.scale[:, None]).astype(shard.dtype))
    scratch = _Scratch.allocate(xp, shard, scaled.shape[1])
    acc = _Transposed(xp, scratch, shard.n_samples, scaled.shape[1], shard.dtype)
    for g, lo, hi, _, C in _row_blocks(shard, scratch, rows.high):
        acc.add(g, C, scaled[lo:hi], rows.low[lo:hi])
    return acc.result()


def shard_diagonal(shard: Shard | SparseShard) -> dict[int, np.ndarray]:  # {g: (n,)}
    """The shard's part of diag(K_g) = sum_j z_ij^2 / m_g per component, exact in float64.

    From the codes: z_ij^2 = table_j[x_ij]^2 summed code by code, in row blocks of the
    scratch size (the indicator blocks are float64). A sparse shard sums over its calls.
    """
    if isinstance(shard, SparseShard):
        return sparse_diagonal(shard)
    xp = array_module_of(shard.codes)
    squares = standardisation_table(shard.frequencies) ** 2  # shape: (c, 4)
    step = _block_rows(shard.n_samples, np.dtype(np.float64), xp is not np)
    out = {}
    for g, a, b, inv_m in zip(shard.components, shard.bounds[:-1], shard.bounds[1:], shard.inv_m):
        total = xp.zeros(shard.n_samples)
        for lo in range(a, b, step):
            hi = min(lo + step, b)
            for code in (0, 1, 2):  # missing calls contribute 0
                indicator = (shard.codes[lo:hi] == code).astype(np.float64)
                total += xp.asarray(squares[lo:hi, code + 1]) @ indicator
        out[g] = to_numpy(total) * inv_m
    return out


def shard_traces(shard: Shard | SparseShard) -> np.ndarray:  # shape: (G_s,)
    """The shard's part of tr(K_g) = sum_j ||z_j||^2 / m_g, one value per group, in float64.

    Exact from the code counts, without decoding a row: ||z_j||^2 = sum_x N_jx z_j(x)^2 over
    the codes x (N_jx calls of code x in row j; z_j(missing) = 0).
    """
    sq = np.sum(shard.counts * standardisation_table(shard.frequencies) ** 2, axis=1)  # shape: (c,)
    return np.array([sq[a:b].sum() for a, b in zip(shard.bounds[:-1], shard.bounds[1:])]) * shard.inv_m


def add_partials(a: Partial, b: Partial) -> Partial:
    """Sum two partials (the tree reduction's step); stacked partials add per component."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a + b
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for g, part in b.items():
            out[g] = out[g] + part if g in out else part
        return out
    raise TypeError(f"partials of one pass are all stacked or all per component, got {type(a).__name__} and {type(b).__name__}")


def call_counts(
    store_path: str,
    start: int,
    stop: int,
    samples: np.ndarray | None,  # samples shape: (n,)
) -> tuple[np.ndarray, np.ndarray]:
    """Observed calls and ALT dosage sums of variants [start, stop) over `samples`."""
    dosage = open_store(store_path).dosage(start, stop, samples)
    observed = dosage >= 0
    return observed.sum(axis=1, dtype=np.int64), np.where(observed, dosage, 0).sum(axis=1, dtype=np.int64)
