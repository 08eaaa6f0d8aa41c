"""Top eigenpairs of a GRM by randomised block Krylov or subspace iteration, matrix-free (`dreml eigen`).

Notation as in `dreml.operators.protocol`; here K = sum_g w_g K_g (default w_g = m_g / sum_h m_h,
the GRM of all variants when the components are disjoint), k = `rank` eigenpairs wanted,
b = k + `oversampling` columns per block (one pass each), lambda_1 >= lambda_2 >= ... the
eigenvalues of K. Both methods start from Q_0 = orth(Omega), Omega an n x b standard Gaussian
matrix drawn from `numpy.random.default_rng(seed)`, and make ONE pass per iteration.

method = "krylov" (default; randomised block Krylov, Musco & Musco 2015; Halko, Martinsson &
Tropp 2011, sec. 4.5), block Lanczos with full reorthogonalisation. The basis keeps every block:

    Y_i = K Q_i                                   (one weighted `matmat`, the only pass)
    Q   = [Q_0 .. Q_i],  KQ = [Y_0 .. Y_i]        (c = (i + 1) b columns, orthonormal Q)
    B   = Q^T KQ (c x c, symmetrised), B = W Theta W^T   (Rayleigh-Ritz on span(Q), descending)
    U   = Q W,   K U = KQ W                       (Ritz vectors and their products: no pass)
    r_j = ||K u_j - theta_j u_j|| / theta_j       (relative residuals, exact and free)
    stop when r_j <= tol for j = 1..k, else
    Q_{i+1} = orth(Y_i - Q Q^T Y_i)               (projected twice, classical Gram-Schmidt; then a
                                                   pivoted QR drops columns that are numerically
                                                   dependent, below 1e-10 of Y_i's largest column)
If nothing new remains, span(Q) is invariant under K and the Ritz pairs are exact: stop.
B grows by one block row and column per iteration (Q^T Y_i, n c b flops) and only its top b
eigenpairs are computed. Driver memory: Q and KQ are 2 n c float64, c <= `max_basis`
(2 n max_basis 8 bytes: 640 MB at n = 20,000 and the default 2,000). When another block would
exceed it, the method restarts thickly: Q_0 = the top b Ritz vectors U, whose products K U = KQ W
are known, and the next block is orth(K U - U Theta) (the residuals span the continuation of
the Krylov space), so a restart costs no pass.

Why fewer passes: span(Q) after i passes holds p(K) Omega for every polynomial p of degree
< i + 1, and Rayleigh-Ritz picks the best of them; a Chebyshev polynomial separates lambda_j
from lambda_{b+1} with error falling like exp(-2 i sqrt(gap_j)) for the relative gap
gap_j = (lambda_j - lambda_{b+1}) / lambda_j, where subspace iteration (p = x^i only) gets
(lambda_{b+1} / lambda_j)^i ~ exp(-i gap_j). On the flat top of a GRM spectrum without
population structure (gaps of a few percent) that is sqrt(1/gap) times fewer passes: at
rank 20, n = 5,000, 18-25 passes (oversampling 40-10) where subspace iteration needed 89 at
oversampling 80 and over 300 at 10. A pass costs as in subspace iteration; the driver's algebra
(n c b per iteration, and eigh of the c x c matrix B) grows with c but stays small beside a
pass at these sizes.

method = "subspace" (Halko, Martinsson & Tropp 2011: randomised range finder, Alg. 4.1, with
subspace iteration, Alg. 4.4, and Rayleigh-Ritz, Alg. 5.3) keeps only the last block:

    Y   = K Q_{i-1};  B = Q^T Y (b x b) = W Theta W^T;  U = Q W,  K U = Y W;  residuals as above;
    stop when r_j <= tol for j = 1..k, else Q_i = orth(Y).

The subspace converges like (lambda_{b+1} / lambda_j)^i, eigenvalues like its square, hence
its large oversampling (80): more columns per pass, fewer passes where the spectrum is flat.

Why the residual bounds the error, for either method (K symmetric, u_j a unit vector,
theta_j its Rayleigh quotient, delta_j the distance from theta_j to every other eigenvalue of K):
    |lambda - theta_j| <= r_j theta_j                 for some eigenvalue lambda (Weyl / Bauer-Fike)
    |lambda - theta_j| <= (r_j theta_j)^2 / delta_j   (Kato-Temple: quadratic in the residual)
    sin angle(u_j, v_j) <= r_j theta_j / delta_j      (Davis-Kahan sin-theta theorem)
and theta_j <= lambda_j (Cauchy interlacing: Ritz values approach from below). So `tol` is a
bound on the relative eigenvalue error, and far smaller once the residual is below the gap;
the stopping rule, hence these bounds, are the same for both methods.

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
import scipy.linalg

from dreml.operators.protocol import GRMOperator, check_weights
from dreml.reml.config import fresh_seed

logger = logging.getLogger(__name__)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


KRYLOV_OVERSAMPLING = 20
METHODS = ("krylov", "subspace")
# default oversampling per method (EigenConfig.oversampling = None resolves to these)
DEFAULT_OVERSAMPLING = {"krylov": KRYLOV_OVERSAMPLING, "subspace": 80}


@dataclass(frozen=True)
class EigenConfig:
    """Settings of `top_eigenpairs`. Frozen; invalid values raise `ValueError` at construction.

    Arguments:
        rank: k, the number of leading eigenpairs wanted (at least 1).
        method: "krylov" (default: randomised block Krylov, every block kept) or "subspace"
            (subspace iteration, the last block only); module docstring.
        oversampling: extra columns per block beyond k; None (default) resolves to the
            method's default, and the resolved value is what `config` records.
            krylov: 20. Every block is kept, so the width matters less: at rank 20, n = 5,000,
            m = 50,000 (2 CPU workers, tol 1e-4) oversampling 10, 20 and 40 took 25, 22 and 18
            passes, 20.9, 18.2 and 17.1 s; on the n = 2,000 test cohort (rank 10, float32)
            oversampling 5, 10, 20, 40 took 15, 13, 11, 9 passes (subspace at 80: 17-18), its
            wall times too noisy on the shared machine to rank. 20: 6% behind 40 at n = 5,000
            with half its block, so a smaller driver basis (docs/performance.md, "Eigenvectors").
            subspace: 80, not Halko et al.'s usual 10: the subspace converges like
            (lambda_{k+oversampling+1} / lambda_j)^iterations, and a pass costs little more
            with 100 columns than with 30 (decoding the genotypes dominates; 0.74 s against
            0.57 s at n = 5,000, m = 50,000 on 2 CPU workers), while at rank 20 the passes fell
            from over 300 (oversampling 10) to 152 (40), 89 (80) and 69 (120): 80 was the
            fastest in the runs on a quiet machine (docs/performance.md, "Eigenvectors").
        tol: stop when every one of the k relative residuals ||K u_j - theta_j u_j|| / theta_j
            is at most this; it bounds the relative eigenvalue error (module docstring).
        max_iter: most iterations (= passes); reaching it gives converged = False.
        seed: seeds the Gaussian start block; None draws a fresh seed, recorded in the result.
        max_basis: krylov only: most basis columns kept (Q and K Q: 2 n max_basis float64 on
            the driver, 640 MB at n = 20,000); reaching it restarts from the top rank +
            oversampling Ritz vectors at no pass. At least 2 (rank + oversampling) unless
            that exceeds n (checked by `check_samples`); ignored by subspace.
    """

    rank: int
    oversampling: int | None = None
    tol: float = 1e-4
    max_iter: int = 300
    seed: int | None = None
    method: str = "krylov"
    max_basis: int = 2000

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {self.method!r}")
        if self.oversampling is None:
            object.__setattr__(self, "oversampling", DEFAULT_OVERSAMPLING[self.method])
        for name, least in (("rank", 1), ("oversampling", 0), ("max_iter", 1), ("max_basis", 2)):
            value = getattr(self, name)
            if not _is_int(value) or value < least:
                raise ValueError(f"{name} must be a whole number of at least {least}, got {value!r}")
        if not (isinstance(self.tol, (int, float)) and 0 < self.tol < 1):
            raise ValueError(f"tol must lie in (0, 1), got {self.tol!r}")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise ValueError(f"seed must be a non-negative whole number or None, got {self.seed!r}")

    @property
    def columns(self) -> int:
        """b = rank + oversampling, the width of every block (one pass each)."""
        assert self.oversampling is not None  # resolved in __post_init__
        return self.rank + self.oversampling

    def check_samples(self, n: int) -> None:
        """Raise `ValueError` unless 1 <= rank < n, rank + oversampling <= n and, for krylov,
        max_basis >= min(2 (rank + oversampling), n).

        rank = n would ask for every eigenpair, which a dense `numpy.linalg.eigh` computes
        more cheaply than any iteration; b > n columns cannot be orthonormal.
        """
        if self.rank >= n:
            raise ValueError(f"rank must be less than the number of samples ({n}), got {self.rank}")
        if self.columns > n:
            raise ValueError(
                f"rank + oversampling = {self.rank} + {self.oversampling} exceeds the number of samples ({n}): "
                f"lower oversampling to at most {n - self.rank}"
            )
        if self.method == "krylov" and self.max_basis < min(2 * self.columns, n):
            # a restart keeps one block and must leave room for the next
            raise ValueError(
                f"max_basis must be at least 2 (rank + oversampling) = {2 * self.columns} for method 'krylov', "
                f"got {self.max_basis}"
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
        iterations: iterations made (each one pass).
        passes: passes over the genotypes, counted by the operator.
        converged: every residual is at most `config.tol`; `status` says why not.
        status: "converged" or what to change.
        seed: the seed of the start block (also in `config`).
        config: the `EigenConfig` used.
        history: per iteration, the largest of the k relative residuals.
        restarts: thick restarts made (krylov at max_basis; 0 for subspace).
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
    restarts: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Every field but `eigenvectors` (n x k: written to the .eigenvec file) as strict JSON
        types: an infinite residual becomes None (JSON has no infinity)."""
        return {
            "eigenvalues": self.eigenvalues.tolist(),
            "residuals": _finite_or_none(self.residuals),
            "weights": dict(zip(self.component_names, self.weights.tolist())),
            "iterations": self.iterations,
            "passes": self.passes,
            "converged": self.converged,
            "status": self.status,
            "seed": self.seed,
            "config": self.config.to_dict(),
            "history": _finite_or_none(np.array(self.history)),
            "timings": dict(self.timings),
            "restarts": self.restarts,
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
    method: str = EigenConfig.method,
    oversampling: int | None = None,
    tol: float = EigenConfig.tol,
    max_iter: int = EigenConfig.max_iter,
    seed: int | None = None,
    max_basis: int = EigenConfig.max_basis,
) -> EigenResult:
    """The `rank` leading eigenpairs of K = sum_g w_g K_g, one pass per iteration.

    Arguments:
        operator: any GRM operator (its `matmat(V, weights=w)` is the only access to K).
        rank: k, eigenpairs wanted; 1 <= k < n.
        weights: w_g, shape (G,); default `genome_weights(operator)` (all variants). A
            one-hot vector selects one K_g.
        method, oversampling, tol, max_iter, seed, max_basis: see `EigenConfig`.

    Returns:
        `EigenResult`. Not reaching `tol` within `max_iter` is reported in `converged` and
        `status` (with the residuals reached), not raised.

    Raises:
        ValueError: invalid settings, rank >= n, rank + oversampling > n, or bad weights.
    """
    config = EigenConfig(
        rank=rank, oversampling=oversampling, tol=tol, max_iter=max_iter, seed=seed, method=method, max_basis=max_basis
    )
    if config.seed is None:
        config = dataclasses.replace(config, seed=fresh_seed())
    seed = config.seed
    assert seed is not None
    n = operator.shape[0]
    config.check_samples(n)
    w = check_weights(weights, operator.n_components)  # None for None
    if w is None:
        w = genome_weights(operator)
    t0 = time.perf_counter()
    passes0 = operator.passes
    rng = np.random.default_rng(seed)
    Q0, _ = np.linalg.qr(rng.standard_normal((n, config.columns)))
    iterate = _krylov if config.method == "krylov" else _subspace
    theta, U, relative, history, restarts, status = iterate(operator, w, Q0, config)
    seconds = time.perf_counter() - t0
    k = config.rank
    return EigenResult(
        eigenvalues=theta[:k],
        eigenvectors=_fix_signs(U[:, :k]),
        residuals=relative,
        weights=w,
        component_names=tuple(operator.component_names),
        iterations=len(history),
        passes=operator.passes - passes0,
        converged=status == "converged",
        status=status,
        seed=seed,
        config=config,
        history=tuple(history),
        timings={"iterations": seconds},
        restarts=restarts,
    )


def _log(config: EigenConfig, iteration: int, relative: np.ndarray, extra: str = "") -> None:
    logger.info(
        "eigen %s iteration %d: max relative residual %.3g (%d of %d below %.3g)%s",
        config.method,
        iteration,
        float(relative.max()),
        int(np.sum(relative <= config.tol)),
        config.rank,
        config.tol,
        extra,
    )


def _not_converged(config: EigenConfig, history: list[float], relative: np.ndarray) -> str:
    worst = int(np.argmax(relative))
    return (
        f"not converged: after max_iter = {config.max_iter} iterations the largest relative residual is "
        f"{history[-1]:.3g} (eigenpair {worst + 1}) > tol = {config.tol:g}; raise max_iter or "
        f"oversampling, or accept the residuals reported"
    )


def _subspace(operator: GRMOperator, w: np.ndarray, Q: np.ndarray, config: EigenConfig):
    """Subspace iteration (module docstring): Q = orth(K Q) each pass, Rayleigh-Ritz on the last block."""
    k = config.rank
    history: list[float] = []
    status = ""
    for iteration in range(1, config.max_iter + 1):
        Y = np.asarray(operator.matmat(Q, weights=w), dtype=np.float64)
        theta, U, residual = _rayleigh_ritz(Q, Y)
        relative = _relative(residual[:k], theta[:k])
        history.append(float(relative.max()))
        _log(config, iteration, relative)
        if history[-1] <= config.tol:
            status = "converged"
            break
        Q, _ = np.linalg.qr(Y)
    else:
        status = _not_converged(config, history, relative)
    return theta, U, relative, history, 0, status


# a projected column whose norm is below this fraction of the block's largest column is
# numerically in span(Q) and dropped (float64 rounding of the projections is ~1e-16 c)
_DEPENDENT = 1e-10


def _new_block(Q: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Orthonormal columns spanning (I - Q Q^T) Y, orthogonal to Q to rounding; numerically
    dependent columns dropped (shape (n, 0) when nothing new remains).

    Classical Gram-Schmidt twice ("twice is enough", Giraud et al. 2005), then a pivoted QR
    reveals the rank; the kept columns are projected and orthonormalised once more, so the
    basis stays orthonormal even where a column lost most of its norm to the projection.
    """
    scale = float(np.max(np.linalg.norm(Y, axis=0))) if Y.size else 0.0
    if scale == 0.0:
        return Y[:, :0]
    P = Y - Q @ (Q.T @ Y)
    P -= Q @ (Q.T @ P)
    V, R, _ = scipy.linalg.qr(P, mode="economic", pivoting=True)
    keep = int(np.sum(np.abs(np.diag(R)) > _DEPENDENT * scale))
    if keep == 0:
        return Y[:, :0]
    V = V[:, :keep]
    V -= Q @ (Q.T @ V)
    V, _ = np.linalg.qr(V)
    return V


def _krylov(operator: GRMOperator, w: np.ndarray, Q0: np.ndarray, config: EigenConfig):
    """Randomised block Krylov with full reorthogonalisation and thick restarts (module docstring)."""
    n, b = Q0.shape
    k = config.rank
    cap = min(config.max_basis, n)
    Q = np.empty((n, cap))  # orthonormal basis [Q_0 .. Q_i]
    KQ = np.empty((n, cap))  # its products [Y_0 .. Y_i]
    B = np.empty((cap, cap))  # Q^T K Q, grown one block at a time
    history: list[float] = []
    restarts = 0
    c = 0  # columns in the basis
    block = Q0  # next block to apply K to
    status = ""
    for iteration in range(1, config.max_iter + 1):
        Y = np.asarray(operator.matmat(block, weights=w), dtype=np.float64)
        r = block.shape[1]
        Q[:, c : c + r], KQ[:, c : c + r] = block, Y
        cross = Q[:, : c + r].T @ Y  # (c + r) x r: the new block column of B
        B[: c + r, c : c + r] = cross
        B[c : c + r, :c] = cross[:c].T
        B[c : c + r, c : c + r] = (cross[c:] + cross[c:].T) / 2  # symmetrised: Y carries the workers' rounding
        c += r
        # top b Ritz pairs of K on span(Q) (all c when c <= b)
        top = min(b, c)
        theta, W = scipy.linalg.eigh(B[:c, :c], subset_by_index=(c - top, c - 1), check_finite=False)
        theta, W = theta[::-1], W[:, ::-1]
        U = Q[:, :c] @ W
        KU = KQ[:, :c] @ W
        residual = np.linalg.norm(KU[:, :k] - U[:, :k] * theta[:k], axis=0)
        relative = _relative(residual, theta[:k])
        history.append(float(relative.max()))
        _log(config, iteration, relative, f"; basis {c} columns")
        if history[-1] <= config.tol:
            status = "converged"
            break
        if iteration == config.max_iter:
            status = _not_converged(config, history, relative)
            break
        candidate = Y
        if c + b > cap and c > top:
            # thick restart: the top b Ritz vectors and their known products; the residuals
            # K U - U Theta span the continuation of the Krylov space (no pass)
            restarts += 1
            logger.info(
                "eigen krylov: basis at %d of max_basis = %d columns, restart %d from the top %d Ritz vectors",
                c,
                cap,
                restarts,
                top,
            )
            Q[:, :top], KQ[:, :top] = U, KU
            B[:top, :top] = np.diag(theta)
            c = top
            candidate = KU - U * theta
        block = _new_block(Q[:, :c], candidate)[:, : cap - c]
        if block.shape[1] == 0:
            # span(Q) is invariant under K: the Ritz pairs are exact to rounding
            status = (
                f"not converged: the Krylov space became invariant (basis {c} columns) with largest "
                f"relative residual {history[-1]:.3g} > tol = {config.tol:g}, the rounding floor of the "
                f"products; raise tol or use --worker-dtype float64"
            )
            break
    return theta, U, relative, history, restarts, status
