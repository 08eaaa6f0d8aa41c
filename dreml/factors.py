"""`dreml fit --factors K`: the low-rank factor model (`dreml.reml.factors`) on stores.

    stores + components + phenotype file with T traits (+ covariates)
      -> each trait aligned on its own observed samples (`dreml.fit.prepare_inputs`, T times)
      -> GenotypeOperator over the union of their samples
      -> Y (n_union, T) with NaN where a trait is not observed, X (n_union, p)
      -> `fit_factor_model` (one K), or `choose_factor_count` (several candidate K: held-out
         likelihood, then the refit with the chosen K) -> `FactorsFit`
      -> optionally a second GenotypeOperator over the union and the unphenotyped samples:
         one pass, `predict_factors`
      -> PREFIX.factors.tsv, PREFIX.loadings.tsv, PREFIX.factors.json, PREFIX.factors.pred.tsv

Missing values: a trait missing for a sample of the union (or a sample a trait's filters
dropped, e.g. by --keep) is a missing entry of Y; the model predicts it. The covariates must be
the same columns for every trait (they come from the same files); a sample's covariate row is
taken from any trait that kept it (the values are the sample's, whatever the trait).

Unphenotyped samples (`predict_samples`: store samples with no value for any trait, so not in the
union): their factors through their relatives, F^_N = Sigma_k[N, O] W_k
(`dreml.reml.factor_prediction`). The fit's operator spans the union only (every pass of the fit
costs what it did without them); the prediction loads the shards again over the union and these
samples and makes one pass. Their covariates are not read (the covariate rows come with the
traits), so their predicted trait value is written only when the intercept is the only covariate;
their genomic values always. With --freq-from samples the second operator's frequencies would be
over other samples than the fit's, so the combination is refused.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from distributed import Client

from dreml.errors import InputError
from dreml.fit import FitInputs
from dreml.operators import GenotypeOperator
from dreml.outputs import atomic_write_text, write_json
from dreml.reml.factor_prediction import predict_factors
from dreml.reml.factor_selection import FactorSelection, FactorSelectionConfig, choose_factor_count
from dreml.reml.factors import FactorConfig, FactorModelResult, check_factor_count, fit_factor_model
from dreml.store import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unphenotyped:
    """Predictions for store samples with no value for any trait (module docstring).

    Attributes:
        fid, iid: the samples, shape (N,).
        factors: F^, shape (N, K); factor_blups: U_gk, shape (G, N, K).
        fitted_agreement: max |F^_O recomputed by the prediction pass - F^_O of the fit| /
            max |F^_O| over the fit's samples: the two operators' agreement (0 up to rounding;
            ~1e-6 with float32 workers).
        shard_load_s, predict_s: seconds to load the second operator's shards and for the pass.
    """

    fid: np.ndarray
    iid: np.ndarray
    factors: np.ndarray
    factor_blups: np.ndarray
    fitted_agreement: float
    shard_load_s: float
    predict_s: float

    def to_dict(self) -> dict:
        return {
            "n_samples": int(len(self.iid)),
            "fitted_agreement": self.fitted_agreement,
            "shard_load_s": self.shard_load_s,
            "predict_s": self.predict_s,
        }


@dataclass(frozen=True)
class FactorsFit:
    """A factor-model fit on stores.

    Attributes:
        traits: the trait names (columns of Y and of the loadings).
        component_names: the operator's components (columns of `result.h2`).
        fid, iid: the union's samples (rows of Y).
        Y: the traits, NaN where missing, shape (n, T); X: covariates, shape (n, p).
        covariate_names: the columns of X.
        result: the engine's `FactorModelResult` (with several candidate K: the refit with the
            chosen K on every observed value).
        inputs: the input files and options, for the record.
        timings: seconds: shard_load, fit, end_to_end.
        selection: the choice of K (`FactorSelection`) when several candidates were given.
        unphenotyped: predictions for samples with no trait value, when asked for.
    """

    traits: tuple[str, ...]
    component_names: tuple[str, ...]
    fid: np.ndarray
    iid: np.ndarray
    Y: np.ndarray
    X: np.ndarray
    covariate_names: tuple[str, ...]
    result: FactorModelResult
    inputs: dict
    timings: dict
    selection: FactorSelection | None = None
    unphenotyped: Unphenotyped | None = None

    def to_dict(self) -> dict:
        """The JSON report (PREFIX.factors.json, docs/cli.md)."""
        observed = np.isfinite(self.Y)
        return {
            **self.result.to_dict(),
            "traits": list(self.traits),
            "component_names": list(self.component_names),
            "covariate_names": list(self.covariate_names),
            "n_samples": int(self.Y.shape[0]),
            "observed_per_trait": observed.sum(axis=0).tolist(),
            "missing_values": int((~observed).sum()),
            "inputs": self.inputs,
            "timings": self.timings,
            "selection": None if self.selection is None else self.selection.to_dict(),
            "unphenotyped": None if self.unphenotyped is None else self.unphenotyped.to_dict(),
        }


def union_design(inputs: Sequence[FitInputs]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The union of the traits' samples (store indices, sorted), Y (n, T) with NaN where a trait
    is not observed, and X (n, p) (module docstring)."""
    names = {i.data.covariate_names for i in inputs}
    if len(names) != 1:
        raise InputError("--factors: the traits resolved to different covariate columns; give the same covariates to every trait")
    union = np.unique(np.concatenate([i.data.sample_index for i in inputs]))
    Y = np.full((len(union), len(inputs)), np.nan)
    X = np.full((len(union), inputs[0].data.X.shape[1]), np.nan)
    for t, i in enumerate(inputs):
        rows = np.searchsorted(union, i.data.sample_index)
        Y[rows, t] = i.data.y
        X[rows] = i.data.X
    return union, Y, X


def fit_factors_prepared(
    inputs: Sequence[FitInputs],
    config: FactorConfig,
    *,
    selection: FactorSelectionConfig | None = None,
    predict_samples: np.ndarray | None = None,
    client: Client | None = None,
    min_maf: float = 0.0,
    max_missing: float = 1.0,
    memory_budget: int | str | None = None,
    frequencies: Literal["store", "samples"] = "store",
) -> FactorsFit:
    """Load the shards for the union of the traits' samples and fit the factor model.

    Arguments:
        inputs: one `prepare_inputs` result per trait (same stores, components and covariates).
        config: `FactorConfig` (K, the stopping rule, `config.reml` the factors' REML settings).
        selection: candidate K values and the held-out fraction: K chosen by held-out likelihood
            (`choose_factor_count`; `config.n_factors` is then ignored). None: K = `config.n_factors`.
        predict_samples: store sample indices also to predict (module docstring); those in the
            union are dropped. None: none.
        client, min_maf, max_missing, memory_budget, frequencies: as `dreml.fit.fit_prepared`.

    Raises:
        InputError: T = 0, K >= T, covariates that differ between traits, `predict_samples`
            with frequencies "samples".
    """
    check_factor_count(config.n_factors if selection is None else selection.candidates[-1], len(inputs))
    if predict_samples is not None and frequencies == "samples":
        raise InputError("predicting unphenotyped samples needs the store's allele frequencies (--freq-from store)")
    t0 = time.perf_counter()
    union, Y, X = union_design(inputs)
    first = inputs[0]
    # the fit's operator and the prediction's: the same genotypes over two sample sets
    load = functools.partial(
        GenotypeOperator,
        first.stores,
        first.spec,
        client=client,
        dtype=np.dtype(config.reml.worker_dtype),
        memory_budget=memory_budget,
        min_maf=min_maf,
        max_missing=max_missing,
        frequencies=frequencies,
    )
    chosen: FactorSelection | None = None
    with load(union) as operator:
        t_load = time.perf_counter() - t0
        dashboard = getattr(operator.client, "dashboard_link", None)
        logger.info(
            "factor model: %d traits, %s factors on %d samples; dashboard: %s",
            len(inputs),
            config.n_factors if selection is None else ",".join(map(str, selection.candidates)),
            len(union),
            dashboard,
        )
        if selection is None:
            result = fit_factor_model(operator, Y, X, config)
        else:
            chosen = choose_factor_count(operator, Y, X, config, selection)
            result = chosen.result
        components = tuple(operator.component_names)
        workers = len(operator.client.scheduler_info(n_workers=-1)["workers"])
    t_fit = time.perf_counter() - t0 - t_load
    store = first.stores[0]
    unphenotyped = None
    if predict_samples is not None:
        new = np.setdiff1d(np.asarray(predict_samples, dtype=np.int64), union)
        unphenotyped = _predict_unphenotyped(load, store, union, new, result)
    description = {
        **{k: v for k, v in first.description.items() if k != "pheno_name"},
        "min_maf": min_maf,
        "max_missing": max_missing,
        "freq_from": frequencies,
        "dashboard": dashboard,
        "workers": workers,
    }
    end = time.perf_counter()
    return FactorsFit(
        traits=tuple(i.data.phenotype_name for i in inputs),
        component_names=components,
        fid=store.sample_family_id[union],
        iid=store.sample_id[union],
        Y=Y,
        X=X,
        covariate_names=first.data.covariate_names,
        result=result,
        inputs=description,
        timings={"shard_load": t_load, "fit": t_fit, "end_to_end": end - t0},
        selection=chosen,
        unphenotyped=unphenotyped,
    )


def _predict_unphenotyped(
    load: Callable[[np.ndarray], GenotypeOperator], store: Store, union: np.ndarray, new: np.ndarray, result: FactorModelResult
) -> Unphenotyped:
    """F^ and U of the store samples `new` (sorted, outside `union`) from the fit on `union`;
    `load(samples)` opens the genotype operator over `samples` (module docstring)."""
    K, G = result.weights.shape[1], result.h2.shape[1]
    if not len(new):
        empty = np.array([], dtype=store.sample_id.dtype)
        return Unphenotyped(empty, empty, np.zeros((0, K)), np.zeros((G, 0, K)), 0.0, 0.0, 0.0)
    samples = np.union1d(union, new)
    t0 = time.perf_counter()
    with load(samples) as operator:
        t_load = time.perf_counter() - t0
        factors, blups = predict_factors(operator, np.searchsorted(samples, union), result)
    rows = np.searchsorted(samples, new)
    scale = np.abs(result.factors).max()
    agreement = float(np.abs(np.delete(factors, rows, axis=0) - result.factors).max() / scale) if scale > 0 else 0.0
    logger.info("predicted %d unphenotyped samples; fitted samples' factors reproduced to %.1e", len(new), agreement)
    return Unphenotyped(
        fid=store.sample_family_id[new],
        iid=store.sample_id[new],
        factors=factors[rows],
        factor_blups=blups[:, rows],
        fitted_agreement=agreement,
        shard_load_s=t_load,
        predict_s=time.perf_counter() - t0 - t_load,
    )


# ----------------------------------------------------------------------------- writing


def factors_tsv_text(fit: FactorsFit) -> str:
    """PREFIX.factors.tsv: per factor its h2 (and per component with G > 1), SEs and the share
    of the traits' variance it explains (sum_t lambda_kt^2 / sum_t (lambda_t^T lambda_t + psi_t))."""
    r = fit.result
    G = len(fit.component_names)
    extra = [f"h2_{c}" for c in fit.component_names] if G > 1 else []
    lines = ["\t".join(["factor", "h2", "SE", "MC_SE", *extra, "variance_share"])]
    total = (r.loadings**2).sum() + r.psi.sum()
    for k in range(r.loadings.shape[0]):
        parts = [f"{r.h2[k, g]:.6f}" for g in range(G)] if G > 1 else []
        share = (r.loadings[k] ** 2).sum() / total
        lines.append(
            "\t".join([f"F{k + 1}", f"{r.h2_total[k]:.6f}", f"{r.h2_se[k]:.6f}", f"{r.h2_mc_se[k]:.6f}", *parts, f"{share:.6f}"])
        )
    return "\n".join(lines) + "\n"


def loadings_tsv_text(fit: FactorsFit) -> str:
    """PREFIX.loadings.tsv: per trait its observed count, psi_t and loadings lambda_1t..lambda_Kt."""
    r = fit.result
    K = r.loadings.shape[0]
    lines = ["\t".join(["trait", "n", "psi", *(f"F{k + 1}" for k in range(K))])]
    observed = np.isfinite(fit.Y).sum(axis=0)
    for t, name in enumerate(fit.traits):
        lines.append("\t".join([name, str(int(observed[t])), f"{r.psi[t]:.6g}", *(f"{r.loadings[k, t]:.6g}" for k in range(K))]))
    return "\n".join(lines) + "\n"


def predictions_tsv_text(fit: FactorsFit) -> str:
    """PREFIX.factors.pred.tsv: one row per predicted value (sample, trait) with its kind:
    "missing" (a sample of the fit with this trait missing): the predicted value
    x_i b_t + f^_i lambda_t and the genomic value sum_k lambda_kt u_ik; then "unphenotyped" (a
    sample with no trait value, every trait): the same through its relatives, the predicted value
    NA unless the intercept is the only covariate (module docstring)."""
    r = fit.result
    lines = ["FID\tIID\ttrait\tkind\tpredicted\tgenetic_value"]
    predicted, genetic = r.predicted(fit.X), r.genetic_values()
    for i, t in zip(*np.nonzero(~np.isfinite(fit.Y))):
        lines.append(f"{fit.fid[i]}\t{fit.iid[i]}\t{fit.traits[t]}\tmissing\t{predicted[i, t]:.6g}\t{genetic[i, t]:.6g}")
    new = fit.unphenotyped
    if new is not None:
        genetic = r.genetic_values(new.factor_blups)
        intercept_only = fit.covariate_names == ("intercept",)
        values = r.predicted(np.ones((len(new.iid), 1)), new.factors) if intercept_only else None
        for i in range(len(new.iid)):
            for t, trait in enumerate(fit.traits):
                value = "NA" if values is None else f"{values[i, t]:.6g}"
                lines.append(f"{new.fid[i]}\t{new.iid[i]}\t{trait}\tunphenotyped\t{value}\t{genetic[i, t]:.6g}")
    return "\n".join(lines) + "\n"


def write_factors(fit: FactorsFit, prefix: str | Path) -> list[Path]:
    """Write PREFIX.factors.tsv, .loadings.tsv, .factors.json and .factors.pred.tsv; returns the paths."""
    prefix = str(prefix)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    paths = [Path(prefix + s) for s in (".factors.tsv", ".loadings.tsv", ".factors.json", ".factors.pred.tsv")]
    atomic_write_text(paths[0], factors_tsv_text(fit))
    atomic_write_text(paths[1], loadings_tsv_text(fit))
    write_json(fit.to_dict(), paths[2])
    atomic_write_text(paths[3], predictions_tsv_text(fit))
    return paths


__all__ = [
    "FactorsFit",
    "Unphenotyped",
    "factors_tsv_text",
    "fit_factors_prepared",
    "loadings_tsv_text",
    "predictions_tsv_text",
    "union_design",
    "write_factors",
]
