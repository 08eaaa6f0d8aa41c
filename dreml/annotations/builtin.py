"""Built-in annotation columns computed from the store: `maf` and `ld_score` (`--annot-builtin`).

    maf_j      = min(p_j, 1 - p_j), p_j the ALT frequency that standardises variant j (the
                 operator's: the store's over all samples, or the analysed samples')
    ld_score_j = sum_{k in N(j)} r~2_jk,   r~2_jk = r2_jk - (1 - r2_jk) / (n - 2)

N(j): the fitted variants of the same store and contig whose rank in the store's variant order
differs from j's by at most W (`window`), j itself included (r~2_jj = 1). r_jk is the Pearson
correlation over the n analysed samples of the dosages with missing calls set to 2 p_j (the
standardisation's mean imputation, z_ij = 0). r~2 is LD Score regression's bias correction
(Bulik-Sullivan et al. 2015, Supplementary Note: E[r^2] ~ r2 + (1 - r2) / (n - 2)); it is
negative for pairs in no LD, so ld_score_j may fall below 1.

Cost: one read of the fitted variants on the driver, in blocks of `block` variants along each
contig, with the last W standardised rows of the previous block kept: about 2 n m (block + W)
flops and (block + W) n float64 values in memory. Not a cluster pass (`passes` is unchanged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from dreml.errors import InputError
from dreml.operators.standardise import standardisation_table

logger = logging.getLogger(__name__)

BUILTIN = ("maf", "ld_score")


def parse_builtin(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Column names from "maf,ld_score" (or a sequence); an `InputError` names an unknown one."""
    if not text:
        return ()
    names = tuple(n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip())
    for n in names:
        if n not in BUILTIN:
            raise InputError(f"--annot-builtin: unknown built-in annotation {n!r}: choose from {', '.join(BUILTIN)}")
    if len(set(names)) != len(names):
        raise InputError(f"--annot-builtin: a column is repeated in {','.join(names)}")
    return names


def minor_allele_frequency(frequencies: np.ndarray) -> np.ndarray:
    """maf_j = min(p_j, 1 - p_j), shape (m,)."""
    p = np.asarray(frequencies, dtype=np.float64)
    return np.minimum(p, 1.0 - p)


def windowed_ld_scores(
    rows: Callable[[int, int], np.ndarray],
    groups: np.ndarray,
    n: int,
    *,
    window: int,
    block: int = 512,
) -> np.ndarray:
    """ld_score_j (module docstring) over variants 0..m-1 in their given order.

    Arguments:
        rows: rows(a, b) -> the dosages (or any affine function of them, missing imputed) of
            variants a..b-1, shape (b - a, n).
        groups: per variant, its store-and-contig label, shape (m,); variants of one label
            are consecutive.
        n: samples (the bias correction's n).
        window: W, the most ranks between neighbours.
        block: variants per block.

    Returns:
        ld_score, shape (m,).
    """
    if window < 0 or block < 1:
        raise ValueError(f"window must be >= 0 and block >= 1, got {window}, {block}")
    if n < 3:
        raise InputError(f"ld_score needs at least 3 samples (the bias correction divides by n - 2), got {n}")
    groups = np.asarray(groups)
    m = groups.shape[0]
    scores = np.ones(m)
    edges = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True])

    def unit(a: int, b: int) -> np.ndarray:  # rows centred on their sample mean, unit norm
        R = np.asarray(rows(a, b), dtype=np.float64)
        R = R - R.mean(axis=1, keepdims=True)
        norm = np.sqrt(np.einsum("ij,ij->i", R, R))
        return R / np.where(norm > 0, norm, 1.0)[:, None]

    def adjusted(r: np.ndarray) -> np.ndarray:
        r2 = r**2
        return r2 - (1.0 - r2) / (n - 2)

    for start, stop in zip(edges[:-1], edges[1:]):
        left = np.zeros((0, n))  # the last (at most W) unit rows before the block
        for a in range(start, stop, block):
            b = min(a + block, stop)
            U = unit(a, b)
            # pairs inside the block, |j - k| <= W, each counted once (k > j) for both ends
            inside = np.triu(adjusted(U @ U.T), 1)
            rank = np.arange(b - a)
            inside[rank[None, :] - rank[:, None] > window] = 0.0
            scores[a:b] += inside.sum(axis=0) + inside.sum(axis=1)
            if left.shape[0]:
                # pairs (left row i at rank a - L + i, block row k at rank a + k): distance L - i + k
                L = left.shape[0]
                cross = adjusted(left @ U.T)
                cross[(L - np.arange(L))[:, None] + rank[None, :] > window] = 0.0
                scores[a - L : a] += cross.sum(axis=1)
                scores[a:b] += cross.sum(axis=0)
            left = np.vstack([left, U])[-window:] if window else left
    return scores


def store_ld_scores(layout, stores: np.ndarray, indices: np.ndarray, contigs: np.ndarray, *, window: int) -> np.ndarray:
    """ld_score of the fitted variants (module docstring), read from the layout's stores.

    Arguments:
        layout: a genotype operator's `Layout` (stores, analysed samples, frequencies).
        stores, indices, contigs: per fitted variant its store, row in that store and contig,
            shape (m,) each (`dreml.fit.variant_table`'s store, index, contig).
        window: W.

    Returns:
        ld_score in the fitted variants' order, shape (m,).
    """
    stores = np.asarray(stores, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    order = np.lexsort((indices, stores))
    s_sorted, i_sorted, c_sorted = stores[order], indices[order], np.asarray(contigs)[order]
    # one group per run of one store and contig (a contig that recurs in an unsorted store starts a new one)
    groups = np.cumsum(np.r_[0, (s_sorted[1:] != s_sorted[:-1]) | (c_sorted[1:] != c_sorted[:-1])])

    def rows(a: int, b: int) -> np.ndarray:  # a..b-1 lie in one group, so in one store
        s, idx = int(s_sorted[a]), i_sorted[a:b]
        codes = layout.stores[s].dosage(int(idx[0]), int(idx[-1]) + 1, layout.samples)[idx - idx[0]]
        table = standardisation_table(layout.frequencies[s][idx])  # shape: (b - a, 4), z for missing, 0, 1, 2
        return np.take_along_axis(table, codes.astype(np.intp) + 1, axis=1)

    scores = np.empty(len(order))
    scores[order] = windowed_ld_scores(rows, groups, layout.n, window=window)
    logger.info("ld_score of %d variants (window +-%d variants): mean %.3f", len(order), window, scores.mean())
    return scores
