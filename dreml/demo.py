"""`make demo`: simulate a cohort, convert it, fit a two-component REML, print truth vs estimate,
then predict the phenotypes of samples held out of the fit from its SNP effects.

Runs on an automatically started local Dask cluster (no address, no GPU needed). The
same steps by hand are in the README's tour.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from converters import convert
from dreml.cluster import session
from dreml.fit import ComponentChoice, fit
from dreml.outputs import atomic_write_text, summary_table, write_outputs
from dreml.phenotypes import load_analysis_data
from dreml.predict import predict
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


def hold_out(pheno: Path, out: Path, fraction: float, seed: int) -> Path:
    """A copy of the phenotype file with `fraction` of the samples set to NA (the test set)."""
    lines = pheno.read_text().splitlines()
    rng = np.random.default_rng(seed)
    held = rng.random(len(lines) - 1) < fraction
    rows = [line if not h else " ".join(line.split()[:2] + ["NA"] * (len(line.split()) - 2)) for line, h in zip(lines[1:], held)]
    atomic_write_text(out, "\n".join([lines[0]] + rows) + "\n")
    return out


def held_out_accuracy(report, prediction, pheno: Path, covar: Path, train_iid: np.ndarray) -> str:
    """Correlation of the prediction X beta + sum_g u_g with the phenotype on the held-out samples."""
    data = load_analysis_data(prediction.sample_iid, pheno, covar=covar)
    test = ~np.isin(data.iid, train_iid)
    beta = np.array([e.estimate for e in report.fixed_effects])
    predicted = data.X[test] @ beta + prediction.total[data.sample_index[test]]
    r = float(np.corrcoef(predicted, data.y[test])[0, 1])
    r_genetic = float(np.corrcoef(prediction.total[data.sample_index[test]], data.y[test] - data.X[test] @ beta)[0, 1])
    return (
        f"{int(test.sum())} held-out samples: r(prediction, phenotype) = {r:.3f}; "
        f"r(genetic score, phenotype - X beta) = {r_genetic:.3f}"
    )


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
        # a fifth of the samples are held out of the fit, to be predicted in step 4
        train_pheno = hold_out(out / "cohort.pheno", out / "cohort.train.pheno", 0.2, args.seed)
        report = fit(
            out / "cohort.zarr",
            train_pheno,
            covar=out / "cohort.covar",
            components=ComponentChoice(spec=out / "cohort.components.tsv"),
            client=client,
            config=FitConfig(seed=args.seed, method="randomised"),
        )
        write_outputs(report, out / "fit", plot=True, reml_est_fix=True, reml_pred_rand=True, blup_snp=True)
        print(summary_table(report.to_dict()))
        print("\n== truth vs estimate")
        print(truth_vs_estimate(truth, report.to_dict()))
        # what `dreml predict --fit demo_out/fit --store demo_out/cohort.zarr --keep-ambiguous` does:
        # the same store, so its A/T and C/G variants are on the fit's strand
        print("\n== 4. predict the held-out samples from the fit's SNP effects (one pass)")
        assert report.state is not None  # fit_prepared always returns the fit's state
        prediction = predict(report.state, out / "cohort.zarr", client=client, keep_ambiguous=True)
    atomic_write_text(out / "predict.score.tsv", prediction.score_tsv_text())
    print(held_out_accuracy(report, prediction, out / "cohort.pheno", out / "cohort.covar", report.state.sample_iid))
    print(
        f"\nfiles in {out}/: cohort.{{bed,bim,fam,pheno,covar}}, cohort.zarr, "
        "fit.{hsq,json,history.tsv,fit.npz,indi.blp,snp.blp,png}, predict.score.tsv"
    )
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
