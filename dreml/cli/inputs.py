"""The input options the subcommands share, declared once with GCTA's and PLINK 2's names:
stores and components, variant selection (`--extract/--exclude/--chr`) and filters, sample
selection (`--keep/--remove`), phenotypes (`--pheno/--pheno-name/--mpheno`), covariates
(`--covar` categorical, `--qcovar` quantitative, `--covar-auto`, `--covar-name`,
`--covar-cat`), shard memory and the REML path."""

from __future__ import annotations

import argparse

from dreml.cli.common import float_list, positive_int
from dreml.errors import InputError
from dreml.fit import ComponentChoice, FitInputs, prepare_inputs
from dreml.phenotypes import CovariateFile
from dreml.reml import FitConfig
from dreml.reml.config import METHODS
from dreml.selection import SampleSelection, Selection, VariantSelection, parse_chromosomes


def add_variant_selection(p: argparse.ArgumentParser) -> None:
    """--extract, --exclude, --chr (PLINK 2 names)."""
    g = p.add_argument_group("variant selection (PLINK 2 names)")
    g.add_argument(
        "--extract", metavar="F", help="use only the variants listed (one ID a line; header, #comments, .gz/.zst allowed)"
    )
    g.add_argument("--exclude", metavar="F", help="drop the variants listed")
    g.add_argument("--chr", nargs="+", metavar="SPEC", help="use only these chromosomes, e.g. 1-3,7 X")


def add_genotype_options(p: argparse.ArgumentParser) -> None:
    """--store, the component choice, the variant selection and filters, the frequencies and
    the shard memory budget."""
    p.add_argument("--store", action="append", required=True, help="genotype store (repeat for multi-GRM)")
    spec = p.add_mutually_exclusive_group()
    spec.add_argument("--components", help="component spec (.json or .npz)")
    spec.add_argument("--component-file", help="'SNP component' text file (tabs or spaces, optional header, .gz/.zst)")
    spec.add_argument("--by-chromosome", action="store_true", help="one component per chromosome")
    spec.add_argument("--maf-bins", type=float_list, help="MAF bin edges, e.g. 0.01,0.05,0.5")
    add_variant_selection(p)
    p.add_argument("--min-maf", type=float, default=0.0, help="drop variants with MAF below this")
    p.add_argument("--max-missing", type=float, default=1.0, help="drop variants missing more often than this")
    p.add_argument(
        "--freq-from",
        choices=("store", "samples"),
        default="store",
        help="allele frequencies that centre and scale the genotypes (and feed --min-maf): the store's, "
        "over all its samples (default), or recomputed over the analysed samples",
    )
    add_memory_budget(p)


def add_memory_budget(p: argparse.ArgumentParser) -> None:
    """--memory-budget or --gpu-budget-gib (`memory_budget`)."""
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--memory-budget", help="per-worker memory for resident shards, e.g. 4GiB (device memory on GPU workers)")
    budget.add_argument("--gpu-budget-gib", type=float, help="the same in GiB, as used on GPU nodes")


def add_sample_options(p: argparse.ArgumentParser, *, required: bool = True, many_traits: bool = False) -> None:
    """--pheno, --pheno-name/--mpheno, the covariate files and columns, --keep/--remove.

    `many_traits`: --pheno-name takes a comma-separated list (default every column)."""
    g = p.add_argument_group("samples, phenotypes and covariates (GCTA / PLINK 2 names; files may be .gz/.zst)")
    g.add_argument(
        "--pheno",
        required=required,
        metavar="F",
        help="phenotype file: 'FID IID value...' with a header (FID IID, #FID IID or #IID) or without (GCTA)",
    )
    which = g.add_mutually_exclusive_group()
    which.add_argument(
        "--pheno-name",
        metavar="NAME" + (",NAME..." if many_traits else ""),
        help="traits, comma-separated (default: every column)"
        if many_traits
        else "phenotype column (default: the first; `dreml fit` takes several, comma-separated, fitted in shared passes)",
    )
    which.add_argument("--mpheno", type=positive_int, metavar="N", help="the N-th phenotype column (1-based, GCTA)")
    g.add_argument(
        "--covar", action="append", metavar="F", help="categorical covariates (GCTA --covar: every column, numeric codes too)"
    )
    g.add_argument("--qcovar", action="append", metavar="F", help="quantitative covariates (GCTA --qcovar)")
    g.add_argument(
        "--covar-auto",
        action="append",
        metavar="F",
        help="covariates read as PLINK 2 --covar does: numeric columns quantitative, others categorical",
    )
    g.add_argument(
        "--covar-name",
        action="append",
        metavar="NAME",
        help="covariate columns to use, over all the files (repeatable or comma-separated; default: all)",
    )
    g.add_argument("--covar-cat", nargs="+", default=(), metavar="NAME", help="treat these covariate columns as categorical")
    add_sample_selection(g)


def add_sample_selection(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--keep and --remove (PLINK 2 / GCTA names)."""
    p.add_argument("--keep", metavar="F", help="use only the samples listed ('FID IID' or 'IID' lines, PLINK headers allowed)")
    p.add_argument("--remove", metavar="F", help="drop the samples listed")


def sample_selection(args: argparse.Namespace) -> SampleSelection:
    """`add_sample_selection`'s options."""
    return SampleSelection(keep=args.keep, remove=args.remove)


def add_input_options(p: argparse.ArgumentParser) -> None:
    """`add_genotype_options` and `add_sample_options`."""
    add_genotype_options(p)
    add_sample_options(p)


def add_method_options(p: argparse.ArgumentParser, what: str) -> None:
    """--method / --exact and --worker-dtype; `what` names the fits in the help."""
    method = p.add_mutually_exclusive_group()
    method.add_argument(
        "--method",
        choices=METHODS,
        default=FitConfig.method,
        help=f"REML path of {what}: exact (dense, small n), randomised (matrix-free), or auto: exact "
        "where it is faster and the driver's memory holds it (default auto; the report says which "
        "ran and why)",
    )
    method.add_argument("--exact", dest="method", action="store_const", const="exact", help="same as --method exact")
    p.add_argument("--worker-dtype", choices=("float32", "float64"), default=FitConfig.worker_dtype)


def component_choice(args: argparse.Namespace) -> ComponentChoice:
    """The component option given (`add_genotype_options`)."""
    return ComponentChoice(
        spec=args.components or args.component_file,
        by_chromosome=args.by_chromosome,
        maf_bins=tuple(args.maf_bins) if args.maf_bins else None,
    )


def variant_selection(args: argparse.Namespace) -> VariantSelection:
    """`add_variant_selection`'s options."""
    return VariantSelection(
        extract=args.extract,
        exclude=args.exclude,
        chromosomes=parse_chromosomes(" ".join(args.chr)) if args.chr else None,
    )


def trait_names(args: argparse.Namespace) -> list[str] | None:
    """The comma-separated `--pheno-name` of a many-trait command (None: not given)."""
    if not args.pheno_name:
        return None
    names = [s.strip() for s in args.pheno_name.split(",")]
    if not all(names):
        raise InputError(f"--pheno-name {args.pheno_name!r}: empty trait name")
    return names


def phenotype_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of `dreml.phenotypes.load_analysis_data` from `add_sample_options`'s
    options (all but the phenotype file and column)."""
    files = [
        CovariateFile(path, kind)
        for option, kind in (("covar", "categorical"), ("qcovar", "quantitative"), ("covar_auto", "auto"))
        for path in getattr(args, option) or ()
    ]
    names = [n for item in args.covar_name or () for n in item.split(",") if n] or None
    return {"covar": files, "covar_names": names, "covar_cat": tuple(args.covar_cat), "samples": sample_selection(args)}


def inputs_from_args(args: argparse.Namespace, pheno_name: str | None = None) -> FitInputs:
    """Every input checked (no cluster yet): bad input fails in a second. `pheno_name`
    overrides --pheno-name (one trait of several)."""
    options = phenotype_options(args)
    return prepare_inputs(
        args.store,
        args.pheno,
        pheno_name=pheno_name or args.pheno_name,
        mpheno=args.mpheno,
        covar=options["covar"],
        covar_names=options["covar_names"],
        covar_cat=options["covar_cat"],
        components=component_choice(args),
        selection=Selection(samples=options["samples"], variants=variant_selection(args)),
    )


def memory_budget(args: argparse.Namespace) -> str | None:
    """--memory-budget, or --gpu-budget-gib as a size."""
    return f"{args.gpu_budget_gib}GiB" if args.gpu_budget_gib else args.memory_budget


def operator_options(args: argparse.Namespace) -> dict:
    """The genotype operator's settings from the command line (--min-maf, --max-missing, the
    memory budget, --freq-from), as the keyword arguments of the `*_prepared` entry points."""
    return {
        "min_maf": args.min_maf,
        "max_missing": args.max_missing,
        "memory_budget": memory_budget(args),
        "frequencies": args.freq_from,
    }
