"""Independent readers of the simulated PLINK files for the end-to-end tests: genotypes decoded
by pgenlib and phenotype/covariate files parsed by hand, never by dreml's own code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pgenlib


def read_dosage(prefix: Path, n: int, m: int) -> np.ndarray:  # -> shape: (m, n) int8
    """ALT dosages of PREFIX.bed (variants x samples, -1 missing), decoded by pgenlib."""
    dosage = np.empty((m, n), dtype=np.int8)
    pgenlib.PgenReader(f"{prefix}.bed".encode(), raw_sample_ct=n).read_range(0, m, dosage)
    dosage[dosage == -9] = -1
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
