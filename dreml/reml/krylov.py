"""One Lanczos run of K per probe serves every shifted system theta_e I + theta_g K (G = 1).

With one genetic component H(theta) = theta_e I + theta_g K, and the Krylov space of K started
at a probe w is that of H(theta) for every theta: one Lanczos run per probe serves every
theta the optimizer visits and, for traits observed on the same samples, every trait (the
shift invariance behind multi-shift CG; Frommer 2003). After j steps from v_1 = w / ||w||,
    K V_j = V_j T_j + beta_j v_{j+1} e_j^T,   T_j = tridiag(beta_1..beta_{j-1}; alpha_1..alpha_j),
and the CG (Galerkin) solution of H x = w is x_j = ||w|| V_j S_j^-1 e_1 with
S_j = theta_e I + theta_g T_j, so, with no n-vector formed per theta,
    w^T x_j         = ||w||^2 e_1^T S_j^-1 e_1         (Gauss quadrature of w^T H^-1 w)
    (K w)^T x_j     = ||w||^2 e_1^T T_j S_j^-1 e_1      (K w = ||w|| (alpha_1 v_1 + beta_1 v_2))
    ||w - H x_j|| / ||w|| = |theta_g| beta_j |e_j^T S_j^-1 e_1|     (CG's residual at this theta)
    w^T log(H) w    ~ ||w||^2 e_1^T log(S_j) e_1        (stochastic Lanczos quadrature)
Every step's residual follows from the LDL^T pivots of S_j, d_1 = s_1 and
d_{i+1} = s_{i+1} - (theta_g beta_i)^2 / d_i with s_i = theta_e + theta_g alpha_i:
    e_j^T S_j^-1 e_1 = prod_{i<j} (-theta_g beta_i) / prod_{i<=j} d_i;
S_j is positive definite iff every d_i > 0 (Sylvester), so a non-positive pivot proves
H(theta) indefinite (a Ritz value theta_e + theta_g lambda <= 0), as PCG's breakdown does.

Each probe uses the fewest steps at which its residual at theta is at most `tol`: a
quadrature depends on theta and the probes only, not on how far other thetas (other traits'
fits, in other threads) have extended the run, so fits are reproducible whatever the order in
which their threads ask. The run is extended lazily, one pass of the B probe columns per step,
under a lock, by whichever fit first needs more steps. There is no reorthogonalisation: in
floating point the lost orthogonality delays the quadratures' convergence (the residual
estimate stays the stopping rule) without biasing them (Golub & Meurant 2010, Sec. 4.4;
Ubaru, Chen & Saad 2017). No preconditioner either: it would have to be a function of K
alone to keep the shift invariance (the default fit runs without one as well).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh_tridiagonal

from dreml.operators.protocol import GRMOperator
from dreml.reml.evaluation import IndefiniteError


@dataclass(frozen=True)
class Quadrature:
    """The probes' quadratic forms at one theta.

    Fields:
        steps: Lanczos steps each probe used, shape (B,).
        wHw: w_b^T H^-1 w_b, shape (B,).
        KwHw: (K w_b)^T H^-1 w_b, shape (B,).
        converged: whether every probe reached the tolerance (else the run hit its step limit).
        residual: the largest relative residual of the probes.
    """

    steps: np.ndarray
    wHw: np.ndarray
    KwHw: np.ndarray
    converged: bool
    residual: float


class LanczosProbes:
    """Lanczos runs of one G = 1 operator from the probe columns W, extended on demand.

    Arguments:
        operator: the operator (one component), over the probes' samples.
        W: probes, shape (n, B), no zero column.
        KW: K W, shape (n, B) (from the caller's set-up pass: the first step costs no pass).
        max_steps: the most steps (passes) the run may take.
        lock: serialises the extensions of every run on the same genotypes (the passes are
            made from whichever fit's thread needs them).
    """

    def __init__(self, operator: GRMOperator, W: np.ndarray, KW: np.ndarray, max_steps: int, lock: threading.Lock) -> None:
        if operator.n_components != 1:
            raise ValueError(f"Lanczos probes serve one genetic component, the operator has {operator.n_components}")
        self.op, self.max_steps, self._lock = operator, max_steps, lock
        self.norm2 = np.einsum("nb,nb->b", W, W)
        norm = np.sqrt(self.norm2)
        self._v_prev = np.zeros_like(W)
        self._v = W / norm
        self._alpha: list[np.ndarray] = []
        self._beta: list[np.ndarray] = []
        self._scale = 0.0
        self.passes = 0
        self._advance(KW / norm)

    @property
    def steps(self) -> int:
        """Lanczos steps taken so far."""
        return len(self._alpha)

    def _advance(self, Kv: np.ndarray) -> None:
        """One three-term step from K v_j; a column whose next vector vanishes stops (its
        Krylov space is invariant: beta = 0 makes every later quadrature exact)."""
        alpha = np.einsum("nb,nb->b", self._v, Kv)
        w = Kv - alpha * self._v - (self._beta[-1] if self._beta else 0.0) * self._v_prev
        beta = np.linalg.norm(w, axis=0)
        self._scale = max(self._scale, float(np.abs(alpha).max()))
        beta = np.where(beta > 1e-12 * self._scale, beta, 0.0)
        self._alpha.append(alpha)
        self._beta.append(beta)
        self._v_prev, self._v = self._v, np.divide(w, beta, out=np.zeros_like(w), where=beta > 0)

    def _extend(self) -> None:
        Kv = np.asarray(self.op.matmat(self._v, weights=np.ones(1)), dtype=np.float64)
        self.passes += 1
        self._advance(Kv)

    def _coefficients(self, theta: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(alpha, beta) of shape (J, B) with J enough steps for every probe at theta (or the
        step limit), and the steps each probe needs (J where it never reaches tol).

        Raises:
            IndefiniteError: a pivot of S_j is not positive before the probe's tolerance.
        """
        with self._lock:
            while True:
                alpha, beta = np.array(self._alpha), np.array(self._beta)
                d, _ = _pivots(theta, alpha, beta)
                ok = _residuals(theta, alpha, beta, d) <= tol
                needed = np.where(ok.any(axis=0), ok.argmax(axis=0) + 1, len(alpha) + 1)
                # a non-positive pivot before a probe converged proves H indefinite: stop there
                used = np.arange(len(alpha))[:, None] < np.minimum(needed, len(alpha))[None, :]
                if (d[used] <= 0).any():
                    raise IndefiniteError(f"H(theta) is not positive definite at theta = {theta}: a Lanczos Ritz value is <= 0")
                if (needed <= len(alpha)).all() or len(alpha) >= self.max_steps:
                    return alpha, beta, np.minimum(needed, len(alpha))
                self._extend()

    def quadrature(self, theta: np.ndarray, tol: float) -> Quadrature:
        """w^T H^-1 w and (K w)^T H^-1 w per probe at theta = (theta_g, theta_e).

        Raises:
            IndefiniteError: a pivot of S_j is not positive: H(theta) is not positive definite.
        """
        alpha, beta, steps = self._coefficients(theta, tol)
        d, offdiag = _pivots(theta, alpha, beta)
        B = alpha.shape[1]
        used = np.arange(alpha.shape[0])[:, None] < steps[None, :]
        # S_j z = e_1 per probe, j = its own steps: L D L^T with L_{i+1,i} = offdiag_i / d_i
        ell = offdiag / d[:-1] if len(d) > 1 else np.zeros((0, B))
        u = np.ones((len(d), B))
        for i in range(1, len(d)):
            u[i] = -ell[i - 1] * u[i - 1]
        z = np.zeros((len(d) + 1, B))
        for i in range(len(d) - 1, -1, -1):
            z[i] = np.where(used[i], u[i] / d[i] - (ell[i] * z[i + 1] if i < len(ell) else 0.0), 0.0)
        second = beta[0] * z[1]
        residual = _residuals(theta, alpha, beta, d)[np.maximum(steps - 1, 0), np.arange(B)]
        return Quadrature(
            steps=steps,
            wHw=self.norm2 * z[0],
            KwHw=self.norm2 * (alpha[0] * z[0] + second),
            converged=bool((residual <= tol).all()),
            residual=float(residual.max(initial=0.0)),
        )

    def log_forms(self, theta: np.ndarray, tol: float) -> np.ndarray:
        """w_b^T log(H) w_b per probe by Lanczos quadrature (steps as for `quadrature`), shape (B,)."""
        alpha, beta, steps = self._coefficients(theta, tol)
        out = np.empty(alpha.shape[1])
        for b, J in enumerate(steps):
            lam, vecs = eigh_tridiagonal(alpha[:J, b], beta[: J - 1, b])
            shifted = theta[1] + theta[0] * lam
            if (shifted <= 0).any():
                raise IndefiniteError(f"H(theta) is not positive definite at theta = {theta}: a Lanczos Ritz value is <= 0")
            out[b] = self.norm2[b] * float(np.sum(vecs[0] ** 2 * np.log(shifted)))
        return out


def _pivots(theta: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The LDL^T pivots d (J, B) of S_J = theta_e I + theta_g T_J, and its off-diagonal (J - 1, B)."""
    g, e = float(theta[0]), float(theta[1])
    s = e + g * alpha
    offdiag = g * beta[:-1]
    d = np.empty_like(s)
    d[0] = s[0]
    for i in range(1, len(s)):
        d[i] = s[i] - offdiag[i - 1] ** 2 / np.where(d[i - 1] != 0, d[i - 1], np.inf)
    return d, offdiag


def _residuals(theta: np.ndarray, alpha: np.ndarray, beta: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Relative residual |theta_g| beta_j |e_j^T S_j^-1 e_1| after each step j, shape (J, B)."""
    g = abs(float(theta[0]))
    if g == 0:
        return np.zeros_like(alpha)
    with np.errstate(divide="ignore"):
        log_off = np.log(g * beta)  # -inf where a column stopped
        log_d = np.log(np.abs(d))
    # log |e_j^T S_j^-1 e_1| = sum_{i<j} log|theta_g beta_i| - sum_{i<=j} log|d_i|
    log_last = np.vstack([np.zeros((1, alpha.shape[1])), np.cumsum(log_off[:-1], axis=0)]) - np.cumsum(log_d, axis=0)
    return np.exp(log_off + log_last)
