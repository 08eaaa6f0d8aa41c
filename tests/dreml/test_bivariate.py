"""`dreml.bivariate` and `dreml fit --bivariate` end to end on a real store and a local Dask cluster.

Reference: the engine's exact path (`fit_bivariate`, itself tested against an independent
dense REML in tests/dreml/reml/test_bivariate.py) on K = Z Z^T / m built in this file from a
pgenlib decode of the .bed, with each trait's samples and covariates aligned by hand from the
files written here. Agreement at 1e-6 shows that the two traits' sample sets, their rows in
the union and the distributed products reach the engine unchanged.
"""

import argparse
import json

import numpy as np
import pgenlib
import pytest

from converters import convert
from dreml.bivariate import bivariate_hsq_text, fit_bivariate_traits, prepare_bivariate
from dreml.cli import build_parser
from dreml.cli.bivariate import run_bivariate
from dreml.errors import InputError
from dreml.operators import DenseOperator
from dreml.reml import FitConfig
from dreml.reml.bivariate import fit_bivariate
from dreml.simulate import SimulationConfig, simulate_cohort, standardise

N, M = 240, 600
EXACT = FitConfig(method="exact", worker_dtype="float64", tol_decrement=1e-12, max_iter=50)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A store of 240 samples x 600 variants; traits a (samples 0..179) and b (60..239, 120
    measured for both) with r_g = 0.5, c with no value; one quantitative covariate."""
    root = tmp_path_factory.mktemp("bivariate")
    simulate_cohort(SimulationConfig(n_samples=N, n_variants=M, n_chromosomes=2, group_variances=(0.4,), seed=4), root / "c")
    convert("bed", root / "c", root / "c.zarr", variant_chunk=250, sample_chunk=100)
    dosage = np.empty((M, N), dtype=np.int8)
    with pgenlib.PgenReader(str(root / "c.bed").encode(), raw_sample_ct=N) as reader:
        reader.read_range(0, M, dosage)
    dosage[dosage == -9] = -1
    Z, polymorphic = standardise(dosage)
    Z = Z[polymorphic].T  # shape: (n, m), frequencies over all samples (dreml's default)
    rng = np.random.default_rng(7)
    sigma_g = np.array([[0.5, 0.2236], [0.2236, 0.4]])
    sigma_e = np.array([[0.5, 0.15], [0.15, 0.6]])
    beta = rng.standard_normal((Z.shape[1], 2)) @ np.linalg.cholesky(sigma_g).T / np.sqrt(Z.shape[1])
    covariate = rng.standard_normal(N)
    Y = Z @ beta + rng.standard_normal((N, 2)) @ np.linalg.cholesky(sigma_e).T + np.outer(covariate, [0.3, -0.2]) + [1.0, 2.0]
    rows = (np.arange(0, 180), np.arange(60, 240))
    fam = [line.split()[:2] for line in open(root / "c.fam")]
    with open(root / "two.pheno", "w") as f:
        f.write("FID IID a b c\n")
        for i, (fid, iid) in enumerate(fam):
            a = f"{Y[i, 0]:.10g}" if i in set(rows[0]) else "NA"
            b = f"{Y[i, 1]:.10g}" if i in set(rows[1]) else "-9"
            f.write(f"{fid} {iid} {a} {b} NA\n")
    with open(root / "q.covar", "w") as f:
        f.write("FID IID x\n" + "".join(f"{fid} {iid} {covariate[i]:.10g}\n" for i, (fid, iid) in enumerate(fam)))
    ys = tuple(Y[r, t] for t, r in enumerate(rows))
    Xs = tuple(np.column_stack([np.ones(len(r)), covariate[r]]) for r in rows)
    return root, DenseOperator(Z @ Z.T / Z.shape[1]), ys, Xs, rows, Z.shape[1]


def _fit_parser() -> argparse.ArgumentParser:
    """`dreml fit`'s parser (it carries the bivariate options)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["fit"]


def test_fit_bivariate_traits__exact_matches_dense_reference(cohort, client):
    root, op, ys, Xs, rows, m = cohort
    fit = fit_bivariate_traits(
        root / "c.zarr", root / "two.pheno", ("a", "b"), covar=root / "q.covar", client=client, config=EXACT, rg_fix=0.0
    )
    r = fit.result
    assert r.converged and r.method == "exact" and r.traits == ("a", "b")
    assert r.n_samples == (180, 180) and r.n_overlap == 120 and r.n_union == 240 and r.residual_covariance
    ref = fit_bivariate(op, ys, Xs, rows, EXACT, rg_fix=0.0)
    np.testing.assert_allclose(r.theta, ref.theta, rtol=1e-6)
    np.testing.assert_allclose(r.se, ref.se, rtol=1e-5)
    np.testing.assert_allclose(r.rg, ref.rg, rtol=1e-6)
    assert abs(r.loglik - ref.loglik) < 1e-6 and abs(r.rg_test.loglik0 - ref.rg_test.loglik0) < 1e-6
    np.testing.assert_allclose(r.beta, ref.beta, rtol=1e-6)
    report = fit.to_dict()
    assert report["covariate_names"][0] == report["covariate_names"][1] and len(report["covariate_names"][0]) == 2
    assert report["samples"][0]["samples_used"] == 180 and report["samples"][1]["samples_used"] == 180
    assert report["m"] == [m] and report["inputs"]["traits"] == ["a", "b"]


def test_dreml_fit_bivariate__hsq_rows_match_json(cohort, client, tmp_path):
    root, *_ = cohort
    args = _fit_parser().parse_args(
        [
            "--store",
            str(root / "c.zarr"),
            "--pheno",
            str(root / "two.pheno"),
            "--qcovar",
            str(root / "q.covar"),
            "--bivariate",
            "a,b",
            "--rg-fix",
            "1",
            "--exact",
            "--worker-dtype",
            "float64",
            "--tol-decrement",
            "1e-10",
            "--scheduler",
            client.scheduler.address,
            "--out",
            str(tmp_path / "bv"),
            "--reml-est-fix",
        ]
    )
    assert run_bivariate(args) == 0
    report = json.loads((tmp_path / "bv.json").read_text())
    lines = (tmp_path / "bv.hsq").read_text().splitlines()
    assert lines[0] == "Source\tVariance\tSE"
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in lines[1:] if line and "\t" in line}
    sources = [line.split("\t")[0] for line in lines[1:16]]
    assert sources == [
        "V(G)_tr1",
        "V(G)_tr2",
        "C(G)_tr12",
        "V(e)_tr1",
        "V(e)_tr2",
        "C(e)_tr12",
        "Vp_tr1",
        "Vp_tr2",
        "V(G)/Vp_tr1",
        "V(G)/Vp_tr2",
        "rG",
        "logL",
        "logL0",
        "LRT",
        "df",
    ]
    for label, value, se in zip(report["labels"], report["theta"], report["se"]):
        assert float(rows[label][0]) == pytest.approx(value, abs=5e-7)
        assert float(rows[label][1]) == pytest.approx(se, abs=5e-7)
    assert float(rows["Vp_tr2"][0]) == pytest.approx(report["vp"][1], abs=5e-7)
    assert float(rows["V(G)/Vp_tr1"][0]) == pytest.approx(report["h2"][0][0], abs=5e-7)
    assert float(rows["V(G)/Vp_tr2"][1]) == pytest.approx(report["h2_se"][0][1], abs=5e-7)
    assert float(rows["rG"][0]) == pytest.approx(report["rg"][0], abs=5e-7)
    assert float(rows["rG"][1]) == pytest.approx(report["rg_se"][0], abs=5e-7)
    assert float(rows["logL"][0]) == pytest.approx(report["loglik"], abs=5e-4)
    test = report["rg_test"]
    assert rows["logL0"][0] == f"{test['loglik0']:.3f} (when rG fixed at 1.000)"
    assert float(rows["LRT"][0]) == pytest.approx(test["lrt"], abs=5e-4)
    assert rows["df"] == ["1"] and rows["Pval"][0].endswith(" (one-tailed test)")
    assert float(rows["Pval"][0].split()[0]) == pytest.approx(test["pvalue"], rel=1e-4)
    assert rows["n"] == ["360"] and report["n_samples"] == [180, 180]
    fix = lines[lines.index("Fix_eff\tSE") + 1 :]
    assert len(fix) == 4 and float(fix[3].split("\t")[0]) == pytest.approx(report["beta"][3], abs=5e-7)
    assert [h["source"] for h in report["hsq"]][:3] == ["V(G)_tr1", "V(G)_tr2", "C(G)_tr12"]
    assert report["argv"] is None or isinstance(report["argv"], list)


def test_bivariate_hsq_text__several_components_and_undefined_rg():
    report = {
        "labels": ["V(G1)_tr1", "V(G1)_tr2", "C(G1)_tr12", "V(G2)_tr1", "V(G2)_tr2", "C(G2)_tr12", "V(e)_tr1", "V(e)_tr2"],
        "theta": [0.2, 0.1, 0.05, 0.0, 0.1, 0.0, 0.7, 0.8],
        "se": [0.1] * 8,
        "vp": [0.9, 1.0],
        "vp_se": [0.1, 0.1],
        "component_names": ["G1", "G2"],
        "h2": [[0.22, 0.1], [0.0, 0.1]],
        "h2_se": [[0.1, 0.1], [0.1, 0.1]],
        "rg": [0.35, float("nan")],
        "rg_se": [0.2, float("nan")],
        "loglik": -100.0,
        "n_samples": [50, 60],
        "rg_test": {"rho": 0.0, "loglik0": -101.0, "lrt": 2.0, "df": 2, "pvalue": 0.18},
    }
    lines = bivariate_hsq_text(report).splitlines()
    assert [line.split("\t")[0] for line in lines[11:17]] == [
        "V(G1)/Vp_tr1",
        "V(G1)/Vp_tr2",
        "V(G2)/Vp_tr1",
        "V(G2)/Vp_tr2",
        "rG1",
        "rG2",
    ]
    assert lines[16] == "rG2\tNA\tNA"
    assert lines[18] == "logL0\t-101.000 (when rG fixed at 0.000\t0.000)"
    assert lines[-1] == "n\t110" and "C(e)_tr12" not in "".join(lines)


# ----------------------------------------------------------------------------- bad input


def test_prepare_bivariate__raise_on_trait_without_samples(cohort):
    root, *_ = cohort
    with pytest.raises(InputError, match="--bivariate trait 'c': .*no sample has a phenotype value") as info:
        prepare_bivariate(root / "c.zarr", root / "two.pheno", ("a", "c"))
    assert "\n" not in str(info.value)


def test_prepare_bivariate__raise_on_the_same_trait_twice(cohort):
    root, *_ = cohort
    with pytest.raises(InputError, match="trait 'a' is named twice"):
        prepare_bivariate(root / "c.zarr", root / "two.pheno", ("a", "a"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bivariate", "a"], "expected two phenotype columns"),
        (["--bivariate", "a,a"], "named twice"),
        (["--bivariate", "a,b", "--reml-lrt", "1"], "--reml-lrt does not go with --bivariate"),
        (["--bivariate", "a,b", "--complete-cases"], "--complete-cases does not go with --bivariate"),
        (["--bivariate", "a,b", "--rg-fix", "2"], r"expected a correlation in \[-1, 1\]"),
        (["--rg-fix", "0"], "need --bivariate"),
        (["--bivariate", "a,c"], "--bivariate trait 'c'"),
    ],
)
def test_run_bivariate__raise_on_bad_options(cohort, tmp_path, extra, message):
    root, *_ = cohort
    args = _fit_parser().parse_args(
        ["--store", str(root / "c.zarr"), "--pheno", str(root / "two.pheno"), "--out", str(tmp_path / "x"), *extra]
    )
    with pytest.raises(InputError, match=message) as info:
        run_bivariate(args)
    assert "\n" not in str(info.value)
