"""`dreml gwas`: genome-wide association tests. `dreml gwas marginal` is the per-variant linear
regression of plink2 --glm (all traits in one pass over the resident shards); `dreml gwas mixed`
is the leave-one-chromosome-out mixed-model test at a fit's variance components
(`dreml.gwas.mixed`). Further tests are added as sibling subcommands of the `gwas` sub-parser.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from dreml.cli.common import add_cluster_options, cluster_client
from dreml.cli.fit import check_out_prefix
from dreml.cli.inputs import (
    add_memory_budget,
    add_sample_options,
    add_variant_selection,
    memory_budget,
    phenotype_options,
    trait_names,
    variant_selection,
)
from dreml.components import per_store
from dreml.errors import InputError
from dreml.fit_result import STATE_SUFFIX, FitState
from dreml.gwas import MISSING_MODES, load_traits, marginal_gwas, union_samples, write_outputs
from dreml.gwas.mixed import (
    DEFAULT_CALIBRATION_VARIANTS,
    MixedConfig,
    check_fit_inputs,
    loco_layout,
    loco_operator,
    mixed_gwas,
    write_mixed_outputs,
)
from dreml.gwas.plots import write_trait_plots
from dreml.operators import GenotypeOperator
from dreml.phenotypes import CovariateFile, describe_sample_inputs
from dreml.selection import SampleSelection, restrict_components
from dreml.store import open_stores

logger = logging.getLogger(__name__)

PLOT_HELP = "also write PREFIX.<trait>.manhattan.png and PREFIX.<trait>.qq.png (lambda_GC on the QQ plot)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gwas", help="genome-wide association tests")
    tests = p.add_subparsers(dest="gwas_command", required=True)
    m = tests.add_parser("marginal", help="per-variant linear regression of each trait on the ALT dosage (plink2 --glm)")
    m.add_argument("--store", action="append", required=True, help="genotype store (repeatable; same samples)")
    add_sample_options(m, many_traits=True)
    add_variant_selection(m)
    m.add_argument(
        "--missing",
        choices=MISSING_MODES,
        default="complete-case",
        help="missing calls: drop the sample for that variant (complete-case, plink2's rule, default) "
        "or set them to the variant's mean dosage (mean-impute)",
    )
    m.add_argument("--gz", action="store_true", help="write PREFIX.<trait>.glm.linear.gz")
    m.add_argument("--plot", action="store_true", help=PLOT_HELP)
    m.add_argument("--out", required=True, help="output prefix")
    m.add_argument(
        "--worker-dtype",
        choices=("float32", "float64"),
        default="float64",
        help="worker arithmetic of the sums (default float64: exact counts, ~1e-12 statistics)",
    )
    add_memory_budget(m)
    add_cluster_options(m)
    m.set_defaults(run=run_marginal)
    _add_mixed(tests)


def _add_mixed(tests: argparse._SubParsersAction) -> None:
    x = tests.add_parser(
        "mixed",
        help="mixed-model test with leave-one-chromosome-out GRMs at a fit's variance components (BOLT-LMM-inf / fastGWA style)",
    )
    x.add_argument(
        "--fit",
        required=True,
        metavar="PREFIX",
        help=f"a `dreml fit` output prefix: reads PREFIX.json (inputs) and PREFIX{STATE_SUFFIX} (theta, samples, variants)",
    )
    add_sample_options(x, required=False, many_traits=True)  # defaults: the fit's (run_mixed)
    x.add_argument("--store", action="append", help="the fit's store(s), where they moved (default: the fit's paths)")
    x.add_argument(
        "--exact-denominator",
        action="store_true",
        help="solve z^T P z for every variant (small n, validation) instead of calibrating z^T P_0 z",
    )
    x.add_argument(
        "--calibration-variants",
        type=int,
        default=DEFAULT_CALIBRATION_VARIANTS,
        metavar="R",
        help=f"variants per chromosome whose exact denominator calibrates the others (default {DEFAULT_CALIBRATION_VARIANTS})",
    )
    x.add_argument("--seed", type=int, help="seed of the calibration draw (default: a fresh one, recorded)")
    x.add_argument(
        "--pcg-tol",
        type=float,
        default=MixedConfig.pcg_tol,
        help=f"relative residual of the PCG solves with V_-c (default {MixedConfig.pcg_tol})",
    )
    x.add_argument(
        "--pcg-max-iter",
        type=int,
        default=MixedConfig.pcg_max_iter,
        help=f"most PCG iterations per chromosome (default {MixedConfig.pcg_max_iter})",
    )
    x.add_argument(
        "--worker-dtype",
        choices=("float32", "float64"),
        default="float32",
        help="worker arithmetic of the passes (default float32)",
    )
    add_memory_budget(x)
    x.add_argument("--gz", action="store_true", help="write PREFIX.<trait>.glm.mixed.gz")
    x.add_argument("--plot", action="store_true", help=PLOT_HELP)
    x.add_argument("--out", required=True, help="output prefix")
    add_cluster_options(x)
    x.set_defaults(run=run_mixed)


def _fit_inputs(prefix: str) -> dict:
    path = Path(prefix + ".json")
    try:
        return dict(json.loads(path.read_text()).get("inputs") or {})
    except FileNotFoundError:
        raise InputError(f"{path}: no such fit report (written by `dreml fit --out {prefix}`)") from None
    except (json.JSONDecodeError, AttributeError) as exc:
        raise InputError(f"{path}: not a dreml fit report ({exc})") from exc


def run_mixed(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    state = FitState.load(args.fit + STATE_SUFFIX)
    inputs = _fit_inputs(args.fit)
    try:
        config = MixedConfig(
            exact_denominator=args.exact_denominator,
            calibration_variants=args.calibration_variants,
            seed=args.seed,
            pcg_tol=args.pcg_tol,
            pcg_max_iter=args.pcg_max_iter,
        )
    except ValueError as exc:
        raise InputError(f"dreml gwas mixed: {exc}") from exc
    pheno = args.pheno or inputs.get("pheno")
    if pheno is None:
        raise InputError(f"{args.fit}.json names no phenotype file: give --pheno")
    names = trait_names(args)
    if names is None and args.mpheno is None and not args.pheno:
        names = [inputs.get("pheno_name")]  # type: ignore[list-item]  # every fit's JSON records a str
    options = _fit_sample_options(args, inputs)
    stores = open_stores(args.store or list(state.store_paths))
    traits = load_traits(
        stores[0].sample_id, pheno, pheno_names=names, mpheno=args.mpheno, store_fid=stores[0].sample_family_id, **options
    )
    check_fit_inputs(state, stores, traits)
    if tuple(traits[0].covariate_names) != tuple(state.covariate_names):
        logger.warning(
            "covariates %s differ from the fit's %s", ", ".join(traits[0].covariate_names), ", ".join(state.covariate_names)
        )
    check_out_prefix(args.out)
    layout = loco_layout(state, stores)
    budget = memory_budget(args)
    t_inputs = time.perf_counter()
    with cluster_client(args) as client:
        with loco_operator(
            stores, layout, traits[0].sample_index, client=client, dtype=np.dtype(args.worker_dtype), memory_budget=budget
        ) as operator:
            t_load = time.perf_counter()
            dashboard = getattr(client, "dashboard_link", None)
            logger.info(
                "mixed-model GWAS of %d trait(s) on %d samples, %d chromosome(s); dashboard: %s",
                len(traits),
                operator.shape[0],
                len(layout.contigs),
                dashboard,
            )
            result = mixed_gwas(operator, state, layout, traits, config=config)
            n_shards = len(operator.shard_specs)
    report = {
        "command": "dreml gwas mixed",
        "inputs": {
            "fit": args.fit,
            "stores": [str(s.path) for s in stores],
            "pheno": str(pheno),
            "pheno_names": [t.name for t in traits],
            **describe_sample_inputs(**options),
            "covariates": list(traits[0].covariate_names),
            "worker_dtype": args.worker_dtype,
            "gz": args.gz,
        },
        "theta": {name: float(v) for name, v in zip(state.names, state.theta)},
        "shards": n_shards,
        "dashboard": dashboard,
        "wall_s": {"inputs": t_inputs - t0, "load": t_load - t_inputs, "gwas": time.perf_counter() - t_load},
    }
    paths = write_mixed_outputs(result, args.out, gz=args.gz, report=report)
    if args.plot:
        paths += [path for t in result.traits for path in write_trait_plots(result, t, args.out, test="mixed model (LOCO)")]
    for c in result.chromosomes:
        extra = (
            ""
            if config.exact_denominator
            else f", calibration {c.calibration_factor:.5g} (MC SE {c.calibration_se:.2g}, R = {c.calibration_variants})"
        )
        print(f"chromosome {c.contig}: {c.n_variants} variants, {c.passes} passes{extra}")
    for t in result.traits:
        print(f"{t.name}: n = {t.n}, {t.n_tested} variants tested, lambda_GC = {t.lambda_gc:.4f}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def run_marginal(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    stores = open_stores(args.store)
    options = phenotype_options(args)
    traits = load_traits(
        stores[0].sample_id,
        args.pheno,
        pheno_names=trait_names(args),
        mpheno=args.mpheno,
        store_fid=stores[0].sample_family_id,
        **options,
    )
    selection = variant_selection(args)
    masks, variant_report = selection.masks(stores) if selection.active else (None, {})
    components = restrict_components(per_store(stores), masks)[0] if masks is not None else None
    check_out_prefix(args.out)
    t_inputs = time.perf_counter()
    with cluster_client(args) as client:
        with GenotypeOperator(
            stores,
            components,
            union_samples(traits),
            client=client,
            dtype=np.dtype(args.worker_dtype),
            memory_budget=memory_budget(args),
        ) as operator:
            t_load = time.perf_counter()
            dashboard = getattr(client, "dashboard_link", None)
            logger.info("marginal GWAS of %d trait(s) on %d samples; dashboard: %s", len(traits), operator.shape[0], dashboard)
            result = marginal_gwas(operator, traits, missing=args.missing, variants=masks)
            n_shards = len(operator.shard_specs)
    report = {
        "command": "dreml gwas marginal",
        "inputs": {
            "stores": [str(s) for s in args.store],
            "pheno": args.pheno,
            "pheno_names": [t.name for t in traits],
            **describe_sample_inputs(**options),
            "extract": args.extract,
            "exclude": args.exclude,
            "chr": args.chr,
            "worker_dtype": args.worker_dtype,
            "gz": args.gz,
        },
        "samples": {t.name: t.report for t in traits},
        "variant_selection": variant_report,
        "n_samples_union": int(len(union_samples(traits))),
        "shards": n_shards,
        "dashboard": dashboard,
        "wall_s": {"inputs": t_inputs - t0, "load": t_load - t_inputs, "gwas": time.perf_counter() - t_load},
    }
    paths = write_outputs(result, args.out, gz=args.gz, report=report)
    if args.plot:
        paths += [path for t in result.traits for path in write_trait_plots(result, t, args.out)]
    for t in result.traits:
        print(f"{t.name}: n = {t.n}, {t.n_tested} variants tested, skipped {t.skipped}, lambda_GC = {t.lambda_gc:.4f}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _fit_sample_options(args: argparse.Namespace, inputs: dict) -> dict:
    """`phenotype_options(args)`, where no covariate / sample-list option is given: the fit's."""
    options = phenotype_options(args)
    if not (options["covar"] or options["covar_names"] or options["covar_cat"]):
        recorded = inputs.get("covar") or []
        if isinstance(recorded, str):  # reports written before covariate kinds existed: one auto-mode file
            recorded = [{"path": recorded, "kind": "auto"}]
        options["covar"] = [CovariateFile(c["path"], c["kind"]) for c in recorded]
        options["covar_names"] = inputs.get("covar_names")
        options["covar_cat"] = tuple(inputs.get("covar_cat") or ())
    if options["samples"] == SampleSelection():
        options["samples"] = SampleSelection(keep=inputs.get("keep"), remove=inputs.get("remove"))
    return options
