"""Options shared by the `dreml` subcommands: the cluster choice and list parsing."""

from __future__ import annotations

import argparse
import contextlib

from distributed import Client

from dreml.cluster import DEFAULT_DEVICE_MEMORY_LIMIT, session


def float_list(text: str) -> tuple[float, ...]:
    """Parse '0.01,0.05,0.5' for argparse."""
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def positive_int(text: str) -> int:
    """Parse a count of at least 1 for argparse."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("cluster")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://10.0.0.1:8786")
    where.add_argument("--workers", type=int, help="start a local cluster of this many worker processes")
    group.add_argument(
        "--wait-workers",
        type=positive_int,
        metavar="N",
        help="start only once N workers have joined the cluster (default: a local cluster's own)",
    )
    group.add_argument(
        "--device-memory-limit",
        default=str(DEFAULT_DEVICE_MEMORY_LIMIT),
        help="local GPU cluster: device memory per worker (0.9 = 90%%, or 70GiB) beyond which "
        "dask-cuda spills to host memory; keep it above the shard budget "
        f"(default {DEFAULT_DEVICE_MEMORY_LIMIT})",
    )


def cluster_client(args: argparse.Namespace) -> contextlib.AbstractContextManager[Client]:
    """A client for `--scheduler`, or a local cluster (`--workers`) closed on exit.

    Waits for `--wait-workers` workers (a `ClusterError` names the scheduler and the count
    after `dreml.cluster.DEFAULT_WAIT_TIMEOUT` seconds).
    """
    return session(
        args.scheduler,
        n_workers=args.workers,
        wait_for_workers=args.wait_workers,
        device_memory_limit=args.device_memory_limit,
    )
