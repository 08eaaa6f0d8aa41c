"""The `dreml` command line: a thin layer over the library, one module per subcommand.

Every subcommand module provides `add_parser(subparsers)` and `run(args) -> int`.
dreml's own errors become one line on stderr and exit status 2. A subcommand with `--out
PREFIX` writes its run log to PREFIX.log (`dreml.runlog`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from dreml._version import __version__
from dreml.cli import cv, eigen, fit, gwas, predict, simulate
from dreml.errors import DremlError
from dreml.runlog import configure_stderr, run_command

SUBCOMMANDS = (simulate, fit, eigen, predict, cv, gwas)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreml", description="Distributed matrix-free REML.")
    parser.add_argument("--version", action="version", version=f"dreml {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    configure_stderr(quiet=args.quiet)
    # JAX reports at start-up which accelerator plugins it did not find; that is not news.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
    out = getattr(args, "out", None)
    return run_command("dreml", argv, lambda: args.run(args), log=None if out is None else f"{out}.log", errors=(DremlError,))
