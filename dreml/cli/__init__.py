"""The `dreml` command line: a thin layer over the library, one module per subcommand.

Every subcommand module provides `add_parser(subparsers)` and `run(args) -> int`.
dreml's own errors become one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dreml._version import __version__
from dreml.cli import cv, eigen, fit, gwas, predict, simulate
from dreml.errors import DremlError

SUBCOMMANDS = (simulate, fit, eigen, predict, cv, gwas)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreml", description="Distributed matrix-free REML.")
    parser.add_argument("--version", action="version", version=f"dreml {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr
    )
    # JAX reports at start-up which accelerator plugins it did not find; that is not news.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
    try:
        return int(args.run(args) or 0)
    except DremlError as exc:
        print(f"dreml: error: {exc}", file=sys.stderr)
        return 2
