"""`dreml fit --bivariate a,b`: from stores and a phenotype file to GCTA's --reml-bivar report.

    stores + components + phenotype file with traits a and b (+ covariates)
      -> each trait aligned on its own observed samples (`dreml.fit.prepare_inputs`, twice)
      -> GenotypeOperator over the union of their samples, each trait's rows in it
      -> `dreml.reml.bivariate.fit_bivariate` -> `BivariateFit`
      -> PREFIX.hsq (GCTA's rows, `bivariate_rows`) and PREFIX.json (`write_bivariate`)

Sample sets: each trait keeps the samples with its own value, the covariates and genotypes;
the traits may be observed on overlapping or on disjoint sets (GCTA allows both: with no
sample measured for both traits, C(G) is identified through the genomic relationships between
the two sets, and C(e) is left out). A trait with no observed sample fails in
`prepare_inputs`, with the trait named (one line); so does naming one trait twice.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from distributed import Client

from dreml.errors import InputError
from dreml.fit import ComponentChoice, FitInputs, prepare_inputs
from dreml.operators import GenotypeOperator
from dreml.outputs import atomic_write_text, write_json
from dreml.reml import FitConfig
from dreml.reml.bivariate import BivariateResult, fit_bivariate
from dreml.selection import Selection

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BivariateInputs:
    """The two traits' checked inputs and where their samples sit in the operator's.

    Attributes:
        traits: one `FitInputs` per trait (same stores and components).
        union: the store's sample indices of either trait, sorted: the operator's samples.
        rows: each trait's rows of `union` (in the trait's own sample order).
    """

    traits: tuple[FitInputs, FitInputs]
    union: np.ndarray
    rows: tuple[np.ndarray, np.ndarray]

    @property
    def names(self) -> tuple[str, str]:
        return (self.traits[0].data.phenotype_name, self.traits[1].data.phenotype_name)


def bivariate_inputs(a: FitInputs, b: FitInputs) -> BivariateInputs:
    """Pair two traits' `prepare_inputs` results: the union of their samples and their rows in it."""
    if a.data.phenotype_name == b.data.phenotype_name:
        raise InputError(f"--bivariate: trait {a.data.phenotype_name!r} is named twice (expected two different traits)")
    if a.spec.names != b.spec.names:
        raise InputError("--bivariate: the two traits resolved to different components")
    union = np.union1d(a.data.sample_index, b.data.sample_index)
    rows = (np.searchsorted(union, a.data.sample_index), np.searchsorted(union, b.data.sample_index))
    return BivariateInputs((a, b), union, rows)


def prepare_bivariate(
    stores: str | Path | Sequence[str | Path],
    pheno: str | Path,
    traits: Sequence[str],
    *,
    covar=None,
    covar_names: Sequence[str] | None = None,
    covar_cat: Sequence[str] = (),
    components: ComponentChoice | None = None,
    selection: Selection = Selection(),
) -> BivariateInputs:
    """`prepare_inputs` for each of the two traits (phenotype columns `traits`), then
    `bivariate_inputs`; a failure names its trait. Arguments as `dreml.fit.prepare_inputs`
    (`components` None: all variants of each store)."""
    if len(traits) != 2:
        raise InputError(f"--bivariate takes two traits, got {len(traits)}: {', '.join(traits)}")
    prepared = []
    for name in traits:
        try:
            prepared.append(
                prepare_inputs(
                    stores,
                    pheno,
                    pheno_name=name,
                    covar=covar,
                    covar_names=covar_names,
                    covar_cat=covar_cat,
                    components=components or ComponentChoice(),
                    selection=selection,
                )
            )
        except InputError as exc:
            raise InputError(f"--bivariate trait {name!r}: {exc}") from exc
    return bivariate_inputs(*prepared)


@dataclass(frozen=True)
class BivariateFit:
    """A bivariate fit's report.

    Attributes:
        result: the engine's `BivariateResult`.
        m: variants per component (after the filters).
        covariate_names: per trait, the columns of its X (intercept first).
        samples: per trait, its sample counts at each filtering step.
        inputs: the input files and options, for the record.
        timings: seconds: shard_load, fit (the engine's total), end_to_end.
    """

    result: BivariateResult
    m: tuple[int, ...]
    covariate_names: tuple[tuple[str, ...], tuple[str, ...]]
    samples: tuple[dict, dict]
    inputs: dict
    timings: dict

    def to_dict(self) -> dict:
        """The JSON report: the result's fields (docs/cli.md), then the inputs and the .hsq rows."""
        out = self.result.to_dict()
        out.update(
            m=list(self.m),
            covariate_names=[list(c) for c in self.covariate_names],
            samples=list(self.samples),
            inputs=self.inputs,
            timings={**out["timings"], **self.timings},
        )
        out["hsq"] = [{"source": s, "value": v, "se": se} for s, v, se in bivariate_rows(out)]
        return out


def fit_bivariate_prepared(
    inputs: BivariateInputs,
    *,
    client: Client | None = None,
    config: FitConfig = FitConfig(),
    rg_fix: float | None = None,
    residual_covariance: bool | None = None,
    priors: Sequence[float] | None = None,
    min_maf: float = 0.0,
    max_missing: float = 1.0,
    memory_budget: int | str | None = None,
    frequencies: Literal["store", "samples"] = "store",
) -> BivariateFit:
    """Load the shards for the union of the traits' samples and fit the bivariate model.

    Arguments:
        inputs: from `prepare_bivariate` or `bivariate_inputs`.
        client, config, min_maf, max_missing, memory_budget, frequencies: as `dreml.fit.fit_prepared`.
        rg_fix, residual_covariance, priors: as `dreml.reml.bivariate.fit_bivariate`.
    """
    t0 = time.perf_counter()
    a, b = inputs.traits
    with GenotypeOperator(
        a.stores,
        a.spec,
        inputs.union,
        client=client,
        dtype=np.dtype(config.worker_dtype),
        memory_budget=memory_budget,
        min_maf=min_maf,
        max_missing=max_missing,
        frequencies=frequencies,
    ) as operator:
        t_load = time.perf_counter() - t0
        dashboard = getattr(operator.client, "dashboard_link", None)
        logger.info("bivariate fit of %s on %d samples; dashboard: %s", " and ".join(inputs.names), len(inputs.union), dashboard)
        result = fit_bivariate(
            operator,
            (a.data.y, b.data.y),
            (a.data.X, b.data.X),
            inputs.rows,
            config,
            traits=inputs.names,
            rg_fix=rg_fix,
            residual_covariance=residual_covariance,
            priors=priors,
        )
        workers = len(operator.client.scheduler_info(n_workers=-1)["workers"])
        m = tuple(int(x) for x in operator.m)
    description = {
        **{k: v for k, v in a.description.items() if k not in ("pheno_name", "covariates")},
        "traits": list(inputs.names),
        "min_maf": min_maf,
        "max_missing": max_missing,
        "freq_from": frequencies,
        "dashboard": dashboard,
        "workers": workers,
        "rg_fix": rg_fix,
        "residual_covariance_option": residual_covariance,
    }
    return BivariateFit(
        result=result,
        m=m,
        covariate_names=(a.data.covariate_names, b.data.covariate_names),
        samples=(a.data.report, b.data.report),
        inputs=description,
        timings={"shard_load": t_load, "end_to_end": time.perf_counter() - t0},
    )


# ----------------------------------------------------------------------------- writing


def _number(x: float | None, spec: str) -> str:
    return "NA" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def bivariate_rows(report: dict) -> list[tuple[str, float | None, float | None]]:
    """The .hsq's (Source, Variance, SE) rows in GCTA's --reml-bivar order and names: the
    (co)variances (`labels`), Vp_tr1, Vp_tr2, V(G)/Vp_tr1, V(G)/Vp_tr2 (per component: V(G1)/Vp_tr1,
    ...), then rG (rG1, rG2, ... with several components)."""
    rows = list(zip(report["labels"], report["theta"], report["se"]))
    rows += [(f"Vp_tr{t + 1}", report["vp"][t], report["vp_se"][t]) for t in range(2)]
    G = len(report["component_names"])
    tags = [""] if G == 1 else [str(g + 1) for g in range(G)]
    for g, tag in enumerate(tags):
        rows += [(f"V(G{tag})/Vp_tr{t + 1}", report["h2"][g][t], report["h2_se"][g][t]) for t in range(2)]
    rows += [(f"rG{tag}", report["rg"][g], report["rg_se"][g]) for g, tag in enumerate(tags)]
    return rows


def bivariate_hsq_text(report: dict, *, fixed_effects: bool = False) -> str:
    """GCTA's --reml-bivar .hsq: `bivariate_rows` (6 decimals), logL (3), with an r_g test
    logL0 "(when rG fixed at R)", LRT, df and Pval "(one-tailed test)" (GCTA's 0.5 P(chi2_df > LRT),
    4 digits in scientific notation), then n = n_a + n_b; with `fixed_effects` a blank line and
    "Fix_eff SE" rows (trait a's covariates, then trait b's). An undefined number (r_g with a
    genetic variance at 0) is NA, where GCTA writes 0."""
    lines = ["Source\tVariance\tSE"]
    lines += [f"{label}\t{_number(v, '.6f')}\t{_number(se, '.6f')}" for label, v, se in bivariate_rows(report)]
    lines.append(f"logL\t{_number(report['loglik'], '.3f')}")
    test = report.get("rg_test")
    if test is not None:
        fixed = "\t".join(format(test["rho"], ".3f") for _ in report["component_names"])
        lines += [
            f"logL0\t{_number(test['loglik0'], '.3f')} (when rG fixed at {fixed})",
            f"LRT\t{_number(test['lrt'], '.3f')}",
            f"df\t{test['df']}",
            f"Pval\t{_number(test['pvalue'], '.4e')} (one-tailed test)",
        ]
    lines.append(f"n\t{sum(report['n_samples'])}")
    if fixed_effects:
        lines += ["", "Fix_eff\tSE"] + [
            f"{_number(b, '.6f')}\t{_number(se, '.6f')}" for b, se in zip(report["beta"], report["beta_se"])
        ]
    return "\n".join(lines) + "\n"


def summary_text(report: dict) -> str:
    """The table `dreml fit --bivariate` prints: the .hsq rows, logL, the r_g test and the run."""
    width = max(len(label) for label, _, _ in bivariate_rows(report))
    lines = [f"{'Source':<{width}}  {'estimate':>10}  {'SE':>9}"]
    lines += [f"{label:<{width}}  {_number(v, '>10.5f')}  {_number(se, '>9.5f')}" for label, v, se in bivariate_rows(report)]
    lines.append(f"logL {report['loglik']:.3f}")
    test = report.get("rg_test")
    if test is not None:
        lines.append(
            f"r_g fixed at {test['rho']:g}: logL0 {test['loglik0']:.3f}, LRT {test['lrt']:.3f} (df {test['df']}), "
            f"P {test['pvalue']:.4g} one-tailed as GCTA, {test['pvalue_two_sided']:.4g} two-sided"
        )
    na, nb = report["n_samples"]
    lines.append(
        f"n {na} + {nb} ({report['n_overlap']} measured for both; residual covariance "
        f"{'fitted' if report['residual_covariance'] else 'left out'})   method {report['method']}   "
        f"iterations {report['iterations']}   passes {report['passes']}   converged {report['converged']}   seed {report['seed']}"
    )
    return "\n".join(lines)


def write_bivariate(fit: BivariateFit, prefix: str | Path, *, fixed_effects: bool = False) -> list[Path]:
    """Write PREFIX.hsq (GCTA's rows) and PREFIX.json (the whole report); returns the paths."""
    prefix = str(prefix)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    report = fit.to_dict()
    paths = [Path(prefix + ".hsq"), Path(prefix + ".json")]
    atomic_write_text(paths[0], bivariate_hsq_text(report, fixed_effects=fixed_effects))
    write_json(report, paths[1])
    return paths


def fit_bivariate_traits(
    stores: str | Path | Sequence[str | Path],
    pheno: str | Path,
    traits: Sequence[str],
    *,
    covar=None,
    covar_names: Sequence[str] | None = None,
    covar_cat: Sequence[str] = (),
    components: ComponentChoice | None = None,
    selection: Selection = Selection(),
    **options,
) -> BivariateFit:
    """`prepare_bivariate` then `fit_bivariate_prepared` (keyword `options` as there)."""
    inputs = prepare_bivariate(
        stores,
        pheno,
        traits,
        covar=covar,
        covar_names=covar_names,
        covar_cat=covar_cat,
        components=components,
        selection=selection,
    )
    return fit_bivariate_prepared(inputs, **options)


__all__ = [
    "BivariateFit",
    "BivariateInputs",
    "bivariate_hsq_text",
    "bivariate_inputs",
    "bivariate_rows",
    "fit_bivariate_prepared",
    "fit_bivariate_traits",
    "prepare_bivariate",
    "summary_text",
    "write_bivariate",
]
