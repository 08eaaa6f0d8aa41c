"""`dreml fit --factors K (--all-pheno | --pheno-name a,b,c)`: the low-rank factor model on stores.

`--factors` takes one K, several candidates (`1,2,4`, ranges `1-6`) or `auto` (1..min(T - 1, 10)):
with several, K is chosen by held-out likelihood (`dreml.reml.factor_selection`, the fraction
`--factor-holdout` of the observed values held out, `--factor-rule 1se|best`, default 1se) and
the model refitted with it.
`--factor-predict-unphenotyped` also predicts the samples (after --keep/--remove) with no trait
value, through their relatives (`dreml.factors`, one more shard load and pass).

Options added to `dreml fit` by `add_factor_options`; `dreml fit` hands the run to
`run_factors` when `wants_factors` (--factors given), after it built its `FitConfig` (the
factors' REML settings). Writes PREFIX.factors.tsv, PREFIX.loadings.tsv, PREFIX.factors.json
and PREFIX.factors.pred.tsv (`dreml.factors.write_factors`) and prints the factor table.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from dreml.cli.common import cluster_client, positive_int
from dreml.cli.inputs import inputs_from_args, operator_options, sample_selection, trait_names
from dreml.errors import InputError
from dreml.factors import factors_tsv_text, fit_factors_prepared, write_factors
from dreml.phenotypes import read_sample_table
from dreml.reml import FitConfig
from dreml.reml.factor_selection import FactorSelectionConfig
from dreml.reml.factors import FactorConfig, check_factor_count

logger = logging.getLogger(__name__)

# `dreml fit` options that a factor-model fit does not take: (attribute, flag, why)
_REFUSED = (
    ("mpheno", "--mpheno", "name the traits with --pheno-name a,b,c or take every column with --all-pheno"),
    ("reml_lrt", "--reml-lrt", "likelihood-ratio tests are univariate"),
    ("prevalence", "--prevalence", "liability-scale factor heritabilities are not implemented"),
    ("reml_pred_rand", "--reml-pred-rand", "the factor model writes its predictions to PREFIX.factors.pred.tsv"),
    ("blup_snp", "--blup-snp", "factor SNP effects are not written"),
    ("plot", "--plot", "no convergence figure is drawn for the factor model"),
    ("priors", "--reml-priors-var", "each factor's REML starts from Haseman-Elston"),
    ("annot", "--annot", "annotation-driven variances are univariate"),
    ("variance_model", "--variance-model", "annotation-driven variances are univariate"),
    ("complete_cases", "--complete-cases", "the factor model uses every observed value (missing ones are predicted)"),
)


# `--factors auto`: the candidates 1..min(T - 1, AUTO_MAX_FACTORS)
AUTO_MAX_FACTORS = 10


def factor_counts(text: str) -> tuple[int, ...]:
    """Parse --factors for argparse: K, a list of K values and ranges (`1,2,4`, `1-6`), or `auto`
    (the empty tuple: 1..min(T - 1, AUTO_MAX_FACTORS) once T is known)."""
    if text == "auto":
        return ()
    counts: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        first = positive_int(low)
        last = positive_int(high) if high else first
        if last < first:
            raise argparse.ArgumentTypeError(f"expected a range low-high with low <= high, got {part!r}")
        counts.update(range(first, last + 1))
    return tuple(sorted(counts))


def add_factor_options(p: argparse.ArgumentParser) -> None:
    """--factors, --factor-holdout, --factor-rule, --factor-predict-unphenotyped, --factor-max-iter, --factor-accelerate,
    --factor-tol and --factor-e-step-tol on `dreml fit`'s parser."""
    defaults = FactorConfig(n_factors=1)
    selection = FactorSelectionConfig(candidates=(1, 2))
    g = p.add_argument_group("low-rank factor model for many traits (docs/cli.md, docs/math.md)")
    g.add_argument(
        "--factors",
        type=factor_counts,
        metavar="K|K1,K2,...|auto",
        help="fit Y = X B + F Lambda + E with K latent factors (K smaller than the number of traits), each with "
        "its own variance components, to the traits of --all-pheno or --pheno-name a,b,c (values missing at "
        "random allowed and predicted); several candidates (1,2,4 or 1-6) or auto (1..min(T-1, "
        f"{AUTO_MAX_FACTORS})): K chosen by held-out likelihood, then refitted on every value; writes "
        "PREFIX.factors.tsv, .loadings.tsv, .factors.json, .factors.pred.tsv",
    )
    g.add_argument(
        "--factor-holdout",
        type=float,
        default=selection.holdout,
        metavar="H",
        help=f"with several candidate K: the fraction of observed values held out to choose K (default {selection.holdout:g})",
    )
    g.add_argument(
        "--factor-rule",
        choices=("1se", "best"),
        default=selection.rule,
        help="with several candidate K: 1se: the smallest K whose held-out log density is within one standard error "
        f"of the highest; best: the K of the highest (default {selection.rule})",
    )
    g.add_argument(
        "--factor-predict-unphenotyped",
        action="store_true",
        help="also predict the samples (after --keep/--remove) that have no value for any trait, through their "
        "relatives (one more shard load and pass; rows of kind 'unphenotyped' in PREFIX.factors.pred.tsv)",
    )
    g.add_argument(
        "--factor-max-iter",
        type=positive_int,
        default=defaults.max_iter,
        help=f"most EM iterations (default {defaults.max_iter})",
    )
    g.add_argument(
        "--factor-tol",
        type=float,
        default=defaults.tol,
        help="stop when the relative change of the loadings, the largest change of a factor's h2 and the change of "
        "the covariates' fit, and their estimated remaining distances, are all below "
        f"this (default {defaults.tol:g}; at least 10x --pcg-tol on the randomised path)",
    )
    g.add_argument(
        "--factor-accelerate",
        action="store_true",
        help="SQUAREM around the EM (cycles of two EM steps, an extrapolation and a stabilising EM step, back to "
        "the plain step when the extrapolated point fails or its fixed-point residual grows more than 10-fold); "
        "--factor-max-iter then counts EM evaluations (docs/math.md). Default off",
    )
    g.add_argument(
        "--factor-e-step-tol",
        type=float,
        default=defaults.e_step_tol,
        help=f"relative residual of the E-step PCG solve (default {defaults.e_step_tol:g})",
    )


def wants_factors(args: argparse.Namespace) -> bool:
    """Whether `dreml fit` hands the run to `run_factors` (--factors given)."""
    return getattr(args, "factors", None) is not None


def run_factors(args: argparse.Namespace, config: FitConfig) -> int:
    """Run `dreml fit --factors K` (refuses the options it cannot honour; bad input fails before the cluster)."""
    from dreml.cli.fit import check_out_prefix  # dreml.cli.fit imports this module

    for attr, flag, why in _REFUSED:
        if getattr(args, attr, None):
            raise InputError(f"{flag} does not go with --factors: {why}")
    names = trait_names(args)
    if names is None:
        if not args.all_pheno:
            raise InputError("--factors needs the traits: --all-pheno or --pheno-name a,b,c")
        names = list(read_sample_table(args.pheno).columns)
    if len(set(names)) != len(names):
        raise InputError(f"--pheno-name lists a trait twice: {', '.join(names)}")
    counts = args.factors or tuple(range(1, min(len(names) - 1, AUTO_MAX_FACTORS) + 1))
    check_factor_count(max(counts, default=1), len(names))
    try:
        factor_config = FactorConfig(
            n_factors=counts[0],
            max_iter=args.factor_max_iter,
            tol=args.factor_tol,
            e_step_tol=args.factor_e_step_tol,
            accelerate=args.factor_accelerate,
            reml=config,
        )
        selection = None
        if len(counts) > 1:
            selection = FactorSelectionConfig(candidates=counts, holdout=args.factor_holdout, rule=args.factor_rule)
    except ValueError as exc:
        raise InputError(f"--factors: {exc}") from exc
    if args.factor_predict_unphenotyped and args.freq_from == "samples":
        raise InputError("--factor-predict-unphenotyped needs the store's allele frequencies: drop --freq-from samples")
    inputs = [inputs_from_args(args, pheno_name=name) for name in names]
    predict_samples = None
    if args.factor_predict_unphenotyped:
        store = inputs[0].stores[0]
        predict_samples = np.flatnonzero(sample_selection(args).mask(store.sample_family_id, store.sample_id)[0])
    check_out_prefix(args.out)
    with cluster_client(args) as client:
        fit = fit_factors_prepared(
            inputs,
            factor_config,
            selection=selection,
            predict_samples=predict_samples,
            client=client,
            **operator_options(args),
        )
    paths = write_factors(fit, args.out)
    r = fit.result
    if fit.selection is not None:
        chosen = fit.selection
        print(f"K by held-out log density per value ({chosen.n_heldout} values held out, rule {chosen.rule}):")
        for K, score, se, mse in zip(chosen.candidates, chosen.scores, chosen.score_se, chosen.mse):
            print(f"  K = {K}: {score:.5f} (SE of the difference from the best {se:.5f}, MSE {mse:.5g})", end="")
            print("  <- chosen" if K == chosen.chosen else "")
    print(factors_tsv_text(fit), end="")
    print(
        f"{len(names)} traits, {r.loadings.shape[0]} factors, {fit.Y.shape[0]} samples: {r.iterations} iterations, "
        f"{r.passes} passes, converged {r.converged}, seed {r.seed}"
    )
    if fit.unphenotyped is not None:
        print(f"{len(fit.unphenotyped.iid)} unphenotyped samples predicted")
    if not r.converged:
        logger.warning("factor model not converged: %s", r.status)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
