"""Marginal GWAS: per-variant least squares of every trait on the ALT dosage, plink2 --glm style.

Notation. n samples analysed (the union of the traits' samples, in store order), T traits,
trait t with sample mask w_t (n_t samples), design X_t (n_t x p, intercept first) and y_t.
For variant j: x_j its ALT dosage, O_j its observed calls, M/G the observed mask and the
zero-filled dosage (`dreml.gwas.shard_sums`). Model, per variant and trait:

    y = X gamma + x_j beta + e,   OLS;  BETA, SE, T_STAT = BETA / SE,
    P = 2 F_t(-|T_STAT|; OBS_CT - p - 1)   (two-sided Student t, as plink2 --glm)

Covariate columns (but the intercept) and y are standardised over the trait's samples on
the driver (the span of X, hence BETA, is unchanged; BETA and SE are scaled back by sd(y)),
which keeps every normal-equation system well conditioned.

complete-case (plink2's rule): a sample with a missing call is dropped for that variant.
With O = O_j intersect trait samples, the pass returns, per variant and trait,
A = X_O^T X_O, u = X_O^T y, y_O^T y_O (as M @ [X_a X_b, X_a y, y^2]), b = X_O^T x,
x^T y (as G @ [X, y]) and x^T x (as G2 @ w). N = A_00 and sum x = b_0 are exact integers, so
the centred sum of squares css = (N x^T x - (sum x)^2) / N is exact; x is centred by its mean
over O before the Schur complement (b' = b - xbar A_0., b'_0 = 0) and then

    sxx = css - b'^T A^-1 b',  sxy = x'^T y - b'^T A^-1 u,  syy = y^T y - u^T A^-1 u,
    BETA = sxy / sxx,  SE^2 = (syy - BETA sxy) / (N - p - 1) / sxx

(Frisch-Waugh-Lovell), solved for all variants at once with a batched float64 solve.

mean-impute: a missing call takes the variant's mean over the trait's observed calls;
covariates are projected out once per trait: Q = qr(X_t) (Q_0 the constant column),
r = y - Q Q^T y. With mu = sum x / N_obs, x_imp^T r = x^T r - mu m^T r and
Q_rest^T x_imp = Q_rest^T x - mu Q_rest^T m (both from M @ and G @ [r, Q_rest, w]), and
sxx = (N_obs x^T x - (sum x)^2) / N_obs - |Q_rest^T x_imp|^2; BETA = x_imp^T r / sxx,
SE^2 = (r^T r - BETA x_imp^T r) / (n_t - p - 1) / sxx; OBS_CT = n_t.

Both modes make one pass over the genotypes for all traits (three GEMMs per row block).
A variant is reported NA (BETA, SE, T_STAT, P) when it is monomorphic over the samples used
(css = 0), when no call is observed, when OBS_CT - p - 1 < 1, or when it is collinear with
the covariates (sxx <= 1e-10 css); each reason is counted. Variants the operator excluded
(monomorphic over the whole store) are summed on the driver from the store, so every
variant of every store appears in the output, in store order.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import special, stats

from dreml.errors import InputError
from dreml.gwas.shard_sums import code_sums, shard_sums
from dreml.outputs import atomic_write_text, write_json
from dreml.phenotypes import is_missing, load_analysis_data, read_sample_table

logger = logging.getLogger(__name__)

MissingMode = Literal["complete-case", "mean-impute"]
MISSING_MODES = ("complete-case", "mean-impute")
HEADER = ("#CHROM", "POS", "ID", "REF", "ALT", "A1", "A1_FREQ", "OBS_CT", "BETA", "SE", "T_STAT", "P")
# median of the chi-square distribution with 1 df: lambda_GC = median(chi2) / this
CHI2_MEDIAN = float(stats.chi2.ppf(0.5, 1))
# P below this is recomputed from its logarithm (scipy's t.sf underflows near 1e-308)
P_LOG_BELOW = 1e-300
COLLINEAR_RATIO = 1e-10
MIN_TRAIT_VALUES = 3


@dataclass(frozen=True)
class TraitData:
    """One trait aligned with the store: y, X (intercept first) and its samples (store order).

    Attributes:
        name: phenotype column.
        sample_index: store sample indices, sorted, shape (n_t,).
        y: shape (n_t,). X: shape (n_t, p). covariate_names: X's columns.
        report: sample counts of the alignment (`dreml.phenotypes.load_analysis_data`).
    """

    name: str
    sample_index: np.ndarray
    y: np.ndarray
    X: np.ndarray
    covariate_names: tuple[str, ...]
    report: dict = field(default_factory=dict)


def load_traits(
    store_iid: np.ndarray,
    pheno: str | Path,
    *,
    pheno_names: Sequence[str] | None = None,
    mpheno: int | None = None,
    **options,
) -> list[TraitData]:
    """Every requested trait (default: every column of `pheno`; `mpheno`: the N-th) with its
    own samples and X; `options` (covariates, `store_fid`, `samples`...) as in
    `dreml.phenotypes.load_analysis_data`.

    Raises InputError for a trait with fewer than 3 values (or too few for its covariates),
    a constant trait, or covariates that are collinear over the trait's samples.
    """
    table = read_sample_table(pheno)
    if mpheno is not None:
        pheno_names = [table.numbered(mpheno, "--mpheno")]
    names = list(pheno_names) if pheno_names else list(table.columns)
    if len(set(names)) != len(names):
        raise InputError(f"--pheno-name lists a trait twice: {', '.join(names)}")
    in_store = set(np.asarray(store_iid, dtype=str))
    traits = []
    for name in names:
        _, raw = table.column(name)
        observed = sum(1 for iid, tok in zip(table.iid, raw) if iid in in_store and not is_missing(tok))
        if observed < MIN_TRAIT_VALUES:
            raise InputError(
                f"{table.path}: trait {name!r} has {observed} observed value(s) in the store's samples "
                f"(need at least {MIN_TRAIT_VALUES})"
            )
        data = load_analysis_data(store_iid, pheno, pheno_name=name, **options)
        n, p = data.X.shape
        if n < max(MIN_TRAIT_VALUES, p + 2):
            raise InputError(
                f"{table.path}: trait {name!r} has {n} samples with every covariate observed "
                f"(need at least {max(MIN_TRAIT_VALUES, p + 2)} for {p} covariate columns)"
            )
        traits.append(TraitData(name, data.sample_index, data.y, data.X, data.covariate_names, data.report))
    return traits


def union_samples(traits: Sequence[TraitData]) -> np.ndarray:
    """The analysed samples: every trait's samples, sorted store indices (the operator's samples)."""
    return np.unique(np.concatenate([t.sample_index for t in traits]))


@dataclass(frozen=True)
class TraitResult:
    """Per-variant statistics of one trait, all variants of all stores in store order.

    Attributes:
        name: the trait. n: its samples. covariate_names: the columns of its X.
        beta, se, t_stat, p: NaN where not tested. log10_p: log10 P (finite below 1e-300).
        a1_freq: ALT frequency over the observed calls used (NaN: no call). obs_ct: samples used.
        skipped: variants not tested, by reason. lambda_gc: median chi2 / 0.4549 over tested.
    """

    name: str
    n: int
    covariate_names: tuple[str, ...]
    beta: np.ndarray
    se: np.ndarray
    t_stat: np.ndarray
    p: np.ndarray
    log10_p: np.ndarray
    a1_freq: np.ndarray
    obs_ct: np.ndarray
    skipped: dict[str, int]
    lambda_gc: float

    @property
    def n_tested(self) -> int:
        return int(np.sum(~np.isnan(self.beta)))


@dataclass(frozen=True)
class MarginalResult:
    """The marginal GWAS of every trait.

    Attributes:
        missing: "complete-case" or "mean-impute". chrom, pos, variant_id, ref, alt: the variants.
        traits: one `TraitResult` per trait. passes: passes over the genotypes (1).
        timings: seconds per step. n_driver_variants: variants summed on the driver (store-monomorphic).
    """

    missing: str
    chrom: np.ndarray
    pos: np.ndarray
    variant_id: np.ndarray
    ref: np.ndarray
    alt: np.ndarray
    traits: tuple[TraitResult, ...]
    passes: int
    timings: dict[str, float]
    n_driver_variants: int

    def to_dict(self) -> dict:
        return {
            "missing": self.missing,
            "n_variants": int(len(self.variant_id)),
            "variants_summed_on_driver": self.n_driver_variants,
            "passes": self.passes,
            "timings_s": dict(self.timings),
            "traits": [
                {
                    "name": t.name,
                    "n": t.n,
                    "covariates": list(t.covariate_names),
                    "variants_tested": t.n_tested,
                    "variants_skipped": dict(t.skipped),
                    "lambda_gc": t.lambda_gc,
                }
                for t in self.traits
            ],
        }


# ----------------------------------------------------------------------------- columns


def _standardised(trait: TraitData) -> tuple[np.ndarray, np.ndarray, float]:
    """X with non-intercept columns standardised, y standardised, and sd(y) (module docstring)."""
    X = trait.X.astype(np.float64).copy()
    X[:, 1:] = (X[:, 1:] - X[:, 1:].mean(axis=0)) / X[:, 1:].std(axis=0)
    sd = float(trait.y.std())
    return X, (trait.y - trait.y.mean()) / sd, sd


def _pairs(p: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(p) for b in range(a, p)]


@dataclass(frozen=True)
class _TraitColumns:
    """Where a trait's columns sit in the shared blocks, and its driver-side constants."""

    obs: slice
    dos: slice
    index: int  # its column of W
    p: int
    n: int
    scale: float  # sd(y)
    rr: float  # mean-impute: r^T r


def build_columns(
    traits: Sequence[TraitData], samples: np.ndarray, missing: MissingMode
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[_TraitColumns]]:
    """C_obs (n, k_obs), C_dos (n, k_dos), W (n, T) of all traits and each trait's layout."""
    n = len(samples)
    obs_cols, dos_cols, w_cols = [], [], []
    layout: list[_TraitColumns] = []
    k_obs = k_dos = 0
    for trait in traits:
        pos = np.searchsorted(samples, trait.sample_index)
        if np.any(pos >= n) or np.any(samples[np.minimum(pos, n - 1)] != trait.sample_index):
            raise ValueError(f"trait {trait.name!r} has samples outside the operator's samples")
        X, y, sd = _standardised(trait)
        p = X.shape[1]
        w = np.zeros(n)
        w[pos] = 1.0
        rr = float("nan")
        if missing == "complete-case":
            Xf = np.zeros((n, p))
            Xf[pos] = X
            yf = np.zeros(n)
            yf[pos] = y
            obs = [Xf[:, a] * Xf[:, b] for a, b in _pairs(p)] + [Xf[:, a] * yf for a in range(p)] + [yf * yf]
            dos = [Xf[:, a] for a in range(p)] + [yf]
        else:
            Q, _ = np.linalg.qr(X)
            r = y - Q @ (Q.T @ y)
            rr = float(r @ r)
            block = np.zeros((n, p + 1))
            block[pos, 0] = r
            block[pos, 1:p] = Q[:, 1:]
            block[:, p] = w
            obs = dos = list(block.T)
        obs_cols += obs
        dos_cols += dos
        w_cols.append(w)
        layout.append(
            _TraitColumns(slice(k_obs, k_obs + len(obs)), slice(k_dos, k_dos + len(dos)), len(layout), p, len(pos), sd, rr)
        )
        k_obs += len(obs)
        k_dos += len(dos)
    return np.column_stack(obs_cols), np.column_stack(dos_cols), np.column_stack(w_cols), layout


# ----------------------------------------------------------------------------- statistics


def _complete_case(S_obs, S_dos, S_sq, cols: _TraitColumns) -> tuple[np.ndarray, ...]:
    """(N, sum x, css, sxx, sxy, syy) per variant from the complete-case sums (module docstring)."""
    p = cols.p
    m = len(S_obs)
    A = np.empty((m, p, p))
    for i, (a, b) in enumerate(_pairs(p)):
        A[:, a, b] = A[:, b, a] = S_obs[:, i]
    k = len(_pairs(p))
    u = S_obs[:, k : k + p]
    yy = S_obs[:, k + p]
    N = np.rint(A[:, 0, 0])
    sx = np.rint(S_dos[:, 0])
    xy = S_dos[:, p]
    xx = np.rint(S_sq)
    safe = N > 0
    Ns = np.where(safe, N, 1.0)
    xbar = sx / Ns
    css = np.where(safe, (N * xx - sx * sx) / Ns, 0.0)
    b = S_dos[:, :p] - xbar[:, None] * A[:, 0, :]
    b[:, 0] = 0.0
    xy = xy - xbar * u[:, 0]
    # variants with too few calls for a solvable A get the identity (they are NA anyway)
    solvable = N > p
    A[~solvable] = np.eye(p)
    try:
        z = np.linalg.solve(A, np.stack([b, u], axis=2))  # shape: (m, p, 2)
    except np.linalg.LinAlgError:
        z = np.stack([np.linalg.lstsq(A[i], np.stack([b[i], u[i]], axis=1), rcond=None)[0] for i in range(m)])
    sxx = css - np.einsum("mp,mp->m", b, z[:, :, 0])
    sxy = xy - np.einsum("mp,mp->m", b, z[:, :, 1])
    syy = yy - np.einsum("mp,mp->m", u, z[:, :, 1])
    return N, sx, css, sxx, sxy, syy


def _mean_impute(S_obs, S_dos, S_sq, cols: _TraitColumns) -> tuple[np.ndarray, ...]:
    """(N_obs, sum x, css, sxx, sxy, syy) per variant from the mean-impute sums (module docstring)."""
    p = cols.p
    N = np.rint(S_obs[:, p])
    sx = np.rint(S_dos[:, p])
    xx = np.rint(S_sq)
    safe = N > 0
    Ns = np.where(safe, N, 1.0)
    mu = sx / Ns
    css = np.where(safe, (N * xx - sx * sx) / Ns, 0.0)
    q = S_dos[:, 1:p] - mu[:, None] * S_obs[:, 1:p]
    sxx = css - np.sum(q * q, axis=1)
    sxy = S_dos[:, 0] - mu * S_obs[:, 0]
    return N, sx, css, sxx, sxy, np.full(len(N), cols.rr)


def log_t_sf(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """ln P(T > t) of Student's t (t > 0), without underflow: ln of (1/2) I_x(a, 1/2), with
    a = df/2, x = df / (df + t^2), from I_x(a, b) = x^a (1-x)^b / (a B(a, b)) 2F1(a+b, 1; a+1; x)
    (DLMF 8.17.8). Where that hypergeometric series fails (df beyond ~1e4 at tiny P), scipy's
    t.logsf, then the normal tail (log_ndtr), stand in."""
    a, b = df / 2.0, 0.5
    x = df / (df + t * t)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = (
            a * np.log(x)
            + b * np.log1p(-x)
            - np.log(a)
            - special.betaln(a, b)
            + np.log(special.hyp2f1(a + b, 1.0, a + 1.0, x))
            - math.log(2.0)
        )
        bad = ~np.isfinite(out)
        if bad.any():
            out[bad] = stats.t.logsf(t[bad], df[bad])
        bad = ~np.isfinite(out) | (out >= 0)
        if bad.any():
            out[bad] = special.log_ndtr(-t[bad])
    return out


def p_values(t_stat: np.ndarray, df: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Student t P = 2 t.sf(|T|, df) and log10 P; below 1e-300 both come from
    `log_t_sf` (P itself is 0 below the float64 range; the text prints it from log10 P)."""
    t = np.abs(t_stat)
    ok = ~np.isnan(t)
    dfs = np.where(ok, df, 1.0)
    P = np.full(t.shape, np.nan)
    P[ok] = 2.0 * stats.t.sf(t[ok], dfs[ok])
    with np.errstate(divide="ignore"):
        log10_p = np.log10(P)
    tiny = ok & (P < P_LOG_BELOW)
    if tiny.any():
        log10_p[tiny] = (log_t_sf(t[tiny], dfs[tiny]) + math.log(2.0)) / math.log(10.0)
        P[tiny] = np.power(10.0, log10_p[tiny])
    return P, log10_p


def _statistics(sums, cols: _TraitColumns, missing: MissingMode, name: str, covariates) -> TraitResult:
    S_obs, S_dos, S_sq = sums[0][:, cols.obs], sums[1][:, cols.dos], sums[2][:, cols.index]
    stats_of = _complete_case if missing == "complete-case" else _mean_impute
    N, sx, css, sxx, sxy, syy = stats_of(S_obs, S_dos, S_sq, cols)
    obs_ct = N if missing == "complete-case" else np.full(len(N), float(cols.n))
    df = obs_ct - cols.p - 1
    no_call = N == 0
    mono = ~no_call & (css == 0)
    few = ~no_call & ~mono & (df < 1)
    collinear = ~no_call & ~mono & ~few & (sxx <= COLLINEAR_RATIO * css)
    tested = ~(no_call | mono | few | collinear)
    beta = np.full(len(N), np.nan)
    se = np.full(len(N), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = sxy / sxx
        s2 = (syy - b * sxy) / df / sxx
    beta[tested] = b[tested]
    se[tested] = np.sqrt(np.maximum(s2[tested], 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t_stat = beta / se
    P, log10_p = p_values(t_stat, df)
    with np.errstate(divide="ignore", invalid="ignore"):
        a1 = np.where(no_call, np.nan, sx / (2.0 * np.where(no_call, 1.0, N)))
    chi2 = np.where(P > 0, stats.chi2.isf(np.where(P > 0, P, 1.0), 1), t_stat**2)[tested]
    lam = float(np.median(chi2) / CHI2_MEDIAN) if chi2.size else float("nan")
    skipped = {
        "no_call": int(no_call.sum()),
        "monomorphic": int(mono.sum()),
        "too_few_samples": int(few.sum()),
        "collinear_with_covariates": int(collinear.sum()),
    }
    return TraitResult(
        name,
        cols.n,
        tuple(covariates),
        beta * cols.scale,
        se * cols.scale,
        t_stat,
        P,
        log10_p,
        a1,
        obs_ct.astype(np.int64),
        skipped,
        lam,
    )


# ----------------------------------------------------------------------------- the pass


def marginal_gwas(
    operator,
    traits: Sequence[TraitData],
    *,
    missing: MissingMode = "complete-case",
    variants: Sequence[np.ndarray] | None = None,
) -> MarginalResult:
    """Per-variant OLS of every trait on the ALT dosage with covariates, in one pass.

    Arguments:
        operator: a genotype operator (`GenotypeOperator` or `StreamingOperator`) over the
            stores, default components (one per store) and samples = `union_samples(traits)`.
        traits: from `load_traits`.
        missing: "complete-case" (plink2 --glm) or "mean-impute"; see the module docstring.
        variants: per store, the variants to test (`--extract/--exclude/--chr`; default all);
            the operator's components should hold only those (`dreml.selection.select_variants`).

    Returns:
        `MarginalResult`: every selected variant of every store, in store order, for every trait.
    """
    if missing not in MISSING_MODES:
        raise InputError(f"missing must be one of {', '.join(MISSING_MODES)}, got {missing!r}")
    t0 = time.perf_counter()
    layout = operator.layout
    samples = np.arange(layout.n) if layout.samples is None else np.asarray(layout.samples)
    C_obs, C_dos, W, trait_cols = build_columns(traits, samples, missing)
    t_cols = time.perf_counter()
    stores = layout.stores
    selected = list(variants) if variants is not None else [np.ones(s.n_variants, dtype=bool) for s in stores]
    sums = [[np.full((s.n_variants, C.shape[1]), np.nan) for C in (C_obs, C_dos, W)] for s in stores]
    covered = [np.zeros(s.n_variants, dtype=bool) for s in stores]
    parts = operator.shard_pass(shard_sums, (C_obs, C_dos, W))
    comp_store = layout.components.stores
    for spec, part in zip(operator.shard_specs, parts):
        for g, a, b in zip(spec.components, spec.bounds[:-1], spec.bounds[1:]):
            s, idx = comp_store[g], spec.start + spec.rows[a:b]
            for out, block in zip(sums[s], part):
                out[idx] = block[a:b]
            covered[s][idx] = True
    t_pass = time.perf_counter()
    # variants the operator filtered out (monomorphic over the store): summed here
    n_driver = 0
    for s, store in enumerate(stores):
        left = np.flatnonzero(~covered[s] & selected[s])
        n_driver += len(left)
        step = store.chunks[0]
        for lo in range(0, len(left), step):
            idx = left[lo : lo + step]
            codes = store.dosage(int(idx[0]), int(idx[-1]) + 1, layout.samples)[idx - idx[0]]
            for out, block in zip(sums[s], code_sums(codes, C_obs, C_dos, W, "float64")):
                out[idx] = block
    t_driver = time.perf_counter()
    tested = np.concatenate(selected)
    total = [np.concatenate([per[i] for per in sums])[tested] for i in range(3)]
    results = tuple(_statistics(total, cols, missing, t.name, t.covariate_names) for t, cols in zip(traits, trait_cols))
    t_stats = time.perf_counter()
    alleles = np.concatenate([s.variant_allele for s in stores])[tested]
    return MarginalResult(
        missing=missing,
        chrom=np.concatenate([s.contig_id[s.variant_contig] for s in stores])[tested],
        pos=np.concatenate([s.variant_position for s in stores])[tested],
        variant_id=np.concatenate([s.variant_id for s in stores])[tested],
        ref=alleles[:, 0],
        alt=alleles[:, 1],
        traits=results,
        passes=1,
        timings={
            "columns": t_cols - t0,
            "pass": t_pass - t_cols,
            "driver_variants": t_driver - t_pass,
            "statistics": t_stats - t_driver,
        },
        n_driver_variants=n_driver,
    )


# ----------------------------------------------------------------------------- output


def _g(values: np.ndarray) -> list[str]:
    return ["NA" if np.isnan(v) else f"{v:.6g}" for v in values]


def _p_text(P: np.ndarray, log10_p: np.ndarray) -> list[str]:
    out = []
    for p, lg in zip(P, log10_p):
        if np.isnan(lg):
            out.append("NA")
        elif p >= P_LOG_BELOW or p > 0 and lg > -300:
            out.append(f"{p:.6g}")
        else:  # from log10 P: mantissa and exponent (below the float64 range too)
            e = math.floor(lg)
            mant = 10.0 ** (lg - e)
            if float(f"{mant:.6g}") >= 10.0:
                mant, e = mant / 10.0, e + 1
            out.append(f"{mant:.6g}e{e:+03d}")
    return out


def glm_text(header: Sequence[str], result, a1_freq: np.ndarray, obs_ct: np.ndarray, trait, *extra: Sequence[str]) -> str:
    """A .glm table of one trait: plink2 --glm's columns (A1 = ALT) under `header`, then the
    `extra` columns (already formatted). `result` carries the variant columns (chrom, pos,
    variant_id, ref, alt), `trait` the statistics (beta, se, t_stat, p, log10_p)."""
    columns = [
        result.chrom,
        result.pos.astype(str),
        result.variant_id,
        result.ref,
        result.alt,
        result.alt,
        _g(a1_freq),
        obs_ct.astype(str),
        _g(trait.beta),
        _g(trait.se),
        _g(trait.t_stat),
        _p_text(trait.p, trait.log10_p),
        *extra,
    ]
    lines = ["\t".join(header)] + ["\t".join(map(str, row)) for row in zip(*columns)]
    return "\n".join(lines) + "\n"


def glm_linear_text(result: MarginalResult, trait: TraitResult) -> str:
    """The trait's PREFIX.<trait>.glm.linear text: plink2's columns, A1 = ALT."""
    return glm_text(HEADER, result, trait.a1_freq, trait.obs_ct, trait)


def write_glm_outputs(
    result, prefix: str | Path, suffix: str, text, json_name: str, *, gz: bool = False, report: dict | None = None
) -> list[Path]:
    """PREFIX.<trait>`suffix`[.gz] per trait (`text(result, trait)`) and PREFIX.`json_name`
    (the report and `result.to_dict()`), each via a temporary name."""
    paths = []
    for trait in result.traits:
        path = Path(f"{prefix}.{trait.name}{suffix}" + (".gz" if gz else ""))
        atomic_write_text(path, text(result, trait), gz=gz)
        paths.append(path)
    json_path = Path(f"{prefix}.{json_name}")
    write_json({**(report or {}), **result.to_dict()}, json_path)
    return paths + [json_path]


def write_outputs(result: MarginalResult, prefix: str | Path, *, gz: bool = False, report: dict | None = None) -> list[Path]:
    """PREFIX.<trait>.glm.linear[.gz] per trait and PREFIX.gwas.json, each via a temporary name."""
    return write_glm_outputs(result, prefix, ".glm.linear", glm_linear_text, "gwas.json", gz=gz, report=report)
