"""Top eigenpairs of a GRM by randomised subspace iteration, matrix-free (`dreml eigen`).

Notation as in `dreml.operators.protocol`; here K = sum_g w_g K_g (default w_g = m_g / sum_h m_h,
the GRM of all variants when the components are disjoint), k = `rank` eigenpairs wanted,
l = k + `oversampling` columns carried, lambda_1 >= lambda_2 >= ... the eigenvalues of K.

Algorithm (Halko, Martinsson & Tropp 2011: randomised range finder, Alg. 4.1, with subspace
iteration, Alg. 4.4, and Rayleigh-Ritz, Alg. 5.3). Q_0 = orth(Omega), Omega an n x l standard
Gaussian matrix drawn from `numpy.random.default_rng(seed)`. Iteration i is ONE pass:

    Y   = K Q_{i-1}                              (one weighted `matmat`, the only pass)
    B   = Q^T Y  (l x l),  B = W Theta W^T       (Rayleigh-Ritz on span(Q); eigh, descending)
    U   = Q W,   K U = Y W                       (Ritz vectors and their products: no pass)
    r_j = ||K u_j - theta_j u_j|| / theta_j      (relative residuals, for free)
    stop when r_j <= tol for j = 1..k, else Q_i = orth(Y).

Why the residual bounds the error (K symmetric, u_j a unit vector, theta_j its Rayleigh
quotient, delta_j the distance from theta_j to every other eigenvalue of K):
    |lambda - theta_j| <= r_j theta_j                 for some eigenvalue lambda (Weyl / Bauer-Fike)
    |lambda - theta_j| <= (r_j theta_j)^2 / delta_j   (Kato-Temple: quadratic in the residual)
    sin angle(u_j, v_j) <= r_j theta_j / delta_j      (Davis-Kahan sin-theta theorem)
and theta_j <= lambda_j (Cauchy interlacing: Ritz values approach from below). So `tol` is a
bound on the relative eigenvalue error, and far smaller once the residual is below the gap.
The subspace converges like (lambda_{l+1} / lambda_j)^i, eigenvalues like its square, hence
oversampling: more columns per pass, fewer passes where the spectrum decays slowly.

Precision: the residual is computed from products K Q made in the worker dtype; float32
workers leave an error of about 1e-7 ||K|| in every product, which floors the attainable
relative residual near 1e-6 (docs/cli.md, `dreml eigen`). Everything on the driver is float64.

Eigenvalues are those of K itself (the scale GCTA's `--pca` writes to .eigenval); eigenvectors
have unit norm, and each is signed so that its entry of largest magnitude is positive (a
fixed convention, so reruns with the same seed give the same file).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from dreml.operators.protocol import GRMOperator, check_weights
from dreml.reml.config import fresh_seed

logger = logging.getLogger(__name__)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class EigenConfig:
    """Settings of `top_eigenpairs`. Frozen; invalid values raise `ValueError` at construction.

    Arguments:
        rank: k, the number of leading eigenpairs wanted (at least 1).
        oversampling: extra columns carried beyond k; the subspace converges like
            (lambda_{k+oversampling+1} / lambda_j)^iterations, so more columns cost more per
            pass and save passes where the top of the spectrum is flat, as it is in cohorts
            without strong structure. 80, not Halko et al.'s usual 10: a pass costs little
            more with 100 columns than with 30 (decoding the genotypes dominates; 0.74 s
            against 0.57 s at n = 5,000, m = 50,000 on 2 CPU workers), while at rank 20 the
            passes fell from over 300 (oversampling 10) to 152 (40), 89 (80) and 69 (120):
            80 was the fastest in the runs on a quiet machine (docs/performance.md, "Eigenvectors").
        tol: stop when every one of the k relative residuals ||K u_j - theta_j u_j|| / theta_j
            is at most this; it bounds the relative eigenvalue error (module docstring).
        max_iter: most iterations (= passes); reaching it gives converged = False.
        seed: seeds the Gaussian start block; None draws a fresh seed, recorded in the result.
    """

    rank: int
    oversampling: int = 80
    tol: float = 1e-4
    max_iter: int = 300
    seed: int | None = None

    def __post_init__(self) -> None:
        for name, least in (("rank", 1), ("oversampling", 0), ("max_iter", 1)):
            value = getattr(self, name)
            if not _is_int(value) or value < least:
                raise ValueError(f"{name} must be a whole number of at least {least}, got {value!r}")
        if not (isinstance(self.tol, (int, float)) and 0 < self.tol < 1):
            raise ValueError(f"tol must lie in (0, 1), got {self.tol!r}")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise ValueError(f"seed must be a non-negative whole number or None, got {self.seed!r}")

    @property
    def columns(self) -> int:
        """l = rank + oversampling, the width of every block."""
        return self.rank + self.oversampling

    def check_samples(self, n: int) -> None:
        """Raise `ValueError` unless 1 <= rank < n and rank + oversampling <= n.

        rank = n would ask for every eigenpair, which a dense `numpy.linalg.eigh` computes
        more cheaply than any iteration; l > n columns cannot be orthonormal.
        """
        if self.rank >= n:
            raise ValueError(f"rank must be less than the number of samples ({n}), got {self.rank}")
        if self.columns > n:
            raise ValueError(
                f"rank + oversampling = {self.rank} + {self.oversampling} exceeds the number of samples ({n}): "
                f"lower oversampling to at most {n - self.rank}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dictionary."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EigenResult:
    """Result of `top_eigenpairs`.

    Fields:
        eigenvalues: theta_1 >= .. >= theta_k, eigenvalues of K itself, shape (k,).
        eigenvectors: unit-norm u_j as columns, signed so the largest-magnitude entry is
            positive, shape (n, k).
        residuals: relative residuals ||K u_j - theta_j u_j|| / theta_j, shape (k,) (inf
            where theta_j <= 0: K then has rank below k).
        weights: w_g of K = sum_g w_g K_g, shape (G,).
        component_names: the operator's components, in the order of `weights`.
        iterations: subspace iterations made (each one pass).
        passes: passes over the genotypes, counted by the operator.
        converged: every residual is at most `config.tol`; `status` says why not.
        status: "converged" or what to change.
        seed: the seed of the start block (also in `config`).
        config: the `EigenConfig` used.
        history: per iteration, the largest of the k relative residuals.
        timings: seconds, "iterations" (the passes and the driver's algebra).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    residuals: np.ndarray
    weights: np.ndarray
    component_names: tuple[str, ...]
    iterations: int
    passes: int
    converged: bool
    status: str
    seed: int
    config: EigenConfig
    history: tuple[float, ...]
    timings: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """Every field but `eigenvectors` (n x k: written to the .eigenvec file) as strict JSON
        types: an infinite residual becomes None (JSON has no infinity)."""
        return {
            "eigenvalues": self.eigenvalues.tolist(), "residuals": _finite_or_none(self.residuals),
            "weights": dict(zip(self.component_names, self.weights.tolist())),
            "iterations": self.iterations, "passes": self.passes, "converged": self.converged,
            "status": self.status, "seed": self.seed, "config": self.config.to_dict(),
            "history": _finite_or_none(np.array(self.history)), "timings": dict(self.timings),
        }


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    return [float(x) if np.isfinite(x) else None for x in values]


def genome_weights(operator: GRMOperator) -> np.ndarray:
    """w_g = m_g / sum_h m_h: K = sum_g w_g K_g is the GRM of all the operator's variants.

    Operators without `m` (a `DenseOperator`) must hold a single component (w = 1).
    """
    m = getattr(operator, "m", None)
    if m is None:
        if operator.n_components != 1:
            raise ValueError("the operator does not report m_g: pass weights for its components")
        return np.ones(1)
    m = np.asarray(m, dtype=np.float64)
    return m / m.sum()


def _rayleigh_ritz(Q: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ritz values, Ritz vectors and residual norms of K on span(Q), given Y = K Q.

    Arguments:
        Q: orthonormal basis, shape (n, l).
        Y: K Q, shape (n, l).

    Returns:
        theta (l,) descending, U = Q W (n, l), and ||K u_j - theta_j u_j|| (l,).
    """
    B = Q.T @ Y
    theta, W = np.linalg.eigh((B + B.T) / 2)  # symmetrised: Y carries the workers' rounding
    order = np.argsort(theta)[::-1]
    theta, W = theta[order], W[:, order]
    U = Q @ W
    residual = np.linalg.norm(Y @ W - U * theta, axis=0)
    return theta, U, residual


def _relative(residual: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """r_j / theta_j, inf where theta_j <= 0 (K is positive semi-definite: no relative accuracy there)."""
    out = np.full_like(residual, np.inf)
    np.divide(residual, theta, out=out, where=theta > 0)
    return out


def _fix_signs(U: np.ndarray) -> np.ndarray:
    """Each column signed so that its entry of largest magnitude is positive."""
    rows = np.argmax(np.abs(U), axis=0)
    return U * np.sign(U[rows, np.arange(U.shape[1])])


def top_eigenpairs(
    operator: GRMOperator,
    rank: int,
    *,
    weights: np.ndarray | None = None,
    oversampling: int = EigenConfig.oversampling,
    tol: float = EigenConfig.tol,
    max_iter: int = EigenConfig.max_iter,
    seed: int | None = None,
) -> EigenResult:
    """The `rank` leading eigenpairs of K = sum_g w_g K_g, one pass per iteration.

    Arguments:
        operator: any GRM operator (its `matmat(V, weights=w)` is the only access to K).
        rank: k, eigenpairs wanted; 1 <= k < n.
        weights: w_g, shape (G,); default `genome_weights(operator)` (all variants). A
            one-hot vector selects one K_g.
        oversampling, tol, max_iter, seed: see `EigenConfig`.

    Returns:
        `EigenResult`. Not reaching `tol` within `max_iter` is reported in `converged` and
        `status` (with the residuals reached), not raised.

    Raises:
        ValueError: invalid settings, rank >= n, rank + oversampling > n, or bad weights.
    """
    config = EigenConfig(rank=rank, oversampling=oversampling, tol=tol, max_iter=max_iter, seed=seed)
    if config.seed is None:
        config = dataclasses.replace(config, seed=fresh_seed())
    n = operator.shape[0]
    config.check_samples(n)
    w = genome_weights(operator) if weights is None else check_weights(weights, operator.n_components)
    t0 = time.perf_counter()
    passes0 = operator.passes
    rng = np.random.default_rng(config.seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, config.columns)))
    history: list[float] = []
    k = config.rank
    for iteration in range(1, config.max_iter + 1):
        Y = np.asarray(operator.matmat(Q, weights=w), dtype=np.float64)
        theta, U, residual = _rayleigh_ritz(Q, Y)
        relative = _relative(residual[:k], theta[:k])
        history.append(float(relative.max()))
        logger.info("eigen iteration %d: max relative residual %.3g (%d of %d below %.3g)",
                    iteration, history[-1], int(np.sum(relative <= config.tol)), k, config.tol)
        if history[-1] <= config.tol:
            status = "converged"
            break
        Q, _ = np.linalg.qr(Y)
    else:
        worst = int(np.argmax(relative))
        status = (
            f"not converged: after max_iter = {config.max_iter} iterations the largest relative residual is "
            f"{history[-1]:.3g} (eigenpair {worst + 1}) > tol = {config.tol:g}; raise max_iter or "
            f"oversampling, or accept the residuals reported"
        )
    seconds = time.perf_counter() - t0
    return EigenResult(
        eigenvalues=theta[:k], eigenvectors=_fix_signs(U[:, :k]), residuals=relative, weights=w,
        component_names=tuple(operator.component_names), iterations=iteration,
        passes=operator.passes - passes0, converged=status == "converged", status=status, seed=config.seed,
        config=config, history=tuple(history), timings={"iterations": seconds},
    )
