"""T univariate REML fits that share the genotype passes (`fit_reml_traits`).

The probes, the preconditioner and the passes do not depend on the trait, but each trait has
its own theta_t, hence its own H_t = sum_g theta_gt K_g + theta_et I and its own solves. Two
paths, chosen as for one fit (`dreml.reml.method.choose_method`, on the union of the traits'
samples):
- exact: K_g is read once (one pass of n columns) into a `DenseOperator` and every trait is
  fitted on its rows of it: 1 pass in all, whatever T.
- randomised: the T fits run concurrently, one thread each, on members of one
  `dreml.operators.shared.SharedPasses`: every round of passes serves the pending block of
  every fit (columns side by side), so T fits cost as many rounds as the longest of them
  (each pass wider by the other fits' columns). The probes' solves are shared where the
  components allow it:
  - one genetic component (G = 1) and two or more traits observed on the same samples: the
    traits share their probes, whose solves at every trait's theta_t come from one Lanczos
    run of K (`dreml.reml.shared_probes`, `dreml.reml.krylov`): a fit's block is [X | y~]
    (p + 1 columns instead of p + 1 + B), and the probes cost one B-column pass per Lanczos
    step for the whole group. The probes are drawn from the master seed over the operator's
    samples and cut to the group's, so a trait's result depends on the master seed, its
    samples, y and X only: not on the traits fitted beside it.
  - otherwise (G > 1, where H_t is no shift of one matrix, or a trait alone on its sample
    set): every trait draws its own probes, from a seed spawned from the master seed
    (`numpy.random.SeedSequence(seed).spawn(T)`), and solves them in its own block; each
    such fit equals its fit run alone with its recorded seed.
Traits observed on different samples: each fit runs on `RestrictedOperator(·, rows_t)`
(zero padding of its columns to the union of samples), so the traits still share passes; a
probe group's Lanczos run uses the restriction of its sample set (masking, not new shards).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from dreml.operators.dense import DenseOperator
from dreml.operators.protocol import GRMOperator
from dreml.operators.shared import SharedPasses
from dreml.operators.subset import RestrictedOperator
from dreml.reml.config import FitConfig, fresh_seed
from dreml.reml.engine import check_inputs, fit_reml
from dreml.reml.evaluation import residualise
from dreml.reml.method import choose_method
from dreml.reml.probes import Probes, draw_probes
from dreml.reml.results import RemlResult
from dreml.reml.shared_probes import ProbeGroup, SharedProbeEvaluator, probe_group

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TraitFits:
    """Outcome of `fit_reml_traits`.

    Fields:
        results: per trait its `RemlResult`, or the exception its fit raised.
        passes: passes over the genotypes for all traits together.
        method, method_reason: the path taken (the same for every trait).
        seed: the master seed; each result records its seed (its spawned seed, or the master
            seed where it shared its probes).
        probe_groups: the traits (indices) that shared their probes, one tuple per sample set.
    """

    results: tuple[RemlResult | Exception, ...]
    passes: int
    method: str
    method_reason: str
    seed: int
    probe_groups: tuple[tuple[int, ...], ...] = ()


def trait_seeds(seed: int, count: int) -> list[int]:
    """`count` independent seeds spawned from `seed` (module docstring)."""
    return [int(s.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for s in np.random.SeedSequence(seed).spawn(count)]


def fit_reml_traits(
    operator: GRMOperator,
    ys: Sequence[np.ndarray],
    Xs: Sequence[np.ndarray],
    rows: Sequence[np.ndarray | None],
    config: FitConfig = FitConfig(),
    share_probes: bool = True,
) -> TraitFits:
    """Fit every trait t: y_t = X_t beta_t + sum_g u_gt + e_t on the operator's samples `rows[t]`.

    Arguments:
        operator: a GRM operator over the union of the traits' samples, with `diagonal()`
            where some trait uses a subset of them.
        ys, Xs: per trait its phenotype (n_t,) and covariates (n_t, p_t), in the order of `rows[t]`.
        rows: per trait its samples as indices into the operator's samples (None: all).
        config: the settings of every fit; `config.seed` is the master seed (None: fresh).
        share_probes: let traits on the same samples share their probes where G = 1 (module
            docstring); False gives every trait its own.

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
    groups: list[list[int]] = []

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
        candidates = probe_groups(rows, operator.n_components) if share_probes else []
        shared_of, groups = _probe_groups_set_up(operator, ys, Xs, rows, candidates, config, seed, view)
        for t in shared_of:
            configs[t] = dataclasses.replace(configs[t], seed=seed)
        shared = SharedPasses(operator, len(ys))

        def run(t: int) -> RemlResult | Exception:
            member = shared.member(t)
            factory = None
            if t in shared_of:
                group, index = shared_of[t]

                def factory(op, y, X, cfg, group=group, index=index):
                    return SharedProbeEvaluator(op, y, X, cfg, group, index)

            try:
                result = _attempt(lambda: fit_reml(view(member, t), ys[t], Xs[t], configs[t], randomised=factory))
            finally:
                member.leave()
            if isinstance(result, RemlResult) and t in shared_of:
                size = len(shared_of[t][0].Ky)
                note = f"; probes shared with the {size - 1} other traits on the same samples (Lanczos quadrature)"
                result = dataclasses.replace(result, method_reason=result.method_reason + note)
            return result

        with ThreadPoolExecutor(max_workers=len(ys), thread_name_prefix="trait") as pool:
            results = list(pool.map(run, range(len(ys))))
        logger.info("%d traits fitted in %d shared rounds of passes (%d probe groups)", len(ys), shared.passes, len(groups))
    return TraitFits(tuple(results), int(operator.passes - before), method, reason, seed, tuple(tuple(g) for g in groups))


def probe_groups(rows: Sequence[np.ndarray | None], n_components: int) -> list[list[int]]:
    """The traits that can share probes: with G = 1, those (two or more) on the same samples."""
    if n_components != 1:
        return []
    by_samples: dict[bytes | None, list[int]] = {}
    for t, r in enumerate(rows):
        by_samples.setdefault(None if r is None else np.asarray(r, dtype=np.int64).tobytes(), []).append(t)
    return [g for g in by_samples.values() if len(g) > 1]


def _probe_groups_set_up(
    operator, ys, Xs, rows, groups, config, seed, view
) -> tuple[dict[int, tuple[ProbeGroup, int]], list[list[int]]]:
    """Each group's `ProbeGroup` (traits with bad inputs left out: their own fits report the
    error), keyed by trait: (its group, its position there); and the groups set up."""
    if not groups:
        return {}, []
    n = operator.shape[0]
    rank = config.precond_rank
    full = draw_probes(n, config.n_probes, 0, min(rank + config.precond_oversampling, n) if rank else 0, seed)
    lock = threading.Lock()  # the Lanczos runs of every group extend through the same genotypes
    out: dict[int, tuple[ProbeGroup, int]] = {}
    set_up: list[list[int]] = []
    for members in groups:
        group_op = view(operator, members[0])
        y_res, kept = [], []
        for t in members:
            try:
                y, X = check_inputs(group_op, ys[t], Xs[t])
            except Exception:  # noqa: BLE001 - its own fit raises it again, per trait
                continue
            y_res.append(residualise(y, X))
            kept.append(t)
        if len(kept) < 2:
            continue
        r = rows[members[0]]
        cut = slice(None) if r is None else r
        probes = Probes(W=full.W[cut], Z=np.zeros((group_op.shape[0], 0)), Omega=full.Omega[cut])
        group = probe_group(group_op, y_res, probes, config, lock)
        out.update({t: (group, i) for i, t in enumerate(kept)})
        set_up.append(kept)
    return out, set_up


def _attempt(fit) -> RemlResult | Exception:
    """The fit's result, or the error it raised (reported per trait, not raised)."""
    try:
        return fit()
    except Exception as exc:  # one trait's bad input must not stop the others
        logger.error("trait fit failed: %s", exc)
        return exc
