"""Sparse REML: the lambda path of the weighted LASSO alternated with REML, and its selection.

Model: y = X beta + Z_S b + sum_g u_g + e, u_g ~ N(0, theta_g K_g), e ~ N(0, theta_e I), with a
weighted L1 penalty lambda sum_j w_j |b_j| on the penalised variants S.

Path: lambda_k = lambda_max r^(k / (N - 1)), k = 0..N-1, with lambda_max = max_j |z_j^T P y| / w_j
(the smallest lambda with b = 0, at the null model's theta) and r = `lambda_min_ratio`. Each
lambda is warm-started from the previous one (b and the working set). By default theta stays
at the null model's REML fit (LMM-Lasso, Rakitsch et al. 2013: one REML fit in all).
`reml_rounds` > 0 alternates at each lambda:

    repeat at most `reml_rounds` times:
        b     <- LASSO at theta (`dreml.lasso.solver`)
        theta <- REML of y - Z_S b on X (the engine, started at the current theta)
    until theta moves by less than `theta_tol` (relative to sum theta); the LASSO is then
    solved once more at the final theta, so the reported (b, theta) belong together.

Alternation is block coordinate descent on -l_REML(theta; y - Z_S b) + lambda sum_j w_j |b_j|,
which is unbounded below when S can fit y: theta_e then collapses (docs/math.md), hence the
default.

The path stops early after the first lambda with more than `max_active` non-zero effects
(default n / 10; `SparseConfig`).

Selection: K-fold cross-validation (the folds of `dreml cv`, seeded). For each fold the LASSO
path is refitted on the training rows at the null model's theta (held fixed, as `dreml cv
--fixed-variance` does: the path's theta changes little for a sparse b, and refitting REML per
fold and lambda would multiply the cost by K N), and each test sample is predicted by

    yhat_S = X_S beta_T + Z_S,S b_T + sum_g theta_g [K_g pad_T(P_T (y_T - Z_T b_T))]_S,

the fixed, sparse and BLUP parts (`dreml.cv`). The chosen lambda minimises the pooled mean
squared error of the held-out predictions (`rule` "min") or is the largest lambda whose MSE is
within one standard error of that minimum ("1se": sparser, fewer false positives).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from dreml.cv import assign_folds
from dreml.errors import InputError
from dreml.lasso.metric import PenalisedColumns, PMetric
from dreml.lasso.solver import KKTSummary, LassoSolution, WorkingSet, solve_lasso
from dreml.operators import DenseOperator, RestrictedOperator
from dreml.operators.protocol import GRMOperator
from dreml.reml import FitConfig, fit_reml
from dreml.reml.config import fresh_seed
from dreml.reml.method import choose_method

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparseConfig:
    """Settings of the sparse REML path; invalid values raise `InputError` naming the option.

    Arguments:
        n_lambda: lambdas on the path (`--lambda-path`), at least 1.
        lambda_min_ratio: lambda_min / lambda_max, in (0, 1).
        reml_rounds: REML / LASSO alternations per lambda at most (0, the default: theta of
            the null model for the whole path).
        theta_tol: relative change of theta that ends the alternation.
        kkt_tol: relative tolerance of the global KKT check (above the solves' error).
        solve_tol: relative residual of the PCG solves with H.
        folds: cross-validation folds for the selection (0: no selection).
        rule: "min" (smallest held-out MSE) or "1se" (the largest lambda within one SE of it).
        seed: seeds the folds; None draws one (recorded).
        kkt_error: a KKT violation at the selected lambda is an error (`--kkt-check`).
        max_active: the path stops after the first lambda with more non-zero effects than this
            (`--lambda-max-active`; None: a tenth of the samples). Beyond it the sparse part is
            no longer sparse: b starts to absorb the residual, theta_e collapses under the
            alternation and the working set's Gram matrix approaches n x n.
    """

    n_lambda: int = 20
    lambda_min_ratio: float = 0.01
    reml_rounds: int = 0
    theta_tol: float = 1e-3
    kkt_tol: float = 1e-4
    solve_tol: float = 1e-8
    folds: int = 5
    rule: str = "min"
    seed: int | None = None
    kkt_error: bool = False
    max_active: int | None = None

    def __post_init__(self) -> None:
        if self.n_lambda < 1:
            raise InputError(f"--lambda-path must be at least 1 lambda, got {self.n_lambda}")
        if not 0 < self.lambda_min_ratio < 1:
            raise InputError(f"--lambda-min-ratio must lie in (0, 1), got {self.lambda_min_ratio}")
        if self.reml_rounds < 0:
            raise InputError(f"--sparse-reml-rounds must be 0 or more, got {self.reml_rounds}")
        if self.folds == 1 or self.folds < 0:
            raise InputError(f"--lambda-folds must be 0 (no selection) or at least 2, got {self.folds}")
        if not (0 < self.kkt_tol < 1 and 0 < self.solve_tol < self.kkt_tol):
            raise InputError(f"need 0 < solve tolerance ({self.solve_tol}) < KKT tolerance ({self.kkt_tol}) < 1")
        if self.rule not in ("min", "1se"):
            raise InputError(f"--lambda-rule must be min or 1se, got {self.rule!r}")
        if self.max_active is not None and self.max_active < 1:
            raise InputError(f"--lambda-max-active must be at least 1, got {self.max_active}")
        if self.seed is None:
            object.__setattr__(self, "seed", fresh_seed())

    def lambdas(self, lambda_max: float) -> np.ndarray:
        """The path, from lambda_max down, log-spaced."""
        if self.n_lambda == 1:
            return np.array([lambda_max])
        return lambda_max * self.lambda_min_ratio ** (np.arange(self.n_lambda) / (self.n_lambda - 1))


@dataclass(frozen=True)
class PathPoint:
    """One lambda of the path.

    Fields:
        solution: the LASSO at (theta, lambda). theta: (theta_1..theta_G, theta_e).
        rounds: REML / LASSO alternations made; alternation_converged: theta settled within
            `theta_tol` (always True with `reml_rounds` = 0); reml_converged: every REML fit
            of the alternation converged.
        cv_mse, cv_r2: pooled held-out mean squared error and R^2 (NaN without selection);
            cv_mse_se: the standard error of cv_mse (from the squared errors of the n samples).
    """

    solution: LassoSolution
    theta: np.ndarray
    rounds: int
    alternation_converged: bool
    reml_converged: bool = True
    cv_mse: float = float("nan")
    cv_r2: float = float("nan")
    cv_mse_se: float = float("nan")

    @property
    def converged(self) -> bool:
        return self.solution.converged and self.alternation_converged and self.reml_converged

    @property
    def status(self) -> str:
        if not self.solution.converged:
            return self.solution.status
        if not self.reml_converged:
            return "a REML fit of the offset phenotype did not converge"
        return "converged" if self.alternation_converged else "theta still moving after the last alternation"


@dataclass(frozen=True)
class SparsePath:
    """The whole sparse REML fit.

    Fields:
        points: one `PathPoint` per lambda, lambda decreasing.
        lambda_max: max_j |z_j^T P y| / w_j at the null model.
        theta_null: the null model's REML theta.
        chosen: index of the selected lambda (None without selection).
        config: the settings (with the seed used).
        passes: operator passes in all (the penalised operator's and the components').
        null_converged: the null model's REML fit converged.
    """

    points: tuple[PathPoint, ...]
    lambda_max: float
    theta_null: np.ndarray
    chosen: int | None
    config: SparseConfig
    passes: int
    null_converged: bool = True

    @property
    def selected(self) -> PathPoint | None:
        return None if self.chosen is None else self.points[self.chosen]

    @property
    def converged(self) -> bool:
        point = self.selected
        return self.null_converged and (all(p.converged for p in self.points) if point is None else point.converged)

    def kkt(self) -> KKTSummary:
        """The KKT summary of the selected lambda (or of the last one without selection)."""
        return (self.selected or self.points[-1]).solution.kkt


def _reml(
    operator: GRMOperator, y: np.ndarray, X: np.ndarray, config: FitConfig, start: np.ndarray | None
) -> tuple[np.ndarray, bool]:
    """(theta, converged) of the REML fit of y on X, started at `start` (None: the engine's start)."""
    started = config if start is None else dataclasses.replace(config, priors=tuple(float(t) for t in start))
    result = fit_reml(operator, y, X, started)
    if not result.converged:
        logger.warning("REML of the offset phenotype did not converge: %s", result.status)
    return np.asarray(result.theta, dtype=np.float64), bool(result.converged)


class _Alternation:
    """LASSO at theta, REML at the LASSO's offset, with the working set kept across lambdas."""

    def __init__(self, operator, columns: PenalisedColumns, y, X, reml: FitConfig, config: SparseConfig, theta) -> None:
        self.operator, self.columns, self.y, self.X = operator, columns, y, X
        self.reml, self.config = reml, config
        self.theta = theta
        self.working = self._working(theta, np.zeros(0, dtype=np.int64))

    def _working(self, theta: np.ndarray, index: np.ndarray) -> WorkingSet:
        metric = PMetric(self.operator, self.X, theta, tol=self.config.solve_tol)
        working = WorkingSet(metric, self.columns, metric.apply(self.y)[:, 0])
        working.add(index)
        return working

    def lasso(self, lam: float, weights: np.ndarray, b0: np.ndarray, strong: np.ndarray) -> LassoSolution:
        return solve_lasso(self.working, self.y, lam, weights, b0, strong, kkt_tol=self.config.kkt_tol)

    def point(self, lam: float, weights: np.ndarray, b0: np.ndarray, strong: np.ndarray) -> PathPoint:
        solution = self.lasso(lam, weights, b0, strong)
        rounds, settled, reml_ok = 0, True, True
        while rounds < self.config.reml_rounds:
            rounds += 1
            offset = self.y - self.working.Z @ solution.b[self.working.index]
            theta, converged = _reml(self.operator, offset, self.X, self.reml, self.theta)
            reml_ok = reml_ok and converged
            change = float(np.max(np.abs(theta - self.theta)) / np.sum(self.theta))
            settled = change < self.config.theta_tol
            if change > 0:
                self.theta = theta
                self.working = self._working(theta, self.working.index)
                solution = self.lasso(lam, weights, solution.b, strong)
            if settled:
                break
        return PathPoint(solution, self.theta.copy(), rounds, settled, reml_ok)


def _path(
    alternation: _Alternation, lambdas: np.ndarray, weights: np.ndarray, c0: np.ndarray, max_active: int | None = None
) -> list[PathPoint]:
    """The points of the path at `lambdas`, stopping after the first with more than `max_active` non-zeros."""
    points: list[PathPoint] = []
    b = np.zeros(len(weights))
    c_prev, lam_prev = c0, lambdas[0]
    for lam in lambdas:
        strong = np.abs(c_prev) >= weights * (2 * lam - lam_prev)  # sequential strong rule
        point = alternation.point(float(lam), weights, b, strong)
        points.append(point)
        solution = point.solution
        logger.info(
            "lambda %.4g: %d active, theta %s, KKT violations %d%s",
            lam,
            len(solution.active),
            np.array2string(point.theta, precision=4),
            solution.kkt.violations,
            "" if point.converged else f" ({point.status})",
        )
        b, c_prev, lam_prev = solution.b, solution.c, lam
        if max_active is not None and len(solution.active) > max_active:
            logger.info("path stopped at lambda %.4g: %d non-zero effects > %d", lam, len(solution.active), max_active)
            break
    return points


def restrict(operator: GRMOperator, rows: np.ndarray) -> GRMOperator:
    """K_g on the samples `rows`: sliced when explicit, else a zero-padding `RestrictedOperator`."""
    if isinstance(operator, DenseOperator):
        return DenseOperator(operator.K[:, rows][:, :, rows], operator.component_names)
    return RestrictedOperator(operator, rows)


def _fold_predictions(
    operator: GRMOperator,
    columns: PenalisedColumns,
    y: np.ndarray,
    X: np.ndarray,
    theta: np.ndarray,
    lambdas: np.ndarray,
    weights: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    config: SparseConfig,
) -> np.ndarray:  # shape: (len(test), N)
    """Held-out predictions of one fold for every lambda (module docstring), theta fixed."""
    fixed = dataclasses.replace(config, reml_rounds=0)
    restricted = restrict(operator, train)
    alternation = _Alternation(restricted, columns.restricted(train), y[train], X[train], FitConfig(), fixed, theta)
    Py = alternation.working.Py
    points = _path(alternation, lambdas, weights, alternation.columns.zt(Py)[:, 0])
    n = len(y)
    B = np.column_stack([p.solution.b for p in points])  # shape: (s, N)
    residual = np.zeros((n, len(points)))
    residual[train] = np.column_stack([p.solution.Pr for p in points])
    sparse_part = columns.operator.z_matmat([B])[0]  # shape: (n, N)
    blup = np.asarray(operator.matmat(residual, weights=theta[:-1]), dtype=np.float64)  # shape: (n, N)
    fixed_part = X[test] @ np.column_stack([p.solution.beta for p in points])
    return fixed_part + sparse_part[test] + blup[test]


def fit_sparse_reml(
    operator: GRMOperator,
    columns: PenalisedColumns,
    y: np.ndarray,  # shape: (n,)
    X: np.ndarray,  # shape: (n, p)
    weights: np.ndarray,  # shape: (s,), w_j > 0
    config: SparseConfig,
    reml: FitConfig = FitConfig(),
) -> SparsePath:
    """The sparse REML path and its selection (module docstring).

    Arguments:
        operator: the polygenic components' operator (with `diagonal()` for the CV folds).
        columns: the penalised variants (`PenalisedColumns` on all samples).
        y, X: phenotype and covariates of the operator's samples.
        weights: the penalty weights w_j, one per penalised variant (positive, finite).
        config: path, alternation, KKT and selection settings.
        reml: the REML engine's settings (method, probes, seed) for every theta fit.
    """
    weights = np.asarray(weights, dtype=np.float64)
    counted = (operator, columns.operator)  # the operators whose passes the result reports
    passes_before = sum(_passes(o) for o in counted)
    if len(weights) != columns.s:
        raise InputError(f"{len(weights)} penalty weights for {columns.s} penalised variants")
    if columns.s == 0:
        raise InputError("the penalised variant set is empty")
    if not np.all(np.isfinite(weights) & (weights > 0)):
        bad = weights[~(np.isfinite(weights) & (weights > 0))][0]
        raise InputError(f"penalty weights must be positive and finite; got {bad}")
    method, reason = choose_method(reml.method, len(y), operator.n_components)
    if method == "exact" and not isinstance(operator, DenseOperator):
        # read K_g once: every REML fit, solve and fold of the path then runs on the driver
        logger.info("exact path (%s): K_g read once for the whole path", reason)
        operator = DenseOperator(operator.matmat(np.eye(len(y))), operator.component_names)
    theta_null, null_converged = _reml(operator, y, X, reml, None)
    logger.info("null model (no sparse effects): theta %s", np.array2string(theta_null, precision=4))
    alternation = _Alternation(operator, columns, y, X, reml, config, theta_null)
    c0 = columns.zt(alternation.working.Py)[:, 0]
    lambda_max = float(np.max(np.abs(c0) / weights))
    max_active = config.max_active if config.max_active is not None else max(1, len(y) // 10)
    points = _path(alternation, config.lambdas(lambda_max), weights, c0, max_active)
    lambdas = np.array([p.solution.lam for p in points])
    chosen = None
    if config.folds:
        labels = assign_folds(len(y), config.folds, int(config.seed or 0))
        predictions = np.zeros((len(y), len(lambdas)))
        for fold in range(1, config.folds + 1):
            test, train = np.flatnonzero(labels == fold), np.flatnonzero(labels != fold)
            predictions[test] = _fold_predictions(operator, columns, y, X, theta_null, lambdas, weights, train, test, config)
            logger.info("cross-validation fold %d of %d done", fold, config.folds)
        squared = (y[:, None] - predictions) ** 2  # shape: (n, N)
        mse = squared.mean(axis=0)
        se = squared.std(axis=0, ddof=1) / np.sqrt(len(y))
        r2 = 1 - mse / np.var(y)
        points = [
            dataclasses.replace(p, cv_mse=float(e), cv_r2=float(r), cv_mse_se=float(d)) for p, e, r, d in zip(points, mse, r2, se)
        ]
        chosen = choose(mse, se, config.rule)
        active = len(points[chosen].solution.active)
        logger.info("selected lambda %.4g (%d active): held-out MSE %.4g", lambdas[chosen], active, mse[chosen])
    passes = sum(_passes(o) for o in counted) - passes_before
    return SparsePath(tuple(points), lambda_max, theta_null, chosen, config, passes, null_converged)


def choose(mse: np.ndarray, se: np.ndarray, rule: str) -> int:
    """The index of the selected lambda (lambdas decreasing): "min", the smallest held-out MSE;
    "1se", the largest lambda whose MSE is within one standard error of that minimum (the
    sparser model that predicts as well within the CV's noise; glmnet's lambda.1se)."""
    best = int(np.argmin(mse))
    if rule == "min":
        return best
    return int(np.flatnonzero(mse <= mse[best] + se[best])[0])


def _passes(operator) -> int:
    """Passes an operator has made so far (0 for operators that do not count them)."""
    return int(getattr(operator, "passes", 0))
