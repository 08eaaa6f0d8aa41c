"""`dreml fit --sparse-set F | --sparse-maf-below X`: sparse REML with a weighted LASSO path.

The options are added to the fit command by `add_sparse_options`; `run` of `dreml fit` hands
over to `run_sparse` when `wants_sparse(args)`. The sparse fit reuses the fit command's inputs
(stores, components, phenotype, covariates, selections, filters), cluster options and REML
flags (--method, --seed, probes, tolerances, --worker-dtype); it writes PREFIX.sparse.tsv,
PREFIX.lambda.tsv and PREFIX.sparse.json (`dreml.lasso.data`).
"""

from __future__ import annotations

import argparse
import logging

from dreml.cli.common import cluster_client
from dreml.cli.inputs import inputs_from_args, memory_budget, trait_names
from dreml.errors import DremlError, InputError
from dreml.lasso.data import fit_sparse, rare_penalised_set, read_penalised_set, write_sparse
from dreml.lasso.path import SparseConfig
from dreml.reml import FitConfig

logger = logging.getLogger(__name__)
DEFAULTS = SparseConfig(seed=0)


def add_sparse_options(p: argparse.ArgumentParser) -> None:
    """--sparse-set / --sparse-maf-below and the path, alternation, KKT and selection settings."""
    g = p.add_argument_group("sparse REML: weighted LASSO on a penalised variant set (docs/math.md)")
    g.add_argument(
        "--sparse-set",
        metavar="FILE",
        help="penalised variants: one ID a line, optionally a positive penalty weight (default 1); they leave the "
        "components; writes PREFIX.sparse.tsv, PREFIX.lambda.tsv, PREFIX.sparse.json",
    )
    g.add_argument("--sparse-maf-below", type=float, metavar="X", help="penalise every variant with store MAF below X (weight 1)")
    n_lambda = DEFAULTS.n_lambda
    g.add_argument("--lambda-path", type=int, default=n_lambda, metavar="N", help=f"lambdas on the path (default {n_lambda})")
    g.add_argument(
        "--lambda-min-ratio",
        type=float,
        default=DEFAULTS.lambda_min_ratio,
        metavar="R",
        help=f"smallest lambda over lambda_max (default {DEFAULTS.lambda_min_ratio})",
    )
    g.add_argument(
        "--lambda-folds",
        type=int,
        default=DEFAULTS.folds,
        metavar="K",
        help=f"cross-validation folds choosing lambda (minimum held-out MSE; 0: no choice; default {DEFAULTS.folds})",
    )
    g.add_argument(
        "--lambda-rule",
        choices=("min", "1se"),
        default=DEFAULTS.rule,
        help="min: the lambda of the smallest held-out MSE; 1se: the largest lambda within one standard error of it "
        f"(sparser; default {DEFAULTS.rule})",
    )
    g.add_argument(
        "--sparse-reml-rounds",
        type=int,
        default=DEFAULTS.reml_rounds,
        metavar="N",
        help="REML / LASSO alternations per lambda at most (default 0: theta of the null model for the whole path; "
        "alternation can collapse theta_e, docs/math.md)",
    )
    g.add_argument(
        "--lambda-max-active",
        type=int,
        metavar="N",
        help="stop the path after the first lambda with more than N non-zero effects (default: a tenth of the samples)",
    )
    g.add_argument(
        "--kkt-tol",
        type=float,
        default=DEFAULTS.kkt_tol,
        metavar="T",
        help=f"relative tolerance of the global KKT check (default {DEFAULTS.kkt_tol})",
    )
    g.add_argument(
        "--kkt-check", action="store_true", help="a KKT violation at the reported lambda is an error (exit 2, after the outputs)"
    )


def wants_sparse(args: argparse.Namespace) -> bool:
    return getattr(args, "sparse_set", None) is not None or getattr(args, "sparse_maf_below", None) is not None


def sparse_config(args: argparse.Namespace, config: FitConfig) -> SparseConfig:
    return SparseConfig(
        n_lambda=args.lambda_path,
        lambda_min_ratio=args.lambda_min_ratio,
        reml_rounds=args.sparse_reml_rounds,
        kkt_tol=args.kkt_tol,
        folds=args.lambda_folds,
        rule=args.lambda_rule,
        seed=config.seed,
        kkt_error=args.kkt_check,
        max_active=args.lambda_max_active,
    )


def run_sparse(args: argparse.Namespace, config: FitConfig) -> int:
    """Check every input, fit the path on the cluster, write the outputs; --kkt-check may fail after."""
    from dreml.cli.fit import check_out_prefix  # the fit command imports this module

    if args.sparse_set is not None and args.sparse_maf_below is not None:
        raise InputError("give one of --sparse-set and --sparse-maf-below")
    names = trait_names(args)
    if getattr(args, "all_pheno", False) or (names is not None and len(names) > 1):
        raise InputError("sparse REML fits one trait at a time: give one --pheno-name")
    settings = sparse_config(args, config)
    inputs = inputs_from_args(args)
    store = inputs.stores[0]
    if args.sparse_set:
        penalised = read_penalised_set(args.sparse_set, store)
    else:
        penalised = rare_penalised_set(store, args.sparse_maf_below)
    logger.info("penalised set: %d variant(s) (%s)", len(penalised.indices), penalised.source)
    check_out_prefix(args.out)
    with cluster_client(args) as client:
        result = fit_sparse(
            inputs,
            penalised,
            client=client,
            config=config,
            sparse=settings,
            min_maf=args.min_maf,
            max_missing=args.max_missing,
            memory_budget=memory_budget(args),
        )
    description = {**inputs.description, "penalised_set": penalised.source}
    paths = write_sparse(result, store, args.out, description)
    kkt = result.path.kkt()
    point = result.path.selected or result.path.points[-1]
    which = "selected" if result.path.chosen is not None else "last"
    h2 = point.theta[:-1].sum() / point.theta.sum()
    print(
        f"lambda {point.solution.lam:.4g} ({which} of {len(result.path.points)}): {len(point.solution.active)} variant(s) "
        f"with non-zero effect, h2 (polygenic) {h2:.4f}, KKT violations {kkt.violations} "
        f"(worst |c|/lambda w = {kkt.worst_ratio:.4g})"
    )
    print("wrote " + ", ".join(str(p) for p in paths))
    if not result.path.converged:
        logger.warning("not converged: see the status column of PREFIX.sparse.json")
    if settings.kkt_error and kkt.violations:
        raise DremlError(f"--kkt-check: {kkt.violations} KKT violation(s) at lambda {point.solution.lam:.4g} (see {paths[2]})")
    return 0
