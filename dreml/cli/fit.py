"""`dreml fit`: REML on one or more stores; prints a table, writes PREFIX.hsq/.json/.history.tsv/.fit.npz
(and on request GCTA's .indi.blp and .snp.blp).

Algorithm flags are generated from `FitConfig`'s fields and their `help` metadata
(`--n-probes`, `--pcg-tol`, ...), so every setting is reachable from the command line and
documented in one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

from dreml.cli.annot import add_annotation_options, run_annotated, wants_annotations
from dreml.cli.bivariate import add_bivariate_options, run_bivariate, wants_bivariate
from dreml.cli.common import add_cluster_options, cluster_client
from dreml.cli.factors import add_factor_options, run_factors, wants_factors
from dreml.cli.inputs import add_input_options, add_method_options, inputs_from_args, operator_options, trait_names
from dreml.cli.sparse import add_sparse_options, run_sparse, wants_sparse
from dreml.errors import InputError
from dreml.fit import FitInputs, TraitsOutcome, complete_cases, fit_prepared, fit_traits_prepared
from dreml.fit_result import FitResult
from dreml.liability import LiabilityScale
from dreml.outputs import atomic_write_text, summary_table, write_json, write_outputs
from dreml.phenotypes import read_sample_table
from dreml.reml import FitConfig
from dreml.reml.config import field_help

logger = logging.getLogger(__name__)

# set by their own flags below, not generated
_EXPLICIT = {"seed", "method", "worker_dtype", "loglik", "constrain", "priors"}


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("algorithm (FitConfig; rationale of the defaults in docs/math.md)")
    helps = field_help()
    for f in dataclasses.fields(FitConfig):
        if f.name in _EXPLICIT:
            continue
        text = helps.get(f.name, "").replace("%", "%%")
        group.add_argument(
            f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default, help=f"{text} (default {f.default})"
        )
    gcta = p.add_argument_group("GCTA's names for REML settings")
    gcta.add_argument(
        "--reml-maxit", dest="max_iter", type=int, default=argparse.SUPPRESS, metavar="N", help="same as --max-iter"
    )
    gcta.add_argument(
        "--reml-no-constrain",
        dest="constrain",
        action="store_false",
        help="let variance components go negative (only the residual stays positive; steps that make "
        "V indefinite are halved back)",
    )
    gcta.add_argument(
        "--reml-priors-var",
        dest="priors",
        type=float,
        nargs="+",
        metavar="V",
        help="starting values v1 .. vG ve (G genetic components, then the residual), phenotype scale",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit variance components by REML")
    add_input_options(p)
    p.add_argument(
        "--all-pheno",
        action="store_true",
        help="fit every phenotype column (or give --pheno-name a,b,c): the traits share the passes; "
        "PREFIX.<trait>.* per trait and PREFIX.traits.tsv",
    )
    p.add_argument(
        "--complete-cases",
        action="store_true",
        help="with several traits: fit every trait on the samples that have all of them (and the covariates) "
        "observed, so that the traits share their probes (docs/cli.md)",
    )
    p.add_argument(
        "--per-trait-probes",
        dest="share_probes",
        action="store_false",
        help="with several traits and one component: give every trait its own probes instead of sharing one Lanczos "
        "run among the traits observed on the same samples (docs/math.md)",
    )
    p.add_argument("--out", required=True, help="output prefix")
    add_method_options(p, "the fit")
    p.add_argument(
        "--seed",
        type=int,
        default=FitConfig.seed,
        help="seed of every random draw (default: a fresh one; recorded in the outputs)",
    )
    p.add_argument(
        "--no-loglik",
        dest="loglik",
        action="store_false",
        help="skip the final log-likelihood (SLQ solve on the randomised path)",
    )
    p.add_argument("--plot", action="store_true", help="also write PREFIX.png, a convergence figure")
    post = p.add_argument_group("after the fit (GCTA names; docs/cli.md)")
    post.add_argument(
        "--reml-est-fix",
        action="store_true",
        help="append the fixed effects (GLS at the estimates) and SEs to PREFIX.hsq (always in the .json)",
    )
    post.add_argument(
        "--reml-pred-rand",
        action="store_true",
        help="write PREFIX.indi.blp: per sample the BLUP of each component and the residual (no pass)",
    )
    post.add_argument(
        "--blup-snp",
        action="store_true",
        help="write PREFIX.snp.blp: SNP effects per allele copy for plink2 --score (computed for every fit: one pass)",
    )
    post.add_argument(
        "--prevalence",
        type=float,
        metavar="K",
        help="case-control trait (0/1 or 1/2 coded): also report h2 on the liability scale for a "
        "population prevalence K (GCTA's V(G)/Vp_L rows; Lee et al. 2011)",
    )
    post.add_argument(
        "--reml-lrt",
        nargs="+",
        metavar="COMPONENT",
        help="likelihood-ratio test of dropping these components (numbers from 1 or names): refits the "
        "reduced model. Default: with one component, the LRT against the null model (no pass)",
    )
    add_annotation_options(p)
    add_bivariate_options(p)
    add_factor_options(p)
    add_sparse_options(p)
    add_cluster_options(p)
    _add_config_flags(p)
    p.set_defaults(run=run)


def config_from_args(args: argparse.Namespace) -> FitConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(FitConfig)}
    try:
        return FitConfig(**values)
    except ValueError as exc:
        raise InputError(f"dreml fit: {exc}") from exc


def check_out_prefix(prefix: str) -> None:
    """Refuse an output prefix that cannot be written now, rather than after the whole fit."""
    parent = Path(prefix).parent
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise InputError(f"{prefix}: cannot write the outputs, {existing} is not a writable directory")


def _liability(args: argparse.Namespace, inputs: FitInputs) -> LiabilityScale | None:
    """--prevalence for this trait; a bad coding fails before the cluster starts."""
    if args.prevalence is None:
        return None
    return LiabilityScale.of_phenotype(args.prevalence, inputs.data.y, phenotype=inputs.data.phenotype_name)


def _write(report: FitResult, prefix: str, args: argparse.Namespace) -> list[Path]:
    return write_outputs(
        report, prefix, plot=args.plot, reml_est_fix=args.reml_est_fix, reml_pred_rand=args.reml_pred_rand, blup_snp=args.blup_snp
    )


def check_priors(config: FitConfig, inputs: FitInputs) -> None:
    """--reml-priors-var needs one value per component and one for the residual (before any cluster)."""
    expected = inputs.spec.n_components + 1
    if config.priors is not None and len(config.priors) != expected:
        raise InputError(
            f"--reml-priors-var: {len(config.priors)} value(s) for {inputs.spec.n_components} component(s) "
            f"({', '.join(inputs.spec.names)}) and the residual: expected {expected}"
        )


def run(args: argparse.Namespace) -> int:
    if wants_bivariate(args):  # before FitConfig: bivariate priors may hold negative covariances
        return run_bivariate(args)
    config = config_from_args(args)
    if wants_factors(args):
        return run_factors(args, config)
    if wants_annotations(args):
        return run_annotated(args, config)
    if wants_sparse(args):
        return run_sparse(args, config)
    names = trait_names(args)
    if args.all_pheno or (names is not None and len(names) > 1):
        return run_traits(args, config, names)
    inputs = inputs_from_args(args)
    check_priors(config, inputs)
    liability = _liability(args, inputs)
    check_out_prefix(args.out)
    with cluster_client(args) as client:
        report = fit_prepared(
            inputs,
            client=client,
            config=config,
            **operator_options(args),
            reml_lrt=tuple(args.reml_lrt or ()),
        )
    report = dataclasses.replace(report, liability=liability)
    paths = _write(report, args.out, args)
    print(summary_table(report.to_dict()))
    if not report.converged:
        logger.warning("not converged: %s", report.status)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def traits_tsv_text(outcome: TraitsOutcome) -> str:
    """PREFIX.traits.tsv: one row per trait (a failed fit: NA and its error as the status)."""
    lines = ["trait\tn\th2\tSE\tconverged\tpasses\tseed\tstatus"]
    for name, r in zip(outcome.names, outcome.results):
        if isinstance(r, FitResult):
            lines.append(
                f"{name}\t{r.n_samples}\t{r.h2_total:.6f}\t{r.h2_total_se:.6f}\t{r.converged}\t{r.passes}\t{r.seed}\t{r.status}"
            )
        else:
            lines.append(f"{name}\tNA\tNA\tNA\tFalse\tNA\tNA\terror: {r}")
    return "\n".join(lines) + "\n"


def run_traits(args: argparse.Namespace, config: FitConfig, names: list[str] | None) -> int:
    """Several traits in shared passes: PREFIX.<trait>.* per trait, PREFIX.traits.tsv/.json."""
    if args.reml_lrt:
        raise InputError("--reml-lrt refits reduced models one trait at a time: give one --pheno-name with it")
    if names is None:
        names = list(read_sample_table(args.pheno).columns)
    if len(set(names)) != len(names):
        raise InputError(f"--pheno-name lists a trait twice: {', '.join(names)}")
    inputs = [inputs_from_args(args, pheno_name=name) for name in names]
    if args.complete_cases:
        inputs = complete_cases(inputs)
        logger.info("--complete-cases: %d samples have every trait observed", len(inputs[0].data.sample_index))
    check_priors(config, inputs[0])
    liability = [_liability(args, i) for i in inputs]
    check_out_prefix(args.out)
    with cluster_client(args) as client:
        outcome = fit_traits_prepared(
            inputs,
            client=client,
            config=config,
            **operator_options(args),
            share_probes=args.share_probes,
        )
    paths = []
    for name, result, scale in zip(outcome.names, outcome.results, liability):
        if isinstance(result, FitResult):
            paths += _write(dataclasses.replace(result, liability=scale), f"{args.out}.{name}", args)
        else:
            logger.error("trait %s: %s", name, result)
    paths += [Path(args.out + ".traits.tsv"), Path(args.out + ".traits.json")]
    atomic_write_text(paths[-2], traits_tsv_text(outcome))
    write_json(
        {
            "traits": list(outcome.names),
            "passes": outcome.passes,
            "method": outcome.method,
            "seed": outcome.seed,
            "samples_union": outcome.samples_union,
            "probe_groups": [[outcome.names[t] for t in g] for g in outcome.probe_groups],
            "timings": outcome.timings,
            "failed": {n: str(r) for n, r in zip(outcome.names, outcome.results) if not isinstance(r, FitResult)},
        },
        paths[-1],
    )
    print(traits_tsv_text(outcome), end="")
    print(f"{len(names)} traits, {outcome.passes} passes in all, {outcome.timings['end_to_end']:.1f} s")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0 if all(isinstance(r, FitResult) for r in outcome.results) else 1
