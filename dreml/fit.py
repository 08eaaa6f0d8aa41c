"""`dreml.fit`: from stores and phenotype files to a fit report, on a Dask cluster.

    stores + component spec + phenotype/covariates
      -> samples aligned (dreml.phenotypes) -> GenotypeOperator on the cluster
      -> fit_reml -> report dict (written by dreml.outputs, printed by `dreml fit`)

The report holds everything a user needs to reproduce and audit the fit: estimates with
SEs, h2, the log-likelihood, sample counts at each filtering step, the component sizes,
every setting, the seed, the history and the timings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from distributed import Client

from dreml.components import Components, all_variants, by_chromosome, by_maf_bins, load_components, per_store
from dreml.errors import InputError
from dreml.operators import GenotypeOperator
from dreml.phenotypes import AnalysisData, load_analysis_data
from dreml.reml import FitConfig, RemlResult, fit_reml
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
        return by_chromosome(stores[0]) if self.by_chromosome else by_maf_bins(stores[0], self.maf_bins)


def build_report(result: RemlResult, operator: GenotypeOperator, inputs: dict, samples: dict) -> dict:
    """The fit report (keys documented in docs/cli.md) from a result and its operator."""
    r = result.to_dict()
    G = len(result.names) - 1
    m = [int(x) for x in operator.m]
    components = [
        {"name": result.names[g], "m": m[g], "variance": r["theta"][g], "se": r["se"][g], "h2": r["h2"][g],
         "h2_se": r["h2_se"][g], "h2_mc_se": r["h2_mc_se"][g], "at_boundary": bool(result.at_boundary[g])}
        for g in range(G)
    ]
    return {
        "components": components,
        "residual_variance": r["theta"][G], "residual_se": r["se"][G],
        "vp": r["vp"], "vp_se": r["vp_se"],
        "h2_total": r["h2_total"], "h2_total_se": r["h2_total_se"],
        "h2_total_mc_se": r["h2_total_mc_se"],
        "loglik": r["loglik"], "loglik_se": r["loglik_se"],
        "n_samples": r["n_samples"], "n_covariates": r["n_covariates"],
        "iterations": r["iterations"], "decrement": r["decrement"], "passes": r["passes"],
        "passes_by_kind": r["passes_by_kind"], "method": r["method"], "method_reason": r["method_reason"],
        "converged": r["converged"], "status": r["status"],
        "seed": r["seed"], "config": r["config"], "covariance": r["covariance"], "score": r["score"],
        "samples": samples, "variant_filter": operator.report.table(), "inputs": inputs,
        "history": r["history"], "timings": r["timings"],
    }


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
    covar: str | Path | None = None,
    covar_names: Sequence[str] | None = None,
    components: ComponentChoice = ComponentChoice(),
) -> FitInputs:
    """Open the stores, resolve the components and align the phenotype; raise on bad input."""
    paths = [Path(stores)] if isinstance(stores, (str, Path)) else [Path(s) for s in stores]
    opened = open_stores(paths)  # several stores: same samples, same order, checked here
    spec = components.resolve(opened)
    data = load_analysis_data(opened[0].sample_id, pheno, pheno_name=pheno_name, covar=covar, covar_names=covar_names)
    description = {
        "stores": [str(p) for p in paths], "pheno": str(pheno), "pheno_name": data.phenotype_name,
        "covar": None if covar is None else str(covar), "covariates": list(data.covariate_names),
        "components": str(spec.source),
    }
    return FitInputs(stores=opened, spec=spec, data=data, description=description)


def fit_prepared(
    inputs: FitInputs,
    *,
    client: Client | None = None,
    config: FitConfig = FitConfig(),
    min_maf: float = 0.0,
    max_missing: float = 1.0,
    memory_budget: int | str | None = None,
) -> dict:
    """Load the shards on the cluster, run `fit_reml` and return the fit report.

    Arguments:
        inputs: from `prepare_inputs`.
        client: Dask client (default: the current one or a local cluster owned by the fit).
        config: REML settings; `config.worker_dtype` sets the workers' precision.
        min_maf, max_missing: variant filters (monomorphic variants are always dropped).
        memory_budget: per-worker bytes for resident shards (default: half a worker's memory).
    """
    t0 = time.perf_counter()
    data = inputs.data
    with GenotypeOperator(
        inputs.stores, inputs.spec, data.sample_index, client=client, dtype=np.dtype(config.worker_dtype),
        memory_budget=memory_budget, min_maf=min_maf, max_missing=max_missing,
    ) as operator:
        t_load = time.perf_counter() - t0
        dashboard = getattr(operator.client, "dashboard_link", None)
        logger.info("fitting %d component(s) on %d samples; dashboard: %s", operator.n_components, len(data.y), dashboard)
        result = fit_reml(operator, data.y, data.X, config)
        description = {
            **inputs.description, "min_maf": min_maf, "max_missing": max_missing, "dashboard": dashboard,
            "workers": len(operator.client.scheduler_info(n_workers=-1)["workers"]),
        }
        report = build_report(result, operator, description, data.report)
    report["timings"] = {**report["timings"], "shard_load": t_load, "end_to_end": time.perf_counter() - t0}
    return report


def fit(
    stores: str | Path | Sequence[str | Path],
    pheno: str | Path,
    *,
    pheno_name: str | None = None,
    covar: str | Path | None = None,
    covar_names: Sequence[str] | None = None,
    components: ComponentChoice = ComponentChoice(),
    client: Client | None = None,
    config: FitConfig = FitConfig(),
    min_maf: float = 0.0,
    max_missing: float = 1.0,
    memory_budget: int | str | None = None,
) -> dict:
    """Fit a variance-component model by REML on a Dask cluster and return the fit report.

    `prepare_inputs` (checks every input, no cluster) followed by `fit_prepared`.

    Arguments:
        stores: one genotype store, or several holding the same samples in the same order.
        pheno: the phenotype file.
        pheno_name, covar, covar_names, components: as in `prepare_inputs`.
        client, config, min_maf, max_missing, memory_budget: as in `fit_prepared`.

    Returns:
        The report dictionary (see docs/cli.md); `dreml.outputs.write_outputs` writes it.
    """
    inputs = prepare_inputs(
        stores, pheno, pheno_name=pheno_name, covar=covar, covar_names=covar_names, components=components
    )
    return fit_prepared(
        inputs, client=client, config=config, min_maf=min_maf, max_missing=max_missing, memory_budget=memory_budget
    )
