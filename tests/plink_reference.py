"""Independent readers of simulated PLINK files for the tests: genotypes decoded by pgenlib and
phenotype/covariate files parsed by hand, never by dreml's own code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pgenlib


def read_dosage(prefix: str | Path, n: int, m: int) -> np.ndarray:  # -> shape: (m, n) int8
    """ALT (A1) dosages of PREFIX.bed (variants x samples, -1 missing), decoded by pgenlib."""
    dosage = np.empty((m, n), dtype=np.int8)
    with pgenlib.PgenReader(f"{prefix}.bed".encode(), raw_sample_ct=n) as reader:
        reader.read_range(0, m, dosage)
    dosage[dosage == -9] = -1
    return dosage


def read_genotypes(prefix: str | Path, n: int, m: int) -> np.ndarray:  # -> shape: (n, m) float64
    """`read_dosage` as samples x variants float64, NaN missing."""
    dosage = read_dosage(prefix, n, m).T.astype(np.float64)
    dosage[dosage < 0] = np.nan
    return dosage


def hand_alignment(root: Path, n: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Samples I1..In of root/c.pheno with a phenotype and both covariates of root/c.covar,
    y, and X = [1, sex M, age]."""
    pheno = {f.split()[1]: f.split()[2] for f in list(open(root / "c.pheno"))[1:]}
    covar = {f.split()[1]: f.split()[2:] for f in list(open(root / "c.covar"))[1:]}
    keep = [i for i in range(n) if pheno[f"I{i + 1}"] != "NA" and covar[f"I{i + 1}"][1] != "NA"]
    y = np.array([float(pheno[f"I{i + 1}"]) for i in keep])
    X = np.array([[1.0, float(covar[f"I{i + 1}"][0] == "M"), float(covar[f"I{i + 1}"][1])] for i in keep])
    return keep, y, X
