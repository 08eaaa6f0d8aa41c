"""The independent reference of the genotype-operator tests: bed-reader + NumPy.

Sizes are chosen so that nothing divides evenly: n = 157 samples in sample chunks of 40,
m = 403 variants in variant chunks of 50, shards of 37 rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bed_reader import open_bed

from dreml.store import Store

N, M = 157, 403


@dataclass(frozen=True)
class Cohort:
    prefix: Path
    store: Store
    genotypes: np.ndarray  # shape: (n, m), float64 ALT counts, NaN missing (read by bed-reader)


@dataclass(frozen=True)
class RareCohort:
    """One fileset converted twice: `dense` (format 1) and `sparse` (1.1, `--sparse-below 0.05`)."""

    prefix: Path
    dense: Store
    sparse: Store
    genotypes: np.ndarray  # shape: (n, m), float64 ALT counts, NaN missing (read by bed-reader)


def read_bed(prefix: Path) -> np.ndarray:
    """ALT (= .bim A1) dosages as (n, m) float64 with NaN missing, by bed-reader."""
    with open_bed(f"{prefix}.bed", count_A1=True) as bed:
        return bed.read(dtype="float64")


def reference_Z(genotypes: np.ndarray, samples=None, frequencies: str = "store") -> tuple[np.ndarray, np.ndarray]:
    """GCTA-standardised Z (n x m) of the analysed samples and the polymorphic mask.

    p comes from all samples ("store") or from the analysed ones ("samples"); missing -> 0.
    """
    X = genotypes if samples is None else genotypes[samples]
    base = genotypes if frequencies == "store" else X
    with np.errstate(invalid="ignore", divide="ignore"):  # all-missing and monomorphic columns
        p = np.nansum(base, axis=0) / (2.0 * np.sum(~np.isnan(base), axis=0))
        polymorphic = np.isfinite(p) & (p > 0) & (p < 1)
        Z = (X - 2 * p) / np.sqrt(2 * p * (1 - p))
    Z[np.isnan(X)] = 0.0
    Z[:, ~polymorphic] = 0.0
    return Z, polymorphic


def reference_KV(
    genotypes: np.ndarray, indices: list[np.ndarray], V: np.ndarray, samples=None, frequencies: str = "store"
) -> tuple[np.ndarray, list[int]]:  # V shape: (n, k) -> (G, n, k)
    """Dense Z_g Z_g^T V / m_g per component (monomorphic variants dropped) and the m_g."""
    Z, polymorphic = reference_Z(genotypes, samples, frequencies)
    out, m = [], []
    for idx in indices:
        keep = idx[polymorphic[idx]]
        Zg = Z[:, keep]
        out.append(Zg @ (Zg.T @ V) / len(keep))
        m.append(len(keep))
    return np.stack(out), m


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
