"""`dreml simulate`: write a seeded PLINK1 cohort with known variance components."""

from __future__ import annotations

import argparse
import json

from dreml.cli.common import float_list
from dreml.errors import InputError
from dreml.simulate import SimulationConfig, simulate_cohort


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulate a PLINK1 cohort with known variance components")
    d = SimulationConfig()
    p.add_argument("--out", required=True, help="output prefix")
    p.add_argument("--samples", type=int, default=d.n_samples)
    p.add_argument("--variants", type=int, default=d.n_variants)
    p.add_argument("--chromosomes", type=int, default=d.n_chromosomes)
    p.add_argument(
        "--group-variances",
        type=float_list,
        default=d.group_variances,
        help="variance of each contiguous chromosome group, e.g. 0.3,0.2 (phenotypic variance 1)",
    )
    p.add_argument("--traits", type=int, default=d.n_traits)
    p.add_argument("--block-size", type=float, default=d.block_size, help="mean LD block length (variants)")
    p.add_argument("--ld-rho", type=float, default=d.ld_rho)
    p.add_argument("--maf-min", type=float, default=d.maf_min)
    p.add_argument("--missing-rate", type=float, default=d.missing_rate)
    p.add_argument("--seed", type=int, default=d.seed)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = SimulationConfig(
            n_samples=args.samples,
            n_variants=args.variants,
            n_chromosomes=args.chromosomes,
            group_variances=args.group_variances,
            n_traits=args.traits,
            block_size=args.block_size,
            ld_rho=args.ld_rho,
            maf_min=args.maf_min,
            missing_rate=args.missing_rate,
            seed=args.seed,
        )
    except ValueError as exc:
        raise InputError(f"dreml simulate: {exc}") from exc
    truth = simulate_cohort(config, args.out)
    print(
        json.dumps(
            {"components": truth["components"], "residual_variance": truth["residual_variance"], "files": truth["files"]},
            indent=2,
        )
    )
    return 0
