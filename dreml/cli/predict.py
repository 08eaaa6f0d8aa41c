"""`dreml predict`: polygenic scores of the samples of a store from a saved fit (PREFIX.fit.npz);
writes P.score.tsv and P.predict.json (docs/cli.md)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from dreml.cli.common import add_cluster_options, cluster_client
from dreml.cli.fit import check_out_prefix
from dreml.fit_result import STATE_SUFFIX, FitState
from dreml.outputs import atomic_write_text, write_json
from dreml.predict import check_overlap, match_variants, predict
from dreml.store import open_store

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="polygenic scores of a store's samples from a saved fit")
    p.add_argument("--fit", required=True, metavar="PREFIX", help=f"the fit's output prefix (reads PREFIX{STATE_SUFFIX})")
    p.add_argument("--store", required=True, help="genotype store of the samples to score")
    p.add_argument("--out", required=True, metavar="P", help="output prefix: P.score.tsv and P.predict.json")
    p.add_argument(
        "--keep-ambiguous",
        action="store_true",
        help="also use strand-ambiguous (A/T, C/G) variants, as their alleles read: only when both "
        "stores report alleles on the same strand (default: excluded)",
    )
    p.add_argument(
        "--worker-dtype",
        choices=("float32", "float64"),
        default="float32",
        help="arithmetic on the workers (default float32; scores are summed in float64)",
    )
    p.add_argument("--memory-budget", help="per-worker memory for resident shards, e.g. 4GiB (device memory on GPU workers)")
    add_cluster_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    # every input is checked before a cluster is started, so bad input fails in a second
    state_path = args.fit + STATE_SUFFIX
    state = FitState.load(state_path)
    store = open_store(args.store)
    match = match_variants(state.variants, store, keep_ambiguous=args.keep_ambiguous, names=tuple(state.names[:-1]))
    check_overlap(match, state.variants, store)
    check_out_prefix(args.out)
    with cluster_client(args) as client:
        prediction = predict(state, store, match=match, client=client, dtype=args.worker_dtype, memory_budget=args.memory_budget)
    score_path, json_path = args.out + ".score.tsv", args.out + ".predict.json"
    report = {
        "fit": args.fit,
        "fit_state": state_path,
        **prediction.to_dict(),
        "outputs": {"scores": score_path, "report": json_path},
    }
    report["timings"] = {**report["timings"], "command": time.perf_counter() - t0}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(score_path, prediction.score_tsv_text())
    write_json(report, json_path)
    total = prediction.counts["total"]
    unscored = f"; component(s) {', '.join(prediction.unscored)} matched nothing and score 0" if prediction.unscored else ""
    print(
        f"scored {len(prediction.sample_iid)} samples of {store.path} with {total['used']} of the fit's "
        f"{total['rows']} variant rows ({total['matched']} matched, {total['swapped']} with REF/ALT swapped; "
        f"excluded: {total['missing']} missing, {total['ambiguous']} strand-ambiguous, {total['duplicate']} duplicate)"
        f"{unscored}; one pass over the genotypes, {prediction.timings['end_to_end']:.1f} s in all. "
        f"Wrote {score_path} and {json_path}."
    )
    return 0
