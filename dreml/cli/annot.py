"""`dreml fit --annot F [--variance-model ldak|linear|mlp]`: per-variant variances from annotations.

The options are added to the fit command by `add_annotation_options`; `run` of `dreml fit`
hands over to `run_annotated` when `wants_annotations(args)`. The annotated fit reuses the fit
command's inputs (stores, components, phenotype, covariates, selections, filters), its cluster
options and its algorithm flags (--method/--exact, --seed, --n-probes, --slq-probes, the PCG
tolerances, --no-loglik, --worker-dtype); it writes PREFIX.snpvar.tsv, PREFIX.enrichment.tsv,
PREFIX.annot.json and PREFIX.annot.history.tsv (`dreml.annotations.io`). Built-in columns
(--annot-builtin maf,ld_score; `dreml.annotations.builtin`) join or replace the file's;
--annot-holdout-chr adds the held-out chromosomes' predictive log-likelihoods
(`dreml.annotations.holdout`) to the report, the log and the terminal.
"""

from __future__ import annotations

import argparse
import logging

from dreml.annotations.builtin import BUILTIN
from dreml.annotations.fit import AnnotConfig
from dreml.annotations.holdout import parse_chromosomes
from dreml.annotations.io import StoreAnnotations, fit_store, heldout_text, summary_text, write_annotated
from dreml.annotations.maps import MODELS
from dreml.cli.common import cluster_client
from dreml.cli.inputs import inputs_from_args, operator_options, trait_names
from dreml.errors import InputError
from dreml.reml import FitConfig

logger = logging.getLogger(__name__)


def add_annotation_options(p: argparse.ArgumentParser) -> None:
    """--annot, --variance-model and the annotated optimiser's settings."""
    g = p.add_argument_group("annotation-driven per-variant variances (docs/math.md)")
    g.add_argument(
        "--annot",
        metavar="FILE",
        help="per-variant annotations: variant ID then named numeric columns (optional header; plain, .gz "
        "or .zst); fits sigma2_j = f(a_j) by REML instead of the components' variances and writes "
        "PREFIX.snpvar.tsv, PREFIX.enrichment.tsv, PREFIX.annot.json, PREFIX.annot.history.tsv",
    )
    g.add_argument(
        "--annot-builtin",
        metavar="COLS",
        help=f"built-in annotation columns computed from the store, comma-separated ({', '.join(BUILTIN)}): "
        "maf = min(p, 1-p); ld_score = sum of bias-corrected r^2 with the fitted variants within "
        "--ld-window variants on the same contig; appended after --annot's columns (or alone)",
    )
    g.add_argument(
        "--ld-window",
        type=int,
        default=StoreAnnotations.ld_window,
        metavar="W",
        help=f"ld_score window: +-W variants in store order on the same contig (default {StoreAnnotations.ld_window})",
    )
    g.add_argument(
        "--max-missing-annot",
        type=int,
        default=None,
        metavar="N",
        help="fail when more than N variant IDs of --annot are in none of the stores (default: no limit; "
        "the count is always logged and recorded in PREFIX.annot.json)",
    )
    g.add_argument(
        "--annot-holdout-chr",
        metavar="CHRS",
        help="comma-separated chromosomes, each held out in turn: fit on the others, then report the REML "
        "log-likelihood of y under the held-out chromosome's predicted sigma2_j (theta_e re-estimated) "
        "beside the one-component model's (docs/math.md)",
    )
    g.add_argument(
        "--variance-model",
        choices=MODELS,
        default=None,
        help="ldak: s [2p(1-p)]^(1+alpha) (no --annot needed); linear: exp(tau_0 + a^T tau); mlp: a small "
        "neural network with softplus output (default with --annot: linear)",
    )
    g.add_argument(
        "--annot-hidden",
        type=int,
        nargs="+",
        default=list(AnnotConfig.hidden),
        metavar="H",
        help=f"mlp hidden layer sizes (default {' '.join(map(str, AnnotConfig.hidden))})",
    )
    g.add_argument(
        "--annot-max-iter",
        type=int,
        default=AnnotConfig.max_iter,
        metavar="N",
        help=f"most Fisher-scoring iterations (ldak, linear; default {AnnotConfig.max_iter})",
    )
    g.add_argument(
        "--annot-tol",
        type=float,
        default=AnnotConfig.tol_decrement,
        metavar="T",
        help="stop when the Newton decrement grad^T AI^-1 grad is below T or a tenth of its Monte Carlo "
        f"part (default {AnnotConfig.tol_decrement})",
    )
    g.add_argument(
        "--annot-adam-steps",
        type=int,
        default=AnnotConfig.adam_max_iter,
        metavar="N",
        help=f"most Adam steps (mlp; default {AnnotConfig.adam_max_iter})",
    )
    g.add_argument(
        "--annot-learning-rate",
        type=float,
        default=AnnotConfig.learning_rate,
        metavar="R",
        help=f"Adam step size (mlp; default {AnnotConfig.learning_rate})",
    )
    g.add_argument(
        "--annot-weight-decay",
        type=float,
        default=AnnotConfig.weight_decay,
        metavar="L",
        help="mlp weight decay: maximise logL - L/2 ||w||^2 over the network's weights (a N(0, 1/L) prior; "
        f"default {AnnotConfig.weight_decay}: maximum likelihood)",
    )


def wants_annotations(args: argparse.Namespace) -> bool:
    """Whether `dreml fit` runs the annotated model (--annot, --annot-builtin or --variance-model given)."""
    return any(getattr(args, name, None) is not None for name in ("annot", "annot_builtin", "variance_model"))


def annot_config(args: argparse.Namespace, config: FitConfig) -> AnnotConfig:
    """The annotated fit's settings from the annotation flags and the fit command's `FitConfig`."""
    try:
        return AnnotConfig(
            method=config.method,
            n_probes=config.n_probes,
            slq_probes=config.slq_probes,
            pcg_tol=config.pcg_tol,
            probe_tol=config.probe_tol,
            ai_tol=config.ai_tol,
            slq_tol=config.slq_tol,
            pcg_max_iter=config.pcg_max_iter,
            max_iter=args.annot_max_iter,
            tol_decrement=args.annot_tol,
            max_step_halvings=config.max_step_halvings,
            adam_max_iter=args.annot_adam_steps,
            learning_rate=args.annot_learning_rate,
            weight_decay=args.annot_weight_decay,
            hidden=tuple(args.annot_hidden),
            loglik=config.loglik,
            seed=config.seed,
        )
    except ValueError as exc:
        raise InputError(f"dreml fit --annot: {exc}") from exc


def run_annotated(args: argparse.Namespace, config: FitConfig) -> int:
    """The annotated fit of one trait: checks every input, then fits on the cluster and writes."""
    from dreml.cli.fit import check_out_prefix  # the fit command imports this module

    model = args.variance_model or "linear"
    source = StoreAnnotations(
        annot=args.annot,
        builtin=args.annot_builtin,
        ld_window=args.ld_window,
        max_missing=args.max_missing_annot,
        holdout=parse_chromosomes(args.annot_holdout_chr),
    )
    if model != "ldak" and args.annot is None and not source.builtin:
        raise InputError(f"--variance-model {model} needs --annot FILE or --annot-builtin COLS")
    names = trait_names(args)
    if getattr(args, "all_pheno", False) or (names is not None and len(names) > 1):
        raise InputError("--annot fits one trait at a time: give one --pheno-name")
    if getattr(args, "reml_lrt", None):
        raise InputError(
            "--reml-lrt does not apply to --annot fits (compare their logL with the one-component fit's, reported as the start)"
        )
    settings = annot_config(args, config)
    inputs = inputs_from_args(args)
    check_out_prefix(args.out)
    with cluster_client(args) as client:
        result, ids, description, heldout = fit_store(
            inputs,
            source,
            variance_model=model,
            client=client,
            config=settings,
            worker_dtype=config.worker_dtype,
            **operator_options(args),
        )
    paths = write_annotated(result, ids, args.out, description, heldout)
    print(summary_text(result))
    if heldout:
        print(heldout_text(heldout))
    if not result.converged:
        logger.warning("not converged: %s", result.status)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
