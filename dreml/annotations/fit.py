"""`fit_annotated`: per-variant variances sigma2_j = f(a_j; phi) learned by full-likelihood REML.

    y = X beta + Z b + e,  b_j ~ N(0, sigma2_j) independent,  e ~ N(0, theta_e I)
    Var(y) = H = Z diag(sigma2) Z^T + theta_e I

Z the standardised genotypes of the fitted variants (the components' standardisation).
Start: the one-component REML fit (`dreml.reml.fit_reml` on K = Z Z^T / m), sigma2_j = theta_g / m
for every j (`map.init`), theta_e from the same fit. Then Fisher scoring or Adam over
psi = (phi, log theta_e) (`dreml.annotations.optimizer`) with the exact or randomised gradient
(`dreml.annotations.likelihood`). Mathematics: docs/math.md, "Annotation-driven per-variant
variances".

Heritability and enrichment: Vg = sum_j sigma2_j (the genetic variance: E[||Z b||^2] / n when
||z_j||^2 = n), h2 = Vg / (Vg + theta_e); for an annotation column c with non-negative values,
    share of h2 = sum_j a_jc sigma2_j / Vg,  share of variants = sum_j a_jc / m,
    enrichment = share of h2 / share of variants.
Standard errors by the delta method with cov(psi) = AI^-1 (JAX Jacobians through the map),
and Monte Carlo SEs with AI^-1 Sigma_g AI^-1 (0 on the exact path); Adam fits (`mlp`) have no
AI: their SEs are NaN (not computed).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dreml.annotations.likelihood import (
    ExactEvaluator,
    RandomisedEvaluator,
    SolverSettings,
)
from dreml.annotations.maps import MODELS, make_map
from dreml.annotations.optimizer import adam, fisher_scoring
from dreml.annotations.variants import (
    DenseVariants,
    GenotypeVariants,
    OneComponent,
    VariantOperator,
)
from dreml.errors import InputError
from dreml.reml import FitConfig, fit_reml
from dreml.reml.config import fresh_seed
from dreml.reml.method import EXACT_MAX_N

logger = logging.getLogger(__name__)

# the exact path holds Z (n x m float64) on the driver: "auto" takes it up to this size
EXACT_MAX_BYTES = 2**31


@dataclass(frozen=True)
class AnnotConfig:
    """Settings of `fit_annotated`. Frozen; invalid values raise `ValueError`.

    Arguments:
        method: "exact" (explicit Z, Cholesky of H), "randomised" (PCG and Hutchinson), or
            "auto": exact when n <= 3,000 (`dreml.reml.method.EXACT_MAX_N`) and the explicit
            Z (n m float64) takes at most 2 GiB.
        n_probes: B, Rademacher probes of the Hutchinson diagonal z_j^T P z_j (drawn once per fit).
        slq_probes: probes of the final SLQ log-likelihood (randomised path).
        pcg_tol, probe_tol, ai_tol, slq_tol, pcg_max_iter: PCG tolerances of the y and X
            columns, the probe columns, the AI solve, the SLQ solve, and the most iterations.
        control_variates: use c_jb = (Z^T w_b)_j^2 - ||z_j||^2 where ||z_j||^2 is known exactly.
        max_iter: most Fisher-scoring iterations (ldak, linear).
        tol_decrement: Fisher scoring stops when grad^T AI^-1 grad is below this (or below a
            tenth of its Monte Carlo part).
        max_step_halvings: step halvings tried per iteration.
        max_step: largest change of one coordinate of psi per iteration (log scale / alpha).
        adam_max_iter, learning_rate, tol_grad: Adam (mlp): steps, step size, and the gradient
            threshold of its stopping rule.
        weight_decay: lambda of the mlp's weight decay: Adam maximises l - lambda/2 ||w||^2 over
            the network's weights w (not log s, not log theta_e), the MAP estimate under a
            N(0, 1/lambda) prior (0: maximum likelihood). The reported logL is unpenalised.
        hidden: hidden layer sizes of the mlp map; mlp_seed: its initial weights.
        loglik: compute the log-likelihood at the end (SLQ on the randomised path).
        seed: probes of the randomised path and of the start fit (None: fresh, recorded).
    """

    method: str = "auto"
    n_probes: int = 100
    slq_probes: int = 64
    pcg_tol: float = 1e-5
    probe_tol: float = 1e-4
    ai_tol: float = 1e-2
    slq_tol: float = 1e-2
    pcg_max_iter: int = 500
    control_variates: bool = True
    max_iter: int = 50
    tol_decrement: float = 1e-6
    max_step_halvings: int = 8
    max_step: float = 2.0
    adam_max_iter: int = 500
    learning_rate: float = 0.05
    tol_grad: float = 1e-3
    weight_decay: float = 0.0
    hidden: tuple[int, ...] = (16,)
    mlp_seed: int = 0
    loglik: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.method not in ("auto", "exact", "randomised"):
            raise ValueError(f"method must be auto, exact or randomised, got {self.method!r}")
        for name in ("n_probes", "slq_probes", "pcg_max_iter", "max_iter", "adam_max_iter"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.n_probes < 4:
            raise ValueError(f"n_probes must be at least 4 (the Monte Carlo error needs a spread), got {self.n_probes}")
        for name in ("pcg_tol", "probe_tol", "ai_tol", "slq_tol"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)!r}")
        for name in ("tol_decrement", "max_step", "learning_rate", "tol_grad"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class Enrichment:
    """Per-annotation share of h2 over share of variants (module docstring), with SEs."""

    annotation: str
    share_variants: float
    share_h2: float
    enrichment: float
    se: float
    mc_se: float


@dataclass(frozen=True)
class AnnotatedResult:
    """Result of `fit_annotated`.

    Fields:
        model: the map's settings (`map.to_dict()`); param_names, params, params_se,
            params_mc_se: phi and its sampling / Monte Carlo SEs.
        theta_e, theta_e_se: residual variance; sigma2: per-variant variances, shape (m,),
            in the variants' order (a genotype operator's: `dreml.fit.variant_table`).
        vg: sum_j sigma2_j; h2, h2_se, h2_mc_se: Vg / (Vg + theta_e) and SEs.
        enrichment: one `Enrichment` per non-negative annotation column.
        loglik, loglik_se: REML log-likelihood (constant omitted, as `fit_reml`) and its
            Monte Carlo SE (0 exact; NaN when `config.loglik` is off on the randomised path).
        start: the one-component fit of the warm start (theta_g, theta_e, loglik) or "given".
        converged, status, iterations, decrement: the optimiser's outcome.
        passes, passes_by_kind: passes over the genotypes (start fit under "start").
        method, seed, config, history, timings: the record.
    """

    model: dict
    param_names: tuple[str, ...]
    params: np.ndarray
    params_se: np.ndarray
    params_mc_se: np.ndarray
    theta_e: float
    theta_e_se: float
    sigma2: np.ndarray
    vg: float
    h2: float
    h2_se: float
    h2_mc_se: float
    enrichment: tuple[Enrichment, ...]
    loglik: float
    loglik_se: float
    start: dict
    converged: bool
    status: str
    iterations: int
    decrement: float
    passes: int
    passes_by_kind: dict
    method: str
    seed: int
    n_samples: int
    m: int
    config: AnnotConfig
    history: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-serialisable report (sigma2 omitted: it goes to PREFIX.snpvar.tsv)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "sigma2":
                continue
            if f.name == "config":
                value = value.to_dict()
            elif f.name == "enrichment":
                value = [dataclasses.asdict(e) for e in value]
            elif isinstance(value, np.ndarray):
                value = value.tolist()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def as_variants(variants: Any) -> VariantOperator:
    """An (n, m) array -> `DenseVariants`; an operator with `zt_matmat` -> `GenotypeVariants`."""
    if isinstance(variants, np.ndarray):
        return DenseVariants(variants)
    if hasattr(variants, "zt_matmat") and hasattr(variants, "z_matmat"):
        return GenotypeVariants(variants)
    return variants


def resolve_method(method: str, n: int, m: int) -> str:
    """ "exact" or "randomised" for `AnnotConfig.method` on n samples and m variants."""
    if method == "auto":
        return "exact" if n <= EXACT_MAX_N and n * m * 8 <= EXACT_MAX_BYTES else "randomised"
    return method


def check_data(n: int, y: np.ndarray, X: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (n,):
        raise InputError(f"y must have shape ({n},) to match the genotypes, got {y.shape}")
    X = np.ones((n, 1)) if X is None else np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != n:
        raise InputError(f"X must have shape ({n}, p), got {X.shape}")
    if not (np.isfinite(y).all() and np.isfinite(X).all()):
        raise InputError("y and X must be finite (drop samples with missing values first)")
    return y, X


def _uncertainty(
    vmap, A: np.ndarray | None, columns: tuple[str, ...], psi: np.ndarray, ai: np.ndarray | None, grad_cov: np.ndarray
) -> dict:
    """Delta-method SEs of phi, theta_e, h2 and the enrichments (module docstring)."""
    keep = [] if A is None else [c for c in range(A.shape[1]) if (A[:, c] >= 0).all() and A[:, c].sum() > 0]
    A_keep = jnp.asarray(A[:, keep]) if A is not None and keep else jnp.zeros((0, 0))

    def derived(p):
        s2 = vmap.sigma2(p[:-1])
        vg = jnp.sum(s2)
        h2 = vg / (vg + jnp.exp(p[-1]))
        if not keep:
            return jnp.stack([h2])
        share_h2 = (A_keep.T @ s2) / vg
        share_var = jnp.sum(A_keep, axis=0) / s2.shape[0]
        return jnp.concatenate([jnp.stack([h2]), share_h2, share_h2 / share_var])

    values = np.asarray(derived(jnp.asarray(psi)))
    k = len(keep)
    if ai is not None:
        try:
            cov = np.linalg.inv(ai)
        except np.linalg.LinAlgError:
            cov = np.linalg.pinv(ai)
        cov_mc = cov @ grad_cov @ cov
        D = np.asarray(jax.jacfwd(derived)(jnp.asarray(psi)))  # shape: (1 + 2k, q + 1)
        se = np.sqrt(np.maximum(np.einsum("ai,ij,aj->a", D, cov, D), 0.0))
        mc = np.sqrt(np.maximum(np.einsum("ai,ij,aj->a", D, cov_mc, D), 0.0))
        psi_se, psi_mc = np.sqrt(np.maximum(np.diag(cov), 0.0)), np.sqrt(np.maximum(np.diag(cov_mc), 0.0))
        # theta_e = exp(psi_e): its SE by the delta method
        te_se = float(np.exp(psi[-1]) * psi_se[-1])
    else:
        se = mc = np.full(values.shape, np.nan)
        psi_se = psi_mc = np.full(psi.shape, np.nan)
        te_se = float("nan")
    shares_var = A[:, keep].sum(axis=0) / A.shape[0] if A is not None and keep else np.zeros(0)
    enrichment = tuple(
        Enrichment(
            annotation=columns[c],
            share_variants=float(shares_var[i]),
            share_h2=float(values[1 + i]),
            enrichment=float(values[1 + k + i]),
            se=float(se[1 + k + i]),
            mc_se=float(mc[1 + k + i]),
        )
        for i, c in enumerate(keep)
    )
    return {
        "h2": float(values[0]),
        "h2_se": float(se[0]),
        "h2_mc_se": float(mc[0]),
        "params_se": psi_se[:-1],
        "params_mc_se": psi_mc[:-1],
        "theta_e_se": te_se,
        "enrichment": enrichment,
    }


def fit_annotated(
    variants: Any,
    y: np.ndarray,
    X: np.ndarray | None = None,
    *,
    annotations: np.ndarray | None = None,
    columns: tuple[str, ...] | None = None,
    variance_model: str | Any = "linear",
    frequencies: np.ndarray | None = None,
    config: AnnotConfig = AnnotConfig(),
    start: np.ndarray | None = None,
) -> AnnotatedResult:
    """Fit sigma2_j = f(a_j; phi) and theta_e by REML.

    Arguments:
        variants: Z as an (n, m) array (the dense reference), a genotype operator
            (`StreamingOperator`, `GenotypeOperator`: every component's variants, in order),
            or any `VariantOperator`.
        y: phenotype, shape (n,); X: covariates, shape (n, p), intercept included (None: intercept).
        annotations: A, shape (m, q), one row per variant in the variants' order.
        columns: the q annotation names (default annot1..annotq).
        variance_model: "ldak", "linear", "mlp", or a map object (`dreml.annotations.maps`).
        frequencies: p_j per variant (the standardisation's), needed by "ldak".
        config: `AnnotConfig`.
        start: psi = (phi, log theta_e) to start from; None: the one-component REML fit.

    Returns:
        `AnnotatedResult`; non-convergence is in `converged` / `status`, not raised.

    Raises:
        InputError: shapes, non-finite values, a constant or dependent column in `linear`,
            an unknown model.
    """
    t0 = time.perf_counter()
    ops = as_variants(variants)
    n, m = ops.n, ops.m
    y, X = check_data(n, y, X)
    A = None
    if annotations is not None:
        A = np.asarray(annotations, dtype=np.float64)
        A = A[:, None] if A.ndim == 1 else A
        if A.shape[0] != m:
            raise InputError(f"annotations must have one row per variant ({m}), got {A.shape[0]}")
    columns = tuple(columns) if columns is not None else tuple(f"annot{c + 1}" for c in range(0 if A is None else A.shape[1]))
    if isinstance(variance_model, str):
        if variance_model not in MODELS:
            raise InputError(f"unknown variance model {variance_model!r}: choose one of {', '.join(MODELS)}")
        vmap = make_map(
            variance_model, annotations=A, columns=columns, frequencies=frequencies, hidden=config.hidden, seed=config.mlp_seed
        )
    else:
        vmap = variance_model
    seed = config.seed if config.seed is not None else fresh_seed()
    config = dataclasses.replace(config, seed=seed)
    method = resolve_method(config.method, n, m)
    passes_start = ops.passes
    if start is None:
        # a one-component genotype operator is its own GRM (fused passes); else K = Z Z^T / m
        grm = ops.operator if isinstance(ops, GenotypeVariants) and ops.operator.n_components == 1 else OneComponent(ops)
        one = fit_reml(grm, y, X, FitConfig(method=method, seed=seed, loglik=method == "exact"))
        vp = float(one.theta.sum())
        c = max(float(one.theta[0]), 1e-3 * vp) / m
        psi0 = np.append(vmap.init(c), np.log(max(float(one.theta[1]), 1e-3 * vp)))
        start_record: dict[str, Any] = {
            "theta_g": float(one.theta[0]),
            "theta_e": float(one.theta[1]),
            "loglik": float(one.loglik),
            "h2": float(one.h2_total),
            "converged": bool(one.converged),
        }
        logger.info("start: one-component REML h2 %.4f (theta_g %.4g, theta_e %.4g)", one.h2_total, one.theta[0], one.theta[1])
    else:
        psi0 = np.asarray(start, dtype=np.float64)
        if psi0.shape != (len(vmap.names) + 1,):
            raise InputError(f"start must have {len(vmap.names) + 1} values (phi, log theta_e), got {psi0.shape}")
        start_record = {"given": psi0.tolist()}
    start_passes = ops.passes - passes_start
    t_start = time.perf_counter()
    evaluator: ExactEvaluator | RandomisedEvaluator
    if method == "exact":
        evaluator = ExactEvaluator(ops, vmap, y, X)
    else:
        settings = SolverSettings(
            n_probes=config.n_probes,
            slq_probes=config.slq_probes,
            pcg_tol=config.pcg_tol,
            probe_tol=config.probe_tol,
            ai_tol=config.ai_tol,
            slq_tol=config.slq_tol,
            pcg_max_iter=config.pcg_max_iter,
            control_variates=config.control_variates,
        )
        evaluator = RandomisedEvaluator(ops, vmap, y, X, settings, seed)
    if vmap.small:
        opt = fisher_scoring(
            evaluator,
            psi0,
            max_iter=config.max_iter,
            tol_decrement=config.tol_decrement,
            max_step_halvings=config.max_step_halvings,
            max_step=config.max_step,
        )
    else:
        # the network's weights are named w1, w2, ... (`MlpMap.names`); log s and log theta_e are not penalised
        decay = config.weight_decay * np.array([name.startswith("w") for name in vmap.names] + [False], dtype=np.float64)
        opt = adam(
            evaluator,
            psi0,
            max_iter=config.adam_max_iter,
            learning_rate=config.learning_rate,
            tol_grad=config.tol_grad,
            decay=decay,
        )
    point = opt.point
    loglik, loglik_se = evaluator.loglik(point) if (config.loglik or method == "exact") else (float("nan"), float("nan"))
    unc = _uncertainty(vmap, A, columns, point.psi, opt.ai, point.grad_cov)
    t_end = time.perf_counter()
    by_kind = {"start": int(start_passes), **{k: int(v) for k, v in evaluator.count.passes.items()}}
    logger.info(
        "annotated REML (%s, %s): %s after %d iterations, h2 %.4f, %d passes",
        vmap.name,
        method,
        opt.status,
        opt.iterations,
        unc["h2"],
        sum(by_kind.values()),
    )
    return AnnotatedResult(
        model=vmap.to_dict(),
        param_names=tuple(vmap.names),
        params=point.psi[:-1].copy(),
        params_se=unc["params_se"],
        params_mc_se=unc["params_mc_se"],
        theta_e=point.theta_e,
        theta_e_se=unc["theta_e_se"],
        sigma2=point.sigma2,
        vg=float(point.sigma2.sum()),
        h2=unc["h2"],
        h2_se=unc["h2_se"],
        h2_mc_se=unc["h2_mc_se"],
        enrichment=unc["enrichment"],
        loglik=float(loglik),
        loglik_se=float(loglik_se),
        start=start_record,
        converged=opt.converged,
        status=opt.status,
        iterations=opt.iterations,
        decrement=opt.decrement,
        passes=int(sum(by_kind.values())),
        passes_by_kind=by_kind,
        method=method,
        seed=seed,
        n_samples=n,
        m=m,
        config=config,
        history=opt.history,
        timings={"start": t_start - t0, "fit": t_end - t_start, "total": t_end - t0},
    )
