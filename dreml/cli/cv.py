"""`dreml cv`: GBLUP prediction accuracy by K-fold cross-validation; writes PREFIX.cv.tsv and
PREFIX.cv.json and prints a per-fold table and the pooled line.

Inputs, filters, cluster and algorithm options are those of `dreml fit` (the algorithm flags
are generated from `FitConfig` by `dreml.cli.fit`). Method in `dreml.cv`.

Outputs (each written to NAME.tmp and renamed):
    PREFIX.cv.tsv    `FID IID fold observed predicted`, one row per analysed sample, tab-separated
    PREFIX.cv.json   per-fold and pooled metrics, passes per fold, seed, settings, timings, dashboard
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from dreml.cli.common import add_cluster_options, cluster_client
from dreml.cli.fit import _add_config_flags, check_out_prefix, config_from_args
from dreml.cli.inputs import add_input_options, add_method_options, inputs_from_args, operator_options
from dreml.cv import CVOptions, CVResult, cross_validate_prepared, fold_labels
from dreml.errors import InputError
from dreml.fit import FitInputs
from dreml.outputs import atomic_write_text, write_json
from dreml.reml import FitConfig

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cv", help="GBLUP prediction accuracy by K-fold cross-validation")
    add_input_options(p)
    p.add_argument("--folds", type=int, required=True, metavar="K", help="number of folds, 2..n")
    p.add_argument(
        "--fold-file",
        help="assign folds from 'FID IID fold' (or 'IID fold') lines instead of at random; "
        "fold labels are any integers, one per analysed sample",
    )
    p.add_argument(
        "--fixed-variance",
        action="store_true",
        help="estimate the variance components once on all samples and keep them for every fold "
        "(faster; default: refit them on each training set)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the fold assignment and of every fit's random draws (default: a fresh one; recorded)",
    )
    add_method_options(p, "the fits")
    p.add_argument("--out", required=True, help="output prefix")
    add_cluster_options(p)
    _add_config_flags(p)
    # cross-validation needs no log-likelihood: the fits skip its SLQ columns
    p.set_defaults(run=run, loglik=False)


def options_from_args(args: argparse.Namespace) -> tuple[CVOptions, FitConfig]:
    """The cross-validation options and the fits' `FitConfig`, sharing one (recorded) seed."""
    options = CVOptions(folds=args.folds, seed=args.seed, fixed_variance=args.fixed_variance, fold_file=args.fold_file)
    try:
        config = config_from_args(argparse.Namespace(**{**vars(args), "seed": options.seed}))
    except InputError as exc:
        raise InputError(str(exc).replace("dreml fit: ", "dreml cv: ", 1)) from None
    return options, config


def cv_tsv_text(result: CVResult, inputs: FitInputs) -> str:
    """`FID IID fold observed predicted`, one tab-separated row per analysed sample."""
    data = inputs.data
    fid = inputs.stores[0].sample_family_id[data.sample_index]
    lines = ["FID\tIID\tfold\tobserved\tpredicted"]
    lines += [
        f"{f}\t{i}\t{k}\t{o:.10g}\t{p:.10g}"
        for f, i, k, o, p in zip(fid, data.iid, result.fold, result.observed, result.predicted)
    ]
    return "\n".join(lines) + "\n"


def _num(x: float, spec: str = ".4f") -> str:
    return "NA" if x is None or math.isnan(x) else format(x, spec)


def summary_table(report: dict) -> str:
    """The table `dreml cv` prints: one row per fold, then the pooled line."""
    head = (
        f"{'fold':>6}  {'n_train':>7}  {'n_test':>6}  {'h2':>7}  {'r':>7}  {'R2':>7}  {'MSE':>9}  "
        f"{'passes':>6}  {'seconds':>7}  converged"
    )
    lines = [head, "-" * len(head)]
    for f in report["folds"]:
        lines.append(
            f"{f['fold']:>6}  {f['n_train']:>7}  {f['n_test']:>6}  {_num(f['h2']):>7}  {_num(f['correlation']):>7}  "
            f"{_num(f['r2']):>7}  {_num(f['mse'], '.5g'):>9}  {f['passes']:>6}  {f['seconds']:>7.1f}  {f['converged']}"
        )
    lines.append("-" * len(head))
    pooled = report["pooled"]
    lines.append(
        f"pooled: n {pooled['n']}   r {_num(pooled['correlation'])}   R2 {_num(pooled['r2'])}   "
        f"MSE {_num(pooled['mse'], '.5g')}   "
        f"mode {report['mode']}   passes {report['passes']}   time {report['timings']['end_to_end']:.1f} s   "
        f"converged {pooled['converged']}   seed {report['seed']}"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    options, config = options_from_args(args)
    inputs = inputs_from_args(args)
    fold_labels(options, inputs.data.iid)  # --folds against n, and the fold file
    check_out_prefix(args.out)
    with cluster_client(args) as client:
        result = cross_validate_prepared(
            inputs,
            options,
            client=client,
            config=config,
            **operator_options(args),
        )
    report = result.to_dict()
    paths = [Path(args.out + ".cv.tsv"), Path(args.out + ".cv.json")]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths[0], cv_tsv_text(result, inputs))
    write_json(report, paths[1])
    print(summary_table(report))
    if not result.converged:
        logger.warning("%s", result.status)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
