"""`dreml.fit`: from stores and phenotype files to a fit report, on a Dask cluster.

    stores + component spec + phenotype/covariates
      -> samples aligned (dreml.phenotypes) -> GenotypeOperator on the cluster
      -> fit_reml -> LRT, SNP effects -> FitResult (written by dreml.outputs, printed by `dreml fit`)

The report holds everything a user needs to reproduce and audit the fit: estimates with
SEs, h2, the log-likelihood, sample counts at each filtering step, the component sizes,
every setting, the seed, the history and the timings.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from distributed import Client

from dreml.components import Components, all_variants, by_chromosome, by_maf_bins, load_components, per_store
from dreml.errors import InputError
from dreml.fit_result import (
    ComponentEstimate,
    FitResult,
    FitState,
    FixedEffect,
    LikelihoodRatioTest,
    VariantTable,
    null_loglik,
)
from dreml.operators import GenotypeOperator, SelectedComponents
from dreml.operators.streaming import GenotypeOperatorBase
from dreml.phenotypes import AnalysisData, covariate_files, describe_sample_inputs, load_analysis_data
from dreml.reml import FitConfig, RemlResult, fit_reml
from dreml.reml.traits import fit_reml_traits
from dreml.selection import Selection, select_variants
from dreml.store import Store, open_stores

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComponentChoice:
    """How to split the variants into components: at most one of the fields is set.

    Attributes:
        spec: a component spec file (.json, .npz, or SNP<TAB>component text).
        by_chromosome: one component per chromosome.
        maf_bins: MAF bin edges, e.g. (0.01, 0.05, 0.5).
    Default (nothing set): all variants of each store, one component per store.
    """

    spec: str | Path | None = None
    by_chromosome: bool = False
    maf_bins: tuple[float, ...] | None = None

    def resolve(self, stores: Sequence[Store]) -> Components:
        chosen = [self.spec is not None, self.by_chromosome, self.maf_bins is not None]
        if sum(chosen) > 1:
            raise InputError("choose one of a component spec, by-chromosome and MAF bins")
        if sum(chosen) == 0:
            return all_variants(stores[0]) if len(stores) == 1 else per_store(stores)
        if self.spec is not None:
            return load_components(self.spec, stores[0])
        if len(stores) > 1:
            raise InputError("by-chromosome and MAF-bin components need a single store; use a JSON spec with store indices")
        if self.by_chromosome:
            return by_chromosome(stores[0])
        assert self.maf_bins is not None  # the one choice left
        return by_maf_bins(stores[0], self.maf_bins)


def variant_table(operator: GenotypeOperatorBase) -> VariantTable:
    """The fit's variants, component by component, with what prediction needs to match them."""
    layout = operator.layout
    rows = []
    for g, (idx, st) in enumerate(zip(layout.components.variant_indices, layout.components.stores)):
        store = layout.stores[st]
        alleles = store.variant_allele[idx]
        rows.append(
            {
                "component": np.full(len(idx), g),
                "store": np.full(len(idx), st),
                "index": idx,
                "id": store.variant_id[idx],
                "contig": store.contig_id[store.variant_contig[idx]],
                "position": store.variant_position[idx],
                "ref": alleles[:, 0],
                "alt": alleles[:, 1],
                "frequency": layout.frequencies[st][idx],
            }
        )
    return VariantTable(**{k: np.concatenate([r[k] for r in rows]) for k in rows[0]})


def snp_effects(operator: GenotypeOperatorBase, theta: np.ndarray, Py: np.ndarray) -> np.ndarray:
    """b_g = theta_g Z_g^T P y / m_g for every component, concatenated as in `variant_table`:
    one pass (`dreml.fit_result`)."""
    products = operator.zt_matmat(Py)
    return np.concatenate([theta[g] * b / operator.m[g] for g, b in enumerate(products)])


def reduced_loglik(operator, data: AnalysisData, config: FitConfig, dropped: Sequence[int]) -> tuple[float, float]:
    """logL of the model without the components `dropped` (and its Monte Carlo SE): closed
    form when every genetic component is dropped, else a refit of the kept ones (from the
    Haseman-Elston start: the full model's priors have the wrong length)."""
    keep = [g for g in range(operator.n_components) if g not in set(dropped)]
    if not keep:
        return null_loglik(data.y, data.X), 0.0
    reduced = fit_reml(SelectedComponents(operator, keep), data.y, data.X, dataclasses.replace(config, loglik=True, priors=None))
    if not reduced.converged:
        logger.warning("the reduced model of the LRT did not converge: %s", reduced.status)
    return reduced.loglik, reduced.loglik_se


def resolve_dropped(names: Sequence[str], requested: Sequence[str]) -> list[int]:
    """Component indices from names or 1-based numbers (GCTA's `--reml-lrt 1 3`)."""
    out = []
    for item in requested:
        item = str(item)
        if item in names:
            out.append(names.index(item))
        elif item.isdigit() and 1 <= int(item) <= len(names):
            out.append(int(item) - 1)
        else:
            raise InputError(
                f"--reml-lrt: no component {item!r} (expected a number 1..{len(names)} or one of {', '.join(names)})"
            )
    if len(set(out)) != len(out):
        raise InputError(f"--reml-lrt: a component is named twice in {' '.join(map(str, requested))}")
    return out


def build_result(
    result: RemlResult,
    operator: GenotypeOperatorBase,
    data: AnalysisData,
    inputs: dict,
    lrt: LikelihoodRatioTest | None,
    snp_effect: np.ndarray | None,
) -> FitResult:
    """The typed report and state of a fit (keys documented in docs/cli.md)."""
    G = len(result.names) - 1
    m = [int(x) for x in operator.m]
    components = tuple(
        ComponentEstimate(
            name=result.names[g],
            m=m[g],
            variance=float(result.theta[g]),
            se=float(result.se[g]),
            h2=float(result.h2[g]),
            h2_se=float(result.h2_se[g]),
            h2_mc_se=float(result.h2_mc_se[g]),
            at_boundary=bool(result.at_boundary[g]),
        )
        for g in range(G)
    )
    effects = result.effects
    assert effects is not None  # fit_reml always computes them
    store = operator.layout.stores[0]
    variants = variant_table(operator)
    state = FitState(
        names=result.names,
        theta=result.theta,
        covariance=result.covariance,
        beta=effects.beta,
        beta_covariance=effects.beta_covariance,
        covariate_names=data.covariate_names,
        Py=effects.Py,
        KPy=effects.KPy,
        sample_fid=store.sample_family_id[data.sample_index],
        sample_iid=data.iid,
        store_paths=tuple(str(s.path) for s in operator.layout.stores),
        m=np.asarray(m),
        variants=variants,
        snp_effect=np.zeros(len(variants.id)) if snp_effect is None else snp_effect,
    )
    r = result.to_dict()
    return FitResult(
        components=components,
        residual_variance=r["theta"][G],
        residual_se=r["se"][G],
        vp=r["vp"],
        vp_se=r["vp_se"],
        h2_total=r["h2_total"],
        h2_total_se=r["h2_total_se"],
        h2_total_mc_se=r["h2_total_mc_se"],
        loglik=r["loglik"],
        loglik_se=r["loglik_se"],
        n_samples=r["n_samples"],
        n_covariates=r["n_covariates"],
        iterations=r["iterations"],
        decrement=r["decrement"],
        passes=r["passes"],
        passes_by_kind=r["passes_by_kind"],
        method=r["method"],
        method_reason=r["method_reason"],
        converged=r["converged"],
        status=r["status"],
        seed=r["seed"],
        config=r["config"],
        covariance=r["covariance"],
        score=r["score"],
        fixed_effects=tuple(
            FixedEffect(name, float(b), float(se)) for name, b, se in zip(data.covariate_names, effects.beta, effects.beta_se)
        ),
        lrt=lrt,
        samples=data.report,
        variant_filter=operator.report.table(),
        inputs=inputs,
        history=r["history"],
        timings=r["timings"],
        state=state,
    )


@dataclass(frozen=True)
class FitInputs:
    """Everything a fit needs that can be checked without a cluster.

    Attributes:
        stores: the opened stores; spec: the resolved components; data: aligned samples,
        y and X; description: the input files, for the report.
    """

    stores: tuple[Store, ...]
    spec: Components
    data: AnalysisData
    description: dict


def prepare_inputs(
    stores: str | Path | Sequence[str | Path],
    pheno: str | Path,
    *,
    pheno_name: str | None = None,
    mpheno: int | None = None,
    covar=None,
    covar_names: Sequence[str] | None = None,
    covar_cat: Sequence[str] = (),
    components: ComponentChoice = ComponentChoice(),
    selection: Selection = Selection(),
) -> FitInputs:
    """Open the stores, resolve and select the components and align the phenotype; raise on bad input.

    `covar`: a covariate file path (auto mode) or `dreml.phenotypes.CovariateFile`s;
    `selection`: `--keep/--remove` and `--extract/--exclude/--chr` (`dreml.selection`).
    """
    paths = [Path(stores)] if isinstance(stores, (str, Path)) else [Path(s) for s in stores]
    opened = open_stores(paths)  # several stores: same samples, same order, checked here
    spec = components.resolve(opened)
    spec, variant_report = select_variants(spec, opened, selection.variants)
    files = covariate_files(covar)
    data = load_analysis_data(
        opened[0].sample_id,
        pheno,
        pheno_name=pheno_name,
        mpheno=mpheno,
        covar=files,
        covar_names=list(covar_names) if covar_names else None,
        covar_cat=tuple(covar_cat),
        store_fid=opened[0].sample_family_id,
        samples=selection.samples,
    )
    description = {
        "stores": [str(p) for p in paths],
        "pheno": str(pheno),
        "pheno_name": data.phenotype_name,
        **describe_sample_inputs(files, covar_names, covar_cat, selection.samples),
        "covariates": list(data.covariate_names),
        "components": str(spec.source),
        "extract": _path_or_none(selection.variants.extract),
        "exclude": _path_or_none(selection.variants.exclude),
        "chr": None if selection.variants.chromosomes is None else list(selection.variants.chromosomes),
        "variant_selection": variant_report,
    }
    return FitInputs(stores=opened, spec=spec, data=data, description=description)


def _path_or_none(path: str | Path | None) -> str | None:
    return None if path is None else str(path)


def fit_prepared(
    inputs: FitInputs,
    *,
    client: Client | None = None,
    config: FitConfig = FitConfig(),
    min_maf: float = 0.0,
    max_missing: float = 1.0,
    memory_budget: int | str | None = None,
    reml_lrt: Sequence[str] = (),
    blup_snp: bool = True,
    frequencies: Literal["store", "samples"] = "store",
) -> FitResult:
    """Load the shards on the cluster, run `fit_reml` and return the fit's `FitResult`.

    Arguments:
        inputs: from `prepare_inputs`.
        client: Dask client (default: the current one or a local cluster owned by the fit).
        config: REML settings; `config.worker_dtype` sets the workers' precision.
        min_maf, max_missing: variant filters (monomorphic variants are always dropped).
        memory_budget: per-worker bytes for resident shards (default: half a worker's memory).
        reml_lrt: components (names or 1-based numbers) to drop for a likelihood-ratio test,
            refitting the reduced model; default: with one genetic component, the LRT against
            the closed-form null model (no pass), else none.
        blup_snp: compute the SNP effects (`FitState.snp_effect`): one pass.
        frequencies: "store" (the store's allele frequencies centre and scale the genotypes)
            or "samples" (recomputed over the analysed samples; `--freq-from`).
    """
    t0 = time.perf_counter()
    data = inputs.data
    with GenotypeOperator(
        inputs.stores,
        inputs.spec,
        data.sample_index,
        client=client,
        dtype=np.dtype(config.worker_dtype),
        memory_budget=memory_budget,
        min_maf=min_maf,
        max_missing=max_missing,
        frequencies=frequencies,
    ) as operator:
        t_load = time.perf_counter() - t0
        dashboard = getattr(operator.client, "dashboard_link", None)
        logger.info("fitting %d component(s) on %d samples; dashboard: %s", operator.n_components, len(data.y), dashboard)
        dropped = resolve_dropped(list(operator.component_names), reml_lrt)
        if not reml_lrt and operator.n_components == 1:
            dropped = [0]
        result = fit_reml(operator, data.y, data.X, config)
        t_fit = time.perf_counter()
        before = operator.passes
        lrt = None
        if dropped:
            loglik0, loglik0_se = reduced_loglik(operator, data, result.config, dropped)
            lrt = LikelihoodRatioTest.compare(
                result.loglik, result.loglik_se, loglik0, loglik0_se, tuple(operator.component_names[g] for g in dropped)
            )
        lrt_passes = operator.passes - before
        assert result.effects is not None  # fit_reml always computes them
        effects = snp_effects(operator, result.theta, result.effects.Py) if blup_snp else None
        description = {
            **inputs.description,
            "min_maf": min_maf,
            "max_missing": max_missing,
            "freq_from": frequencies,
            "dashboard": dashboard,
            "workers": len(operator.client.scheduler_info(n_workers=-1)["workers"]),
        }
        out = build_result(result, operator, data, description, lrt, effects)
        by_kind = {**out.passes_by_kind, "lrt": lrt_passes, "snp_effects": operator.passes - before - lrt_passes}
    timings = {
        **out.timings,
        "shard_load": t_load,
        "post_reml": time.perf_counter() - t_fit,
        "end_to_end": time.perf_counter() - t0,
    }
    return dataclasses.replace(out, passes=sum(by_kind.values()), passes_by_kind=by_kind, timings=timings)


@dataclass(frozen=True)
class TraitsOutcome:
    """The fits of `fit_traits_prepared`: per trait a `FitResult`, or the error its fit raised.

    Attributes:
        names: the traits. results: one per trait. passes: passes for all traits together
        (shard loading excluded). method: the path of every fit. seed: the master seed.
        samples_union: samples of the operator (the union of the traits' samples).
        probe_groups: the traits (indices) that shared their probes, one tuple per sample set.
        timings: shard_load, fits, post_reml, end_to_end (seconds).
    """

    names: tuple[str, ...]
    results: tuple[FitResult | Exception, ...]
    passes: int
    method: str
    seed: int
    samples_union: int
    timings: dict
    probe_groups: tuple[tuple[int, ...], ...] = ()


def complete_cases(inputs: Sequence[FitInputs]) -> list[FitInputs]:
    """The traits restricted to the samples that have every one of them (and the covariates)
    observed, as BOLT-REML does for several traits: one sample set, so that with one component
    the traits share their probes (`dreml.reml.traits`). Each trait keeps its own sample order.

    Raises:
        InputError: no sample has every trait observed.
    """
    common = inputs[0].data.sample_index
    for i in inputs[1:]:
        common = np.intersect1d(common, i.data.sample_index)
    if common.size == 0:
        names = ", ".join(i.data.phenotype_name for i in inputs)
        raise InputError(f"--complete-cases: no sample has every trait observed ({names}) with its covariates")
    out = []
    for i in inputs:
        d, keep = i.data, np.isin(i.data.sample_index, common)
        data = dataclasses.replace(
            d,
            sample_index=d.sample_index[keep],
            iid=d.iid[keep],
            y=d.y[keep],
            X=d.X[keep],
            report={**d.report, "complete_cases": int(keep.sum())},
        )
        out.append(dataclasses.replace(i, data=data))
    return out


def fit_traits_prepared(
    inputs: Sequence[FitInputs],
    *,
    client: Client | None = None,
    config: FitConfig = FitConfig(),
    min_maf: float = 0.0,
    max_missing: float = 1.0,
    memory_budget: int | str | None = None,
    frequencies: Literal["store", "samples"] = "store",
    share_probes: bool = True,
) -> TraitsOutcome:
    """Fit several traits (one `FitInputs` each, same stores and components) in shared passes.

    The shards are loaded once for the union of the traits' samples; the fits run through
    `dreml.reml.traits.fit_reml_traits`; the SNP effects of every trait come from one pass
    (Z_g^T [P_1 y_1 | ... | P_T y_T], each P_t y_t padded to the union); with one genetic
    component each trait gets the closed-form LRT against the null model (no pass).
    Arguments as in `fit_prepared`; `config.seed` is the master seed of the traits' seeds;
    `share_probes` as in `fit_reml_traits`.
    """
    t0 = time.perf_counter()
    first = inputs[0]
    union = np.unique(np.concatenate([i.data.sample_index for i in inputs]))
    rows = [None if np.array_equal(i.data.sample_index, union) else np.searchsorted(union, i.data.sample_index) for i in inputs]
    with GenotypeOperator(
        first.stores,
        first.spec,
        union,
        client=client,
        dtype=np.dtype(config.worker_dtype),
        memory_budget=memory_budget,
        min_maf=min_maf,
        max_missing=max_missing,
        frequencies=frequencies,
    ) as operator:
        t_load = time.perf_counter() - t0
        dashboard = getattr(operator.client, "dashboard_link", None)
        logger.info("fitting %d traits on %d samples in shared passes; dashboard: %s", len(inputs), len(union), dashboard)
        fits = fit_reml_traits(
            operator, [i.data.y for i in inputs], [i.data.X for i in inputs], rows, config, share_probes=share_probes
        )
        t_fits = time.perf_counter()
        fitted = {t: r for t, r in enumerate(fits.results) if isinstance(r, RemlResult)}
        done = list(fitted)
        effects = {}
        if done:
            U = np.zeros((len(union), len(done)))
            for j, t in enumerate(done):
                fit_effects = fitted[t].effects
                assert fit_effects is not None  # fit_reml always computes them
                U[slice(None) if rows[t] is None else rows[t], j] = fit_effects.Py
            blocks = operator.zt_matmat(U)
            effects = {
                t: np.concatenate([fitted[t].theta[g] * b[:, j] / operator.m[g] for g, b in enumerate(blocks)])
                for j, t in enumerate(done)
            }
        description = {
            "min_maf": min_maf,
            "max_missing": max_missing,
            "freq_from": frequencies,
            "dashboard": dashboard,
            "workers": len(operator.client.scheduler_info(n_workers=-1)["workers"]),
            "traits_in_pass": len(inputs),
        }
        out: list[FitResult | Exception] = []
        for t, (result, trait) in enumerate(zip(fits.results, inputs)):
            if not isinstance(result, RemlResult):
                out.append(result)
                continue
            lrt = None
            if operator.n_components == 1:
                lrt = LikelihoodRatioTest.compare(
                    result.loglik, result.loglik_se, null_loglik(trait.data.y, trait.data.X), 0.0, tuple(operator.component_names)
                )
            report = build_result(result, operator, trait.data, {**trait.description, **description}, lrt, effects[t])
            out.append(
                dataclasses.replace(report, passes_by_kind={**report.passes_by_kind, "snp_effects": 1}, passes=report.passes + 1)
            )
        passes = fits.passes + (1 if done else 0)
    end = time.perf_counter()
    return TraitsOutcome(
        names=tuple(i.data.phenotype_name for i in inputs),
        results=tuple(out),
        passes=passes,
        method=fits.method,
        seed=fits.seed,
        samples_union=int(len(union)),
        probe_groups=fits.probe_groups,
        timings={"shard_load": t_load, "fits": t_fits - t0 - t_load, "post_reml": end - t_fits, "end_to_end": end - t0},
    )


def fit(
    stores: str | Path | Sequence[str | Path],
    pheno: str | Path,
    *,
    pheno_name: str | None = None,
    mpheno: int | None = None,
    covar=None,
    covar_names: Sequence[str] | None = None,
    covar_cat: Sequence[str] = (),
    components: ComponentChoice = ComponentChoice(),
    selection: Selection = Selection(),
    client: Client | None = None,
    config: FitConfig = FitConfig(),
    min_maf: float = 0.0,
    max_missing: float = 1.0,
    memory_budget: int | str | None = None,
    reml_lrt: Sequence[str] = (),
    blup_snp: bool = True,
    frequencies: Literal["store", "samples"] = "store",
) -> FitResult:
    """Fit a variance-component model by REML on a Dask cluster and return its `FitResult`.

    `prepare_inputs` (checks every input, no cluster) followed by `fit_prepared`.

    Arguments:
        stores: one genotype store, or several holding the same samples in the same order.
        pheno: the phenotype file.
        pheno_name, mpheno, covar, covar_names, covar_cat, components, selection: as in `prepare_inputs`.
        client, config, min_maf, max_missing, memory_budget, reml_lrt, blup_snp, frequencies: as in `fit_prepared`.

    Returns:
        `FitResult` (`to_dict()`: the JSON report, docs/cli.md); `dreml.outputs.write_outputs`
        writes it and its state.
    """
    inputs = prepare_inputs(
        stores,
        pheno,
        pheno_name=pheno_name,
        mpheno=mpheno,
        covar=covar,
        covar_names=covar_names,
        covar_cat=covar_cat,
        components=components,
        selection=selection,
    )
    return fit_prepared(
        inputs,
        client=client,
        config=config,
        min_maf=min_maf,
        max_missing=max_missing,
        memory_budget=memory_budget,
        reml_lrt=reml_lrt,
        blup_snp=blup_snp,
        frequencies=frequencies,
    )
