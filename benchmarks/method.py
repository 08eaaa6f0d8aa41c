"""Where `--method auto` switches: exact vs randomised fit time against n, same cluster, same run.

For each n: a simulated cohort (m = 20,000 variants with LD, two components), `dreml.fit` with
`method="exact"` (K_g through one n-column pass on the workers, then dense Cholesky on the
driver) and with `method="randomised"`, on a local cluster of 2 CPU workers. The smallest n
where the randomised fit is faster is the crossover recorded as `dreml.reml.method.EXACT_MAX_N`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from benchmarks.fit import RANDOMISED, cohort
from dreml.cluster import session
from dreml.fit import ComponentChoice, fit_prepared, prepare_inputs

SIZES = (1000, 2000, 3000, 4000, 6000, 8000)
M = 20000


def run(quick: bool, sizes: tuple[int, ...] = SIZES) -> list[dict]:
    """One row per n: seconds of the exact and randomised fits and their ratio."""
    rows = []
    with session(n_workers=2) as client:
        for n in (500, 1000) if quick else sizes:
            prefix = cohort(n, M // 4 if quick else M, (0.3, 0.2))
            inputs = prepare_inputs(
                prefix.with_suffix(".zarr"),
                Path(f"{prefix}.pheno"),
                covar=Path(f"{prefix}.covar"),
                components=ComponentChoice(spec=Path(f"{prefix}.components.tsv")),
            )
            seconds = {}
            for method in ("exact", "randomised"):
                t0 = time.perf_counter()
                report = fit_prepared(inputs, client=client, config=replace(RANDOMISED, method=method)).to_dict()
                seconds[method] = time.perf_counter() - t0
                seconds[f"{method}_h2"] = report["h2_total"]
            rows.append(
                {
                    "n": len(inputs.data.y),
                    "m": M // 4 if quick else M,
                    "exact_s": seconds["exact"],
                    "randomised_s": seconds["randomised"],
                    "exact / randomised": seconds["exact"] / seconds["randomised"],
                    "h2 exact": seconds["exact_h2"],
                    "h2 randomised": seconds["randomised_h2"],
                }
            )
    return rows


if __name__ == "__main__":
    import argparse

    from benchmarks.run import format_table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--sizes",
        type=lambda t: tuple(int(x) for x in t.split(",")),
        default=SIZES,
        help="comma-separated n (default %(default)s)",
    )
    args = parser.parse_args()
    print(format_table(run(quick=args.quick, sizes=args.sizes)))
