"""T univariate REML fits that share the genotype passes (`fit_reml_traits`).

The probes, the preconditioner and the passes do not depend on the trait, but each trait has
its own theta_t, hence its own H_t = sum_g theta_gt K_g + theta_et I and its own solves. Two
paths, chosen as for one fit (`dreml.reml.method.choose_method`, on the union of the traits'
samples):
- exact: K_g is read once (one pass of n columns) into a `DenseOperator` and every trait is
  fitted on its rows of it: 1 pass in all, whatever T.
- randomised: the T fits run concurrently, one thread each, on members of one
  `dreml.operators.shared.SharedPasses`: every round of passes serves the pending block of
  every fit (columns side by side), so T fits cost as many passes as the longest of them
  (each pass wider by the other fits' columns). Every trait draws its own probes, from a seed
  spawned from the master seed (`numpy.random.SeedSequence(seed).spawn(T)`): traits never
  share probes, and each fit is reproducible from its recorded seed alone.
Traits observed on different samples: each fit runs on `RestrictedOperator(·, rows_t)`
(zero padding of its columns to the union of samples), so the traits still share passes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from dreml.operators.dense import DenseOperator
from dreml.operators.protocol import GRMOperator
from dreml.operators.shared import SharedPasses
from dreml.operators.subset import RestrictedOperator
from dreml.reml.config import FitConfig, fresh_seed
from dreml.reml.engine import fit_reml
from dreml.reml.method import choose_method
from dreml.reml.results import RemlResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TraitFits:
    """Outcome of `fit_reml_traits`.

    Fields:
        results: per trait its `RemlResult`, or the exception its fit raised.
        passes: passes over the genotypes for all traits together.
        method, method_reason: the path taken (the same for every trait).
        seed: the master seed; each result records its own spawned seed.
    """

    results: tuple[RemlResult | Exception, ...]
    passes: int
    method: str
    method_reason: str
    seed: int


def trait_seeds(seed: int, count: int) -> list[int]:
    """`count` independent seeds spawned from `seed` (module docstring)."""
    return [int(s.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for s in np.random.SeedSequence(seed).spawn(count)]


def fit_reml_traits(
    operator: GRMOperator,
    ys: Sequence[np.ndarray],
    Xs: Sequence[np.ndarray],
    rows: Sequence[np.ndarray | None],
    config: FitConfig = FitConfig(),
) -> TraitFits:
    """Fit every trait t: y_t = X_t beta_t + sum_g u_gt + e_t on the operator's samples `rows[t]`.

    Arguments:
        operator: a GRM operator over the union of the traits' samples, with `diagonal()`
            where some trait uses a subset of them.
        ys, Xs: per trait its phenotype (n_t,) and covariates (n_t, p_t), in the order of `rows[t]`.
        rows: per trait its samples as indices into the operator's samples (None: all).
        config: the settings of every fit; `config.seed` is the master seed (None: fresh).

    Returns:
        `TraitFits`; a trait whose fit raised holds the exception (the others go on).
    """
    if not (len(ys) == len(Xs) == len(rows)) or not ys:
        raise ValueError("ys, Xs and rows need one entry per trait, and at least one trait")
    seed = fresh_seed() if config.seed is None else config.seed
    configs = [dataclasses.replace(config, seed=s) for s in trait_seeds(seed, len(ys))]
    n = operator.shape[0]
    method, reason = choose_method(config.method, n, operator.n_components)
    configs = [dataclasses.replace(c, method=method) for c in configs]
    before = operator.passes

    def view(base: GRMOperator, t: int) -> GRMOperator:
        r = rows[t]
        return base if r is None else RestrictedOperator(base, r)

    if method == "exact":
        dense = DenseOperator(np.asarray(operator.matmat(np.eye(n)), dtype=np.float64), operator.component_names)
        results = [_attempt(lambda t=t: fit_reml(view(dense, t), ys[t], Xs[t], configs[t])) for t in range(len(ys))]
    else:
        # cached by the genotype operators: computed here, before the threads, not by them at once
        traces = getattr(operator, "traces", None)
        if callable(traces):
            traces()
        if any(r is not None for r in rows):
            # restricted views need diag(K_g): the genotype operators' optional extension
            operator.diagonal()  # type: ignore[attr-defined]
        shared = SharedPasses(operator, len(ys))

        def run(t: int) -> RemlResult | Exception:
            member = shared.member(t)
            try:
                return _attempt(lambda: fit_reml(view(member, t), ys[t], Xs[t], configs[t]))
            finally:
                member.leave()

        with ThreadPoolExecutor(max_workers=len(ys), thread_name_prefix="trait") as pool:
            results = list(pool.map(run, range(len(ys))))
        logger.info("%d traits fitted in %d shared rounds of passes", len(ys), shared.passes)
    return TraitFits(tuple(results), int(operator.passes - before), method, reason, seed)


def _attempt(fit) -> RemlResult | Exception:
    """The fit's result, or the error it raised (reported per trait, not raised)."""
    try:
        return fit()
    except Exception as exc:  # one trait's bad input must not stop the others
        logger.error("trait fit failed: %s", exc)
        return exc
