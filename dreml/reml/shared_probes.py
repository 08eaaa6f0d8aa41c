"""Traits on the same samples sharing their probes: one Lanczos run for every trait's traces (G = 1).

`RandomisedEvaluator` solves H(theta) W for its own probes W at every score: with T traits
that is T x B probe columns a pass. With one genetic component and traits observed on the
same samples, the traces need only the probes' quadratic forms, which one Lanczos run of K
per probe gives at every theta of every trait (`dreml.reml.krylov.LanczosProbes`). So a
`ProbeGroup` holds, for the traits on one sample set, what does not depend on the trait:
    W (n, B) and K W     the probes (drawn once from the master seed over the operator's
                          samples, then cut to the group's: a trait's draws do not depend on
                          which other traits run beside it), from one set-up pass that also
                          gives each trait's K y~_t (the Haseman-Elston start) and, with a
                          preconditioner, the range basis' products
    the projected core   the preconditioner of the y and X solves (rank 0 by default)
    the Lanczos run      of K from W, extended lazily by whichever fit needs more steps
and `SharedProbeEvaluator` is `RandomisedEvaluator` with its score's main block reduced to
[X | y~] (pass width p + 1 per trait instead of p + 1 + B). The Hutchinson samples are those
`RandomisedEvaluator` forms, a_1b = (K w_b)^T P w_b and a_eb = w_b^T P w_b, written through
the quadratic forms and the accurate solves H^-1 X of the main block:
    w^T P w       = w^T H^-1 w - c_w^T A^-1 c_w,          c_w = (H^-1 X)^T w,   A = X^T H^-1 X
    (K w)^T P w   = (K w)^T H^-1 w - c_Kw^T A^-1 c_w,    c_Kw = (H^-1 X)^T K w
with the same control variates; the log-likelihood's log|H| is the SLQ of the same probes
(log|H| ~ mean_b w_b^T log(H) w_b, with the control variate w_b^T K w_b - tr(K) fitted by
regression as in `dreml.reml.hutchinson`), so `slq_probes` is not used here. The traits'
trace errors are correlated (common probes); each trait's estimate has the Monte Carlo error
of its own fit with B probes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.linalg import cho_solve

from dreml.operators.protocol import GRMOperator
from dreml.reml.config import FitConfig
from dreml.reml.evaluation import Information, PassCounter, Point, residualise
from dreml.reml.hutchinson import hutchinson
from dreml.reml.krylov import LanczosProbes
from dreml.reml.preconditioner import ProjectedCore, build_projected_core, range_basis
from dreml.reml.probes import Probes
from dreml.reml.randomised import RandomisedEvaluator, information_from_columns, operator_traces


@dataclass(frozen=True)
class ProbeGroup:
    """What the traits on one sample set share (module docstring).

    Fields:
        probes: W and Omega cut to the group's samples (Z is empty: SLQ uses W).
        KW: K W, shape (1, n, B).
        Ky: K y~_t for each trait of the group, shape (T_group, n).
        core: the preconditioner's theta-independent part.
        controls: w_b^T K w_b - tr(K), shape (1, B), or None without exact traces.
        lanczos: the Lanczos runs of K from W.
        setup_passes: passes of the set-up (range finder and the stacked pass).
    """

    probes: Probes
    KW: np.ndarray
    Ky: np.ndarray
    core: ProjectedCore
    controls: np.ndarray | None
    lanczos: LanczosProbes
    setup_passes: int


def probe_group(
    operator: GRMOperator,
    ys: Sequence[np.ndarray],
    probes: Probes,
    config: FitConfig,
    lock: threading.Lock,
) -> ProbeGroup:
    """The set-up of the traits whose residualised phenotypes are `ys`, on `operator`'s samples.

    Arguments:
        operator: the group's operator (one component), e.g. a `RestrictedOperator`.
        ys: each trait's y~ (residualised on its covariates), shape (n,).
        probes: W (n, B) and Omega (n, l) on these samples.
        config: the fits' settings (preconditioner rank, power iterations, PCG step limit).
        lock: the lock of every Lanczos run on these genotypes.
    """
    before = operator.passes
    Q = range_basis(operator, probes.Omega, config.precond_power_iters)
    B = probes.W.shape[1]
    KB = np.asarray(operator.matmat(np.column_stack([probes.W, *ys, Q])), dtype=np.float64)
    KW = KB[:, :, :B]
    traces = operator_traces(operator)
    n = operator.shape[0]
    rank = min(config.precond_rank, Q.shape[1], n - 1)
    core = build_projected_core(Q, KB[:, :, B + len(ys) :], probes.W, KW, rank, traces)
    controls = None if traces is None else np.einsum("nb,gnb->gb", probes.W, KW) - traces[:, None]
    lanczos = LanczosProbes(operator, probes.W, KW[0], config.pcg_max_iter, lock)
    return ProbeGroup(
        probes=probes,
        KW=KW,
        Ky=KB[0, :, B : B + len(ys)].T,
        core=core,
        controls=controls,
        lanczos=lanczos,
        setup_passes=int(operator.passes - before),
    )


class SharedProbeEvaluator(RandomisedEvaluator):
    """`RandomisedEvaluator` whose probe quantities come from a `ProbeGroup` (module docstring).

    Arguments:
        operator: the trait's operator (its member of the shared passes, on the group's samples).
        y, X: its phenotype and covariates.
        config: its settings.
        group: the group's shared set-up; `index` the trait's position in it.
    """

    def __init__(
        self, operator: GRMOperator, y: np.ndarray, X: np.ndarray, config: FitConfig, group: ProbeGroup, index: int
    ) -> None:
        self.op, self.X, self.config, self.probes, self.group = operator, X, config, group.probes, group
        self.count = PassCounter(operator)
        self.count.passes["setup"] = group.setup_passes
        self.y = residualise(y, X)
        self.KW, self.Ky = group.KW, group.Ky[index][None]
        self.core, self.controls = group.core, group.controls
        self._main_rhs = np.column_stack([X, self.y])
        self._main_tol = np.full(X.shape[1] + 1, config.pcg_tol)
        self._last = {}

    def _note_steps(self, steps: int) -> None:
        """Probe passes attributed to this fit: the Lanczos steps beyond the set-up's first
        that its quadratures used (passes shared with the other traits of the group)."""
        self.count.passes["probes"] = max(self.count.passes["probes"], steps - 1)

    def score(self, theta: np.ndarray) -> Point:
        M = self.core.at(theta)
        main = self.main_solve(theta, M)
        quad = self.group.lanczos.quadrature(theta, self.config.probe_tol)
        self._note_steps(int(quad.steps.max()))
        c_w = main.HiX.T @ self.probes.W  # shape: (p, B)
        Ac_w = cho_solve(main.A, c_w)
        samples = np.vstack(
            [
                quad.KwHw - np.einsum("pb,pb->b", main.HiX.T @ self.KW[0], Ac_w),
                quad.wHw - np.einsum("pb,pb->b", c_w, Ac_w),
            ]
        )
        failures = []
        if not quad.converged:
            failures.append(
                f"probe quadrature: largest relative residual {quad.residual:.3g} after {self.group.lanczos.max_steps} "
                f"Lanczos steps; raise pcg_max_iter"
            )
        return self.point(theta, main, M, samples, failures, {"lanczos_steps": int(quad.steps.max())})

    def information(self, point: Point, *, loglik: bool) -> Information:
        info = information_from_columns(self, point, point.data["V"], loglik=False, trace_MH=lambda: float("nan"))
        if not loglik:
            return info
        forms = self.group.lanczos.log_forms(point.theta, self.config.probe_tol)
        logdet, logdet_var = hutchinson(forms[None], self.controls)
        value = -0.5 * (float(logdet[0]) + point.data["logdet_A"] + float(self.y @ point.data["Py"]))
        return replace(info, loglik=value, loglik_se=0.5 * float(np.sqrt(logdet_var[0, 0])))
