"""`dreml eigen`: the top-k eigenpairs of a GRM, matrix-free; writes PREFIX.eigenval/.eigenvec/.eigen.json.

K is the GRM of all variants, sum_g (m_g / sum_h m_h) K_g over the chosen components, or one
component's K_g with `--component NAME`. The eigenpairs come from `dreml.eigen.top_eigenpairs`
(randomised block Krylov by default, or subspace iteration with `--method subspace`; one pass
per iteration) on the Dask genotype operator.

Outputs (each written to NAME.tmp and renamed):
    PREFIX.eigenval    one eigenvalue per line, largest first (GCTA `--pca` layout and scale)
    PREFIX.eigenvec    `#FID IID PC1 .. PCk`, tab-separated, one row per sample in store
                       order (PLINK 2 layout; `dreml fit --covar PREFIX.eigenvec` reads it)
    PREFIX.eigen.json  eigenvalues, residuals, convergence, seed, settings, timings
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import time
from pathlib import Path

import numpy as np

from dreml.cli.common import add_cluster_options, cluster_client
from dreml.cli.fit import check_out_prefix
from dreml.cli.inputs import (
    add_genotype_options,
    add_sample_selection,
    component_choice,
    operator_options,
    sample_selection,
    variant_selection,
)
from dreml.components import Components
from dreml.eigen import DEFAULT_OVERSAMPLING, METHODS, EigenConfig, EigenResult, top_eigenpairs
from dreml.errors import InputError
from dreml.operators import GenotypeOperator
from dreml.outputs import atomic_write_text, write_json
from dreml.selection import select_variants
from dreml.store import Store, open_stores

logger = logging.getLogger(__name__)

# float32 workers floor the relative residual near 1e-6 (docs/cli.md), 100 times below the
# default tol, and double the GEMM rate: float64 is needed only for tol below about 1e-5
DEFAULT_WORKER_DTYPE = "float32"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eigen", help="top eigenvalues and eigenvectors (PCs) of a GRM, matrix-free")
    add_genotype_options(p)
    add_sample_selection(p.add_argument_group("sample selection"))
    p.add_argument("--component", metavar="NAME", help="eigenpairs of this component's K_g (default: the GRM of all variants)")
    p.add_argument("--rank", type=int, required=True, help="k, the number of leading eigenpairs")
    p.add_argument(
        "--method",
        choices=METHODS,
        default=EigenConfig.method,
        help="krylov: randomised block Krylov, every block kept (fewest passes); subspace: "
        f"subspace iteration, the last block only (default {EigenConfig.method})",
    )
    p.add_argument(
        "--oversampling",
        type=int,
        help="extra columns per pass beyond k (default: "
        + ", ".join(f"{DEFAULT_OVERSAMPLING[m]} for {m}" for m in METHODS)
        + ")",
    )
    p.add_argument(
        "--max-basis",
        type=int,
        default=EigenConfig.max_basis,
        help="krylov: most basis columns on the driver (2 n max_basis float64), then a "
        f"thick restart at no pass (default {EigenConfig.max_basis})",
    )
    p.add_argument(
        "--tol",
        type=float,
        default=EigenConfig.tol,
        help=f"stop when every relative residual ||K u - lambda u|| / lambda is at most this (default {EigenConfig.tol:g})",
    )
    p.add_argument(
        "--max-iter",
        type=int,
        default=EigenConfig.max_iter,
        help=f"most iterations, one pass each (default {EigenConfig.max_iter})",
    )
    p.add_argument("--seed", type=int, help="seed of the random start block (default: a fresh one, recorded)")
    p.add_argument(
        "--worker-dtype",
        choices=("float32", "float64"),
        default=DEFAULT_WORKER_DTYPE,
        help="arithmetic on the workers; float32 reaches relative residuals of about 1e-6, "
        f"use float64 for a smaller --tol (default {DEFAULT_WORKER_DTYPE})",
    )
    p.add_argument("--out", required=True, help="output prefix")
    add_cluster_options(p)
    p.set_defaults(run=run)


def _as_options(message: str) -> str:
    """A settings message with each `EigenConfig` field named as its command-line option."""
    for f in dataclasses.fields(EigenConfig):
        message = re.sub(rf"\b{f.name}\b", "--" + f.name.replace("_", "-"), message)
    return message


def config_from_args(args: argparse.Namespace, n: int) -> EigenConfig:
    """The settings, checked against the n samples of the stores."""
    try:
        config = EigenConfig(
            rank=args.rank,
            oversampling=args.oversampling,
            tol=args.tol,
            max_iter=args.max_iter,
            seed=args.seed,
            method=args.method,
            max_basis=args.max_basis,
        )
        config.check_samples(n)
    except ValueError as exc:
        raise InputError(f"dreml eigen: {_as_options(str(exc))}") from exc
    return config


def select_component(spec: Components, name: str | None) -> Components:
    """The spec reduced to component `name` (all of it for None), so that the workers hold
    only that component's variants; an unknown name is an `InputError` listing the names."""
    if name is None:
        return spec
    if name not in spec.names:
        raise InputError(f"--component {name}: no such component (expected one of: {', '.join(spec.names)})")
    g = spec.names.index(name)
    return Components(
        names=(name,),
        variant_indices=(spec.variant_indices[g],),
        stores=(spec.stores[g],),
        annotations=(spec.annotations[g],),
        source=f"{spec.source}, component {name}",
    )


def eigenval_text(result: EigenResult) -> str:
    """One eigenvalue per line, largest first (GCTA's .eigenval)."""
    return "".join(f"{x:.10g}\n" for x in result.eigenvalues)


def eigenvec_text(result: EigenResult, store: Store, samples: np.ndarray) -> str:
    """`#FID IID PC1 .. PCk` and one tab-separated row per sample of `samples` (store indices;
    PLINK 2's .eigenvec)."""
    k = result.eigenvectors.shape[1]
    lines = ["\t".join(["#FID", "IID", *(f"PC{j + 1}" for j in range(k))])]
    for fid, iid, row in zip(store.sample_family_id[samples], store.sample_id[samples], result.eigenvectors):
        lines.append("\t".join([fid, iid, *(f"{x:.8g}" for x in row)]))
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    # every input is checked before a cluster is started, so bad input fails in a second
    stores = open_stores([Path(s) for s in args.store])
    spec, variant_report = select_variants(component_choice(args).resolve(stores), stores, variant_selection(args))
    spec = select_component(spec, args.component)
    kept, sample_report = sample_selection(args).mask(stores[0].sample_family_id, stores[0].sample_id)
    samples = np.flatnonzero(kept)
    config = config_from_args(args, len(samples))
    check_out_prefix(args.out)
    with (
        cluster_client(args) as client,
        GenotypeOperator(
            stores,
            spec,
            samples,
            client=client,
            dtype=np.dtype(args.worker_dtype),
            **operator_options(args),
        ) as operator,
    ):
        t_load = time.perf_counter() - t0
        dashboard = getattr(client, "dashboard_link", None)
        what = f"K_g of component {args.component}" if args.component else "the GRM of all variants"
        logger.info("top %d eigenpairs of %s on %d samples; dashboard: %s", config.rank, what, operator.shape[0], dashboard)
        # weights m_g / sum m: the GRM of all variants, or 1 for the one component selected
        result = top_eigenpairs(
            operator,
            config.rank,
            method=config.method,
            oversampling=config.oversampling,
            tol=config.tol,
            max_iter=config.max_iter,
            seed=config.seed,
            max_basis=config.max_basis,
        )
        report = {
            **result.to_dict(),
            "n_samples": operator.shape[0],
            "components": [{"name": g, "m": int(m)} for g, m in zip(operator.component_names, operator.m)],
            "component": args.component,
            "settings": {
                **result.config.to_dict(),
                "worker_dtype": args.worker_dtype,
                "min_maf": args.min_maf,
                "max_missing": args.max_missing,
                "freq_from": args.freq_from,
                "memory_budget": operator.memory_budget,
                "stores": [str(s.path) for s in stores],
                "component_spec": str(spec.source),
            },
            "variant_filter": operator.report.table(),
            "variant_selection": variant_report,
            "sample_selection": sample_report,
            "dashboard": dashboard,
            "workers": len(client.scheduler_info(n_workers=-1)["workers"]),
        }
    report["timings"] = {**report["timings"], "shard_load": t_load, "end_to_end": time.perf_counter() - t0}
    paths = [Path(args.out + suffix) for suffix in (".eigenval", ".eigenvec", ".eigen.json")]
    atomic_write_text(paths[0], eigenval_text(result))
    atomic_write_text(paths[1], eigenvec_text(result, stores[0], samples))
    write_json(report, paths[2])
    logger.info(
        "%d iterations, %d passes, %.1f s; largest relative residual %.3g",
        result.iterations,
        result.passes,
        report["timings"]["end_to_end"],
        result.history[-1],
    )
    if not result.converged:
        logger.warning("%s", result.status)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
