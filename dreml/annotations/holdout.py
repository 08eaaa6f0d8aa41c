"""Held-out chromosomes: the predictive REML log-likelihood of an annotated model (`--annot-holdout-chr`).

For each held-out chromosome c (leave-one-chromosome-out, as DeepWAS evaluates its networks):

1. Train: `fit_annotated` on the variants of the other chromosomes (-c) gives phi_-c; the
   grouped model is the one-component fit of the same variants (the linear map without columns,
   from the start fit, to the same stopping rule), theta_g,-c.
2. Predict: sigma2_j = f(a_j; phi_-c) for the variants j on c (`map.predict`, with the
   training variants' normalisations); the grouped model predicts sigma2_j = theta_g,-c / m_-c.
3. Evaluate, on the same samples and y, the REML log-likelihood of the model with only c's
   variants, their sigma2_j fixed at the prediction and theta_e re-estimated:
       l_c = max_{theta_e > 0} l(y; H_c(theta_e)),   H_c = Z_c diag(sigma2_c) Z_c^T + theta_e I,
       l(y; H) = -1/2 [log|H| + log|X^T H^-1 X| + y^T P y]   (constant -(n - p)/2 log 2 pi omitted,
   as `fit_annotated`). theta_e is re-estimated (one parameter for every model) because it
   absorbs the genetic variance of the chromosomes not in H_c, which a fixed theta_e from the
   training fit (where c's variance was in the residual) would mis-state; the scale of sigma2_c is
   not refitted, so the held-out likelihood judges the predicted level as well as the shape.
   `difference` = l_c(annotated) - l_c(grouped): positive when the annotations predict c's
   per-variant variances better than one constant. Both l_c share one n, X and y, so their
   difference is a log-likelihood ratio between two one-parameter models of the same data.

theta_e is re-estimated by `fit_annotated` on a `FixedMap` (Fisher scoring on log theta_e alone):
on the exact path l_c is exact; on the randomised path it is the SLQ estimate with its Monte
Carlo SE. Cost per chromosome: two training fits (annotated, grouped) and two one-parameter fits; on a genotype operator
each product through `SubsetVariants` is a full pass (the exact path reads Z once).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dreml.annotations.fit import AnnotConfig, as_variants, check_data, fit_annotated, resolve_method
from dreml.annotations.maps import MODELS, FixedMap, make_map
from dreml.annotations.variants import DenseVariants, SubsetVariants, VariantOperator
from dreml.errors import InputError
from dreml.reml.config import fresh_seed

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldOut:
    """The held-out evaluation of one chromosome (module docstring).

    Fields:
        chromosome: c; m_train, m_test: variants off and on c.
        loglik, loglik_se: l_c of the annotated model (SE 0 on the exact path).
        loglik_grouped, loglik_grouped_se: l_c of the grouped (one-component) model.
        difference: loglik - loglik_grouped.
        theta_e, theta_e_grouped: the re-estimated residual variances.
        vg_test, vg_test_grouped: sum_{j on c} sigma2_j predicted by each model.
        train: the training fit (params, h2, loglik, converged, status).
        passes: passes over the genotypes of the four fits.
    """

    chromosome: str
    m_train: int
    m_test: int
    loglik: float
    loglik_se: float
    loglik_grouped: float
    loglik_grouped_se: float
    difference: float
    theta_e: float
    theta_e_grouped: float
    vg_test: float
    vg_test_grouped: float
    train: dict
    passes: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_chromosomes(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """ "1,2" (or a sequence) -> ("1", "2"); an `InputError` for a repeated chromosome."""
    if not text:
        return ()
    names = tuple(c.strip() for c in (text.split(",") if isinstance(text, str) else text) if c.strip())
    if len(set(names)) != len(names):
        raise InputError(f"--annot-holdout-chr: a chromosome is repeated in {','.join(names)}")
    return names


def _fixed_fit(ops: VariantOperator, y: np.ndarray, X: np.ndarray, sigma2: np.ndarray, theta_e: float, config: AnnotConfig):
    """max over theta_e of l(y; Z diag(sigma2) Z^T + theta_e I), started at theta_e."""
    return fit_annotated(ops, y, X, variance_model=FixedMap(sigma2), config=config, start=np.array([np.log(theta_e)]))


def heldout_loglik(
    variants: Any,
    y: np.ndarray,
    X: np.ndarray | None = None,
    *,
    chromosomes: np.ndarray,
    holdout: Sequence[str],
    annotations: np.ndarray | None = None,
    columns: tuple[str, ...] | None = None,
    variance_model: str = "linear",
    frequencies: np.ndarray | None = None,
    config: AnnotConfig = AnnotConfig(),  # noqa: B008 (frozen)
) -> list[HeldOut]:
    """Leave-one-chromosome-out predictive REML log-likelihoods (module docstring).

    Arguments:
        variants, y, X, annotations, columns, variance_model, frequencies, config: as
            `fit_annotated` (variance_model a name).
        chromosomes: the contig of every variant, shape (m,).
        holdout: the chromosomes to hold out, one at a time.

    Returns:
        One `HeldOut` per chromosome of `holdout`, in that order.

    Raises:
        InputError: a held-out chromosome with no variant, or with every variant; an unknown model.
    """
    if variance_model not in MODELS:
        raise InputError(f"unknown variance model {variance_model!r}: choose one of {', '.join(MODELS)}")
    ops = as_variants(variants)
    y, X = check_data(ops.n, y, X)
    chrom = np.asarray(chromosomes).astype(str)
    if chrom.shape != (ops.m,):
        raise InputError(f"chromosomes must have one entry per variant ({ops.m}), got {chrom.shape}")
    A = None if annotations is None else np.asarray(annotations, dtype=np.float64).reshape(ops.m, -1)
    p = None if frequencies is None else np.asarray(frequencies, dtype=np.float64)
    config = dataclasses.replace(config, seed=config.seed if config.seed is not None else fresh_seed())
    evaluate = dataclasses.replace(config, loglik=True)
    names = tuple(columns) if columns is not None else tuple(f"annot{k + 1}" for k in range(0 if A is None else A.shape[1]))
    for c in holdout:
        on_c = int((chrom == str(c)).sum())
        if on_c == 0:
            raise InputError(f"--annot-holdout-chr: no fitted variant is on chromosome {c}")
        if on_c == ops.m:
            raise InputError(f"--annot-holdout-chr: every fitted variant is on chromosome {c}: nothing is left to train on")
    if resolve_method(config.method, ops.n, ops.m) == "exact":
        ops = DenseVariants(ops.explicit())  # Z read once for every chromosome
    results = []
    for c in holdout:
        test = chrom == str(c)
        train_idx, test_idx = np.flatnonzero(~test), np.flatnonzero(test)
        before = ops.passes
        A_train = None if A is None else A[train_idx]
        vmap = make_map(
            variance_model,
            annotations=A_train,
            columns=names,
            frequencies=None if p is None else p[train_idx],
            hidden=config.hidden,
            seed=config.mlp_seed,
        )
        fit = fit_annotated(
            SubsetVariants(ops, train_idx), y, X, annotations=A_train, columns=names, variance_model=vmap, config=config
        )
        sigma2 = vmap.predict(fit.params, None if A is None else A[test_idx], None if p is None else p[test_idx])
        # the grouped model: one variance, by the same optimiser and stopping rule (from the start fit)
        constant = fit_annotated(
            SubsetVariants(ops, train_idx),
            y,
            X,
            annotations=np.zeros((train_idx.size, 0)),
            columns=(),
            variance_model="linear",
            config=config,
            start=np.log([fit.start["theta_g"] / train_idx.size, fit.start["theta_e"]]),
        )
        grouped = np.full(test_idx.size, constant.sigma2[0])
        test_ops = SubsetVariants(ops, test_idx)
        annotated = _fixed_fit(test_ops, y, X, sigma2, fit.theta_e, evaluate)
        one = _fixed_fit(test_ops, y, X, grouped, constant.theta_e, evaluate)
        for name, r in (("annotated", annotated), ("grouped", one)):
            if not r.converged:
                logger.warning("held-out chromosome %s, %s model: theta_e fit %s", c, name, r.status)
        results.append(
            HeldOut(
                chromosome=str(c),
                m_train=int(train_idx.size),
                m_test=int(test_idx.size),
                loglik=annotated.loglik,
                loglik_se=annotated.loglik_se,
                loglik_grouped=one.loglik,
                loglik_grouped_se=one.loglik_se,
                difference=annotated.loglik - one.loglik,
                theta_e=annotated.theta_e,
                theta_e_grouped=one.theta_e,
                vg_test=float(sigma2.sum()),
                vg_test_grouped=float(grouped.sum()),
                train={
                    "params": fit.params.tolist(),
                    "h2": fit.h2,
                    "loglik": fit.loglik,
                    "converged": fit.converged,
                    "status": fit.status,
                },
                passes=int(ops.passes - before),
            )
        )
        logger.info(
            "held-out chromosome %s (%d variants; trained on %d): logL %.4f, grouped %.4f, difference %.4f",
            c,
            test_idx.size,
            train_idx.size,
            annotated.loglik,
            one.loglik,
            results[-1].difference,
        )
    return results
