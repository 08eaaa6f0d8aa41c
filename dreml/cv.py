"""K-fold cross-validation of GBLUP through the genotype operator (`dreml cv`).

Notation (as in `dreml.operators.protocol`): n analysed samples, folds f = 1..K, each with
test rows S (the fold) and training rows T (every other fold), all indices into the
operator's samples. H_T = sum_g theta_g (K_g)_TT + theta_e I, and P_T its REML projection.
For every fold:

    theta_T   REML on the training rows, `fit_reml(RestrictedOperator(op, T), y_T, X_T)`
              (default), or theta of one fit on all n samples (`fixed_variance`)
    beta_T    GLS fixed effects on the training rows, beta_T = (X_T^T H_T^-1 X_T)^-1 X_T^T H_T^-1 y_T
    P_T y_T   = H_T^-1 (y_T - X_T beta_T)
    yhat_S    = X_S beta_T + sum_g theta_g [K_g pad_T(P_T y_T)]_S             (one weighted pass)

where pad_T puts P_T y_T on the rows T and 0 elsewhere, so [K_g pad_T(v)]_S = (K_g)_ST v.
This is the BLUP of the test samples' genetic values given the training data:
E[u_gS | y_T] = theta_g (K_g)_ST H_T^-1 (y_T - X_T beta_T) (Henderson 1975). The training fit
and the prediction run on the shards already resident for all n samples (the restriction is
exact: `dreml.operators.subset`). No n x n matrix is formed.

Metrics, per fold (on its test rows) and pooled (over every held-out prediction, each
sample predicted once): Pearson's correlation of observed and predicted, R^2 = 1 - SSE / SST
(SST about the mean of the rows scored) and the mean squared error.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from distributed import Client

from dreml.errors import InputError
from dreml.fit import FitInputs
from dreml.operators import GenotypeOperator, RestrictedOperator
from dreml.operators.protocol import GRMOperator
from dreml.reml import FitConfig, fit_reml
from dreml.reml.config import fresh_seed
from dreml.reml.effects import Effects, effects_at

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CVOptions:
    """Settings of a cross-validation; invalid values raise `InputError` naming the option.

    Arguments:
        folds: K, at least 2 (and at most the analysed samples, `check_samples`).
        seed: seeds the fold assignment and every REML fit; None draws a fresh seed at
            construction (recorded in `to_dict()`).
        fixed_variance: keep theta of one fit on all samples for every fold (the variance
            components are then not re-estimated without the test samples: faster, slightly
            optimistic) instead of refitting on each training set.
        fold_file: `FID IID fold` or `IID fold` lines assigning the folds instead of the seed.
    """

    folds: int
    seed: int | None = None
    fixed_variance: bool = False
    fold_file: str | Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.folds, bool) or not isinstance(self.folds, (int, np.integer)) or self.folds < 2:
            raise InputError(f"--folds must be a whole number of at least 2, got {self.folds!r}")
        if self.seed is None:
            object.__setattr__(self, "seed", fresh_seed())
        elif isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise InputError(f"--seed must be a non-negative whole number, got {self.seed!r}")

    def check_samples(self, n: int) -> None:
        """Raise unless every one of the K folds can hold at least one of the n samples."""
        if self.folds > n:
            raise InputError(f"--folds {self.folds} is more than the {n} analysed samples (each fold needs one)")

    def to_dict(self) -> dict:
        assert self.seed is not None  # drawn in __post_init__
        return {
            "folds": int(self.folds),
            "seed": int(self.seed),
            "fixed_variance": self.fixed_variance,
            "fold_file": None if self.fold_file is None else str(self.fold_file),
        }


def assign_folds(n: int, folds: int, seed: int) -> np.ndarray:
    """Balanced random folds: labels 1..K, shape (n,), from `numpy.random.default_rng(seed)`.

    Sample i gets fold 1 + (position of i in a random permutation) mod K, so fold sizes are
    floor(n / K) or ceil(n / K).
    """
    if not 2 <= folds <= n:
        raise InputError(f"--folds must lie between 2 and the {n} analysed samples, got {folds}")
    order = np.random.default_rng(seed).permutation(n)
    labels = np.empty(n, dtype=np.int64)
    labels[order] = np.arange(n) % folds + 1
    return labels


def read_fold_file(path: str | Path, iid: np.ndarray) -> np.ndarray:
    """Fold labels (any integers) of the samples `iid`, shape (n,), from a `FID IID fold` or
    `IID fold` file (whitespace-separated; a first line whose last field is not an integer is
    a header). Samples are matched on IID; lines of other samples are ignored.

    Raises:
        InputError: naming the file and line (wrong field count, non-integer fold, duplicated
            IID) or the first analysed sample without a fold.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: fold file not found")
    entries: dict[str, tuple[int, int]] = {}  # IID -> (label, line)
    first = True
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) not in (2, 3):
                raise InputError(f"{path}: line {number}: expected 'FID IID fold' or 'IID fold', found {len(fields)} fields")
            sample, token = fields[-2], fields[-1]
            try:
                label = int(token)
            except ValueError:
                if first:
                    first = False
                    continue  # header
                raise InputError(f"{path}: line {number}: fold {token!r} of sample {sample!r} is not a whole number") from None
            first = False
            if sample in entries:
                raise InputError(f"{path}: line {number}: duplicated IID {sample!r} (first on line {entries[sample][1]})")
            entries[sample] = (label, number)
    missing = [str(s) for s in iid if s not in entries]
    if missing:
        raise InputError(
            f"{path}: no fold for {len(missing)} of the {len(iid)} analysed samples, e.g. IID "
            f"{missing[0]!r} (every analysed sample needs a line 'FID IID fold')"
        )
    return np.array([entries[s][0] for s in iid], dtype=np.int64)


def fold_labels(options: CVOptions, iid: np.ndarray) -> np.ndarray:
    """The fold label of every analysed sample, shape (n,): from `options.fold_file`, whose
    distinct labels among these samples must number `options.folds`, or `assign_folds`."""
    n = len(iid)
    options.check_samples(n)
    if options.fold_file is None:
        assert options.seed is not None  # drawn in __post_init__
        return assign_folds(n, options.folds, options.seed)
    labels = read_fold_file(options.fold_file, iid)
    found = np.unique(labels).size
    if found != options.folds:
        raise InputError(
            f"{options.fold_file}: {found} distinct fold(s) among the {n} analysed samples, but --folds is {options.folds}"
        )
    return labels


@dataclass(frozen=True)
class Metrics:
    """Prediction accuracy on n scored samples.

    Fields:
        n: samples scored.
        correlation: Pearson's r of observed and predicted (NaN when either is constant).
        r2: 1 - SSE / SST, SST about the mean of the observed values scored (NaN if SST = 0).
        mse: SSE / n.
    """

    n: int
    correlation: float
    r2: float
    mse: float

    @classmethod
    def of(cls, observed: np.ndarray, predicted: np.ndarray) -> Metrics:
        residual = observed - predicted
        sse = float(residual @ residual)
        centred = observed - observed.mean()
        sst = float(centred @ centred)
        p = predicted - predicted.mean()
        scale = np.sqrt(sst * float(p @ p))
        r = float(centred @ p) / scale if scale > 0 else float("nan")
        return cls(n=int(observed.size), correlation=r, r2=1.0 - sse / sst if sst > 0 else float("nan"), mse=sse / observed.size)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FoldResult:
    """One fold.

    Fields:
        label: the fold's label (1..K, or the fold file's integer).
        n_train, n_test: training and test samples.
        theta: the variance components used (G genetic, then the residual).
        h2: sum_g theta_g / sum(theta).
        metrics: accuracy on the test samples.
        passes: passes over the genotypes for this fold (fit or effects solve, and the
            prediction pass).
        seconds: wall-clock seconds of the fold.
        converged: whether the training fit (refit) or the effects solve (fixed variance)
            converged; status: why not.
        iterations: AI iterations of the training fit (0 with fixed variance).
    """

    label: int
    n_train: int
    n_test: int
    theta: np.ndarray
    h2: float
    metrics: Metrics
    passes: int
    seconds: float
    converged: bool
    status: str
    iterations: int = 0

    def to_dict(self) -> dict:
        return {
            "fold": self.label,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "theta": self.theta.tolist(),
            "h2": self.h2,
            **self.metrics.to_dict(),
            "passes": self.passes,
            "seconds": self.seconds,
            "converged": self.converged,
            "status": self.status,
            "iterations": self.iterations,
        }


@dataclass(frozen=True)
class CVResult:
    """Result of `cross_validate`.

    Fields:
        names: the component names, then "residual".
        folds: one `FoldResult` per fold, in the order of their labels.
        pooled: accuracy over every held-out prediction.
        converged: every fold (and, with fixed variance, the fit on all samples) converged;
            status: "converged" or which did not and why (not an error: the predictions stand).
        fixed_variance: the mode; theta: theta of the fit on all samples (fixed variance) or None.
        full_fit: the fit on all samples (fixed variance, when it ran here): iterations,
            passes, converged, status, seconds; else None.
        fold: each sample's fold label, shape (n,); observed: y, shape (n,); predicted: the
            held-out prediction of every sample, shape (n,). Per-sample arrays: not in `to_dict()`.
        passes: passes in all (the fit on all samples included).
        seed: the seed of the REML fits; config: their `FitConfig`.
        timings: seconds ("folds", "full_fit", "total"; the data-level wrapper adds
            "shard_load" and "end_to_end").
        dashboard: the Dask dashboard link, where there is one.
        inputs: the input files and filters (set by `cross_validate_prepared`).
    """

    names: tuple[str, ...]
    folds: tuple[FoldResult, ...]
    pooled: Metrics
    converged: bool
    status: str
    fixed_variance: bool
    theta: np.ndarray | None
    full_fit: dict | None
    fold: np.ndarray
    observed: np.ndarray
    predicted: np.ndarray
    passes: int
    seed: int
    config: FitConfig
    timings: dict = field(default_factory=dict)
    dashboard: str | None = None
    inputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Per-fold and pooled metrics and the record of the run, JSON-serialisable."""
        return {
            "components": list(self.names),
            "mode": "fixed_variance" if self.fixed_variance else "refit",
            "folds": [f.to_dict() for f in self.folds],
            "pooled": {**self.pooled.to_dict(), "converged": self.converged, "status": self.status},
            "theta": None if self.theta is None else self.theta.tolist(),
            "full_fit": self.full_fit,
            "passes": self.passes,
            "passes_per_fold": [f.passes for f in self.folds],
            "seed": self.seed,
            "config": self.config.to_dict(),
            "timings": self.timings,
            "dashboard": self.dashboard,
            "inputs": self.inputs,
        }


def _h2(theta: np.ndarray) -> float:
    return float(np.sum(theta[:-1]) / np.sum(theta))


def cross_validate(
    operator: GRMOperator,
    y: np.ndarray,
    X: np.ndarray,
    folds: np.ndarray,
    *,
    config: FitConfig = FitConfig(),
    fixed_variance: bool = False,
    theta: np.ndarray | None = None,
) -> CVResult:
    """GBLUP predictions of every fold from the others, and their accuracy (module docstring).

    Arguments:
        operator: a genotype or dense operator over the n analysed samples, with `diagonal()`.
        y: phenotype, shape (n,); X: covariates, shape (n, p), the intercept included.
        folds: each sample's fold label, shape (n,), any integers; at least 2 distinct.
        config: `FitConfig` of the REML fits (its seed, or a fresh one, is used by all of
            them); `pcg_tol` and `pcg_max_iter` also bound the effects solves.
        fixed_variance: refit nothing per fold: use `theta`, or that of one fit on all samples.
        theta: with `fixed_variance`, (theta_1..theta_G, theta_e) to use (no fit runs).

    Returns:
        `CVResult`. A fold that did not converge is reported in `converged` / `status`.

    Raises:
        InputError: shapes, fewer than 2 folds, or a training set the fit refuses (e.g. a
            categorical covariate level absent from it: the message names the fold).
    """
    t0 = time.perf_counter()
    n = operator.shape[0]
    y = np.asarray(y, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    folds = np.asarray(folds)
    if y.shape != (n,) or X.ndim != 2 or X.shape[0] != n or folds.shape != (n,):
        raise InputError(f"y, X and folds must have {n} rows to match the operator, got {y.shape}, {X.shape}, {folds.shape}")
    if not np.issubdtype(folds.dtype, np.integer):
        raise InputError(f"fold labels must be integers, got dtype {folds.dtype}")
    labels = np.unique(folds)
    if labels.size < 2:
        raise InputError(f"--folds: need at least 2 folds, got {labels.size}")
    if theta is not None and not fixed_variance:
        raise ValueError("theta is used only with fixed_variance")
    if config.seed is None:
        config = dataclasses.replace(config, seed=fresh_seed())
    seed = config.seed
    assert seed is not None
    names = tuple(operator.component_names) + ("residual",)
    dashboard = getattr(getattr(operator, "client", None), "dashboard_link", None)
    logger.info(
        "%d-fold cross-validation (%s) of GBLUP on %d samples, %d component(s); seed %d; dashboard: %s",
        labels.size,
        "fixed variance" if fixed_variance else "refit per fold",
        n,
        operator.n_components,
        config.seed,
        dashboard,
    )
    start_passes = operator.passes
    full_fit, t_full = None, 0.0
    if fixed_variance and theta is None:
        full = fit_reml(operator, y, X, config)
        t_full = time.perf_counter() - t0
        theta = full.theta
        full_fit = {
            "iterations": full.iterations,
            "passes": full.passes,
            "converged": full.converged,
            "status": full.status,
            "method": full.method,
            "seconds": t_full,
            "h2": _h2(theta),
        }
        logger.info("fit on all %d samples: h2 %.4f, %d passes, %s", n, _h2(theta), full.passes, full.status)
    if theta is not None:
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (operator.n_components + 1,) or not theta[-1] > 0 or (theta < 0).any():
            raise ValueError(f"theta must be G + 1 = {operator.n_components + 1} non-negative variances, the residual positive")
    predicted = np.full(n, np.nan)
    results = []
    for f, label in enumerate(labels):
        t_fold, before = time.perf_counter(), operator.passes
        test, train = np.flatnonzero(folds == label), np.flatnonzero(folds != label)
        training = RestrictedOperator(operator, train)
        try:
            if fixed_variance:
                assert theta is not None  # given, or fitted on all samples above
                theta_f, iterations = theta, 0
                effects: Effects = effects_at(
                    training, y[train], X[train], theta_f, tol=config.pcg_tol, max_iter=config.pcg_max_iter
                )
                converged, status = effects.status == "converged", effects.status
            else:
                fit = fit_reml(training, y[train], X[train], config)
                assert fit.effects is not None  # fit_reml always computes them
                theta_f, effects, iterations = fit.theta, fit.effects, fit.iterations
                converged, status = fit.converged, fit.status
        except InputError as exc:
            raise InputError(f"fold {label} (training on {train.size} samples): {exc}") from exc
        # yhat_S = X_S beta_T + sum_g theta_g [K_g pad_T(P_T y_T)]_S: one weighted pass over all n
        genetic = np.asarray(operator.matmat(training.pad(effects.Py), weights=theta_f[:-1]), dtype=np.float64)
        predicted[test] = X[test] @ effects.beta + genetic[test]
        result = FoldResult(
            label=int(label),
            n_train=int(train.size),
            n_test=int(test.size),
            theta=np.array(theta_f),
            h2=_h2(theta_f),
            metrics=Metrics.of(y[test], predicted[test]),
            passes=operator.passes - before,
            seconds=time.perf_counter() - t_fold,
            converged=bool(converged),
            status=status,
            iterations=iterations,
        )
        results.append(result)
        logger.info(
            "fold %d/%d (label %d): %d train, %d test, h2 %.4f, r %.4f, R2 %.4f, %d passes, %.1f s%s",
            f + 1,
            labels.size,
            label,
            train.size,
            test.size,
            result.h2,
            result.metrics.correlation,
            result.metrics.r2,
            result.passes,
            result.seconds,
            "" if converged else f", NOT CONVERGED: {status}",
        )
    problems = [f"fold {r.label}: {r.status}" for r in results if not r.converged]
    if full_fit is not None and not full_fit["converged"]:
        problems.insert(0, f"fit on all samples: {full_fit['status']}")
    pooled = Metrics.of(y, predicted)
    total = time.perf_counter() - t0
    logger.info(
        "pooled over %d samples: r %.4f, R2 %.4f, MSE %.4g; %d passes, %.1f s",
        n,
        pooled.correlation,
        pooled.r2,
        pooled.mse,
        operator.passes - start_passes,
        total,
    )
    return CVResult(
        names=names,
        folds=tuple(results),
        pooled=pooled,
        converged=not problems,
        status="converged" if not problems else "not converged: " + "; ".join(problems),
        fixed_variance=fixed_variance,
        theta=theta if fixed_variance else None,
        full_fit=full_fit,
        fold=folds,
        observed=y,
        predicted=predicted,
        passes=operator.passes - start_passes,
        seed=seed,
        config=config,
        timings={"full_fit": t_full, "folds": total - t_full, "total": total},
        dashboard=dashboard,
    )


def cross_validate_prepared(
    inputs: FitInputs,
    options: CVOptions,
    *,
    client: Client | None = None,
    config: FitConfig = FitConfig(),
    min_maf: float = 0.0,
    max_missing: float = 1.0,
    memory_budget: int | str | None = None,
    frequencies: Literal["store", "samples"] = "store",
) -> CVResult:
    """Load the shards on the cluster once and cross-validate (`cross_validate`).

    Arguments:
        inputs: from `dreml.fit.prepare_inputs`.
        options: folds, seed (used for the folds and, unless `config.seed` is set, the fits),
            mode and fold file.
        client, min_maf, max_missing, memory_budget, frequencies: as in `dreml.fit.fit_prepared`.
        config: REML settings; `config.worker_dtype` sets the workers' precision.
    """
    t0 = time.perf_counter()
    data = inputs.data
    folds = fold_labels(options, data.iid)  # before any shard loads: a bad fold file fails fast
    if config.seed is None:
        config = dataclasses.replace(config, seed=options.seed)
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
        result = cross_validate(operator, data.y, data.X, folds, config=config, fixed_variance=options.fixed_variance)
        description = {
            **inputs.description,
            "min_maf": min_maf,
            "max_missing": max_missing,
            "options": options.to_dict(),
            "m": [int(m) for m in operator.m],
            "n_samples": int(len(data.y)),
            "workers": len(operator.client.scheduler_info(n_workers=-1)["workers"]),
        }
    timings = {**result.timings, "shard_load": t_load, "end_to_end": time.perf_counter() - t0}
    return dataclasses.replace(result, timings=timings, inputs=description)
