"""Per-variant sums of the marginal GWAS, computed where each shard lives (`map_shards`).

Notation (as in `dreml.gwas.marginal`): for the c rows of a shard over the n analysed samples,

    M   shape (c, n): the observed mask, 1 where the call is not missing, else 0
    G   shape (c, n): the ALT dosage with missing calls set to 0 (0/1/2)
    G2  = G * G (elementwise; 0/1/4)

and three blocks of per-sample columns built on the driver (all traits side by side):

    S_obs = M @ C_obs      S_dos = G @ C_dos      S_sq = G2 @ W

W holds one column per trait: the trait's sample mask w_t. The driver turns these sums into
BETA, SE, T_STAT and P per variant and trait (`dreml.gwas.marginal`); nothing per-sample
comes back. One pass: each row block is decoded once and used by the three GEMMs.

Exactness: the rows are decoded into the worker dtype (float64 by default), in which every
decoded value (0, 1, 2, 4) is exact, so the sums against 0/1 columns (the counts N, sum x,
sum x^2 of every trait) are exact integers below 2^53 and the others are ordinary float64
dot products of well-scaled columns. float32 workers are allowed but give about 1e-6.
"""

from __future__ import annotations

import numpy as np

from dreml.backend import array_module_of, to_numpy
from dreml.operators.shard import Shard

# rows decoded at once: about this many bytes per decoded block
_BLOCK_BYTES = 16 * 2**20
_MIN_BLOCK_ROWS = 64


def code_sums(
    codes,  # shape: (c, n), int8 ALT dosage, -1 missing (NumPy or CuPy)
    C_obs: np.ndarray,  # shape: (n, k_obs)
    C_dos: np.ndarray,  # shape: (n, k_dos)
    W: np.ndarray,  # shape: (n, T)
    dtype: np.dtype | str = "float64",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # shapes: (c, k_obs), (c, k_dos), (c, T), float64
    """(M @ C_obs, G @ C_dos, G2 @ W) of the rows `codes`, in row blocks; see the module docstring."""
    xp = array_module_of(codes)
    dtype = np.dtype(dtype)
    c, n = codes.shape
    C_obs, C_dos, W = (xp.asarray(a, dtype=dtype) for a in (C_obs, C_dos, W))
    out = (np.empty((c, C_obs.shape[1])), np.empty((c, C_dos.shape[1])), np.empty((c, W.shape[1])))
    step = max(_MIN_BLOCK_ROWS, _BLOCK_BYTES // max(1, n * dtype.itemsize))
    for lo in range(0, c, step):
        hi = min(lo + step, c)
        block = codes[lo:hi]
        M = (block >= 0).astype(dtype)  # shape: (r, n)
        G = block.astype(dtype)
        G *= M  # missing (-1) -> 0
        out[0][lo:hi] = to_numpy(M @ C_obs)
        out[1][lo:hi] = to_numpy(G @ C_dos)
        G *= G
        out[2][lo:hi] = to_numpy(G @ W)
    return out


def shard_sums(
    shard: Shard,
    C_obs: np.ndarray,  # shape: (n, k_obs)
    C_dos: np.ndarray,  # shape: (n, k_dos)
    W: np.ndarray,  # shape: (n, T)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`code_sums` of a resident shard's rows (in shard row order) in the shard's worker dtype."""
    return code_sums(shard.codes, C_obs, C_dos, W, shard.dtype)
