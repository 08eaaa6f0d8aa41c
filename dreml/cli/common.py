"""Options shared by the `dreml` subcommands: the cluster choice and list parsing."""

from __future__ import annotations

import argparse
import contextlib

from distributed import Client

from dreml.cluster import session


def float_list(text: str) -> tuple[float, ...]:
    """Parse '0.01,0.05,0.5' for argparse."""
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("cluster")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://10.0.0.1:8786")
    where.add_argument("--workers", type=int, help="start a local cluster of this many worker processes")


def cluster_client(args: argparse.Namespace) -> contextlib.AbstractContextManager[Client]:
    """A client for `--scheduler`, or a local cluster (`--workers`) closed on exit."""
    return session(args.scheduler, n_workers=args.workers)
