"""Sparse shards: the rare variants of a store (format 1.1) as their carriers and missing calls.

Notation as in `dreml.operators.shard`: a shard holds c rows (variants) over n samples,
grouped by component; V is n x k. A sparse row counts the variant's **minor** allele, as
the store does (docs/store_format.md, "Sparse rare variants"): y_ij its dosage (1 or 2)
for the carriers, -1 for the missing calls, and 0, not stored, for every other sample.
A row that counts REF (`flipped`) has y = 2 - x.

Standardisation, exact (GCTA, missing -> 0, as the dense shards): with p_j the ALT
frequency the driver chose, q_j the frequency of the counted allele (p_j, or 1 - p_j for a
flipped row), u_j = 2 q_j its centre and s_j = sigma_j / sqrt(2 p_j (1 - p_j)), sigma_j =
-1 for a flipped row (x - 2p = -(y - 2q)), else 1:

    z_ij = s_j (a_ij - u_j),   a_ij = y_ij (carrier), u_j (missing), 0 (every other sample)

so a missing call is exactly 0 and the rest is z of the dense path. A row block b is the
sparse matrix A_b (r x n, the carriers' y and the missing calls' centre, in the worker
dtype) and the centring is a rank-one correction:

    Z_b V   = diag(s_b) (A_b V - u_b (1^T V))
    Z_b^T B = A_b^T (s_b B) - 1 (u_b^T (s_b B))

one sparse GEMM each (scipy.sparse on NumPy workers, cupyx.scipy.sparse on CuPy workers:
`sparse_module`, following the worker's array module; the code is the same). K_g V,
Z_g^T U and Z_g B are these products per component, as in the dense path; float64 workers
give the dense shards' results to rounding (1e-15). In float32 the centre is split as in
the dense path, u = h + l (h: u rounded to float32): missing calls hold h in A_b, the
correction subtracts h and l separately, so a missing call is off by -s_j l_j only.
Counting the minor allele keeps u_j <= 2 * MAF, so the uncentred sparse product loses
nothing to cancellation.

diag(K_g) is exact in float64 from the calls: sum_j z_ij^2 = sum_j s_j^2 u_j^2 (every
sample as if it carried 0) plus, for the calls, s_j^2 ((a_ij - u_j)^2 - u_j^2).

Resident: per call its int32 sample index and int8 dosage (5 bytes), per row its offset,
flag, frequency and code counts; the sparse matrices of a pass are decoded block by block
(at most `_SCRATCH_BYTES` of worker-dtype values) and dropped. `SparseShard.codes` is the
dense int8 view of the rows for the shard functions that walk int8 rows (the GWAS sums):
built on each access, never kept.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeAlias

import numpy as np
from dask.sizeof import sizeof

from dreml.backend import Backend, array_module, array_module_of, to_numpy
from dreml.operators.plan import ShardSpec
from dreml.operators.standardise import row_standardisation
from dreml.store import open_store

# A NumPy or CuPy array, as the worker's backend holds it (CuPy ships no type stubs, so the
# two have no common static type)
DeviceArray: TypeAlias = Any

logger = logging.getLogger(__name__)

# the decoded values of a pass's sparse block: about this many bytes (as the dense decode block)
_SCRATCH_BYTES = 32 * 2**20
# rows of a sparse block at most (its n x k products are not bounded by the calls)
_MAX_BLOCK_ROWS = 1 << 16


def sparse_module(xp: ModuleType) -> ModuleType:
    """scipy.sparse for NumPy, cupyx.scipy.sparse for CuPy: the sparse matrices of the
    worker's array module (chosen once per process, `dreml.backend`)."""
    return importlib.import_module("scipy.sparse" if xp is np else "cupyx.scipy.sparse")


@dataclass(eq=False)
class SparseShard:
    """A loaded sparse shard: its rows' sparse calls resident in the worker's backend.

    Attributes:
        indptr: row j's calls are entries [indptr[j], indptr[j + 1]) (host, int64).
        sample: each call's sample position (int32, on the device for a CuPy worker).
        dosage: each call's dosage of the counted allele, 1 or 2, or -1 missing (int8, idem).
        flipped: per row, True when it counts REF (y = 2 - x) (host).
        n_samples: n.
        frequencies: p_j (ALT) of each row (host, float64).
        counts: calls of ALT code -1 (missing), 0, 1 and 2 in each row over the shard's
            samples (host), as a dense shard's: exact traces without a decode.
        dtype, components, bounds, inv_m: as in `dreml.operators.shard.Shard`.
    """

    indptr: np.ndarray  # shape: (c + 1,)
    sample: DeviceArray  # shape: (E,)
    dosage: DeviceArray  # shape: (E,)
    flipped: np.ndarray  # shape: (c,)
    n_samples: int
    frequencies: np.ndarray  # shape: (c,)
    counts: np.ndarray  # shape: (c, 4)
    dtype: np.dtype
    components: tuple[int, ...]
    bounds: tuple[int, ...]
    inv_m: np.ndarray  # shape: (len(components),)

    @property
    def n_rows(self) -> int:
        return len(self.flipped)

    @property
    def n_calls(self) -> int:
        return int(self.indptr[-1])

    @property
    def nbytes(self) -> int:
        """Resident bytes: the calls (5 each) and the per-row and per-group arrays."""
        return int(
            self.sample.nbytes
            + self.dosage.nbytes
            + self.indptr.nbytes
            + self.flipped.nbytes
            + self.frequencies.nbytes
            + self.counts.nbytes
            + self.inv_m.nbytes
        )

    @property
    def codes(self):  # shape: (c, n), int8, in the backend
        """The rows as ALT codes (0/1/2, -1 missing), as a dense shard holds them: a dense
        view built on each access (c x n bytes while it lives)."""
        xp = array_module_of(self.sample)
        out = xp.zeros((self.n_rows, self.n_samples), dtype=np.int8)
        out[xp.asarray(self.flipped)] = 2
        if self.n_calls:
            row = _entry_rows(xp, self.indptr, 0, self.n_rows)
            flipped = xp.asarray(self.flipped)[row]
            x = xp.where(flipped & (self.dosage >= 0), 2 - self.dosage, self.dosage).astype(np.int8)
            out[row, self.sample] = x
        return out


@sizeof.register(SparseShard)
def _sizeof_sparse_shard(shard: SparseShard) -> int:
    # the scheduler's memory accounting and work stealing must see the real size
    return shard.nbytes


def sparse_scratch_bytes(dtype: np.dtype | str, max_calls: int) -> int:
    """Bytes of the decoded block (values and the missing calls' positions) that one pass
    task over a sparse shard of at most `max_calls` calls holds; n x k blocks come on top."""
    dtype = np.dtype(dtype)
    calls = min(_SCRATCH_BYTES // dtype.itemsize, max_calls)
    return calls * (dtype.itemsize + np.dtype(np.int64).itemsize)


def _alt_counts(lengths: np.ndarray, dosage: np.ndarray, flipped: np.ndarray, n: int) -> np.ndarray:
    """(c, 4) calls of ALT code -1, 0, 1, 2 per row, from the counted allele's calls."""
    row = np.repeat(np.arange(len(lengths)), lengths)
    by_code = np.zeros((len(lengths), 3), dtype=np.int64)  # counted dosage -1, 1, 2
    for k, code in enumerate((-1, 1, 2)):
        by_code[:, k] = np.bincount(row[dosage == code], minlength=len(lengths))
    missing, one, two = by_code.T
    zero = n - missing - one - two  # samples carrying no copy of the counted allele
    counts = np.stack([missing, zero, one, two], axis=1)
    counts[flipped] = counts[flipped][:, [0, 3, 2, 1]]  # x = 2 - y
    return counts


def load_sparse_shard(
    spec: ShardSpec,
    samples: np.ndarray | None,  # shape: (n,) indices into the store's samples
    dtype: str = "float32",
    backend: Backend = "auto",
) -> SparseShard:
    """Read a sparse shard's calls from its store, in component order, and keep them in the
    backend (a CuPy worker copies them to its device once, here)."""
    xp = array_module(backend)
    store = open_store(spec.store_path)
    calls = store.sparse_calls(spec.start, spec.stop, samples).take(spec.rows)
    if np.any(calls.allele < 0):
        raise ValueError(f"{spec.store_path}: a sparse shard of [{spec.start}, {spec.stop}) has rows that are not sparse")
    n = store.n_samples if samples is None else len(samples)
    flipped = calls.allele == 0
    return SparseShard(
        indptr=calls.indptr,
        sample=xp.asarray(calls.sample),
        dosage=xp.asarray(calls.dosage),
        flipped=flipped,
        n_samples=n,
        frequencies=np.asarray(spec.frequencies, dtype=np.float64),
        counts=_alt_counts(np.diff(calls.indptr), calls.dosage, flipped, n),
        dtype=np.dtype(dtype),
        components=spec.components,
        bounds=spec.bounds,
        inv_m=spec.inv_m,
    )


def _entry_rows(xp, indptr: np.ndarray, lo: int, hi: int, entries=None):
    """The row (offset from lo) of each call of rows [lo, hi), or of the calls `entries`
    (positions from indptr[lo]), in the backend: searchsorted over the row offsets (CuPy's
    repeat takes no device counts)."""
    ends = xp.asarray(indptr[lo + 1 : hi + 1] - indptr[lo])
    if entries is None:
        entries = xp.arange(int(indptr[hi] - indptr[lo]))
    return xp.searchsorted(ends, entries, side="right")


@dataclass(frozen=True, eq=False)
class _Centring:
    """A sparse shard's row centres u = 2 q, split u = high + low in the worker dtype
    (module docstring), and its signed scales s (float64, host) and s^2 (worker dtype)."""

    centre: np.ndarray  # shape: (c,), float64 host: u
    high: DeviceArray  # shape: (c,)
    low: DeviceArray  # shape: (c,)
    scale: np.ndarray  # shape: (c,)
    scale_sq: DeviceArray  # shape: (c,)

    @classmethod
    def of(cls, shard: SparseShard, xp) -> _Centring:
        centre, scale = row_standardisation(shard.frequencies)
        centre = np.where(shard.flipped, 2.0 - centre, centre)  # 2 q
        scale = np.where(shard.flipped, -scale, scale)
        high = centre.astype(shard.dtype)
        return cls(
            centre,
            xp.asarray(high),
            xp.asarray((centre - high).astype(shard.dtype)),
            scale,
            xp.asarray((scale**2).astype(shard.dtype)),
        )


def _blocks(shard: SparseShard, skip: frozenset = frozenset()):
    """(g, lo, hi, inv_m) for row blocks of every group whose component is not in `skip`,
    each with at most the scratch's calls (and at least one row)."""
    max_calls = max(1, _SCRATCH_BYTES // shard.dtype.itemsize)
    for g, a, b, inv_m in zip(shard.components, shard.bounds[:-1], shard.bounds[1:], shard.inv_m):
        if g in skip:
            continue
        lo = a
        while lo < b:
            hi = int(np.searchsorted(shard.indptr, shard.indptr[lo] + max_calls, side="right")) - 1
            hi = min(max(hi, lo + 1), b, lo + _MAX_BLOCK_ROWS)
            yield g, lo, hi, inv_m
            lo = hi


def _matrix(shard: SparseShard, xp, sp, lo: int, hi: int, high):
    """A_b of rows [lo, hi): the carriers' y and the missing calls' centre h, worker dtype."""
    e0, e1 = int(shard.indptr[lo]), int(shard.indptr[hi])
    values = shard.dosage[e0:e1]
    data = values.astype(shard.dtype)
    if shard.counts[lo:hi, 0].any():
        missing = xp.flatnonzero(values < 0)
        data[missing] = high[lo:hi][_entry_rows(xp, shard.indptr, lo, hi, missing)]
    indptr = xp.asarray((shard.indptr[lo : hi + 1] - e0).astype(np.int32))
    return sp.csr_matrix((data, shard.sample[e0:e1], indptr), shape=(hi - lo, shard.n_samples))


class _Accumulator:
    """sum_b A_b^T W_b - 1 (high_b^T W_b + low_b^T W_b) per output key, in the worker dtype."""

    def __init__(self, xp, n: int, k: int, dtype: np.dtype) -> None:
        self.xp, self.n, self.k, self.dtype = xp, n, k, dtype
        self.out: dict = {}

    def add(self, key, A, W, high, low) -> None:  # A shape: (r, n); W shape: (r, k); high, low shape: (r,)
        part = A.T @ W
        part -= high @ W
        part -= low @ W
        self.out[key] = part if key not in self.out else self.out[key] + part

    def result(self) -> dict:
        """{key: (n, k) host array} for every key added to."""
        return {key: to_numpy(value) for key, value in self.out.items()}

    def total(self) -> np.ndarray:
        """The one output of a weighted sum (zeros when nothing was added), shape (n, k)."""
        return self.result().get(None, np.zeros((self.n, self.k), dtype=self.dtype))


def sparse_matmat(
    shard: SparseShard,
    V: np.ndarray,  # shape: (n, k), already of the worker dtype
    weights: np.ndarray | None = None,  # shape: (G,) theta
):
    """`dreml.operators.shard.shard_matmat` of a sparse shard: per block b of component g,
    T_b = A_b V - u_b (1^T V), U_b = T_b s_b^2 f_g, out_g += A_b^T U_b - 1 (u_b^T U_b),
    f_g = 1 / m_g (stacked) or theta_g / m_g (weighted; components of weight 0 skipped)."""
    xp = array_module_of(shard.sample)
    sp = sparse_module(xp)
    dtype = shard.dtype
    V = xp.asarray(V, dtype=dtype)
    rows = _Centring.of(shard, xp)
    column_sums = V.sum(axis=0)  # shape: (k,), 1^T V
    acc = _Accumulator(xp, shard.n_samples, V.shape[1], dtype)
    skip = frozenset() if weights is None else frozenset(g for g in shard.components if weights[g] == 0)
    for g, lo, hi, inv_m in _blocks(shard, skip):
        A = _matrix(shard, xp, sp, lo, hi, rows.high)
        T = A @ V  # shape: (hi - lo, k)
        T -= rows.high[lo:hi, None] * column_sums
        T -= rows.low[lo:hi, None] * column_sums
        T *= rows.scale_sq[lo:hi, None] * dtype.type(inv_m if weights is None else weights[g] * inv_m)
        acc.add(g if weights is None else None, A, T, rows.high[lo:hi], rows.low[lo:hi])
    return acc.result() if weights is None else acc.total()


def sparse_zt(
    shard: SparseShard,
    U: np.ndarray,  # shape: (n, k), already of the worker dtype
) -> np.ndarray:  # shape: (c, k)
    """Z_s U of a sparse shard, in row order, float64: s_b (A_b U - u_b (1^T U)) per block."""
    xp = array_module_of(shard.sample)
    sp = sparse_module(xp)
    U = xp.asarray(U, dtype=shard.dtype)
    rows = _Centring.of(shard, xp)
    column_sums = U.sum(axis=0)
    out = np.empty((shard.n_rows, U.shape[1]))
    for _, lo, hi, _ in _blocks(shard):
        T = _matrix(shard, xp, sp, lo, hi, rows.high) @ U
        T -= rows.high[lo:hi, None] * column_sums
        T -= rows.low[lo:hi, None] * column_sums
        out[lo:hi] = to_numpy(T) * rows.scale[lo:hi, None]
    return out


def sparse_z(
    shard: SparseShard,
    B: np.ndarray,  # shape: (c, k): one row per shard row, in row order
) -> dict[int, np.ndarray]:
    """The sparse shard's part of Z_g B_g per component: A_b^T (s_b B_b) - 1 (u_b^T (s_b B_b))."""
    xp = array_module_of(shard.sample)
    sp = sparse_module(xp)
    rows = _Centring.of(shard, xp)
    scaled = xp.asarray((np.asarray(B, dtype=np.float64) * rows.scale[:, None]).astype(shard.dtype))
    acc = _Accumulator(xp, shard.n_samples, scaled.shape[1], shard.dtype)
    for g, lo, hi, _ in _blocks(shard):
        A = _matrix(shard, xp, sp, lo, hi, rows.high)
        acc.add(g, A, scaled[lo:hi], rows.high[lo:hi], rows.low[lo:hi])
    return acc.result()


def sparse_diagonal(shard: SparseShard) -> dict[int, np.ndarray]:  # {g: (n,)}
    """The sparse shard's part of diag(K_g) = sum_j z_ij^2 / m_g, exact in float64: every
    sample's sum_j s_j^2 u_j^2, plus s_j^2 ((a_ij - u_j)^2 - u_j^2) at each call."""
    xp = array_module_of(shard.sample)
    rows = _Centring.of(shard, np)
    out = {}
    for g, a, b, inv_m in zip(shard.components, shard.bounds[:-1], shard.bounds[1:], shard.inv_m):
        u, s2 = rows.centre[a:b], rows.scale[a:b] ** 2
        total = xp.full(shard.n_samples, float(np.sum(s2 * u**2)))
        e0, e1 = int(shard.indptr[a]), int(shard.indptr[b])
        if e1 > e0:
            row = _entry_rows(xp, shard.indptr, a, b)
            y = shard.dosage[e0:e1].astype(np.float64)
            u_call, s2_call = xp.asarray(u)[row], xp.asarray(s2)[row]
            a_call = xp.where(y < 0, u_call, y)
            weight = s2_call * ((a_call - u_call) ** 2 - u_call**2)
            total += xp.bincount(shard.sample[e0:e1], weights=weight, minlength=shard.n_samples)
        out[g] = to_numpy(total) * inv_m
    return out
