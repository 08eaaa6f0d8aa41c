"""A seeded cohort simulator: genotypes with LD blocks, phenotypes with known variance components.

Model (the same one dreml fits):
    y = X beta + sum_g u_g + e,   u_g ~ N(0, sigma_g^2 K_g),   e ~ N(0, sigma_e^2 I),
    K_g = Z_g Z_g^T / m_g,  z_ij = (x_ij - 2 p_j) / sqrt(2 p_j (1 - p_j)), missing -> 0,
with p_j the observed ALT frequency (GCTA convention) and m_g the polymorphic SNPs of group g.
Component g is a contiguous group of chromosomes; `sigma_g^2` are `group_variances`.

Genotypes: per haplotype, a latent Gaussian AR(1) chain along each LD block (correlation
`ld_rho` between neighbours, blocks of geometric length with mean `block_size`), thresholded
at the ALT frequency's normal quantile; two haplotypes make a genotype. ALT frequencies follow
the neutral spectrum (density proportional to 1/p on [maf_min, 0.5]), the ALT allele being
the minor one half the time. Each variant has its own missing rate, uniform on
[0, 2 * missing_rate].

Outputs under PREFIX: .bed/.bim/.fam, .pheno and .covar (header `FID IID name...`, `NA`
missing), .components.tsv (SNP<TAB>component) and .truth.json.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import ndtri

from dreml.plink_write import BedWriter, write_bim, write_fam

logger = logging.getLogger(__name__)

_BASES = np.array(["A", "C", "G", "T"])


@dataclass(frozen=True)
class SimulationConfig:
    """Settings of `simulate_cohort`; recorded in the truth JSON."""

    n_samples: int = 2000
    n_variants: int = 5000
    n_chromosomes: int = 4
    group_variances: tuple[float, ...] = (0.3, 0.2)
    n_traits: int = 1
    block_size: float = 40.0
    ld_rho: float = 0.9
    maf_min: float = 0.01
    missing_rate: float = 0.02
    phenotype_missing_rate: float = 0.01
    chunk_variants: int = 2000
    seed: int = 1
    # effects of the simulated covariates: age (per year, centred at 50) and sex (F vs M)
    covariate_effects: dict = field(default_factory=lambda: {"age": 0.01, "sex_F": 0.2})

    def __post_init__(self) -> None:
        if self.n_samples < 2 or self.n_variants < 1:
            raise ValueError("need n_samples >= 2 and n_variants >= 1")
        if not 1 <= len(self.group_variances) <= self.n_chromosomes:
            raise ValueError("need between 1 and n_chromosomes group variances")
        if any(v < 0 for v in self.group_variances) or sum(self.group_variances) >= 1:
            raise ValueError("group variances must be >= 0 and sum to less than 1 (the phenotypic variance)")
        if not 0 < self.maf_min < 0.5 or not 0 <= self.missing_rate < 0.5 or not 0 <= self.ld_rho < 1:
            raise ValueError("need 0 < maf_min < 0.5, 0 <= missing_rate < 0.5, 0 <= ld_rho < 1")


def _chromosome_groups(n_chromosomes: int, n_groups: int) -> list[list[int]]:
    """Split chromosomes 1..C into contiguous groups of near-equal size."""
    return [list(map(int, g + 1)) for g in np.array_split(np.arange(n_chromosomes), n_groups)]


def _draw_alt_frequency(rng: np.random.Generator, m: int, maf_min: float) -> np.ndarray:
    maf = np.exp(rng.uniform(np.log(maf_min), np.log(0.5), size=m))
    return np.where(rng.random(m) < 0.5, maf, 1.0 - maf)


def _haplotype_chunk(
    rng: np.random.Generator, state: np.ndarray, new_block: np.ndarray, p: np.ndarray, rho: float
) -> tuple[np.ndarray, np.ndarray]:
    """ALT indicators (m_chunk x 2n) continuing the AR(1) latent chains in `state`."""
    m = len(p)
    out = np.empty((m, state.shape[0]), dtype=np.int8)
    threshold = ndtri(p)
    innovation_scale = np.sqrt(1.0 - rho * rho)
    for j in range(m):
        noise = rng.standard_normal(int(state.shape[0]), dtype=np.float32)
        state = noise if new_block[j] else (rho * state + innovation_scale * noise).astype(np.float32)
        out[j] = state < threshold[j]
    return out, state


def standardise(dosage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GCTA standardisation of a (variants x samples) block with observed frequencies.

    Returns Z (variants x samples, float64; missing and monomorphic -> 0) and a boolean mask
    of polymorphic variants.
    """
    observed = dosage >= 0
    count = observed.sum(axis=1)
    total = np.where(observed, dosage, 0).sum(axis=1, dtype=np.float64)
    p = np.divide(total, 2.0 * count, out=np.full(len(count), np.nan), where=count > 0)
    var = 2.0 * p * (1.0 - p)
    polymorphic = np.isfinite(var) & (var > 0)
    scale = np.divide(1.0, np.sqrt(var), out=np.zeros_like(var), where=polymorphic)
    z = (dosage - 2.0 * np.nan_to_num(p)[:, None]) * scale[:, None]
    z[~observed] = 0.0
    return z, polymorphic


def simulate_cohort(config: SimulationConfig, prefix: str | Path) -> dict:
    """Write a simulated cohort under `prefix` and return the truth dictionary."""
    prefix = str(prefix)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    n, m, C = config.n_samples, config.n_variants, config.n_chromosomes

    contig = np.sort(rng.integers(1, C + 1, size=m))
    contig[:C] = np.arange(1, C + 1) if m >= C else contig[:C]
    contig = np.sort(contig)
    position = np.empty(m, dtype=np.int64)
    for c in np.unique(contig):
        idx = np.flatnonzero(contig == c)
        position[idx] = np.cumsum(rng.integers(100, 5000, size=len(idx)))
    variant_id = np.array([f"rs{c}_{p}" for c, p in zip(contig, position)])
    pair = np.array([rng.choice(4, size=2, replace=False) for _ in range(m)])
    ref, alt = _BASES[pair[:, 0]], _BASES[pair[:, 1]]
    p_alt = _draw_alt_frequency(rng, m, config.maf_min)
    miss_rate = rng.uniform(0, 2 * config.missing_rate, size=m)
    new_block = rng.random(m) < 1.0 / config.block_size
    new_block[np.r_[True, contig[1:] != contig[:-1]]] = True

    groups = _chromosome_groups(C, len(config.group_variances))
    group_of_contig = {c: g for g, chroms in enumerate(groups) for c in chroms}
    group_of_variant = np.array([group_of_contig[c] for c in contig])
    n_groups = len(groups)
    T = config.n_traits

    sample_id = np.array([f"I{i + 1}" for i in range(n)])
    family_id = np.array([f"F{i + 1}" for i in range(n)])
    sex = rng.integers(1, 3, size=n)  # PLINK coding: 1 male, 2 female
    age = np.round(rng.uniform(30, 70, size=n), 1)

    raw_genetic = np.zeros((n_groups, n, T))  # sum_j z_j beta_j with beta ~ N(0, 1)
    m_polymorphic = np.zeros(n_groups, dtype=np.int64)
    state = np.zeros(2 * n, dtype=np.float32)
    with BedWriter(prefix + ".bed") as bed:
        for start in range(0, m, config.chunk_variants):
            stop = min(start + config.chunk_variants, m)
            haps, state = _haplotype_chunk(rng, state, new_block[start:stop], p_alt[start:stop], config.ld_rho)
            dosage = haps[:, :n] + haps[:, n:]
            dosage[rng.random(dosage.shape) < miss_rate[start:stop, None]] = -1
            bed.write(dosage)
            z, polymorphic = standardise(dosage)
            beta = rng.standard_normal((stop - start, T))
            for g in range(n_groups):
                in_g = (group_of_variant[start:stop] == g) & polymorphic
                raw_genetic[g] += z[in_g].T @ beta[in_g]
                m_polymorphic[g] += int(in_g.sum())
            logger.info("simulated variants %d-%d of %d", start, stop, m)
    write_bim(prefix + ".bim", contig, variant_id, position, alt, ref)
    write_fam(prefix + ".fam", family_id, sample_id, sex)

    sigma2 = np.asarray(config.group_variances, dtype=np.float64)
    residual_variance = 1.0 - float(sigma2.sum())
    genetic = raw_genetic * np.sqrt(sigma2 / np.maximum(m_polymorphic, 1))[:, None, None]
    residual = rng.standard_normal((n, T)) * np.sqrt(residual_variance)
    fixed = config.covariate_effects["age"] * (age - 50.0) + config.covariate_effects["sex_F"] * (sex == 2)
    y = fixed[:, None] + genetic.sum(axis=0) + residual
    y_missing = rng.random((n, T)) < config.phenotype_missing_rate

    trait_names = [f"trait{t + 1}" for t in range(T)]
    with open(prefix + ".pheno", "w") as f:
        f.write("FID IID " + " ".join(trait_names) + "\n")
        for i in range(n):
            vals = ["NA" if y_missing[i, t] else f"{y[i, t]:.6f}" for t in range(T)]
            f.write(f"{family_id[i]} {sample_id[i]} {' '.join(vals)}\n")
    age_missing = rng.random(n) < config.phenotype_missing_rate
    with open(prefix + ".covar", "w") as f:
        f.write("FID IID sex age\n")
        for i in range(n):
            a = "NA" if age_missing[i] else f"{age[i]}"
            f.write(f"{family_id[i]} {sample_id[i]} {'M' if sex[i] == 1 else 'F'} {a}\n")

    names = [f"chr{g[0]}" if len(g) == 1 else f"chr{g[0]}-{g[-1]}" for g in groups]
    with open(prefix + ".components.tsv", "w") as f:
        for vid, g in zip(variant_id, group_of_variant):
            f.write(f"{vid}\t{names[g]}\n")

    truth = {
        "seed": config.seed,
        "config": asdict(config),
        "components": [
            {"name": names[g], "chromosomes": groups[g], "variance": float(sigma2[g]), "m_polymorphic": int(m_polymorphic[g])}
            for g in range(n_groups)
        ],
        "residual_variance": residual_variance,
        "h2_total": float(sigma2.sum()),
        "fixed_effects": dict(config.covariate_effects),
        "traits": {
            name: {
                "realised_genetic_variance": [float(np.var(genetic[g, :, t])) for g in range(n_groups)],
                "realised_residual_variance": float(np.var(residual[:, t])),
            }
            for t, name in enumerate(trait_names)
        },
        "files": {ext: prefix + "." + ext for ext in ("bed", "bim", "fam", "pheno", "covar", "components.tsv")},
    }
    with open(prefix + ".truth.json", "w") as f:
        json.dump(truth, f, indent=2)
    return truth
