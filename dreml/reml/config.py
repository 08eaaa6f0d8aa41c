"""`FitConfig`: every setting of a REML fit, checked at construction and recorded in results.

The defaults were chosen from the measurements in docs/validation.md and docs/performance.md
(randomised vs exact agreement, Monte Carlo error against probe counts, PCG iterations and
passes on simulated cohorts).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import secrets
from dataclasses import dataclass, field, fields
from typing import Any

_WORKER_DTYPES = ("float32", "float64")
METHODS = ("auto", "exact", "randomised")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def fresh_seed() -> int:
    """A new seed from the operating system's entropy (63 bits, so JSON and NumPy take it)."""
    return secrets.randbits(63)


def _checked_priors(priors: Any, constrain: bool) -> tuple[float, ...]:
    """`priors` as a tuple of floats; raises `ValueError` unless they are a valid start."""
    values = tuple(priors) if isinstance(priors, (tuple, list)) else ()
    if len(values) < 2 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ValueError(f"priors must be at least 2 finite numbers (genetic variances, then the residual), got {priors!r}")
    if not values[-1] > 0:
        raise ValueError(f"priors: the residual variance (last value) must be positive, got {values[-1]!r}")
    if constrain and min(values[:-1]) < 0:
        raise ValueError(f"priors: genetic variances must be non-negative unless constrain=False, got {priors!r}")
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class FitConfig:
    """Settings of `fit_reml`. Frozen; invalid values raise `ValueError` at construction.

    Each field's meaning is its `help` metadata (`field_help()`), the one text that
    `dreml fit --help` and these docs show.
    """

    n_probes: int = field(
        default=100,
        metadata={
            "help": (
                "B, Rademacher probe vectors for the Hutchinson traces tr(P K_i) and the randomised Haseman-"
                "Elston start (drawn once per fit)."
            )
        },
    )
    slq_probes: int = field(
        default=64,
        metadata={
            "help": (
                "probe vectors for the stochastic Lanczos quadrature of log|H|, solved once, at the final theta, "
                "together with the last average-information solve."
            )
        },
    )
    pcg_tol: float = field(
        default=1e-5, metadata={"help": ("relative residual ||r|| / ||b|| at which the PCG columns of y and X stop.")}
    )
    probe_tol: float = field(
        default=1e-4,
        metadata={
            "help": (
                "the same for the Hutchinson probe columns: their solves feed Monte Carlo averages, so they need "
                "far less accuracy than P y (docs/math.md)."
            )
        },
    )
    slq_tol: float = field(
        default=1e-2,
        metadata={
            "help": (
                "the same for the SLQ probe columns of the final log-likelihood: Gauss quadrature of log "
                "converges long before the residual does (docs/validation.md)."
            )
        },
    )
    ai_tol: float = field(
        default=1e-2,
        metadata={
            "help": ("the same for the average-information solve, which only sets the Newton step and the standard errors.")
        },
    )
    pcg_max_iter: int = field(default=500, metadata={"help": ("most PCG iterations (= passes) per block solve.")})
    precond_rank: int = field(
        default=0,
        metadata={
            "help": (
                "r, the rank of the projected-core preconditioner; 0 (the default) disables it: on the cohorts "
                "measured it cost more than it saved (docs/performance.md); try 64 for strongly structured "
                "cohorts."
            )
        },
    )
    precond_oversampling: int = field(
        default=16, metadata={"help": ("extra columns of the randomised range finder (Halko et al. 2011).")}
    )
    precond_power_iters: int = field(default=2, metadata={"help": ("subspace (power) iterations of the range finder.")})
    max_iter: int = field(default=30, metadata={"help": ("most average-information iterations.")})
    tol_decrement: float = field(
        default=1e-4,
        metadata={
            "help": (
                "convergence when the Newton decrement s^T AI^-1 s falls below this (or below a tenth of its "
                "Monte Carlo part, `dreml.reml.optimizer`): the remaining step is then about sqrt(tol_decrement) "
                "standard errors."
            )
        },
    )
    max_step_halvings: int = field(
        default=6,
        metadata={
            "help": (
                "step halvings tried when the scores show an overshoot or, unconstrained, when the trial theta "
                "makes H indefinite."
            )
        },
    )
    constrain: bool = field(
        default=True,
        metadata={
            "help": (
                "project the genetic variances onto theta_g >= 0 (active set, `at_boundary`); False lets them go "
                "negative as GCTA's --reml-no-constrain does: then only theta_e stays positive and steps that "
                "make H indefinite are halved back (docs/math.md)."
            )
        },
    )
    priors: tuple[float, ...] | None = field(
        default=None,
        metadata={
            "help": (
                "starting theta (theta_1..theta_G, theta_e), on the phenotype's variance scale, as GCTA's --reml-"
                "priors-var; None (the default) starts from Haseman-Elston. The residual must be positive, the "
                "genetic values non-negative when `constrain`; the length is checked against the operator by "
                "`fit_reml`."
            )
        },
    )
    loglik: bool = field(
        default=True, metadata={"help": ("compute the log-likelihood at the final theta (SLQ on the randomised path).")}
    )
    seed: int | None = field(
        default=None,
        metadata={
            "help": (
                "seeds every random draw of the fit (probes, range finder); None draws a fresh seed, recorded in the result."
            )
        },
    )
    worker_dtype: str = field(
        default="float32",
        metadata={
            "help": (
                'arithmetic of the operator\'s workers ("float32" or "float64"); recorded here and passed on '
                "by the caller that builds the operator (shards hold int8 codes either way). float32 doubles the "
                "GEMM rate; on the demo cohort it gave the same estimates to 6 decimals as float64 "
                "(docs/validation.md)."
            )
        },
    )
    method: str = field(
        default="auto",
        metadata={
            "help": (
                '"exact" (dense reference path: explicit K_g, Cholesky of H; small n), "randomised" (matrix-'
                'free), or "auto": exact where the cost model says it is faster and the driver\'s memory holds '
                "it (`dreml.reml.method`)."
            )
        },
    )

    def __post_init__(self) -> None:
        for name in ("n_probes", "slq_probes", "pcg_max_iter", "max_iter"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("precond_rank", "precond_oversampling", "precond_power_iters", "max_step_halvings"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {getattr(self, name)!r}")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {self.seed!r}")
        for name in ("pcg_tol", "probe_tol", "slq_tol", "ai_tol"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)!r}")
        if not self.tol_decrement > 0:
            raise ValueError(f"tol_decrement must be positive, got {self.tol_decrement!r}")
        if self.worker_dtype not in _WORKER_DTYPES:
            raise ValueError(f"worker_dtype must be one of {_WORKER_DTYPES}, got {self.worker_dtype!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        for name in ("loglik", "constrain"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.priors is not None:
            # a list from JSON (`from_dict`) becomes the tuple a frozen, hashable config needs
            object.__setattr__(self, "priors", _checked_priors(self.priors, self.constrain))

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dictionary."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitConfig:
        """Inverse of `to_dict`; unknown keys raise `ValueError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FitConfig settings: {', '.join(unknown)}")
        return cls(**data)


def field_help() -> dict[str, str]:
    """Every `FitConfig` field's help text, by name (the command line's --help)."""
    return {f.name: f.metadata["help"] for f in fields(FitConfig)}
