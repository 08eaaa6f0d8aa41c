"""The `dreml-convert` command line, a thin layer over `converters.convert` and `verify`.

    dreml-convert bed PREFIX OUT.zarr  [--scheduler ADDRESS | --workers N] [--variant-chunk V]
                                       [--sample-chunk S] [--overwrite]
    dreml-convert pgen PREFIX OUT.zarr ...
    dreml-convert info STORE
    dreml-convert verify STORE PREFIX

dreml's own errors and operating-system errors (an unwritable output directory, a file
that cannot be read) become one line `dreml-convert: error: ...` on stderr and exit
status 2; `verify` exits 1 when the store differs from the source.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from converters.convert import (
    DEFAULT_SAMPLE_CHUNK,
    DEFAULT_VARIANT_CHUNK,
    check_chunk_sizes,
    check_output,
    open_source,
    write_store,
)
from converters.verify import verify
from dreml._version import __version__
from dreml.cluster import session
from dreml.errors import DremlError
from dreml.store import open_store

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreml-convert", description="PLINK filesets to dreml genotype stores.")
    parser.add_argument("--version", action="version", version=f"dreml {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bar")
    sub = parser.add_subparsers(dest="command", required=True)
    for fmt, files in (("bed", "PREFIX.bed/.bim/.fam"), ("pgen", "PREFIX.pgen/.pvar/.psam")):
        p = sub.add_parser(fmt, help=f"convert {files}")
        p.add_argument("prefix", help="fileset path without extension")
        p.add_argument("out", help="store to create, e.g. cohort.zarr")
        where = p.add_mutually_exclusive_group()
        where.add_argument("--scheduler", metavar="ADDRESS", help="address of a running Dask scheduler")
        where.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
        p.add_argument("--variant-chunk", type=int, default=DEFAULT_VARIANT_CHUNK, help="variants per chunk")
        p.add_argument("--sample-chunk", type=int, default=DEFAULT_SAMPLE_CHUNK, help="samples per chunk")
        p.add_argument("--overwrite", action="store_true", help="replace an existing store")
        p.set_defaults(run=_run_convert, fmt=fmt)
    p = sub.add_parser("info", help="print a store's summary")
    p.add_argument("store")
    p.set_defaults(run=_run_info)
    p = sub.add_parser("verify", help="compare a store with its source fileset, genotype by genotype")
    p.add_argument("store")
    p.add_argument("prefix", help="fileset path without extension (.bed or .pgen detected)")
    p.set_defaults(run=_run_verify)
    return parser


def _run_convert(args: argparse.Namespace) -> int:
    # check the output and every input file before paying for a cluster
    check_chunk_sizes(args.variant_chunk, args.sample_chunk)
    check_output(Path(args.out), args.overwrite)
    source = open_source(args.fmt, args.prefix)
    with session(args.scheduler, n_workers=args.workers) as client:
        store = write_store(
            source,
            args.out,
            client=client,
            variant_chunk=args.variant_chunk,
            sample_chunk=args.sample_chunk,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    print(store.summary())
    return 0


def _run_info(args: argparse.Namespace) -> int:
    print(open_store(args.store).summary())
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    report = verify(open_store(args.store), args.prefix)
    for line in report.mismatches:
        print(line)
    print(f"{'OK' if report.ok else 'MISMATCH'}: compared {report.n_genotypes} genotypes")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return int(args.run(args))
    except (DremlError, OSError) as exc:  # OSError's message names the path
        print(f"dreml-convert: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
