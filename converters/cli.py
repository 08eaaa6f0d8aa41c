"""The `dreml-convert` command line, a thin layer over `converters.convert` and `verify`.

    dreml-convert bed PREFIX OUT.zarr  [--scheduler ADDRESS | --workers N] [--variant-chunk V]
                                       [--sample-chunk S] [--sparse-below MAF] [--overwrite]
                                       [--keep F] [--remove F] [--extract F] [--exclude F] [--chr SPEC]
    dreml-convert pgen PREFIX OUT.zarr [--max-alleles 2] ...
    dreml-convert vcz IN.vcz OUT.zarr [--max-alleles 2] ...
    dreml-convert bgen F.bgen [--sample F.sample] OUT.zarr [--hard-call-threshold T] [--max-alleles 2] ...
    dreml-convert info STORE
    dreml-convert verify STORE INPUT [--format bed|pgen|vcz|bgen] [--sample F.sample]

The selection options are `dreml fit`'s (`dreml.cli.inputs`, `converters.subset`). A
conversion writes its run log to OUT.log (`dreml.runlog`; OUT without a trailing slash).
dreml's own errors and operating-system errors (an unwritable output directory, a file
that cannot be read) become one line `dreml-convert: error: ...` on stderr (and in the log)
and exit status 2; `verify` exits 1 when the store differs from the source.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from converters.bgen import DEFAULT_HARD_CALL_THRESHOLD
from converters.convert import (
    DEFAULT_SAMPLE_CHUNK,
    DEFAULT_VARIANT_CHUNK,
    SOURCE_OPTIONS,
    check_chunk_sizes,
    check_output,
    check_sparse_below,
    open_source,
    write_store,
)
from converters.subset import describe, select
from converters.verify import verify
from dreml._version import __version__
from dreml.cli.inputs import add_sample_selection, add_variant_selection, sample_selection, variant_selection
from dreml.cluster import session
from dreml.errors import DremlError
from dreml.runlog import configure_stderr, run_command
from dreml.selection import Selection
from dreml.store import Store, open_store

logger = logging.getLogger(__name__)

# format: (input metavar, input help, subcommand help)
FORMATS = {
    "bed": ("PREFIX", "fileset path without extension", "convert PREFIX.bed/.bim/.fam (.bim/.fam may be .gz/.zst)"),
    "pgen": (
        "PREFIX",
        "fileset path without extension",
        "convert PREFIX.pgen/.pvar/.psam (.pvar/.psam may be .gz/.zst)",
    ),
    "vcz": ("IN.vcz", "VCF Zarr directory (bio2zarr vcf2zarr, sgkit)", "convert a VCF Zarr store"),
    "bgen": (
        "F.bgen",
        "BGEN file (layout 1 or 2)",
        "convert a BGEN file to hard calls (needs: pip install 'dreml[bgen]')",
    ),
}


def _add_format_options(p: argparse.ArgumentParser, fmt: str) -> None:
    if fmt != "bed":
        p.add_argument(
            "--max-alleles",
            type=int,
            choices=[2],
            help="skip multi-allelic variants (and count them) instead of stopping at the first",
        )
    if fmt == "bgen":
        p.add_argument("--sample", metavar="F.sample", help="Oxford .sample file (default: the sample IDs stored in the BGEN)")
        p.add_argument(
            "--hard-call-threshold",
            type=float,
            default=DEFAULT_HARD_CALL_THRESHOLD,
            metavar="T",
            help="a dosage within T of an integer is called as that integer, otherwise missing "
            f"(PLINK 2's rule; default {DEFAULT_HARD_CALL_THRESHOLD})",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreml-convert", description="PLINK filesets, VCF Zarr and BGEN to dreml genotype stores."
    )
    parser.add_argument("--version", action="version", version=f"dreml {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bar")
    sub = parser.add_subparsers(dest="command", required=True)
    for fmt, (metavar, input_help, command_help) in FORMATS.items():
        p = sub.add_parser(fmt, help=command_help)
        p.add_argument("prefix", metavar=metavar, help=input_help)
        p.add_argument("out", help="store to create, e.g. cohort.zarr")
        where = p.add_mutually_exclusive_group()
        where.add_argument("--scheduler", metavar="ADDRESS", help="address of a running Dask scheduler")
        where.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
        p.add_argument("--variant-chunk", type=int, default=DEFAULT_VARIANT_CHUNK, help="variants per chunk")
        p.add_argument("--sample-chunk", type=int, default=DEFAULT_SAMPLE_CHUNK, help="samples per chunk")
        p.add_argument(
            "--sparse-below",
            type=float,
            metavar="MAF",
            help="also store the variants whose MAF is below MAF (e.g. 0.01) as sparse rows of their carriers "
            "and missing calls (store format 1.1; the genotype operators hold them as sparse shards)",
        )
        p.add_argument("--overwrite", action="store_true", help="replace an existing store")
        _add_format_options(p, fmt)
        add_sample_selection(p.add_argument_group("sample selection (PLINK 2 / GCTA names; as dreml fit)"))
        add_variant_selection(p)
        p.set_defaults(run=_run_convert, fmt=fmt)
    p = sub.add_parser("info", help="print a store's summary")
    p.add_argument("store")
    p.set_defaults(run=_run_info)
    p = sub.add_parser("verify", help="compare a store with its input, genotype by genotype")
    p.add_argument("store")
    p.add_argument("prefix", metavar="INPUT", help="PLINK fileset path without extension (or its .bed/.pgen file), .vcz or .bgen")
    p.add_argument(
        "--format",
        dest="fmt",
        choices=list(FORMATS),
        help="the input's format (default: the one the store records; needed for a PLINK prefix "
        "with both .bed and .pgen when the store records none)",
    )
    p.add_argument("--sample", metavar="F.sample", help="a BGEN's .sample file (default: the recorded one, beside it)")
    p.set_defaults(run=_run_verify)
    return parser


def summary(store: Store) -> str:
    """`Store.summary()` plus the conversion's options, skipped variants and selection, when recorded."""
    recorded = store.attrs["source"]
    lines = [store.summary()]
    for name, value in recorded.get("options", {}).items():
        lines.append(f"option         {name.replace('_', '-')} {value}")
    for reason, count in recorded.get("skipped_variants", {}).items():
        lines.append(f"skipped        {count} {reason.replace('multi', 'multi-')} variant(s)")
    lines.extend(describe(recorded.get("selection", {})))
    return "\n".join(lines)


def _run_convert(args: argparse.Namespace) -> int:
    # check the output and every input file (the selection's too) before paying for a cluster
    check_chunk_sizes(args.variant_chunk, args.sample_chunk)
    check_sparse_below(args.sparse_below)
    check_output(Path(args.out), args.overwrite)
    source = open_source(args.fmt, args.prefix, **{name: getattr(args, name, None) for name in SOURCE_OPTIONS})
    source = select(source, Selection(samples=sample_selection(args), variants=variant_selection(args)))
    with session(args.scheduler, n_workers=args.workers) as client:
        store = write_store(
            source,
            args.out,
            client=client,
            variant_chunk=args.variant_chunk,
            sample_chunk=args.sample_chunk,
            sparse_below=args.sparse_below,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    print(summary(store))
    return 0


def _run_info(args: argparse.Namespace) -> int:
    print(summary(open_store(args.store)))
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    report = verify(open_store(args.store), args.prefix, fmt=args.fmt, sample=args.sample)
    for line in report.mismatches:
        print(line)
    print(f"{'OK' if report.ok else 'MISMATCH'}: compared {report.n_genotypes} genotypes")
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    configure_stderr(quiet=args.quiet)
    out = getattr(args, "out", None)  # the conversions; info and verify write no log
    return run_command(
        "dreml-convert",
        argv,
        lambda: args.run(args),
        log=None if out is None else f"{str(out).rstrip('/')}.log",
        errors=(DremlError, OSError),  # OSError's message names the path
    )


if __name__ == "__main__":
    sys.exit(main())
