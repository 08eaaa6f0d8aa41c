"""`dreml fit`: REML on one or more stores; prints a table, writes PREFIX.hsq/.json/.history.tsv/.fit.npz
(and on request GCTA's .indi.blp and .snp.blp).

Algorithm flags are generated from `FitConfig`'s fields (`--n-probes`, `--pcg-tol`, ...),
so every setting is reachable from the command line and documented in one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
from pathlib import Path

from dreml.cli.common import add_cluster_options, cluster_client, float_list
from dreml.errors import InputError
from dreml.fit import ComponentChoice, fit_prepared, prepare_inputs
from dreml.outputs import summary_table, write_outputs
from dreml.reml import FitConfig
from dreml.reml.config import METHODS

logger = logging.getLogger(__name__)

# set by their own flags below, not generated
_EXPLICIT = {"seed", "method", "worker_dtype", "loglik"}


def _field_help(doc: str) -> dict[str, str]:
    """Each field's description from an `Arguments:` docstring section (name: text, indented)."""
    helps: dict[str, str] = {}
    name = None
    for line in doc.splitlines():
        match = re.match(r"^ {8}(\w+): (.*)", line)
        if match:
            name, text = match.groups()
            helps[name] = text
        elif name and re.match(r"^ {12}\S", line):
            helps[name] += " " + line.strip()
        else:
            name = None
    return helps


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("algorithm (FitConfig; rationale of the defaults in docs/math.md)")
    helps = _field_help(FitConfig.__doc__ or "")
    for f in dataclasses.fields(FitConfig):
        if f.name in _EXPLICIT:
            continue
        text = helps.get(f.name, "").replace("%", "%%")
        group.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                           help=f"{text} (default {f.default})")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit variance components by REML")
    p.add_argument("--store", action="append", required=True, help="genotype store (repeat for multi-GRM)")
    spec = p.add_mutually_exclusive_group()
    spec.add_argument("--components", help="component spec (.json or .npz)")
    spec.add_argument("--component-file", help="SNP<TAB>component text file")
    spec.add_argument("--by-chromosome", action="store_true", help="one component per chromosome")
    spec.add_argument("--maf-bins", type=float_list, help="MAF bin edges, e.g. 0.01,0.05,0.5")
    p.add_argument("--pheno", required=True, help="phenotype file (FID IID name...)")
    p.add_argument("--pheno-name", help="phenotype column (default: first)")
    p.add_argument("--covar", help="covariate file (FID IID name...); non-numeric columns are categorical")
    p.add_argument("--covar-name", action="append", help="covariate column to use (repeatable; default: all)")
    p.add_argument("--out", required=True, help="output prefix")
    p.add_argument("--min-maf", type=float, default=0.0, help="drop variants with MAF below this")
    p.add_argument("--max-missing", type=float, default=1.0, help="drop variants missing more often than this")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--memory-budget", help="per-worker memory for resident shards, e.g. 4GiB (device memory on GPU workers)")
    budget.add_argument("--gpu-budget-gib", type=float, help="the same in GiB, as used on GPU nodes")
    method = p.add_mutually_exclusive_group()
    method.add_argument("--method", choices=METHODS, default=FitConfig.method,
                        help="exact (dense, small n), randomised (matrix-free), or auto: exact where it is faster "
                             "and the driver's memory holds it (default auto; the report says which ran and why)")
    method.add_argument("--exact", dest="method", action="store_const", const="exact", help="same as --method exact")
    p.add_argument("--seed", type=int, default=FitConfig.seed,
                   help="seed of every random draw (default: a fresh one; recorded in the outputs)")
    p.add_argument("--no-loglik", dest="loglik", action="store_false",
                   help="skip the final log-likelihood (SLQ solve on the randomised path)")
    p.add_argument("--worker-dtype", choices=("float32", "float64"), default=FitConfig.worker_dtype)
    p.add_argument("--plot", action="store_true", help="also write PREFIX.png, a convergence figure")
    post = p.add_argument_group("after the fit (GCTA names; docs/cli.md)")
    post.add_argument("--reml-est-fix", action="store_true",
                      help="append the fixed effects (GLS at the estimates) and SEs to PREFIX.hsq (always in the .json)")
    post.add_argument("--reml-pred-rand", action="store_true",
                      help="write PREFIX.indi.blp: per sample the BLUP of each component and the residual (no pass)")
    post.add_argument("--blup-snp", action="store_true",
                      help="write PREFIX.snp.blp: SNP effects per allele copy for plink2 --score (computed for every fit: one pass)")
    post.add_argument("--reml-lrt", nargs="+", metavar="COMPONENT",
                      help="likelihood-ratio test of dropping these components (numbers from 1 or names): refits the "
                           "reduced model. Default: with one component, the LRT against the null model (no pass)")
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


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    choice = ComponentChoice(
        spec=args.components or args.component_file, by_chromosome=args.by_chromosome,
        maf_bins=tuple(args.maf_bins) if args.maf_bins else None,
    )
    # every input is checked before a cluster is started, so bad input fails in a second
    inputs = prepare_inputs(
        args.store, args.pheno, pheno_name=args.pheno_name, covar=args.covar, covar_names=args.covar_name,
        components=choice,
    )
    check_out_prefix(args.out)
    with cluster_client(args) as client:
        report = fit_prepared(
            inputs, client=client, config=config, min_maf=args.min_maf, max_missing=args.max_missing,
            memory_budget=f"{args.gpu_budget_gib}GiB" if args.gpu_budget_gib else args.memory_budget,
            reml_lrt=tuple(args.reml_lrt or ()),
        )
    paths = write_outputs(report, args.out, plot=args.plot, reml_est_fix=args.reml_est_fix,
                          reml_pred_rand=args.reml_pred_rand, blup_snp=args.blup_snp)
    print(summary_table(report.to_dict()))
    if not report.converged:
        logger.warning("not converged: %s", report.status)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
