"""The input options the subcommands share, declared once: stores and components (`dreml fit`,
`cv`, `eigen`), phenotype and covariates (`fit`, `cv`), variant filters and shard memory, the
REML path."""

from __future__ import annotations

import argparse

from dreml.cli.common import float_list
from dreml.fit import ComponentChoice, FitInputs, prepare_inputs
from dreml.reml import FitConfig
from dreml.reml.config import METHODS


def add_genotype_options(p: argparse.ArgumentParser) -> None:
    """--store, the component choice, the variant filters and the shard memory budget."""
    p.add_argument("--store", action="append", required=True, help="genotype store (repeat for multi-GRM)")
    spec = p.add_mutually_exclusive_group()
    spec.add_argument("--components", help="component spec (.json or .npz)")
    spec.add_argument("--component-file", help="SNP<TAB>component text file")
    spec.add_argument("--by-chromosome", action="store_true", help="one component per chromosome")
    spec.add_argument("--maf-bins", type=float_list, help="MAF bin edges, e.g. 0.01,0.05,0.5")
    p.add_argument("--min-maf", type=float, default=0.0, help="drop variants with MAF below this")
    p.add_argument("--max-missing", type=float, default=1.0, help="drop variants missing more often than this")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--memory-budget", help="per-worker memory for resident shards, e.g. 4GiB (device memory on GPU workers)")
    budget.add_argument("--gpu-budget-gib", type=float, help="the same in GiB, as used on GPU nodes")


def add_input_options(p: argparse.ArgumentParser) -> None:
    """`add_genotype_options` and --pheno/--pheno-name, --covar/--covar-name."""
    add_genotype_options(p)
    p.add_argument("--pheno", required=True, help="phenotype file (FID IID name...)")
    p.add_argument("--pheno-name", help="phenotype column (default: first)")
    p.add_argument("--covar", help="covariate file (FID IID name...); non-numeric columns are categorical")
    p.add_argument("--covar-name", action="append", help="covariate column to use (repeatable; default: all)")


def add_method_options(p: argparse.ArgumentParser, what: str) -> None:
    """--method / --exact and --worker-dtype; `what` names the fits in the help."""
    method = p.add_mutually_exclusive_group()
    method.add_argument("--method", choices=METHODS, default=FitConfig.method,
                        help=f"REML path of {what}: exact (dense, small n), randomised (matrix-free), or auto: exact "
                             "where it is faster and the driver's memory holds it (default auto; the report says which "
                             "ran and why)")
    method.add_argument("--exact", dest="method", action="store_const", const="exact", help="same as --method exact")
    p.add_argument("--worker-dtype", choices=("float32", "float64"), default=FitConfig.worker_dtype)


def component_choice(args: argparse.Namespace) -> ComponentChoice:
    """The component option given (`add_genotype_options`)."""
    return ComponentChoice(
        spec=args.components or args.component_file, by_chromosome=args.by_chromosome,
        maf_bins=tuple(args.maf_bins) if args.maf_bins else None,
    )


def inputs_from_args(args: argparse.Namespace) -> FitInputs:
    """Every input checked (no cluster yet): bad input fails in a second."""
    return prepare_inputs(
        args.store, args.pheno, pheno_name=args.pheno_name, covar=args.covar, covar_names=args.covar_name,
        components=component_choice(args),
    )


def memory_budget(args: argparse.Namespace) -> str | None:
    """--memory-budget, or --gpu-budget-gib as a size."""
    return f"{args.gpu_budget_gib}GiB" if args.gpu_budget_gib else args.memory_budget
