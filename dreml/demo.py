"""`make demo`: simulate a cohort, convert it, fit a two-component REML, print truth vs estimate.

Runs on an automatically started local Dask cluster (no address, no GPU needed). The
same steps by hand are in the README's tour.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from converters import convert
from dreml.cluster import session
from dreml.fit import ComponentChoice, fit
from dreml.outputs import summary_table, write_outputs
from dreml.reml import FitConfig
from dreml.simulate import SimulationConfig, simulate_cohort

logger = logging.getLogger("dreml.demo")


def truth_vs_estimate(truth: dict, report: dict) -> str:
    """A table of the simulated variances beside the estimates and their SEs."""
    lines = [f"{'':10}  {'truth':>7}  {'estimate':>8}  {'SE':>6}  {'|est-truth|/SE':>14}"]
    rows = [(c["name"], c["variance"], e["variance"], e["se"]) for c, e in zip(truth["components"], report["components"])]
    rows.append(("residual", truth["residual_variance"], report["residual_variance"], report["residual_se"]))
    rows.append(("total h2", truth["h2_total"], report["h2_total"], report["h2_total_se"]))
    for name, t, e, se in rows:
        lines.append(f"{name:10}  {t:>7.3f}  {e:>8.3f}  {se:>6.3f}  {abs(e - t) / se:>14.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_out", help="folder for every file the demo writes")
    parser.add_argument("--samples", type=int, default=2500)
    parser.add_argument("--variants", type=int, default=6000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    print(f"== 1. simulate {args.samples} samples x {args.variants} variants, two chromosome groups")
    truth = simulate_cohort(
        SimulationConfig(n_samples=args.samples, n_variants=args.variants, group_variances=(0.3, 0.2), seed=args.seed),
        out / "cohort",
    )
    with session(n_workers=args.workers) as client:
        print(f"== 2. convert PLINK -> Zarr on a local Dask cluster ({client.dashboard_link})")
        store = convert("bed", out / "cohort", out / "cohort.zarr", client=client, overwrite=True, progress=True)
        print(store.summary())
        # the matrix-free path on purpose: at this n `--method auto` would pick the exact one
        print("== 3. two-component randomised REML (components from cohort.components.tsv)")
        report = fit(
            out / "cohort.zarr", out / "cohort.pheno", covar=out / "cohort.covar",
            components=ComponentChoice(spec=out / "cohort.components.tsv"), client=client,
            config=FitConfig(seed=args.seed, method="randomised"),
        )
    write_outputs(report, out / "fit", plot=True, reml_pred_rand=True, blup_snp=True)
    print(summary_table(report.to_dict()))
    print("\n== truth vs estimate")
    print(truth_vs_estimate(truth, report.to_dict()))
    print(f"\nfiles in {out}/: cohort.{{bed,bim,fam,pheno,covar}}, cohort.zarr, fit.{{hsq,json,history.tsv,png}}")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
