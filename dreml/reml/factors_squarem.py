"""SQUAREM for the factor model's EM (`dreml.reml.factors`, `FactorConfig.accelerate`).

Varadhan & Roland (2008, Scand. J. Stat. 35:335-353), scheme S3, with the step bounds of their
R package `SQUAREM` (step_min 1, step_max0 1, mstep 4). One cycle from the parameters x0, F the
EM map (E-, M- and R-step: `fit_factor_model`), u the coordinates below:

    x1 = F(x0),  x2 = F(x1),  r = u1 - u0,  v = u2 - 2 u1 + u0,
    alpha = -min(step_max, max(1, ||r|| / ||v||))                    (alpha <= -1)
    u'  = u0 - 2 alpha r + alpha^2 v,    x3 = F(x')                   (the stabilising step)

alpha = -1 gives u' = u2 (three plain EM steps). For a linear map with rate rho along the
slow direction, ||r|| / ||v|| = 1 / (1 - rho) and u' is that direction's fixed point: on the
rotation ridge (rho ~0.985) one cycle does what ~70 plain steps do.

Coordinates u (dimensionless, so that one norm weighs them; the same used for alpha and the
safeguard): delta_jt rms(x_j) / sd_t (the covariates' effects on the trait's scale), lambda_kt /
sd_t, log psi_t and the genetic components theta_gk (h2-type, in [0, 1]); sd_t the standard
deviation of trait t's observed residuals R0, rms(x_j) the root mean square of covariate j.
Back from u' to parameters (`parameters`): psi = exp(log psi) at least its floor psi_min
(the M-step's floor), theta_g at least 0 and theta_e = 1 - sum_g theta_g at least 1e-3 (step
(R)'s floor; theta_g scaled down to make room): a projection onto the parameter space, recorded
as `projected`; the stabilising step recomputes theta and psi from scratch, so the projected
values only enter its E-step.

Safeguard. The EM here is not monotone in a known likelihood (the second moments are
approximate, step (R) is REML on scores), so there is no objective to check, and the observed-
data likelihood would cost a log-determinant per cycle. The criterion is the residual of the
fixed-point map in the coordinates u, a blow-up guard rather than a monotonicity test: the
extrapolation is accepted when the E-step and every REML fit at x' converged, every value is
finite and ||F(x') - x'|| <= RESIDUAL_GROWTH ||F(x1) - x1|| = 10 ||u2 - u1||. (A successful
extrapolation along the slow direction may raise the residual: the fast directions are
scaled by alpha^2 in v; with the bound 1 instead of 10, 13 of 30 extrapolations were
rejected on the K = 1 test problem, 92 EM evaluations instead of 38, and on
benchmarks/factors.py --quick every one with |alpha| > 1 in 200 evaluations, with the R
package's step_max rule.) Otherwise, and when evaluating F(x') raised (e.g. a factor's REML
failed), the cycle falls back to the plain EM point x2 (F(x') is discarded) and step_max
becomes max(1, |alpha| / 4) (the package divides step_max by 4 only when alpha was at it; that
left runs of rejected steps just below it); an accepted cycle with alpha at step_max raises
step_max 4-fold. Each stabilising step's history entry records alpha, projected, residual,
plain_residual and accepted.

Stopping (`fit_factor_model`): three conditions, all after the cycle's second plain step.
(1) The plain rule (`dreml.reml.factors`) on the cycle's two plain steps x0 -> x1 -> x2. Right
after an extrapolation the slow direction has just been reduced, so this pair's rate reflects
the fast directions and its D underestimates the remaining distance; hence (2) the same rule on
the sequence of the cycles' x2 (the sequence the accelerated run produces, with its own rate),
and (3) D recomputed with the slow rate, for each of the three quantities the largest pair rate
below 1 in the last SLOW_RATE_WINDOW = 10 cycles: max(d rho* / (1 - rho*)) < tol. The fit
returns the x2 of the cycle that meets all three: a plain EM point. Measured limits: on a K = 2
problem (n = 60, T = 8, tests' `factor_traits`, seed 4) whose slow rate is ~0.999, a rate no
two-point estimate of this run saw, tol 1e-3 stopped after 41 evaluations 1.6e-3 in h2 and
8.6e-3 (relative) in Lambda from the fixed point (a tol 1e-6 run); tol 1e-5 stopped after
1,445 evaluations within 1.5e-6 and 7.9e-6. Without (3) tol 1e-5 stopped after 827 at 3.4e-5
in h2. The plain EM met neither tolerance within 1,000 and 1,500 iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THETA_E_FLOOR = 1e-3  # step (R)'s floor on theta_ek (relative to the factor's variance)
STEP_MAX0 = 1.0
MSTEP = 4.0
RESIDUAL_GROWTH = 10.0  # the safeguard's bound on ||F(x') - x'|| / ||F(x1) - x1|| (module docstring)


@dataclass(frozen=True)
class Coordinates:
    """The map between the EM's parameters and the coordinates u SQUAREM extrapolates in.

    Fields:
        x_scale: rms of each covariate over the samples, shape (p,) (1 where 0).
        y_scale: sd_t of each trait's observed residuals R0, shape (T,) (1 where 0).
        psi_min: the M-step's floor on psi, shape (T,).
        n_factors: K; n_genetic: G.
    """

    x_scale: np.ndarray
    y_scale: np.ndarray
    psi_min: np.ndarray
    n_factors: int
    n_genetic: int

    @classmethod
    def from_data(cls, R0: np.ndarray, M: np.ndarray, X: np.ndarray, psi_min: np.ndarray, n_factors: int, n_genetic: int):
        """Scales from the residualised traits R0 (n, T), the mask M (n, T) and the covariates X (n, p)."""
        x_scale = np.sqrt((X**2).mean(axis=0))
        y_scale = np.sqrt((R0**2).sum(axis=0) / M.sum(axis=0))
        return cls(np.where(x_scale > 0, x_scale, 1.0), np.where(y_scale > 0, y_scale, 1.0), psi_min, n_factors, n_genetic)

    def vector(self, delta: np.ndarray, Lambda: np.ndarray, psi: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """u from delta (p, T), Lambda (K, T), psi (T,), theta (K, G + 1), shape (pT + KT + T + KG,)."""
        return np.concatenate(
            [
                (delta * self.x_scale[:, None] / self.y_scale).ravel(),
                (Lambda / self.y_scale).ravel(),
                np.log(psi),
                theta[:, :-1].ravel(),
            ]
        )

    def parameters(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
        """(delta, Lambda, psi, theta, projected) from u, psi and theta projected onto their
        floors (module docstring); projected: whether any value was moved."""
        p, T, K, G = len(self.x_scale), len(self.y_scale), self.n_factors, self.n_genetic
        sizes = np.cumsum([p * T, K * T, T])
        a, b, c, d = np.split(u, sizes)
        delta = a.reshape(p, T) * self.y_scale / self.x_scale[:, None]
        Lambda = b.reshape(K, T) * self.y_scale
        raw_psi = np.exp(c)
        psi = np.maximum(raw_psi, self.psi_min)
        theta_g = np.maximum(d.reshape(K, G), 0.0)
        total = theta_g.sum(axis=1)
        room = 1.0 - THETA_E_FLOOR
        theta_g = np.where(total[:, None] > room, theta_g * room / np.where(total > 0, total, 1.0)[:, None], theta_g)
        theta = np.column_stack([theta_g, 1.0 - theta_g.sum(axis=1)])
        projected = bool((psi != raw_psi).any() or (theta_g != d.reshape(K, G)).any())
        return delta, Lambda, psi, theta, projected


def extrapolate(u0: np.ndarray, u1: np.ndarray, u2: np.ndarray, step_max: float) -> tuple[float, np.ndarray]:
    """The S3 step (module docstring): alpha <= -1 and u' = u0 - 2 alpha r + alpha^2 v."""
    r = u1 - u0
    v = u2 - 2.0 * u1 + u0
    norm_r, norm_v = float(np.linalg.norm(r)), float(np.linalg.norm(v))
    ratio = norm_r / norm_v if norm_v > 0 else np.inf
    alpha = -min(step_max, max(1.0, ratio))
    if alpha == -1.0:
        return alpha, u2  # u0 + 2 r + v = u2 exactly, without rounding
    return alpha, u0 - 2.0 * alpha * r + alpha**2 * v


def accepts(residual: float, plain_residual: float, failures: str) -> bool:
    """The safeguard (module docstring): F(x') computed without failures, its residual finite and
    at most RESIDUAL_GROWTH x the plain step's."""
    return not failures and bool(np.isfinite(residual)) and residual <= RESIDUAL_GROWTH * plain_residual


def next_step_max(step_max: float, alpha: float, accepted: bool) -> float:
    """step_max after a cycle (module docstring): x4 when an accepted step reached it; after a
    rejected step, |alpha| / 4, at least 1."""
    if not accepted:
        return max(STEP_MAX0, -alpha / MSTEP)
    return step_max * MSTEP if -alpha >= step_max else step_max
