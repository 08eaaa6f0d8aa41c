"""Bivariate REML (GCTA's --reml-bivar): genetic and residual (co)variances of two traits and r_g.

Model (docs/math.md, "Bivariate REML"; notation in `dreml.reml.bivariate_model`): the traits'
phenotypes on their own observed samples S_a, S_b of one operator, stacked,
    y = [y_a; y_b] = diag(X_a, X_b) beta + sum_g [u_ga; u_gb] + [e_a; e_b],
    cov(y) = V = sum_c theta_c A_c   (3 components per genetic g, 2 or 3 residual ones),
fitted by REML over theta with the average-information iterations of the univariate engine
(`dreml.reml.bivariate_optimizer`, after `dreml.reml.optimizer`: Newton steps AI^-1 s, step
halving on an overshoot or an indefinite V, the same convergence test with its Monte Carlo
floor), in the parameters phi of a `Parametrisation`. Paths: `dreml.reml.bivariate_exact`
(dense) and `dreml.reml.bivariate_randomised` (matrix-free), chosen by `config.method` as the
univariate engine does (on N = n_a + n_b). Constraints: genetic variances >= 0 by the same
active set as the engine (unless `config.constrain` is False), residual variances
>= 1e-6 sum|theta|, covariances free: r_g may leave [-1, 1], as with GCTA's
--reml-bivar-no-constrain (GCTA's default bends Sigma_g to be positive definite after each step,
and warns that its SEs are then unreliable). A step that makes
V indefinite is halved back.

    r_g = s_gab / sqrt(s2_ga s2_gb),  var(r_g) = grad^T cov(theta) grad,
    grad = (-r_g / (2 s2_ga), -r_g / (2 s2_gb), 1 / sqrt(s2_ga s2_gb))   (delta method, GCTA's formula)
with cov(theta) = AI^-1 as in `dreml.reml.results`; h2 per trait as there, with Vp_t the sum of
trait t's variances (genetic and residual).

`rg_fix=rho`: the model with every r_g fixed at rho (rho = 0: the covariances fixed at 0; else
s_gab = rho sqrt(s2_ga s2_gb)) is fitted from the full model's estimates, with the same
evaluator (the same probes on the randomised path); LRT = 2 (logL - logL0) on df = G, and GCTA's
P value 0.5 P(chi2_df > LRT) ("one-tailed test"), beside the two-sided P(chi2_df > LRT).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import chi2

from dreml.errors import InputError
from dreml.operators.protocol import GRMOperator
from dreml.reml.bivariate_exact import BivariateExactEvaluator
from dreml.reml.bivariate_model import Parametrisation, StackedLayout
from dreml.reml.bivariate_optimizer import run_bivariate_ai
from dreml.reml.bivariate_randomised import BivariateRandomisedEvaluator
from dreml.reml.config import FitConfig, fresh_seed
from dreml.reml.evaluation import IndefiniteError, residualise
from dreml.reml.method import choose_method
from dreml.reml.probes import draw_probes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RgTest:
    """LRT of r_g = rho for every genetic component (GCTA's --reml-bivar-lrt-rg rows).

    Fields:
        rho: the fixed value.
        loglik0, loglik0_se: the constrained model's logL and its Monte Carlo SE.
        lrt: 2 (logL - logL0); lrt_se: 2 sqrt(se^2 + se0^2).
        df: G, the correlations fixed.
        pvalue: 0.5 P(chi2_df > max(LRT, 0)), as GCTA writes it ("one-tailed test").
        pvalue_two_sided: P(chi2_df > max(LRT, 0)).
        theta: the constrained model's estimates (covariances included), shape (C,).
        iterations, converged, status, passes, history: of the constrained fit.
    """

    rho: float
    loglik0: float
    loglik0_se: float
    lrt: float
    lrt_se: float
    df: int
    pvalue: float
    pvalue_two_sided: float
    theta: np.ndarray
    iterations: int
    converged: bool
    status: str
    passes: int
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class BivariateResult:
    """Result of `fit_bivariate`. Arrays over the C components are in GCTA's order (`labels`).

    Fields:
        traits: the two traits' names; component_names: the G genetic components'.
        labels: GCTA's row names of theta (V(G)_tr1, V(G)_tr2, C(G)_tr12, ..., V(e)_tr1, ...).
        theta, se, mc_se: estimates, standard errors (held variances: from the full AI, as the
            univariate engine) and Monte Carlo SEs (0 on the exact path), shape (C,).
        covariance: cov(theta) = AI^-1 on the free components, shape (C, C).
        at_boundary: genetic variances held at 0, shape (C,).
        vp, vp_se: per trait Vp_t and its SE, shape (2,).
        h2, h2_se: V(G)/Vp per component and trait, shape (G, 2).
        rg, rg_se, rg_mc_se: per component (NaN where a genetic variance is not positive), shape (G,).
        loglik, loglik_se: REML logL (constant omitted, as GCTA) and its Monte Carlo SE.
        residual_covariance: whether C(e)_tr12 was fitted; residual_covariance_reason: why.
        n_samples: (n_a, n_b); n_overlap: samples measured for both; n_union: samples of either.
        n_covariates: (p_a, p_b).
        beta, beta_se: GLS fixed effects of trait a's covariates, then trait b's.
        rg_test: the `RgTest` when `rg_fix` was given.
        score, ai: at theta. iterations, decrement, converged, status: of the full fit.
        passes, passes_by_kind: operator passes (set-up, solves, the r_g test).
        method, method_reason, seed, config: the path, why, the seed and every setting.
        history: one dict per iterate (iteration, theta, score_norm, decrement, passes, ...).
        timings: seconds in "setup", "fit", "rg_test", "total".
    """

    traits: tuple[str, str]
    component_names: tuple[str, ...]
    labels: tuple[str, ...]
    theta: np.ndarray
    se: np.ndarray
    mc_se: np.ndarray
    covariance: np.ndarray
    at_boundary: np.ndarray
    vp: np.ndarray
    vp_se: np.ndarray
    h2: np.ndarray
    h2_se: np.ndarray
    rg: np.ndarray
    rg_se: np.ndarray
    rg_mc_se: np.ndarray
    loglik: float
    loglik_se: float
    residual_covariance: bool
    residual_covariance_reason: str
    n_samples: tuple[int, int]
    n_overlap: int
    n_union: int
    n_covariates: tuple[int, int]
    beta: np.ndarray
    beta_se: np.ndarray
    rg_test: RgTest | None
    score: np.ndarray
    ai: np.ndarray
    iterations: int
    decrement: float
    converged: bool
    status: str
    passes: int
    passes_by_kind: dict
    method: str
    method_reason: str
    seed: int
    config: FitConfig
    history: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Everything as JSON-serialisable Python objects (NaN stays float('nan'))."""

        def convert(value):
            if isinstance(value, np.ndarray):
                return value.tolist()
            if isinstance(value, FitConfig):
                return value.to_dict()
            if isinstance(value, RgTest):
                return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, tuple):
                return list(value)
            return value

        return {f.name: convert(getattr(self, f.name)) for f in dataclasses.fields(self)}


# ----------------------------------------------------------------------------- uncertainty


def bivariate_uncertainty(
    layout: StackedLayout, theta: np.ndarray, ai: np.ndarray, held: np.ndarray, score_cov: np.ndarray
) -> dict:
    """cov(theta), SEs, Vp_t, h2 and r_g with delta-method SEs (module docstring), Monte Carlo SEs."""
    free = ~held
    cov = np.zeros_like(ai)
    cov[np.ix_(free, free)] = np.linalg.pinv(ai[np.ix_(free, free)], hermitian=True)
    full_cov = np.linalg.pinv(ai, hermitian=True)
    mc_cov = cov @ score_cov @ cov
    C, G = layout.C, layout.G

    def delta_se(grad: np.ndarray, c: np.ndarray) -> float:
        return float(np.sqrt(max(grad @ c @ grad, 0.0)))

    vp, vp_se = np.zeros(2), np.zeros(2)
    h2, h2_se = np.zeros((G, 2)), np.zeros((G, 2))
    for t, kind in enumerate(("a", "b")):
        idx = [layout.index(g, kind) for g in range(G)] + [layout.index(None, kind)]
        ones = np.zeros(C)
        ones[idx] = 1.0
        vp[t] = float(theta[idx].sum())
        vp_se[t] = delta_se(ones, cov)
        for g in range(G):
            c = layout.index(g, kind)
            grad = -theta[c] / vp[t] ** 2 * ones
            grad[c] += 1.0 / vp[t]
            h2[g, t] = theta[c] / vp[t]
            h2_se[g, t] = delta_se(grad, cov if free[c] else full_cov)
    rg, rg_se, rg_mc_se = np.full(G, np.nan), np.full(G, np.nan), np.full(G, np.nan)
    for g in range(G):
        a, b, c = theta[3 * g], theta[3 * g + 1], theta[3 * g + 2]
        if a > 0 and b > 0:
            rg[g] = c / math.sqrt(a * b)
            grad = np.zeros(C)
            grad[3 * g : 3 * g + 3] = (-rg[g] / (2 * a), -rg[g] / (2 * b), 1 / math.sqrt(a * b))
            rg_se[g], rg_mc_se[g] = delta_se(grad, cov), delta_se(grad, mc_cov)
    return {
        "covariance": cov,
        "se": np.sqrt(np.maximum(np.diag(np.where(free, cov, full_cov)), 0.0)),
        "mc_se": np.where(free, np.sqrt(np.maximum(np.diag(mc_cov), 0.0)), np.nan),
        "vp": vp,
        "vp_se": vp_se,
        "h2": h2,
        "h2_se": h2_se,
        "rg": rg,
        "rg_se": rg_se,
        "rg_mc_se": rg_mc_se,
    }


# ----------------------------------------------------------------------------- the fit


def _check_trait(name: str, n: int, y, X) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (n,):
        raise InputError(f"trait {name}: y must have shape ({n},) to match its rows, got {y.shape}")
    X = np.ones((n, 1)) if X is None else np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != n:
        raise InputError(f"trait {name}: X must have shape ({n}, p), got {X.shape}")
    if not (np.isfinite(y).all() and np.isfinite(X).all()):
        raise InputError(f"trait {name}: y and X must be finite (drop samples with missing values first)")
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise InputError(f"trait {name}: X is rank deficient: drop collinear covariates")
    if X.shape[1] >= n - 1:
        raise InputError(f"trait {name}: need more samples ({n}) than covariates + 1 ({X.shape[1] + 1})")
    y_res = residualise(y, X)
    if y_res @ y_res <= 1e-12 * (y @ y):
        raise InputError(f"trait {name}: y is a linear combination of the covariates: nothing is left to partition")
    return y, X


def _checked_priors(priors, layout: StackedLayout, constrain: bool) -> np.ndarray | None:
    if priors is None:
        return None
    values = np.asarray(priors, dtype=np.float64).reshape(-1)
    labels = layout.labels()
    if values.shape != (layout.C,) or not np.isfinite(values).all():
        raise InputError(f"bivariate priors must give {layout.C} finite values ({', '.join(labels)}), got {len(values)}")
    variance = ~layout.covariances
    if (values[variance & layout.residual] <= 0).any() or (constrain and (values[variance] < 0).any()):
        raise InputError("bivariate priors: residual variances must be positive and genetic variances non-negative")
    return values


def _constrained_start(param: Parametrisation, theta: np.ndarray, vp: np.ndarray) -> np.ndarray:
    """The r_g-fixed model's start from the full estimates: genetic variances >= 1% of Vp_t when
    r_g is fixed away from 0 (its Jacobian needs them positive), |r_e| <= 0.9 (V positive definite)."""
    layout = param.layout
    theta = theta.copy()
    G = layout.G
    if param.rho:
        for t in range(2):
            theta[t : 3 * G : 3] = np.maximum(theta[t : 3 * G : 3], 0.01 * vp[t])
    if layout.residual_covariance:
        bound = 0.9 * math.sqrt(theta[3 * G] * theta[3 * G + 1])
        theta[3 * G + 2] = float(np.clip(theta[3 * G + 2], -bound, bound))
    return param.from_theta(theta)


def fit_bivariate(
    operator: GRMOperator,
    y: Sequence[np.ndarray],
    X: Sequence[np.ndarray | None] = (None, None),
    rows: Sequence[np.ndarray] | None = None,
    config: FitConfig = FitConfig(),
    *,
    traits: tuple[str, str] = ("tr1", "tr2"),
    rg_fix: float | None = None,
    residual_covariance: bool | None = None,
    priors: Sequence[float] | None = None,
) -> BivariateResult:
    """Fit two traits' genetic and residual (co)variances by REML (module docstring).

    Arguments:
        operator: any GRM operator; its samples hold both traits' rows.
        y: (y_a, y_b), each on its trait's rows.
        X: (X_a, X_b), each (n_t, p_t) with the intercept; None for an intercept only.
        rows: (S_a, S_b), each trait's rows of the operator (None: every sample for both).
        config: `FitConfig` (method, probes, tolerances, max_iter, tol_decrement, seed,
            constrain); `config.priors` must be None (use `priors`); `precond_rank` is not used.
        traits: the traits' names, for the messages and the result.
        rg_fix: fit also the model with every r_g = rg_fix (in [-1, 1]) and report its LRT.
        residual_covariance: fit C(e)_tr12; None: GCTA's rule (`dreml.reml.bivariate_model`).
        priors: starting theta in GCTA's order (`BivariateResult.labels`); None: Haseman-Elston.

    Returns:
        `BivariateResult`; non-convergence is reported in `converged` / `status`, not raised.

    Raises:
        InputError: shapes, missing values, rank-deficient covariates, bad rows or priors, an
            `rg_fix` outside [-1, 1], or priors at which V is not positive definite.
    """
    t0 = time.perf_counter()
    n = operator.shape[0]
    if len(y) != 2 or len(X) != 2:
        raise InputError("fit_bivariate takes two traits: y = (y_a, y_b), X = (X_a, X_b)")
    if rows is None:
        rows = (np.arange(n), np.arange(n))
    if len(rows) != 2:
        raise InputError("fit_bivariate takes two traits: rows = (S_a, S_b)")
    rows_ab = (np.asarray(rows[0], dtype=np.int64), np.asarray(rows[1], dtype=np.int64))
    if config.priors is not None:
        raise InputError("fit_bivariate: give the starting values as priors= (GCTA's order), not in FitConfig")
    if rg_fix is not None and not (math.isfinite(rg_fix) and -1.0 <= rg_fix <= 1.0):
        raise InputError(f"rg_fix must lie in [-1, 1], got {rg_fix!r}")
    try:
        layout = StackedLayout(n, rows_ab, operator.component_names, residual_covariance)
    except ValueError as exc:
        raise InputError(f"fit_bivariate: {exc}") from exc
    checked = [_check_trait(name, len(r), yt, Xt) for name, r, yt, Xt in zip(traits, rows_ab, y, X)]
    start_priors = _checked_priors(priors, layout, config.constrain)
    ys = np.concatenate([c[0] for c in checked])
    p = (checked[0][1].shape[1], checked[1][1].shape[1])
    Xs = np.zeros((layout.N, sum(p)))
    Xs[: layout.sizes[0], : p[0]] = checked[0][1]
    Xs[layout.sizes[0] :, p[0] :] = checked[1][1]
    seed = fresh_seed() if config.seed is None else config.seed
    method, reason = choose_method(config.method, layout.N, layout.G)
    config = dataclasses.replace(config, seed=seed, method=method)
    logger.info(
        "bivariate REML of %s and %s: %d + %d samples (%d measured for both), path %s (%s); %s",
        traits[0],
        traits[1],
        *layout.sizes,
        layout.n_overlap,
        method,
        reason,
        layout.residual_covariance_reason,
    )
    evaluator: BivariateExactEvaluator | BivariateRandomisedEvaluator
    if method == "exact":
        evaluator = BivariateExactEvaluator(operator, layout, ys, Xs, p)
    else:
        probes = draw_probes(layout.N, config.n_probes, config.slq_probes, 0, seed)
        evaluator = BivariateRandomisedEvaluator(operator, layout, ys, Xs, p, config, probes)
    vp = np.array([float(r @ r) / (len(r) - pt) for r, pt in zip(layout.split(evaluator.y), p)])
    t_setup = time.perf_counter() - t0
    full = Parametrisation(layout, None, constrain=config.constrain, scale=tuple(vp))
    start = evaluator.start() if start_priors is None else start_priors
    try:
        opt = run_bivariate_ai(evaluator, full, config, start)
    except IndefiniteError as exc:
        raise InputError(
            f"bivariate priors make V indefinite ({exc}): choose larger residual variances or smaller covariances"
        ) from exc
    t_fit = time.perf_counter()
    theta = opt.current.point.theta
    passes = dict(evaluator.count.passes)  # the full fit's, by kind
    passes_fit = sum(passes.values())
    rg_test = None
    if rg_fix is not None:
        reduced = Parametrisation(layout, rg_fix, constrain=config.constrain, scale=tuple(vp))
        opt0 = run_bivariate_ai(evaluator, reduced, config, _constrained_start(reduced, theta, vp))
        if not opt0.converged:
            logger.warning("the model with r_g fixed at %g did not converge: %s", rg_fix, opt0.status)
        lrt = 2.0 * (opt.info.loglik - opt0.info.loglik)
        rg_test = RgTest(
            rho=float(rg_fix),
            loglik0=opt0.info.loglik,
            loglik0_se=opt0.info.loglik_se,
            lrt=lrt,
            lrt_se=2.0 * float(np.hypot(opt.info.loglik_se, opt0.info.loglik_se)),
            df=layout.G,
            pvalue=float(0.5 * chi2.sf(max(lrt, 0.0), layout.G)),
            pvalue_two_sided=float(chi2.sf(max(lrt, 0.0), layout.G)),
            theta=opt0.current.point.theta,
            iterations=opt0.iterations,
            converged=opt0.converged,
            status=opt0.status,
            passes=int(sum(evaluator.count.passes.values()) - passes_fit),
            history=opt0.history,
        )
    t_total = time.perf_counter() - t0
    data = opt.current.point.data
    beta = data["beta"] + np.linalg.lstsq(Xs, ys, rcond=None)[0]  # the solves use y~ (`residualise`)
    if rg_test is not None:
        passes["rg_test"] = rg_test.passes
    logger.info("bivariate REML %s after %d iterations, %d passes", opt.status, opt.iterations, sum(passes.values()))
    return BivariateResult(
        traits=(traits[0], traits[1]),
        component_names=layout.names,
        labels=layout.labels(),
        theta=theta,
        **bivariate_uncertainty(layout, theta, opt.info.ai, opt.held, opt.current.point.score_cov),
        at_boundary=opt.held,
        loglik=opt.info.loglik,
        loglik_se=opt.info.loglik_se,
        residual_covariance=layout.residual_covariance,
        residual_covariance_reason=layout.residual_covariance_reason,
        n_samples=layout.sizes,
        n_overlap=layout.n_overlap,
        n_union=layout.n_union,
        n_covariates=p,
        beta=beta,
        beta_se=np.sqrt(np.maximum(np.diag(data["beta_covariance"]), 0.0)),
        rg_test=rg_test,
        score=opt.current.point.score,
        ai=opt.info.ai,
        iterations=opt.iterations,
        decrement=opt.decrement,
        converged=opt.converged,
        status=opt.status,
        passes=int(sum(passes.values())),
        passes_by_kind=passes,
        method=method,
        method_reason=reason,
        seed=seed,
        config=config,
        history=opt.history,
        timings={"setup": t_setup, "fit": t_fit - t0 - t_setup, "rg_test": t_total - (t_fit - t0), "total": t_total},
    )
