"""`FitConfig`: every setting of a REML fit, checked at construction and recorded in results.

The defaults were chosen from the measurements in docs/validation.md and docs/performance.md
(randomised vs exact agreement and PCG iteration counts on simulated cohorts).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

_WORKER_DTYPES = ("float32", "float64")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class FitConfig:
    """Settings of `fit_reml`. Frozen; invalid values raise `ValueError` at construction.

    Arguments:
        n_probes: B, Rademacher probe vectors for the Hutchinson traces tr(P K_i) and the
            randomised Haseman-Elston start (drawn once per fit).
        slq_probes: probe vectors for the stochastic Lanczos quadrature of log|H| (their
            solves ride in the same block PCG as the trace probes).
        pcg_tol: relative residual ||r|| / ||b|| at which a PCG column stops.
        pcg_max_iter: most PCG iterations (= passes) per block solve.
        precond_rank: r, the rank of the projected-core preconditioner; 0 disables it.
        precond_oversampling: extra columns of the randomised range finder (Halko et al. 2011).
        precond_power_iters: subspace (power) iterations of the range finder.
        max_iter: most average-information iterations.
        tol_theta: convergence when max_i |theta_i - theta_i'| / sum(theta) falls below this ...
        tol_loglik: ... and the log-likelihood changes by less than this.
        max_step_halvings: step halvings tried when an update lowers the log-likelihood.
        seed: seeds every random draw of the fit (probes, range finder).
        worker_dtype: arithmetic of the operator's workers ("float32" or "float64"); recorded
            here and passed on by the caller that builds the operator. float32 halves shard
            memory and doubles the GEMM rate; on the demo cohort it gave the same estimates
            to 6 decimals and the same passes as float64 (docs/validation.md).
        exact: use the dense reference path (explicit K_g, Cholesky of H); small n only.
    """

    n_probes: int = 100
    slq_probes: int = 64
    pcg_tol: float = 1e-6
    pcg_max_iter: int = 500
    precond_rank: int = 64
    precond_oversampling: int = 16
    precond_power_iters: int = 2
    max_iter: int = 30
    tol_theta: float = 1e-5
    tol_loglik: float = 1e-4
    max_step_halvings: int = 6
    seed: int = 0
    worker_dtype: str = "float32"
    exact: bool = False

    def __post_init__(self) -> None:
        for name in ("n_probes", "slq_probes", "pcg_max_iter", "max_iter"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("precond_rank", "precond_oversampling", "precond_power_iters", "max_step_halvings", "seed"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {getattr(self, name)!r}")
        if not 0 < self.pcg_tol < 1:
            raise ValueError(f"pcg_tol must lie in (0, 1), got {self.pcg_tol!r}")
        for name in ("tol_theta", "tol_loglik"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.worker_dtype not in _WORKER_DTYPES:
            raise ValueError(f"worker_dtype must be one of {_WORKER_DTYPES}, got {self.worker_dtype!r}")
        if not isinstance(self.exact, bool):
            raise ValueError(f"exact must be a bool, got {self.exact!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dictionary."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FitConfig":
        """Inverse of `to_dict`; unknown keys raise `ValueError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FitConfig settings: {', '.join(unknown)}")
        return cls(**data)
