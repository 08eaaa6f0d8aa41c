"""A low-rank factor model for many traits, fitted through the operator (`fit_factor_model`).

(Over 500 lines: a fifth is this docstring, the one statement of the method; the steps below
share its notation and are short.)

MegaLMM's model (Runcie et al. 2021), estimated on the REML side instead of by Gibbs sampling:

    Y = X B + F Lambda + E,      Y: (n, T), entries missing at random (mask M, M_it = 1: observed)
    f_k ~ N(0, Sigma_k),  Sigma_k = sum_g theta_gk K_g + theta_ek I,  sum_g theta_gk + theta_ek = 1
    e_t ~ N(0, psi_t I),  F (n, K) and E independent,  K << T factors,  Lambda (K, T) loadings.

Each factor has unit prior variance (the loadings carry the scale) and its own variance
components over the operator's G components: h2_gk = theta_gk, h2_k = sum_g theta_gk.

Fixed effects by GLS, through the EM: B starts at each trait's OLS over its own observed
samples, B0, b0_t = (X_t^T X_t)^-1 X_t^T y_t, with R0 = M . (Y - X B0); each M-step regresses
each trait on [X, F^] jointly, B = B0 + Delta, and the residualised traits R = M . (Y - X B)
= M . (R0 - X Delta) enter the next E-step. At a fixed point B is the GLS estimate given
(Lambda, psi, theta), exactly (the second-moment approximation below does not enter): the
M-step's normal equations for b_t say X_t^T (y_t - X_t b_t - F^_t lambda_t) = 0, and on the
observed entries y - X B - F^ Lambda = r - A Sigma A^T alpha = Psi alpha (as V alpha = r,
V = A Sigma A^T + Psi), so X_t^T alpha_t = 0 for every t, i.e. X_A^T V^-1 (y - X_A vec B) = 0:
the GLS normal equations (X_A: vec B -> the observed entries of X B). No extra solve: B costs
p columns in the M-step's small per-trait systems.

Estimation: an approximate EM (an expectation-conditional-maximisation cycle) with REML per
factor. Iteration j, from (Lambda, psi, theta):
(E) the posterior mean of F given the observed residuals r = A vec(R), exact, through the
    operator: with A the map vec(F) -> observed entries of F Lambda and Psi = diag(psi_t),
        alpha = (A Sigma A^T + Psi)^-1 r            (an n x T block, zero where unobserved)
        W     = A^T alpha = (M . alpha) Lambda^T     (n, K)
        F^_k  = Sigma_k W_k,   U_gk = theta_gk K_g W_k   (the BLUP of factor k's component g)
    solved by PCG on the n x T block; each iteration multiplies the K columns of W by the
    operator together, one stacked pass (`matmat(W)` -> (G, n, K)), and weighs them per factor.
    Preconditioner: the same system with each K_g replaced by its mean diagonal tr(K_g)/n, so
    Sigma_k by s_k = sum_g theta_gk tr(K_g)/n + theta_ek; it is block diagonal over samples and
    applied by Woodbury with the K x K matrices
        C_i = (diag(1/s) + Lambda diag(M_i / psi) Lambda^T)^-1                      (n, K, K)
    Second moments (documented approximation): E[f_i f_i^T | Y] ~ f^_i f^_i^T + C_i, C_i being
    the posterior covariance of f_i given sample i's own traits only, with the prior variance
    s_k (the information that relatives carry through K_g is ignored, so C_i overstates the
    posterior covariance where relatives are informative; exact when every h2_k = 0).
(M) Delta, Lambda and psi by masked regression of each trait on z_i = [x_i, f^_i] (p + K) with
    these moments (r0: the entries of R0):
        A_t = sum_i M_it (z_i z_i^T + [0, 0; 0, C_i]),  b_t = sum_i M_it z_i r0_it,
        [delta_t; lambda_t] = A_t^-1 b_t,
        psi_t = max((sum_i M_it r0_it^2 - b_t^T [delta_t; lambda_t]) / n_t, psi_floor var_t)
(R) REML per factor on its GLS scores, the unshrunk per-sample estimates from the sample's own
    observed traits at the new (Lambda, psi):
        f~_i = P_i^-1 Lambda (M_i . r_i / psi),   P_i = Lambda diag(M_i / psi) Lambda^T,
    so that f~_k = f_k + eps_k with eps independent between samples, Var(eps_ik) = d_ik =
    [P_i^-1]_kk known. (The posterior mean f^_k is not used here: it is shrunk along the
    eigenvectors of K_g, and REML on it overstates h2, up to 1 for weakly determined factors.)
    Samples with fewer than K observed traits (P_i singular) are left out of these fits. REML of
    f~_k ~ N(1 mu, sum_g theta~_g K_g + theta~_e I) (intercept only; `fit_reml_traits`: the K fits
    share their passes) absorbs the noise in the residual; it is removed with its mean d_k over
    the samples, and the unit-variance components are
        theta_gk = theta~_g / s_k,  theta_ek = (theta~_e - d_k) / s_k,  s_k = sum theta~ - d_k
    (exact when the noise is homoscedastic, i.e. every sample has the same traits observed; with
    unbalanced missingness d_ik varies and its mean is an approximation). theta_ek is kept at
    least 1e-3 (a factor whose scores are mostly noise). SE of h2_k: delta method on the REML
    covariance of theta~ with d_k fixed (conditional on Lambda and psi). The factor fits use the
    same probes at every iteration (the same master seed: common random numbers), so on the
    randomised path the map to theta is deterministic and the changes between iterations are
    not Monte Carlo noise; the Monte Carlo error of the fixed point is reported (`h2_mc_se`, the
    REML h2's Monte Carlo SE scaled by Vp / s_k).

Stopping rule: EM converges linearly, often slowly (rate rho close to 1: on the test problems
~0.985 per iteration, also for textbook EM with every h2 = 0), so a small change between
iterations does not mean a small distance to the fixed point. After iteration j,
    d_Lambda = ||Lambda_j - Lambda_{j-1}||_F / ||Lambda_j||_F,   d_h2 = max_k |h2_k,j - h2_k,j-1|,
    d_B = ||M . X (B_j - B_{j-1})||_F / ||R0||_F   (the covariates' fit, on the residuals' scale),
each with its observed rate rho = d_j / d_{j-1} and its estimated remaining distance
    D = d_j rho / (1 - rho)   (the tail of a geometric series; infinite when rho >= 1),
and the fit stops when max(d, D) < `tol` for all three (j >= 2). With many traits and factors
of similar h2 the iterates creep along a nearly flat ridge of rotations of the factors (T = 200,
K = 5: d_Lambda ~4e-4 per iteration for hundreds of iterations, the factors' h2 drifting by
~1e-4 each, the traits' genetic covariance Lambda^T diag(h2) Lambda by ~7e-4): the rule then
reports no convergence. The predictions settle much earlier (benchmarks/factors.py: the held-
out correlations agree to 3 decimals after 10, 25 and 50 iterations). On the randomised path `tol` must
be at least 10 x the REML PCG tolerance (the solves' own error; the probes are common to all
iterations, so the Monte Carlo error does not move the iterates). At most `max_iter`
iterations; `converged` is true only when the rule was met and every E-step solve and every
factor's REML fit converged (`status` says what failed).

Acceleration (`accelerate`, default off): SQUAREM (Varadhan & Roland 2008, scheme S3) around the
EM map F: x -> (B, Lambda, psi, theta) of one E-, M- and R-step: cycles of two EM steps, an
extrapolation along the cycle's dominant direction (step alpha <= -1, in the coordinates
delta / sd, Lambda / sd, log psi, theta_g; psi and theta projected onto their floors) and a
stabilising EM step from the extrapolated point, which falls back to the plain point when it
fails or its fixed-point residual ||F(x') - x'|| exceeds 10 x the plain step's
(`dreml.reml.factors_squarem` states the scheme and the safeguard). Iterations then count EM
evaluations (3 per cycle; `max_iter` bounds them). The stopping rule is applied to the cycle's
two plain steps and, since their rate estimate after an extrapolation reflects only the fast
directions, also to the sequence of the cycles' second plain points and with the largest rate
of the last 10 cycles' plain steps; the fit returns a plain EM point. Where the slow rate is
closer to 1 than any two-point estimate shows, a loose tol can stop early: on a K = 2 test
problem tol 1e-3 stopped 8.6e-3 (relative) from the fixed point in Lambda, tol 1e-5 within
8e-6 (`dreml.reml.factors_squarem`). The extrapolation does not move a fixed point of F, so both
modes have the same fixed points (tested: the same one as the plain EM run to its rule, K = 1).
Measured: on small problems 5-8x fewer EM evaluations to the rule (n = 100, T = 5, K = 1, tol
1e-6: 38 against 285; T = 6, K = 2, tol 1e-4: 470 against 2,624). On the T = 40 and T = 200
simulations (benchmarks/factors.py --accelerate) it moves along the ridge ~4x faster per
evaluation, but the rule was not met (T = 40: plain 3,000 iterations, accelerated 1,000
evaluations; T = 200: 200 and 600): the iterates drift at a nearly constant speed, with one or
two factors at h2 ~0 whose rotation the data barely identify; hence off by default.

Initialisation: masked PCA of R0 (B = B0). Each trait is scaled to unit variance over its observed
entries, missing entries start at 0 (the trait's mean after residualising) and are replaced by
the rank-K reconstruction, `pca_iter` times (hard-impute, Mazumder et al. 2010); then
F0 = sqrt(n) U_K (unit-variance scores), Lambda0 = S_K V_K^T / sqrt(n) times each trait's scale,
psi0 the observed residual variance of R - F0 Lambda0; theta0 from step (R) at (Lambda0, psi0).

Prediction: the trait values, missing ones included, Y^ = X B + F^ Lambda (F^ uses the
sample's other observed traits and its relatives); the genomic values G^ = (sum_g U_g) Lambda,
trait by trait t: sum_k lambda_kt u_k, from the factors' BLUPs u_gk = theta_gk K_g W_k (the
form of `dreml.reml.effects.Effects.blup`, theta_g K_g P y, with W_k in the place of P y): the
genetic part of the factors, which enters a sample's missing trait through its relatives and,
for a sample with other traits observed, through those. Samples outside the fit (no trait
observed): `dreml.reml.factor_prediction`, from W; choosing K: `dreml.reml.factor_selection`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from dreml.errors import InputError
from dreml.operators.dense import DenseOperator
from dreml.operators.protocol import GRMOperator, with_diagonal
from dreml.reml.config import FitConfig, fresh_seed
from dreml.reml.factors_squarem import STEP_MAX0, Coordinates, accepts, extrapolate, next_step_max
from dreml.reml.method import choose_method
from dreml.reml.pcg import block_pcg
from dreml.reml.results import RemlResult
from dreml.reml.traits import fit_reml_traits

logger = logging.getLogger(__name__)
SLOW_RATE_WINDOW = 10  # cycles over which the accelerated stopping rule takes its slow rate


@dataclass(frozen=True)
class FactorConfig:
    """Settings of `fit_factor_model`; invalid values raise `ValueError` at construction.

    Fields:
        n_factors: K, the number of latent factors (1 <= K < T).
        max_iter: most EM iterations.
        tol: the stopping rule's bound on the changes of Lambda, h2 and B and their estimated
            remaining distances to the fixed point (module docstring).
        e_step_tol: relative residual of the E-step PCG solve.
        e_step_max_iter: most PCG iterations (passes) per E-step.
        pca_iter: hard-impute iterations of the masked PCA start.
        psi_floor: psi_t >= psi_floor x the observed variance of trait t.
        accelerate: SQUAREM around the EM (module docstring); max_iter then bounds EM evaluations.
        reml: settings of the factors' REML fits; `reml.seed` is the master seed (None: fresh).
    """

    n_factors: int
    max_iter: int = 50
    tol: float = 1e-3
    e_step_tol: float = 1e-6
    e_step_max_iter: int = 1000
    pca_iter: int = 50
    psi_floor: float = 1e-3
    accelerate: bool = False
    reml: FitConfig = field(default_factory=FitConfig)

    def __post_init__(self) -> None:
        if self.n_factors < 1:
            raise ValueError(f"n_factors must be at least 1, got {self.n_factors}")
        if self.max_iter < 1 or self.e_step_max_iter < 1 or self.pca_iter < 0:
            raise ValueError("max_iter and e_step_max_iter must be positive, pca_iter non-negative")
        if not (self.tol > 0 and self.e_step_tol > 0 and 0 < self.psi_floor < 1):
            raise ValueError("tol and e_step_tol must be positive, psi_floor in (0, 1)")


@dataclass(frozen=True)
class FactorModelResult:
    """Outcome of `fit_factor_model`. Arrays over factors k = 1..K, traits t = 1..T, samples i.

    Fields:
        loadings: Lambda, shape (K, T); each factor's sign makes its largest |loading| positive;
            the factors keep the order of the masked PCA start (decreasing singular values).
        psi: residual variances psi_t, shape (T,).
        theta: each factor's variance components (G genetic, then residual), summing to 1, (K, G + 1).
        h2: theta_gk, shape (K, G); h2_total: sum_g theta_gk, shape (K,).
        h2_se: SE of h2_total from the factor's REML information given F^ (conditional on F^ and
            Lambda: their uncertainty is not propagated), shape (K,).
        h2_mc_se: Monte Carlo SE of h2_total (0 on the exact path), shape (K,).
        beta: the covariate effects B, GLS at the fixed point (module docstring), shape (p, T).
        factors: F^, the posterior means of F, shape (n, K).
        factor_blups: U_gk, shape (G, n, K).
        weights: W = A^T alpha, shape (n, K): F^_k = Sigma_k W_k, so a sample outside the fit
            gets F^ from its relatives by one product (`dreml.reml.factor_prediction`).
        factor_covariance: C_i, the posterior covariance of f_i from the sample's own traits, shape
            (n, K, K) (module docstring; what `predictive_variance` uses).
        iterations: EM iterations made; converged, status: the stopping rule (module docstring).
        history: one dict per iteration: iteration, h2, d_lambda, d_h2, d_genetic_covariance
            (relative change of the traits' genetic covariance Lambda^T diag(h2) Lambda), d_beta,
            remaining_lambda, remaining_h2, remaining_beta (the
            stopping rule's D, None in the first iteration), e_step_iterations,
            e_step_residual, psi_mean, passes, wall_s; with `accelerate` also step ("em" or
            "stabilise"), on the second plain step of a cycle cycle_change, cycle_remaining
            (the rule on the cycles' sequence, largest of the three) and slow_remaining (D with
            the slow rate, largest of the three), on the stabilising step
            alpha, projected, residual, plain_residual, accepted (`dreml.reml.factors_squarem`);
            a stabilising step that raised has only iteration, step, error and those five.
        passes: passes over the genotypes in all (the exact path reads K_g once: 1 pass); method:
            the factors' REML path.
        seed: the master seed (the factors' REML seeds are spawned from it, `trait_seeds`).
        config: the `FactorConfig` used (with the seed).
    """

    loadings: np.ndarray
    psi: np.ndarray
    theta: np.ndarray
    h2: np.ndarray
    h2_total: np.ndarray
    h2_se: np.ndarray
    h2_mc_se: np.ndarray
    beta: np.ndarray
    factors: np.ndarray
    factor_blups: np.ndarray
    weights: np.ndarray
    factor_covariance: np.ndarray
    iterations: int
    converged: bool
    status: str
    history: list[dict]
    passes: int
    method: str
    seed: int
    config: FactorConfig

    def genetic_values(self, factor_blups: np.ndarray | None = None) -> np.ndarray:
        """G^ = (sum_g U_g) Lambda, the genomic prediction of every trait, shape (n, T); for other
        samples' BLUPs `factor_blups` (G, N, K) (`dreml.reml.factor_prediction`), shape (N, T)."""
        U = self.factor_blups if factor_blups is None else factor_blups
        return U.sum(axis=0) @ self.loadings

    def predicted(self, X: np.ndarray, factors: np.ndarray | None = None) -> np.ndarray:
        """Y^ = X B + F^ Lambda for the samples' covariates X (n, p), shape (n, T); for other
        samples' posterior means `factors` (N, K) and their covariates X (N, p), shape (N, T)."""
        F = self.factors if factors is None else factors
        return X @ self.beta + F @ self.loadings

    def predictive_variance(self) -> np.ndarray:
        """lambda_t^T C_i lambda_t + psi_t: the variance of y_it given the sample's own observed
        traits (the relatives' information ignored, as C_i; an upper bound up to that
        approximation), shape (n, T)."""
        return np.einsum("kt,ikl,lt->it", self.loadings, self.factor_covariance, self.loadings) + self.psi

    def to_dict(self) -> dict:
        """JSON-serialisable summary (per-sample arrays left out; beta as p lists of T)."""
        return {
            "n_factors": int(self.loadings.shape[0]),
            "n_traits": int(self.loadings.shape[1]),
            "loadings": self.loadings.tolist(),
            "psi": self.psi.tolist(),
            "theta": self.theta.tolist(),
            "h2": self.h2.tolist(),
            "h2_total": self.h2_total.tolist(),
            "h2_se": self.h2_se.tolist(),
            "h2_mc_se": self.h2_mc_se.tolist(),
            "beta": self.beta.tolist(),
            "iterations": self.iterations,
            "converged": self.converged,
            "status": self.status,
            "history": self.history,
            "passes": self.passes,
            "method": self.method,
            "seed": self.seed,
            "config": dataclasses.asdict(self.config),
        }


@dataclass(frozen=True)
class Posterior:
    """The E-step at (Lambda, psi, theta) (module docstring).

    Fields:
        factors: F^, shape (n, K). blups: U_gk, shape (G, n, K). weights: W, shape (n, K).
        C: per-sample posterior covariance from the sample's own traits, shape (n, K, K).
        iterations: PCG iterations (= passes; the product Sigma W adds one). residual: the
            largest relative residual. status: "converged" or the PCG's message.
    """

    factors: np.ndarray
    blups: np.ndarray
    weights: np.ndarray
    C: np.ndarray
    iterations: int
    residual: float
    status: str


class EmState(NamedTuple):
    """The EM's parameters: delta = B - B0 (p, T), Lambda (K, T), psi (T,), theta (K, G + 1)."""

    delta: np.ndarray
    Lambda: np.ndarray
    psi: np.ndarray
    theta: np.ndarray


@dataclass(frozen=True)
class Evaluation:
    """One application of the EM map F: the new parameters, their REML fits, the changes
    (d_Lambda, d_h2, d_B) from the input, and what failed ("" if nothing)."""

    state: EmState
    reml: FactorReml
    changes: tuple[float, float, float]
    failures: str


def check_factor_count(n_factors: int, n_traits: int) -> None:
    """Raise `InputError` unless 1 <= K < T (T = 0: no traits left after the filters)."""
    if n_traits == 0:
        raise InputError("no traits left to fit (T = 0 after the filters)")
    if not 1 <= n_factors < n_traits:
        raise InputError(
            f"the factor count K = {n_factors} must be at least 1 and smaller than the number of traits T = {n_traits}"
        )


def _check(operator: GRMOperator, Y: np.ndarray, X: np.ndarray | None, n_factors: int) -> tuple[np.ndarray, np.ndarray]:
    n = operator.shape[0]
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2 or Y.shape[0] != n:
        raise InputError(f"Y must have shape ({n}, T) to match the operator, got {Y.shape}")
    check_factor_count(n_factors, Y.shape[1])
    X = np.ones((n, 1)) if X is None else np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != n or not np.isfinite(X).all():
        raise InputError(f"X must be finite with shape ({n}, p), got {X.shape}")
    if np.isinf(Y).any():
        raise InputError("Y holds infinite values (mark missing values as NaN)")
    few = np.flatnonzero(np.isfinite(Y).sum(axis=0) <= X.shape[1] + n_factors)
    if few.size:
        raise InputError(f"trait {int(few[0])} has too few observed samples for {X.shape[1]} covariates and {n_factors} factors")
    return Y, X


def residualise_traits(Y: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each trait's OLS on X over its observed samples, the start B0 (module docstring).

    Returns:
        R0 = M . (Y - X B0) (n, T) with zeros where unobserved; the mask M (n, T) as floats; B0 (p, T).
    """
    M = np.isfinite(Y)
    B = np.stack([np.linalg.lstsq(X[M[:, t]], Y[M[:, t], t], rcond=None)[0] for t in range(Y.shape[1])], axis=1)
    R = np.where(M, Y - X @ B, 0.0)
    return R, M.astype(np.float64), B


def masked_pca(R: np.ndarray, M: np.ndarray, n_factors: int, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """The start (module docstring): F0 (n, K) with unit-variance columns and Lambda0 (K, T)."""
    n = R.shape[0]
    scale = np.sqrt((R**2).sum(axis=0) / M.sum(axis=0))  # (T,)
    scale = np.where(scale > 0, scale, 1.0)
    Z = R / scale
    filled = Z.copy()
    for _ in range(iterations):
        U, S, Vt = np.linalg.svd(filled, full_matrices=False)
        low = (U[:, :n_factors] * S[:n_factors]) @ Vt[:n_factors]
        filled = np.where(M > 0, Z, low)
    U, S, Vt = np.linalg.svd(filled, full_matrices=False)
    F0 = np.sqrt(n) * U[:, :n_factors]
    Lambda0 = (S[:n_factors, None] * Vt[:n_factors]) / np.sqrt(n) * scale
    return F0, Lambda0


def own_trait_covariance(Lambda: np.ndarray, psi: np.ndarray, M: np.ndarray, s: np.ndarray) -> np.ndarray:
    """C_i = (diag(1/s) + Lambda diag(M_i / psi) Lambda^T)^-1, shape (n, K, K)."""
    precision = np.einsum("kt,it,lt->ikl", Lambda, M / psi, Lambda) + np.diag(1.0 / s)
    return np.linalg.inv(precision)


def posterior(
    operator: GRMOperator,
    R: np.ndarray,
    M: np.ndarray,
    Lambda: np.ndarray,
    psi: np.ndarray,
    theta: np.ndarray,
    *,
    tol: float,
    max_iter: int,
) -> Posterior:
    """The E-step (module docstring): F^, U and C at (Lambda, psi, theta).

    Arguments:
        operator: the GRM operator over the n samples.
        R: residualised traits, zeros where unobserved, shape (n, T); M: the mask, shape (n, T).
        Lambda: loadings (K, T); psi: residual variances (T,); theta: (K, G + 1) per factor.
        tol, max_iter: of the PCG solve.
    """
    n, T = R.shape
    theta_g, theta_e = theta[:, :-1].T, theta[:, -1]  # (G, K), (K,)
    s = theta_g.T @ (np.asarray(with_diagonal(operator).traces()) / n) + theta_e  # (K,)
    C = own_trait_covariance(Lambda, psi, M, s)

    def sigma(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Sigma_k W_k)_k (n, K) and theta_gk K_g W_k (G, n, K): one stacked pass."""
        KW = np.asarray(operator.matmat(W), dtype=np.float64)  # (G, n, K)
        blups = theta_g[:, None, :] * KW
        return blups.sum(axis=0) + theta_e * W, blups

    def apply_H(v: np.ndarray) -> np.ndarray:
        V = v.reshape(n, T)
        SW, _ = sigma((M * V) @ Lambda.T)
        return (M * (SW @ Lambda + psi * V) + (1.0 - M) * V).reshape(-1, 1)

    def solve_M(r):
        Rb = np.asarray(r).reshape(n, T)
        Zb = M * Rb / psi
        V = np.einsum("ikl,il->ik", C, Zb @ Lambda.T)
        return jnp.asarray((M * (Zb - (V @ Lambda) / psi) + (1.0 - M) * Rb).reshape(-1, 1))

    result = block_pcg(apply_H, R.reshape(-1, 1), solve_M=solve_M, tol=tol, max_iter=max_iter)
    alpha = M * result.x.reshape(n, T)
    W = alpha @ Lambda.T
    factors, blups = sigma(W)
    return Posterior(factors, blups, W, C, result.iterations, float(result.residuals.max()), result.status)


def m_step(
    R0: np.ndarray, M: np.ndarray, X: np.ndarray, post: Posterior, psi_min: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Delta = B - B0 (p, T), Lambda (K, T) and psi (T,) by masked regression of R0 on [X, F^]
    with the second moments (module docstring)."""
    p = X.shape[1]
    Z = np.hstack([X, post.factors])  # (n, p + K)
    A = np.einsum("it,ia,ib->tab", M, Z, Z)  # (T, p + K, p + K)
    A[:, p:, p:] += np.einsum("it,ikl->tkl", M, post.C)
    b = np.einsum("it,ia->ta", R0, Z)  # (T, p + K); R0 is 0 where unobserved
    # least squares, not solve: a covariate constant over one trait's samples leaves A_t singular
    coef = np.stack([np.linalg.lstsq(A_t, b_t, rcond=None)[0] for A_t, b_t in zip(A, b)])  # (T, p + K)
    psi = ((R0**2).sum(axis=0) - np.einsum("ta,ta->t", b, coef)) / M.sum(axis=0)
    return coef[:, :p].T, coef[:, p:].T, np.maximum(psi, psi_min)


def gls_scores(R: np.ndarray, M: np.ndarray, Lambda: np.ndarray, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f~ (n, K), their noise variances d (n, K) and the samples with P_i invertible (module docstring)."""
    P = np.einsum("kt,it,lt->ikl", Lambda, M / psi, Lambda)  # (n, K, K)
    rows = np.flatnonzero(M.sum(axis=1) >= Lambda.shape[0])
    rows = rows[np.linalg.cond(P[rows]) < 1e10]
    P_inv = np.linalg.inv(P[rows])
    scores = np.einsum("ikl,il->ik", P_inv, (M[rows] * R[rows] / psi) @ Lambda.T)
    return scores, np.einsum("ikk->ik", P_inv), rows


@dataclass(frozen=True)
class FactorReml:
    """Step (R) (module docstring). Fields: theta (K, G + 1), unit variance; h2_se, h2_mc_se (K,);
    failures: the fits that did not converge; passes; method."""

    theta: np.ndarray
    h2_se: np.ndarray
    h2_mc_se: np.ndarray
    failures: list[str]
    passes: int
    method: str


def factor_reml(
    operator: GRMOperator, R: np.ndarray, M: np.ndarray, Lambda: np.ndarray, psi: np.ndarray, config: FitConfig
) -> FactorReml:
    """REML of each factor's GLS scores in shared passes, the noise removed (module docstring)."""
    n, K = R.shape[0], Lambda.shape[0]
    scores, noise, rows = gls_scores(R, M, Lambda, psi)
    view = None if len(rows) == n else rows
    fits = fit_reml_traits(operator, list(scores.T), [np.ones((len(rows), 1))] * K, [view] * K, config)
    failed = [(k, r) for k, r in enumerate(fits.results) if not isinstance(r, RemlResult)]
    if failed:
        k, exc = failed[0]
        raise InputError(f"the REML fit of factor {k + 1} failed: {exc}")
    results = [r for r in fits.results if isinstance(r, RemlResult)]
    theta, h2_se, h2_mc_se = [], [], []
    for k, r in enumerate(results):
        vp = r.theta.sum()
        raw = r.theta - np.eye(len(r.theta))[-1] * noise[:, k].mean()
        raw[-1] = max(raw[-1], 1e-3 * vp)
        s = raw.sum()
        theta.append(raw / s)
        h2 = raw[:-1].sum() / s
        # h2 = sum_g theta~_g / (sum theta~ - d): gradient (1 - h2) / s for g, -h2 / s for e
        grad = np.append(np.full(len(raw) - 1, (1 - h2) / s), -h2 / s)
        h2_se.append(float(np.sqrt(max(grad @ r.covariance @ grad, 0.0))))
        h2_mc_se.append(r.h2_total_mc_se * vp / s)
    failures = [f"factor {k + 1} REML: {r.status}" for k, r in enumerate(results) if not r.converged]
    return FactorReml(np.stack(theta), np.array(h2_se), np.array(h2_mc_se), failures, fits.passes, fits.method)


def fit_factor_model(
    operator: GRMOperator, Y: np.ndarray, X: np.ndarray | None = None, config: FactorConfig = FactorConfig(n_factors=1)
) -> FactorModelResult:
    """Fit Y = X B + F Lambda + E with K factors by EM with REML per factor (module docstring).

    Arguments:
        operator: a GRM operator over the n samples, with `traces()`.
        Y: traits, shape (n, T), NaN where a value is missing (at random).
        X: covariates, shape (n, p), the intercept included; None for an intercept only.
        config: `FactorConfig`; `config.reml.seed` the master seed (None: a fresh one).

    Returns:
        `FactorModelResult`; non-convergence is reported in `converged` / `status`, not raised.

    Raises:
        InputError: T = 0, K >= T, shapes, a trait with too few observed samples.
    """
    Y, X = _check(operator, Y, X, config.n_factors)
    tol = config.tol
    method, _ = choose_method(config.reml.method, Y.shape[0], operator.n_components)
    if method == "randomised" and tol < 10 * config.reml.pcg_tol:
        raise InputError(f"tol {tol:g} is below 10 x the REML PCG tolerance {config.reml.pcg_tol:g}: raise tol")
    seed = fresh_seed() if config.reml.seed is None else config.reml.seed
    config = dataclasses.replace(config, reml=dataclasses.replace(config.reml, seed=seed))
    t0 = time.perf_counter()
    genotypes, before = operator, operator.passes
    operator = working_operator(operator, method)
    R0, M, B0 = residualise_traits(Y, X)
    delta = np.zeros_like(B0)
    psi_min = config.psi_floor * (R0**2).sum(axis=0) / M.sum(axis=0)
    F0, Lambda = masked_pca(R0, M, config.n_factors, config.pca_iter)
    psi = np.maximum(((R0 - M * (F0 @ Lambda)) ** 2).sum(axis=0) / M.sum(axis=0), psi_min)
    reml = factor_reml(operator, R0, M, Lambda, psi, config.reml)
    theta = reml.theta  # (K, G + 1)
    logger.info(
        "factor model: %d traits, %d factors, %d samples; start h2 %s", Y.shape[1], config.n_factors, Y.shape[0], _fmt(theta)
    )
    coordinates = Coordinates.from_data(R0, M, X, psi_min, config.n_factors, theta.shape[1] - 1)
    history: list[dict] = []
    scale_R0 = float(np.linalg.norm(R0)) or 1.0

    def change(new: EmState, old: EmState) -> tuple[float, float, float]:
        """(d_Lambda, d_h2, d_B) from old to new (module docstring)."""
        d_lambda = _relative_change(new.Lambda, old.Lambda)
        d_h2 = float(np.abs(new.theta[:, :-1].sum(axis=1) - old.theta[:, :-1].sum(axis=1)).max())
        return d_lambda, d_h2, float(np.linalg.norm(M * (X @ (new.delta - old.delta)))) / scale_R0

    def evaluate(state: EmState, step: str) -> Evaluation:
        """F(state): the E-, M- and R-steps, the changes, one history entry."""
        R = M * (R0 - X @ state.delta)
        post = posterior(operator, R, M, *state[1:], tol=config.e_step_tol, max_iter=config.e_step_max_iter)
        new_delta, new_Lambda, psi = m_step(R0, M, X, post, psi_min)
        R = M * (R0 - X @ new_delta)
        reml = factor_reml(operator, R, M, new_Lambda, psi, config.reml)
        new = EmState(new_delta, new_Lambda, psi, reml.theta)
        d_lambda, d_h2, d_beta = change(new, state)
        d_genetic = _relative_change(_genetic_covariance(new.Lambda, new.theta), _genetic_covariance(state.Lambda, state.theta))
        failures = "; ".join([f"E-step: {post.status}"] * (post.status != "converged") + reml.failures)
        history.append(
            {
                "iteration": len(history) + 1,
                "h2": new.theta[:, :-1].sum(axis=1).tolist(),
                "d_lambda": d_lambda,
                "d_h2": d_h2,
                "d_genetic_covariance": d_genetic,
                "d_beta": d_beta,
                "remaining_lambda": None,
                "remaining_h2": None,
                "remaining_beta": None,
                "e_step_iterations": post.iterations,
                "e_step_residual": post.residual,
                "psi_mean": float(psi.mean()),
                "passes": int(genotypes.passes - before),
                "wall_s": time.perf_counter() - t0,
                **({"step": step} if config.accelerate else {}),
            }
        )
        logger.info(
            "factor EM %d (%s): h2 %s, d_Lambda %.2e, d_h2 %.2e, E-step %d PCG iterations, %d passes",
            len(history),
            step,
            _fmt(new.theta),
            d_lambda,
            d_h2,
            post.iterations,
            history[-1]["passes"],
        )
        return Evaluation(new, reml, (d_lambda, d_h2, d_beta), failures)

    def stops(changes: tuple[float, ...], previous: tuple[float, ...]) -> bool:
        """The stopping rule on two consecutive plain EM steps; fills in the last entry's D."""
        remaining = tuple(_remaining(d, d_prev) for d, d_prev in zip(changes, previous))
        history[-1].update(zip(("remaining_lambda", "remaining_h2", "remaining_beta"), remaining))
        return max(*changes, *remaining) < tol

    state = EmState(delta, Lambda, psi, theta)
    converged, failures = False, ""
    if not config.accelerate:
        previous: tuple[float, ...] | None = None
        for _ in range(config.max_iter):
            out = evaluate(state, "em")
            state, reml, failures = out.state, out.reml, out.failures
            done = previous is not None and stops(out.changes, previous)
            previous = out.changes
            if done:
                converged = not failures
                break
    else:
        step_max = STEP_MAX0
        last_x2: EmState | None = None
        last_cycle_changes: tuple[float, float, float] | None = None
        rates: list[tuple[float, ...]] = []
        while len(history) < config.max_iter:
            u0 = coordinates.vector(*state)
            first = evaluate(state, "em")
            state, reml, failures = first.state, first.reml, first.failures
            if len(history) == config.max_iter:
                break
            second = evaluate(state, "em")
            x1, state, reml, failures = state, second.state, second.reml, second.failures
            # the rule on the cycle's two plain steps and on the sequence of the cycles' x2
            plain_done = stops(second.changes, first.changes)
            cycle_changes = None if last_x2 is None else change(state, last_x2)
            cycle_remaining = None
            if cycle_changes is not None and last_cycle_changes is not None:
                cycle_remaining = tuple(_remaining(d, d_prev) for d, d_prev in zip(cycle_changes, last_cycle_changes))
            history[-1].update(
                cycle_change=None if cycle_changes is None else max(cycle_changes),
                cycle_remaining=None if cycle_remaining is None else max(cycle_remaining),
            )
            # the slow rate: the largest plain-pair rate below 1 in the last SLOW_RATE_WINDOW cycles
            rates.append(tuple(d / d_prev if d_prev > 0 else 0.0 for d, d_prev in zip(second.changes, first.changes)))
            slow = [max([r[q] for r in rates[-SLOW_RATE_WINDOW:] if r[q] < 1.0], default=0.0) for q in range(3)]
            slow_remaining = max(d * rho / (1.0 - rho) for d, rho in zip(second.changes, slow))
            history[-1].update(slow_remaining=slow_remaining)
            last_x2, last_cycle_changes = state, cycle_changes
            if plain_done and cycle_changes is not None and cycle_remaining is not None and slow_remaining < tol:
                if max(*cycle_changes, *cycle_remaining) < tol:
                    converged = not failures
                    break
            if len(history) == config.max_iter:
                break
            u1, u2 = coordinates.vector(*x1), coordinates.vector(*state)
            alpha, u = extrapolate(u0, u1, u2, step_max)
            *parameters, projected = coordinates.parameters(u)
            jump = state if alpha == -1.0 else EmState(*parameters)  # alpha = -1: u' = u2, three plain steps
            plain_residual = float(np.linalg.norm(u2 - u1))
            third: Evaluation | None = None
            try:
                third = evaluate(jump, "stabilise")
                residual = float(np.linalg.norm(coordinates.vector(*third.state) - coordinates.vector(*jump)))
                accepted = alpha == -1.0 or accepts(residual, plain_residual, third.failures)
            except (InputError, ValueError, np.linalg.LinAlgError) as exc:  # e.g. a factor's REML fit failed at x'
                logger.info("factor EM %d (stabilise) failed at the extrapolated point: %s", len(history) + 1, exc)
                history.append({"iteration": len(history) + 1, "step": "stabilise", "error": str(exc)})
                residual, accepted = float("nan"), False
            history[-1].update(
                alpha=alpha, projected=projected, residual=residual, plain_residual=plain_residual, accepted=bool(accepted)
            )
            step_max = next_step_max(step_max, alpha, bool(accepted))
            if accepted and third is not None:
                state, reml, failures = third.state, third.reml, third.failures
    delta, Lambda, psi, theta = state
    R = M * (R0 - X @ delta)
    # final posterior at the final parameters: the factors and BLUPs that go with them
    post = posterior(operator, R, M, Lambda, psi, theta, tol=config.e_step_tol, max_iter=config.e_step_max_iter)
    if post.status != "converged":
        failures = "; ".join(filter(None, [failures, f"final E-step: {post.status}"]))
        converged = False
    if converged:
        status = "converged"
    elif failures:
        status = failures
    else:
        entries = [h for h in history if "d_lambda" in h]  # not a stabilising step that raised
        last = next((h for h in reversed(entries) if h["remaining_lambda"] is not None), entries[-1])
        status = (
            f"no convergence in {config.max_iter} iterations (d_Lambda {last['d_lambda']:.2e}, d_h2 {last['d_h2']:.2e}, "
            f"d_B {last['d_beta']:.2e}, estimated remaining {last['remaining_lambda']}, {last['remaining_h2']}, "
            f"{last['remaining_beta']}; tol {tol:g}): raise --factor-max-iter"
        )
    sign = np.sign(Lambda[np.arange(Lambda.shape[0]), np.abs(Lambda).argmax(axis=1)])  # (K,)
    h2 = theta[:, :-1]
    return FactorModelResult(
        loadings=Lambda * sign[:, None],
        psi=psi,
        theta=theta,
        h2=h2,
        h2_total=h2.sum(axis=1),
        h2_se=reml.h2_se,
        h2_mc_se=reml.h2_mc_se,
        beta=B0 + delta,
        factors=post.factors * sign,
        factor_blups=post.blups * sign,
        weights=post.weights * sign,
        factor_covariance=post.C * np.outer(sign, sign),
        iterations=len(history),
        converged=converged,
        status=status,
        history=history,
        passes=int(genotypes.passes - before),
        method=reml.method,
        seed=seed,
        config=config,
    )


def working_operator(operator: GRMOperator, method: str) -> GRMOperator:
    """The operator the fit multiplies by: on the exact path, as `fit_reml_traits`, K_g read once
    (one pass of n columns) and every later product dense."""
    if method != "exact":
        return operator
    n = operator.shape[0]
    return DenseOperator(np.asarray(operator.matmat(np.eye(n)), dtype=np.float64), operator.component_names)


def _genetic_covariance(Lambda: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """The traits' genetic covariance Lambda^T diag(h2) Lambda, shape (T, T)."""
    return (Lambda.T * theta[:, :-1].sum(axis=1)) @ Lambda


def _relative_change(new: np.ndarray, old: np.ndarray) -> float:
    """||new - old||_F / ||new||_F (0 when both are 0, e.g. the genetic covariance with every h2 = 0)."""
    change, size = np.linalg.norm(new - old), np.linalg.norm(new)
    return float(change / size) if size > 0 else (0.0 if change == 0 else float("inf"))


def _remaining(d: float, d_previous: float) -> float:
    """D = d rho / (1 - rho), rho = d / d_previous: the remaining distance of a geometric tail."""
    if d == 0.0:
        return 0.0
    rho = d / d_previous if d_previous > 0 else np.inf
    return float(d * rho / (1.0 - rho)) if rho < 1.0 else float("inf")


def _fmt(theta: np.ndarray) -> str:
    return "[" + " ".join(f"{h:.3f}" for h in theta[:, :-1].sum(axis=1)) + "]"
