"""Mixed-model association with leave-one-chromosome-out (LOCO) GRMs, at the fitted theta.

Notation (as `dreml.fit_result`). A fit gives theta = (theta_1..theta_G, theta_e), its
samples (n), its components g with m_g variants each standardised as z_j = s_j (x_j - 2 p_j)
(missing -> 0, i.e. mean-imputed at 2 p_j with the fit's frequencies p_j), and covariates X
(n x p). Chromosome c of component g holds m_gc variants; K_gc = Z_gc Z_gc^T / m_gc, so
K_g = sum_c (m_gc / m_g) K_gc. The LOCO GRM of g for chromosome c and the LOCO covariance:

    K_g^(-c) = sum_{c' != c} m_gc' K_gc' / (m_g - m_gc),
    V_-c     = sum_g theta_g K_g^(-c) + theta_e I = sum_(g,c') w^c_(g,c') K_gc' + theta_e I,
    w^c_(g,c') = theta_g m_gc' / (m_g - m_gc)  (c' != c),   0 for c' = c (or when m_g = m_gc)

One `GenotypeOperator` over the sub-components (g, c) serves every chromosome: V_-c V is one
weighted pass whose weight-0 sub-components the workers skip (`loco_operator_weights`).
theta is the full fit's (BOLT-LMM-inf, fastGWA), not refitted per chromosome. A component
lying wholly on chromosome c (e.g. `--by-chromosome` fits) drops out of V_-c.

Per chromosome c and trait t (T traits share every pass):

    P_-c = V_-c^-1 - V_-c^-1 X (X^T V_-c^-1 X)^-1 X^T V_-c^-1    (block PCG on [X | Y | ...])
    chi2_j = (z_j^T P_-c y)^2 / (z_j^T P_-c z_j),   1 df
    beta_z = z_j^T P_-c y / z_j^T P_-c z_j,   SE_z = (z_j^T P_-c z_j)^-1/2  (V's scale fixed by theta)
    BETA = beta_z s_j, SE = SE_z s_j (per ALT allele),  T_STAT = BETA / SE = sign * sqrt(chi2)
    P = P(chi2_1 > chi2) = 2 Phi(-|T_STAT|)  (log-space below 1e-300)

Numerators of every variant of every chromosome come from ONE `zt_matmat` pass on
U = [P_-c Y for every c | X]: sub-component (g, c) takes the columns of chromosome c (and
every variant X^T z_j, for P_0 below).

Denominators. exact (`exact_denominator`): z_j^T P_-c z_j for every variant, with the
variants' z columns decoded from the shards (one pass) and solved in the chromosome's block
PCG (columns, not passes: fine for small n; validation). calibrated (default, BOLT-LMM-inf):
P_0 = I - X (X^T X)^-1 X^T; z_j^T P_0 z_j = ||z_j||^2 - b_j^T (X^T X)^-1 b_j with b_j = X^T z_j
(from the numerator pass) and ||z_j||^2 exact from the shards' code counts (no pass). For R
variants per chromosome drawn at random (seeded), the exact denominator is solved and
r_j = z_j^T P_-c z_j / z_j^T P_0 z_j; the chromosome's factor is mean(r) (Monte Carlo SE
sd(r) / sqrt(R)) and every variant's denominator is factor * z_j^T P_0 z_j. R = 30 (BOLT-LMM's
choice): r_j varies by a few percent between variants (it depends on how z_j loads on V's
leading eigenvectors), so the factor's relative SE is about CV(r) / 5.5, below 1% on the test
cohorts; its cost is R extra PCG columns per chromosome, no extra pass.

A variant with z_j^T P_0 z_j <= 1e-10 ||z_j||^2 (in the span of X) is NA. lambda_GC =
median(chi2) / 0.4549 over the tested variants. Passes: the PCG iterations of each
chromosome, one decode pass of the calibration (or all) z columns and one numerator pass.

(A little over 500 lines: the layout, the test, its result types and its writer belong to
one workflow, as in `dreml.gwas.marginal`.)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import special, stats
from scipy.linalg import cho_factor, cho_solve

from dreml.backend import array_module_of, to_numpy
from dreml.components import Components
from dreml.errors import InputError
from dreml.fit_result import FitState
from dreml.gwas.marginal import CHI2_MEDIAN, P_LOG_BELOW, TraitData, _g, glm_text, write_glm_outputs
from dreml.operators.shard import standardisation_table
from dreml.reml.pcg import block_pcg
from dreml.store import Store

logger = logging.getLogger(__name__)

HEADER = ("#CHROM", "POS", "ID", "REF", "ALT", "A1", "A1_FREQ", "OBS_CT", "BETA", "SE", "T_STAT", "P", "CHISQ")
SUFFIX = ".glm.mixed"
COLLINEAR_RATIO = 1e-10
DEFAULT_CALIBRATION_VARIANTS = 30


@dataclass(frozen=True)
class MixedConfig:
    """Settings of `mixed_gwas` (recorded in PREFIX.gwas_mixed.json).

    Arguments:
        exact_denominator: z^T P_-c z solved for every variant (small n, validation) instead
            of the calibrated z^T P_0 z (module docstring).
        calibration_variants: R, variants per chromosome whose exact denominator calibrates
            the others (BOLT-LMM-inf uses 30).
        seed: seed of the calibration draw (None: a fresh one, recorded in the result).
        pcg_tol: relative residual of the block PCG solves with V_-c.
        pcg_max_iter: most PCG iterations (passes) per chromosome.
    """

    exact_denominator: bool = False
    calibration_variants: int = DEFAULT_CALIBRATION_VARIANTS
    seed: int | None = None
    pcg_tol: float = 1e-6
    pcg_max_iter: int = 500

    def __post_init__(self) -> None:
        if self.calibration_variants < 2:
            raise ValueError(f"calibration_variants must be at least 2 (a mean and its SE), got {self.calibration_variants}")
        if not 0 < self.pcg_tol < 1:
            raise ValueError(f"pcg_tol must lie in (0, 1), got {self.pcg_tol}")
        if self.pcg_max_iter < 1:
            raise ValueError(f"pcg_max_iter must be positive, got {self.pcg_max_iter}")


@dataclass(frozen=True)
class LocoLayout:
    """The fit's variants split into sub-components (g, c), and the tested variants.

    Attributes:
        components: the sub-components, for `GenotypeOperator` (names "<g>@<contig>").
        frequencies: per store, the p_j to standardise with (the fit's, for its variants).
        parent: fitted component g of each sub-component, shape (S,).
        chromosome: chromosome index of each sub-component, shape (S,).
        contigs: chromosome labels in store order, shape (C,).
        m_fit: m_g of the fit, shape (G,).
        store, index: the tested variants (every fit variant once), sorted, shape (J,).
        variant_chromosome: chromosome index of each tested variant, shape (J,).
        scale: s_j of each tested variant, shape (J,).
    """

    components: Components
    frequencies: tuple[np.ndarray, ...]
    parent: np.ndarray
    chromosome: np.ndarray
    contigs: np.ndarray
    m_fit: np.ndarray
    store: np.ndarray
    index: np.ndarray
    variant_chromosome: np.ndarray
    scale: np.ndarray

    def keys(self, store: np.ndarray | int, index: np.ndarray) -> np.ndarray:
        """Positions among the tested variants of (store, index) pairs."""
        width = int(self.index.max()) + 1 if self.index.size else 1
        tested = self.store.astype(np.int64) * width + self.index
        return np.searchsorted(tested, np.asarray(store, dtype=np.int64) * width + np.asarray(index))


def check_fit_inputs(state: FitState, stores: Sequence[Store], traits: Sequence[TraitData]) -> None:
    """Raise a one-line InputError when the stores or the traits' samples are not the fit's."""
    v = state.variants
    if len(stores) != len(state.store_paths):
        raise InputError(f"a fit from another store: the fit used {len(state.store_paths)} store(s), {len(stores)} given")
    for s, store in enumerate(stores):
        rows = np.flatnonzero(v.store == s)
        if rows.size == 0:
            continue
        idx = v.index[rows]
        if idx.max() >= store.n_variants or not (
            np.array_equal(store.variant_id[idx].astype(str), v.id[rows].astype(str))
            and np.array_equal(store.variant_position[idx], v.position[rows])
        ):
            raise InputError(
                f"{store.path}: a fit from another store (the fit's variants, from {state.store_paths[s]}, "
                f"are not this store's: {store.n_variants} variants)"
            )
    fit_iid = np.asarray(state.sample_iid, dtype=str)
    iid = np.asarray(stores[0].sample_id, dtype=str)
    for t in traits:
        if not np.array_equal(iid[t.sample_index], fit_iid):
            raise InputError(
                f"trait {t.name!r}: a fit from other samples (the trait has {len(t.sample_index)} samples, "
                f"the fit analysed {len(fit_iid)}); the mixed test needs exactly the fit's samples"
            )


def loco_layout(state: FitState, stores: Sequence[Store]) -> LocoLayout:
    """Split every fitted component by chromosome (module docstring)."""
    v = state.variants
    order = np.lexsort((v.index, v.store))
    first = np.ones(len(order), dtype=bool)
    first[1:] = (np.diff(v.store[order]) != 0) | (np.diff(v.index[order]) != 0)
    tested = order[first]
    contig_text = v.contig.astype(str)
    _, where = np.unique(contig_text[tested], return_index=True)
    contigs = contig_text[tested][np.sort(where)]
    chrom_of = {c: i for i, c in enumerate(contigs)}
    names, indices, comp_stores, parent, chromosome = [], [], [], [], []
    for g in range(state.n_components):
        rows = v.rows_of(g)
        for c, label in enumerate(contigs):
            sel = rows[contig_text[rows] == label]
            if sel.size:
                names.append(f"{state.names[g]}@{label}")
                indices.append(np.sort(v.index[sel]))
                comp_stores.append(int(v.store[sel[0]]))
                parent.append(g)
                chromosome.append(c)
    frequencies = []
    for s, store in enumerate(stores):
        p = np.full(store.n_variants, 0.5)
        rows = v.store == s
        p[v.index[rows]] = v.frequency[rows]
        frequencies.append(p)
    return LocoLayout(
        components=Components(tuple(names), tuple(indices), tuple(comp_stores), source="LOCO split of the fit"),
        frequencies=tuple(frequencies),
        parent=np.array(parent),
        chromosome=np.array(chromosome),
        contigs=contigs,
        m_fit=np.asarray(state.m, dtype=np.int64),
        store=v.store[tested].astype(np.int64),
        index=v.index[tested].astype(np.int64),
        variant_chromosome=np.array([chrom_of[c] for c in contig_text[tested]], dtype=np.int64),
        scale=v.scale[tested],
    )


def loco_operator_weights(theta: np.ndarray, parent: np.ndarray, chromosome: np.ndarray, m_sub: np.ndarray, c: int) -> np.ndarray:
    """w^c_(g,c') = theta_g m_gc' / (m_g - m_gc) for c' != c, 0 for c' = c (module docstring).

    Arguments:
        theta: (theta_1..theta_G, theta_e), shape (G + 1,).
        parent, chromosome: component g and chromosome c' of each sub-component, shape (S,).
        m_sub: m_gc' of each sub-component, shape (S,).
        c: the chromosome left out.
    Returns:
        weights, shape (S,); a component lying wholly on c gets 0 everywhere.
    """
    G = len(theta) - 1
    m_g = np.bincount(parent, weights=m_sub, minlength=G)
    m_gc = np.bincount(parent, weights=np.where(chromosome == c, m_sub, 0), minlength=G)
    rest = m_g - m_gc
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(
            (chromosome != c) & (rest[parent] > 0), theta[parent] * m_sub / np.where(rest[parent] > 0, rest[parent], 1), 0.0
        )
    return w


def loco_operator(stores: Sequence[Store], layout: LocoLayout, samples: np.ndarray, **options):
    """The `GenotypeOperator` of the sub-components (g, c) on the fit's samples, standardised
    with the fit's frequencies and without filters (the fit's variants were already kept).

    `options`: client, dtype, memory_budget, shard_variants, backend of `GenotypeOperator`.
    """
    from dreml.operators import GenotypeOperator

    return GenotypeOperator(stores, layout.components, samples, frequencies=list(layout.frequencies), **options)


# ----------------------------------------------------------------------------- shard functions


def shard_row_stats(shard) -> np.ndarray:  # shape: (c, 5)
    """Per shard row: ||z_j||^2 (exact, from the code counts, as `shard_traces`) and the
    counts of codes -1, 0, 1, 2 over the analysed samples."""
    sq = np.sum(shard.counts * standardisation_table(shard.frequencies) ** 2, axis=1)
    return np.column_stack([sq, shard.counts])


def shard_columns(shard, rows: np.ndarray) -> np.ndarray:  # shape: (r, n)
    """z_j of the shard rows `rows`, float64, decoded exactly from the codes (missing -> 0)."""
    if len(rows) == 0:
        return np.zeros((0, shard.n_samples))
    xp = array_module_of(shard.codes)
    table = standardisation_table(shard.frequencies[rows])
    codes = to_numpy(shard.codes[xp.asarray(rows)]).astype(np.intp) + 1
    return np.take_along_axis(table, codes, axis=1)


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ChromosomeReport:
    """One chromosome's LOCO solve.

    Attributes:
        contig: its label. n_variants: variants tested on it.
        passes: PCG iterations (passes) of its block solve. pcg_status: "converged" or why not.
        calibration_variants: R used (0 with exact denominators; fewer when the chromosome has fewer).
        calibration_factor: mean r_j (NaN with exact denominators); calibration_se: sd / sqrt(R).
    """

    contig: str
    n_variants: int
    passes: int
    pcg_status: str
    calibration_variants: int
    calibration_factor: float
    calibration_se: float


@dataclass(frozen=True)
class MixedTraitResult:
    """Per-variant statistics of one trait, tested variants in store order (NaN: not tested).

    Attributes:
        name: the trait. n: its samples (the fit's).
        beta, se: per ALT allele. t_stat: BETA / SE. chisq: chi2_1. p, log10_p: P.
        lambda_gc: median chi2 / 0.4549.
    """

    name: str
    n: int
    beta: np.ndarray
    se: np.ndarray
    t_stat: np.ndarray
    chisq: np.ndarray
    p: np.ndarray
    log10_p: np.ndarray
    lambda_gc: float

    @property
    def n_tested(self) -> int:
        return int(np.sum(~np.isnan(self.chisq)))


@dataclass(frozen=True)
class MixedResult:
    """The LOCO mixed-model GWAS of every trait.

    Attributes:
        chrom, pos, variant_id, ref, alt: the tested variants (every variant of the fit), store order.
        a1_freq: ALT frequency over the observed calls of the analysed samples; obs_ct: n.
        traits: one `MixedTraitResult` per trait. chromosomes: one `ChromosomeReport` each.
        config: the settings (seed filled in). passes: total passes. timings: seconds per step.
        n_collinear: variants NA because z_j lies in the span of X.
    """

    chrom: np.ndarray
    pos: np.ndarray
    variant_id: np.ndarray
    ref: np.ndarray
    alt: np.ndarray
    a1_freq: np.ndarray
    obs_ct: np.ndarray
    traits: tuple[MixedTraitResult, ...]
    chromosomes: tuple[ChromosomeReport, ...]
    config: MixedConfig
    passes: int
    timings: dict[str, float]
    n_collinear: int

    def to_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "seed": self.config.seed,
            "denominator": "exact" if self.config.exact_denominator else "calibrated",
            "n_variants": int(len(self.variant_id)),
            "variants_collinear_with_covariates": self.n_collinear,
            "passes": self.passes,
            "passes_by_chromosome": {c.contig: c.passes for c in self.chromosomes},
            "chromosomes": [asdict(c) for c in self.chromosomes],
            "timings_s": dict(self.timings),
            "traits": [{"name": t.name, "n": t.n, "variants_tested": t.n_tested, "lambda_gc": t.lambda_gc} for t in self.traits],
        }


def chi2_p_values(chisq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P = P(chi2_1 > chisq) and log10 P; below 1e-300 from log 2 + log Phi(-sqrt(chisq))."""
    ok = ~np.isnan(chisq)
    P = np.full(chisq.shape, np.nan)
    P[ok] = stats.chi2.sf(chisq[ok], 1)
    with np.errstate(divide="ignore"):
        log10_p = np.log10(P)
    tiny = ok & (P < P_LOG_BELOW)
    if tiny.any():
        log10_p[tiny] = (math.log(2.0) + special.log_ndtr(-np.sqrt(chisq[tiny]))) / math.log(10.0)
        P[tiny] = np.power(10.0, log10_p[tiny])
    return P, log10_p


# ----------------------------------------------------------------------------- the test


def _shard_rows(operator, layout: LocoLayout) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per shard: (tested-variant position, sub-component) of every row."""
    comp_store = operator.layout.components.stores
    out = []
    for spec in operator.shard_specs:
        pos = np.empty(spec.n_rows, dtype=np.int64)
        sub = np.empty(spec.n_rows, dtype=np.int64)
        for g, a, b in zip(spec.components, spec.bounds[:-1], spec.bounds[1:]):
            pos[a:b] = layout.keys(comp_store[g], spec.start + spec.rows[a:b])
            sub[a:b] = g
        out.append((pos, sub))
    return out


def _decode(operator, rows_of_shards, wanted: np.ndarray) -> np.ndarray:
    """z_j of the tested variants `wanted` (positions), shape (n, len(wanted)): one pass."""
    n = operator.shape[0]
    J = max((int(pos.max()) + 1 for pos, _ in rows_of_shards if pos.size), default=0)
    lookup = np.full(max(J, int(wanted.max(initial=-1)) + 1), -1, dtype=np.int64)
    lookup[wanted] = np.arange(len(wanted))
    taken = np.zeros(len(wanted), dtype=bool)
    per_shard, where = [], []
    for pos, _ in rows_of_shards:
        k = lookup[pos]
        rows = np.flatnonzero(k >= 0)
        cols, first = np.unique(k[rows], return_index=True)  # a variant in two components: once
        rows, cols = rows[first], cols
        fresh = ~taken[cols]
        rows, cols = rows[fresh], cols[fresh]
        taken[cols] = True
        per_shard.append((rows.astype(np.int64),))
        where.append(cols)
    out = np.zeros((n, len(wanted)))
    for cols, block in zip(where, operator.shard_pass(shard_columns, per_shard=per_shard)):
        out[:, cols] = block.T
    return out


def mixed_gwas(
    operator,
    state: FitState,
    layout: LocoLayout,
    traits: Sequence[TraitData],
    *,
    config: MixedConfig = MixedConfig(),
) -> MixedResult:
    """LOCO mixed-model test of every fit variant for every trait (module docstring).

    Arguments:
        operator: a genotype operator over `layout.components` with `layout.frequencies` and
            the fit's samples (`build_operator` in the CLI: `GenotypeOperator(stores,
            layout.components, samples, frequencies=layout.frequencies)`).
        state: the fit (`FitState.load(PREFIX + ".fit.npz")`): theta, samples, variants.
        layout: `loco_layout(state, stores)`.
        traits: from `load_traits`, each on exactly the fit's samples (`check_fit_inputs`).
        config: `MixedConfig`.

    Returns:
        `MixedResult`.
    """
    t0 = time.perf_counter()
    seed = config.seed if config.seed is not None else int(np.random.default_rng().integers(2**31 - 1))
    config = MixedConfig(config.exact_denominator, config.calibration_variants, seed, config.pcg_tol, config.pcg_max_iter)
    rng = np.random.default_rng(seed)
    X = np.asarray(traits[0].X, dtype=np.float64)
    for other in traits[1:]:
        if other.X.shape != X.shape or not np.array_equal(other.X, X):
            raise InputError(f"trait {other.name!r}: its covariates differ from trait {traits[0].name!r}'s on the fit's samples")
    Y = np.column_stack([np.asarray(t.y, dtype=np.float64) for t in traits])  # shape: (n, T)
    n, p = X.shape
    T = Y.shape[1]
    if operator.shape[0] != n:
        raise ValueError(f"the operator has {operator.shape[0]} samples, the traits {n}")
    theta = np.asarray(state.theta, dtype=np.float64)
    m_sub = np.asarray(operator.m, dtype=np.int64)
    if not np.array_equal(np.bincount(layout.parent, weights=m_sub, minlength=len(layout.m_fit)), layout.m_fit):
        raise ValueError("the operator's sub-components do not add up to the fit's m_g (were variants filtered?)")
    C, J = len(layout.contigs), len(layout.index)
    rows_of_shards = _shard_rows(operator, layout)

    # ||z_j||^2 and code counts from the shards (no pass)
    row_stats = np.zeros((J, 5))
    for (pos, _), part in zip(rows_of_shards, operator.map_shards(shard_row_stats)):
        row_stats[pos] = part
    zz = row_stats[:, 0]
    counts = row_stats[:, 1:]
    observed = counts[:, 1:].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a1_freq = np.where(observed > 0, (counts[:, 2] + 2 * counts[:, 3]) / (2 * observed), np.nan)
    t_stats = time.perf_counter()

    # which z columns to solve exactly: all (exact) or R per chromosome (calibration)
    selected = []
    for c in range(C):
        on_c = np.flatnonzero(layout.variant_chromosome == c)
        if config.exact_denominator:
            selected.append(on_c)
        else:
            pool = on_c[zz[on_c] > 0]
            k = min(config.calibration_variants, len(pool))
            selected.append(np.sort(rng.choice(pool, size=k, replace=False)))
    wanted = np.concatenate(selected)
    Zsel = _decode(operator, rows_of_shards, wanted)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in selected])])
    decode_passes = 1
    t_decode = time.perf_counter()

    PY = np.zeros((C, n, T))
    exact_den = np.full(J, np.nan)
    reports = []
    passes_c = []
    for c in range(C):
        w = loco_operator_weights(theta, layout.parent, layout.chromosome, m_sub, c)

        def apply_V(V: np.ndarray, w=w) -> np.ndarray:
            return np.asarray(operator.matmat(V, weights=w), dtype=np.float64) + theta[-1] * V

        Zc = Zsel[:, offsets[c] : offsets[c + 1]]
        result = block_pcg(apply_V, np.column_stack([X, Y, Zc]), tol=config.pcg_tol, max_iter=config.pcg_max_iter)
        if result.status != "converged":
            logger.warning("chromosome %s: %s", layout.contigs[c], result.status)
        ViX, ViY, ViZ = result.x[:, :p], result.x[:, p : p + T], result.x[:, p + T :]
        A = cho_factor(0.5 * (X.T @ ViX + ViX.T @ X), lower=True)
        PY[c] = ViY - ViX @ cho_solve(A, X.T @ ViY)
        XtViZ = ViX.T @ Zc  # shape: (p, k)
        exact_den[selected[c]] = np.einsum("nk,nk->k", Zc, ViZ) - np.einsum("pk,pk->k", XtViZ, cho_solve(A, XtViZ))
        passes_c.append(result.iterations)
        reports.append((result.status, result.iterations))
    t_solve = time.perf_counter()

    # numerators and X^T z of every variant: one pass on [P_-c Y for every c | X]
    U = np.column_stack([PY[c] for c in range(C)] + [X])
    products = operator.zt_matmat(U)
    num = np.full((J, T), np.nan)
    Xtz = np.zeros((J, p))
    comp_store = operator.layout.components.stores
    for s, prod in enumerate(products):
        c = int(layout.chromosome[s])
        pos = layout.keys(comp_store[s], operator.layout.components.variant_indices[s])
        num[pos] = prod[:, c * T : (c + 1) * T]
        Xtz[pos] = prod[:, C * T :]
    t_num = time.perf_counter()

    XtX = cho_factor(X.T @ X, lower=True)
    zP0z = zz - np.einsum("jp,jp->j", Xtz, cho_solve(XtX, Xtz.T).T)
    collinear = ~(zP0z > COLLINEAR_RATIO * zz)
    chromosomes = []
    den = np.full(J, np.nan)
    for c in range(C):
        on_c = layout.variant_chromosome == c
        status, iters = reports[c]
        if config.exact_denominator:
            den[on_c] = exact_den[on_c]
            factor = se = float("nan")
            R = 0
        else:
            sel = selected[c][~collinear[selected[c]]]
            ratio = exact_den[sel] / zP0z[sel]
            R = len(ratio)
            factor = float(ratio.mean()) if R else float("nan")
            se = float(ratio.std(ddof=1) / math.sqrt(R)) if R > 1 else float("nan")
            den[on_c] = factor * zP0z[on_c]
            logger.info("chromosome %s: calibration factor %.6g (Monte Carlo SE %.3g, R = %d)", layout.contigs[c], factor, se, R)
        chromosomes.append(ChromosomeReport(str(layout.contigs[c]), int(on_c.sum()), int(iters), status, R, factor, se))
    den[collinear] = np.nan

    results = []
    for t, trait in enumerate(traits):
        with np.errstate(divide="ignore", invalid="ignore"):
            beta_z = num[:, t] / den
            se_z = 1.0 / np.sqrt(den)
            chisq = num[:, t] ** 2 / den
        tstat = beta_z / se_z
        P, log10_p = chi2_p_values(chisq)
        ok = ~np.isnan(chisq)
        lam = float(np.median(chisq[ok]) / CHI2_MEDIAN) if ok.any() else float("nan")
        results.append(MixedTraitResult(trait.name, n, beta_z * layout.scale, se_z * layout.scale, tstat, chisq, P, log10_p, lam))
    t_end = time.perf_counter()

    stores = operator.layout.stores
    chrom = np.empty(J, dtype=object)
    pos_ = np.zeros(J, dtype=np.int64)
    vid = np.empty(J, dtype=object)
    ref = np.empty(J, dtype=object)
    alt = np.empty(J, dtype=object)
    for s, store in enumerate(stores):
        rows = np.flatnonzero(layout.store == s)
        idx = layout.index[rows]
        chrom[rows] = store.contig_id[store.variant_contig[idx]]
        pos_[rows] = store.variant_position[idx]
        vid[rows] = store.variant_id[idx]
        alleles = store.variant_allele[idx]
        ref[rows], alt[rows] = alleles[:, 0], alleles[:, 1]
    return MixedResult(
        chrom=chrom.astype(str),
        pos=pos_,
        variant_id=vid.astype(str),
        ref=ref.astype(str),
        alt=alt.astype(str),
        a1_freq=a1_freq,
        obs_ct=np.full(J, n, dtype=np.int64),
        traits=tuple(results),
        chromosomes=tuple(chromosomes),
        config=config,
        passes=int(sum(passes_c) + decode_passes + 1),
        timings={
            "row_stats": t_stats - t0,
            "decode": t_decode - t_stats,
            "solves": t_solve - t_decode,
            "numerators": t_num - t_solve,
            "statistics": t_end - t_num,
        },
        n_collinear=int(collinear.sum()),
    )


# ----------------------------------------------------------------------------- output


def glm_mixed_text(result: MixedResult, trait: MixedTraitResult) -> str:
    """The trait's PREFIX.<trait>.glm.mixed text: the marginal (plink2 --glm) columns plus CHISQ."""
    return glm_text(HEADER, result, result.a1_freq, result.obs_ct, trait, _g(trait.chisq))


def write_mixed_outputs(result: MixedResult, prefix: str | Path, *, gz: bool = False, report: dict | None = None) -> list[Path]:
    """PREFIX.<trait>.glm.mixed[.gz] per trait and PREFIX.gwas_mixed.json, each via a temporary name."""
    return write_glm_outputs(result, prefix, SUFFIX, glm_mixed_text, "gwas_mixed.json", gz=gz, report=report)
