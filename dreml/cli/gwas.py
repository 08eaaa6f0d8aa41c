"""`dreml gwas`: genome-wide association tests. `dreml gwas marginal` is the per-variant linear
regression of plink2 --glm (all traits in one pass over the resident shards); further tests
(`dreml gwas mixed`) are added as sibling subcommands of the `gwas` sub-parser.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from dreml.cli.common import add_cluster_options, cluster_client
from dreml.cli.fit import check_out_prefix
from dreml.errors import InputError
from dreml.gwas import MISSING_MODES, load_traits, marginal_gwas, union_samples, write_outputs
from dreml.operators import GenotypeOperator
from dreml.store import open_stores

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gwas", help="genome-wide association tests")
    tests = p.add_subparsers(dest="gwas_command", required=True)
    m = tests.add_parser("marginal", help="per-variant linear regression of each trait on the ALT dosage (plink2 --glm)")
    m.add_argument("--store", action="append", required=True, help="genotype store (repeatable; same samples)")
    m.add_argument("--pheno", required=True, help="phenotype file (FID IID name...)")
    m.add_argument("--pheno-name", help="traits to test, comma-separated (default: every column)")
    m.add_argument("--covar", help="covariate file (FID IID name...); non-numeric columns are categorical")
    m.add_argument("--covar-name", action="append", help="covariate column to use (repeatable; default: all)")
    m.add_argument("--missing", choices=MISSING_MODES, default="complete-case",
                   help="missing calls: drop the sample for that variant (complete-case, plink2's rule, default) "
                        "or set them to the variant's mean dosage (mean-impute)")
    m.add_argument("--gz", action="store_true", help="write PREFIX.<trait>.glm.linear.gz")
    m.add_argument("--out", required=True, help="output prefix")
    m.add_argument("--worker-dtype", choices=("float32", "float64"), default="float64",
                   help="worker arithmetic of the sums (default float64: exact counts, ~1e-12 statistics)")
    budget = m.add_mutually_exclusive_group()
    budget.add_argument("--memory-budget", help="per-worker memory for resident shards, e.g. 4GiB")
    budget.add_argument("--gpu-budget-gib", type=float, help="the same in GiB, as used on GPU nodes")
    add_cluster_options(m)
    m.set_defaults(run=run_marginal)


def run_marginal(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    names = [s.strip() for s in args.pheno_name.split(",")] if args.pheno_name else None
    if names is not None and not all(names):
        raise InputError(f"--pheno-name {args.pheno_name!r}: empty trait name")
    stores = open_stores(args.store)
    traits = load_traits(stores[0].sample_id, args.pheno, pheno_names=names, covar=args.covar,
                         covar_names=args.covar_name)
    check_out_prefix(args.out)
    budget = f"{args.gpu_budget_gib}GiB" if args.gpu_budget_gib else args.memory_budget
    t_inputs = time.perf_counter()
    with cluster_client(args) as client:
        with GenotypeOperator(stores, None, union_samples(traits), client=client, dtype=np.dtype(args.worker_dtype),
                              memory_budget=budget) as operator:
            t_load = time.perf_counter()
            dashboard = getattr(client, "dashboard_link", None)
            logger.info("marginal GWAS of %d trait(s) on %d samples; dashboard: %s", len(traits), operator.shape[0], dashboard)
            result = marginal_gwas(operator, traits, missing=args.missing)
            n_shards = len(operator.shard_specs)
    report = {
        "command": "dreml gwas marginal",
        "inputs": {"stores": [str(s) for s in args.store], "pheno": args.pheno, "pheno_names": [t.name for t in traits],
                   "covar": args.covar, "covar_names": args.covar_name, "worker_dtype": args.worker_dtype,
                   "gz": args.gz},
        "samples": {t.name: t.report for t in traits},
        "n_samples_union": int(len(union_samples(traits))),
        "shards": n_shards,
        "dashboard": dashboard,
        "wall_s": {"inputs": t_inputs - t0, "load": t_load - t_inputs, "gwas": time.perf_counter() - t_load},
    }
    paths = write_outputs(result, args.out, gz=args.gz, report=report)
    for t in result.traits:
        print(f"{t.name}: n = {t.n}, {t.n_tested} variants tested, skipped {t.skipped}, lambda_GC = {t.lambda_gc:.4f}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
