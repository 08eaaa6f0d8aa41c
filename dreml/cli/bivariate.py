"""`dreml fit --bivariate a,b [--rg-fix R]`: GCTA's --reml-bivar (and --reml-bivar-lrt-rg) on stores.

Options added to `dreml fit` by `add_bivariate_options`; `dreml fit` hands the run to
`run_bivariate` when `wants_bivariate` (--bivariate, --rg-fix or --reml-bivar-nocove given),
before it builds its `FitConfig`. Writes PREFIX.hsq (GCTA's rows) and
PREFIX.json (`dreml.bivariate.write_bivariate`) and prints the table.
"""

from __future__ import annotations

import argparse
import logging

from dreml.bivariate import bivariate_inputs, fit_bivariate_prepared, summary_text, write_bivariate
from dreml.cli.common import cluster_client
from dreml.cli.inputs import inputs_from_args, operator_options
from dreml.errors import InputError

logger = logging.getLogger(__name__)

# `dreml fit` options that a bivariate fit does not take: (attribute, flag, what it would need)
_REFUSED = (
    ("all_pheno", "--all-pheno", "--bivariate names the two traits"),
    ("pheno_name", "--pheno-name", "--bivariate names the two traits"),
    ("mpheno", "--mpheno", "--bivariate names the two traits"),
    ("reml_lrt", "--reml-lrt", "use --rg-fix for the bivariate LRT"),
    ("prevalence", "--prevalence", "liability-scale bivariate estimates are not implemented"),
    ("reml_pred_rand", "--reml-pred-rand", "bivariate BLUPs are not written"),
    ("blup_snp", "--blup-snp", "bivariate SNP effects are not written"),
    ("plot", "--plot", "no convergence figure is drawn for a bivariate fit"),
    ("annot", "--annot", "annotation-driven variances are univariate"),
    ("variance_model", "--variance-model", "annotation-driven variances are univariate"),
    ("complete_cases", "--complete-cases", "each trait keeps its own samples (their overlap is part of the model)"),
)


def add_bivariate_options(p: argparse.ArgumentParser) -> None:
    """--bivariate, --rg-fix and --reml-bivar-nocove on `dreml fit`'s parser."""
    g = p.add_argument_group("bivariate REML (GCTA --reml-bivar; docs/cli.md)")
    g.add_argument(
        "--bivariate",
        metavar="A,B",
        help="fit the genetic and residual (co)variances of traits A and B (two phenotype columns, each on "
        "its own observed samples, overlapping or not) and their genetic correlation rG; writes "
        "PREFIX.hsq with GCTA's --reml-bivar rows and PREFIX.json. --reml-priors-var then takes GCTA's "
        "order: V(G)_tr1 V(G)_tr2 C(G)_tr12 ... V(e)_tr1 V(e)_tr2 [C(e)_tr12]",
    )
    g.add_argument(
        "--rg-fix",
        type=float,
        metavar="R",
        help="with --bivariate: also fit the model with rG fixed at R (0: the genetic covariances fixed at 0; "
        "1: C(G) = sqrt(V(G)_tr1 V(G)_tr2)) and write its logL0, LRT, df and Pval rows "
        "(GCTA --reml-bivar-lrt-rg)",
    )
    g.add_argument(
        "--reml-bivar-nocove",
        action="store_true",
        help="with --bivariate: leave out the residual covariance C(e)_tr12 (default: fitted when at least 10%% "
        "of the samples are measured for both traits, as GCTA)",
    )


def wants_bivariate(args: argparse.Namespace) -> bool:
    """Whether `dreml fit` hands the run to `run_bivariate` (any of the bivariate options given);
    checked before `dreml fit` builds its `FitConfig`, whose priors may not be negative."""
    return (
        bool(getattr(args, "bivariate", None))
        or getattr(args, "rg_fix", None) is not None
        or bool(getattr(args, "reml_bivar_nocove", False))
    )


def _trait_pair(text: str) -> tuple[str, str]:
    names = [s.strip() for s in text.split(",")]
    if len(names) != 2 or not all(names):
        raise InputError(f"--bivariate {text!r}: expected two phenotype columns, e.g. --bivariate height,bmi")
    if names[0] == names[1]:
        raise InputError(f"--bivariate {text!r}: trait {names[0]!r} is named twice (expected two different traits)")
    return names[0], names[1]


def run_bivariate(args: argparse.Namespace) -> int:
    """Run `dreml fit --bivariate A,B` (refuses the options of univariate fits it cannot honour)."""
    from dreml.cli.fit import check_out_prefix, config_from_args  # dreml.cli.fit imports this module

    if not args.bivariate:
        raise InputError("--rg-fix and --reml-bivar-nocove need --bivariate A,B")
    names = _trait_pair(args.bivariate)
    for attr, flag, why in _REFUSED:
        if getattr(args, attr, None):
            raise InputError(f"{flag} does not go with --bivariate: {why}")
    if args.rg_fix is not None and not -1.0 <= args.rg_fix <= 1.0:
        raise InputError(f"--rg-fix {args.rg_fix:g}: expected a correlation in [-1, 1] (0 and 1 are the usual tests)")
    priors = args.priors  # GCTA's order, covariances may be negative: checked by fit_bivariate
    config = config_from_args(argparse.Namespace(**{**vars(args), "priors": None}))
    prepared = []
    for name in names:
        try:
            prepared.append(inputs_from_args(args, pheno_name=name))
        except InputError as exc:
            raise InputError(f"--bivariate trait {name!r}: {exc}") from exc
    inputs = bivariate_inputs(*prepared)
    check_out_prefix(args.out)
    with cluster_client(args) as client:
        fit = fit_bivariate_prepared(
            inputs,
            client=client,
            config=config,
            rg_fix=args.rg_fix,
            residual_covariance=False if args.reml_bivar_nocove else None,
            priors=priors,
            **operator_options(args),
        )
    paths = write_bivariate(fit, args.out, fixed_effects=args.reml_est_fix)
    print(summary_text(fit.to_dict()))
    if not fit.result.converged:
        logger.warning("not converged: %s", fit.result.status)
    if fit.result.rg_test is not None and not fit.result.rg_test.converged:
        logger.warning("the model with rG fixed at %g did not converge: %s", fit.result.rg_test.rho, fit.result.rg_test.status)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
