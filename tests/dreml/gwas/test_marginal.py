"""`dreml.gwas.marginal_gwas` and `dreml gwas marginal` on a real store and a real local cluster.

Reference: per variant, np.linalg.lstsq of the trait on [X, x] over the complete cases (or
with the missing calls mean-imputed), written here from an independent decode of the .bed
(pgenlib) and a hand parse of the phenotype and covariate files. Two traits with different
missing phenotypes, covariates with missing values, chunk sizes that do not divide n or m.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess

import numpy as np
import pytest
from scipy import stats

from converters import convert
from dreml.cli import main as dreml_main
from dreml.errors import InputError
from dreml.gwas import load_traits, marginal_gwas, union_samples
from dreml.gwas.marginal import HEADER, _p_text, glm_linear_text, log_t_sf, p_values
from dreml.operators import GenotypeOperator
from dreml.simulate import SimulationConfig, simulate_cohort
from dreml.store import open_store
from tests.plink_reference import read_dosage

N, M = 360, 600
RTOL = 1e-10


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("gwas")
    config = SimulationConfig(
        n_samples=N,
        n_variants=M,
        seed=5,
        n_traits=2,
        missing_rate=0.05,
        phenotype_missing_rate=0.08,
        maf_min=0.002,
        group_variances=(0.3,),
        n_chromosomes=2,
    )
    simulate_cohort(config, root / "c")
    convert("bed", root / "c", root / "c.zarr", variant_chunk=170, sample_chunk=150)
    return root


def _hand_traits(root, covariates: bool):
    """Per trait: (kept sample indices, y, X) parsed by hand; X = [1, sex M, age] or [1]."""
    pheno = {f.split()[1]: f.split()[2:] for f in list(open(root / "c.pheno"))[1:]}
    covar = {f.split()[1]: f.split()[2:] for f in list(open(root / "c.covar"))[1:]}
    out = []
    for t in range(2):
        keep = [i for i in range(N) if pheno[f"I{i + 1}"][t] != "NA" and (not covariates or covar[f"I{i + 1}"][1] != "NA")]
        y = np.array([float(pheno[f"I{i + 1}"][t]) for i in keep])
        if covariates:
            X = np.array([[1.0, float(covar[f"I{i + 1}"][0] == "M"), float(covar[f"I{i + 1}"][1])] for i in keep])
        else:
            X = np.ones((len(keep), 1))
        out.append((np.array(keep), y, X))
    return out


def _reference(dosage, keep, y, X, missing):
    """Slow, obviously-correct OLS per variant: dict of arrays (NaN where not tested)."""
    m, p = len(dosage), X.shape[1]
    ref = {k: np.full(m, np.nan) for k in ("beta", "se", "t", "p", "freq")}
    ref["obs"] = np.zeros(m, dtype=np.int64)
    for j in range(m):
        x = dosage[j, keep].astype(np.float64)
        obs = x >= 0
        if obs.any():
            ref["freq"][j] = x[obs].mean() / 2
        if missing == "complete-case":
            xs, ys, Xs = x[obs], y[obs], X[obs]
        else:
            xs, ys, Xs = np.where(obs, x, x[obs].mean() if obs.any() else 0.0), y, X
        ref["obs"][j] = len(xs)
        if len(xs) == 0 or np.ptp(xs) == 0 or len(xs) - p - 1 < 1:
            continue
        D = np.column_stack([Xs, xs])
        coef, *_ = np.linalg.lstsq(D, ys, rcond=None)
        resid = ys - D @ coef
        df = len(xs) - p - 1
        cov = (resid @ resid / df) * np.linalg.inv(D.T @ D)
        ref["beta"][j], ref["se"][j] = coef[-1], np.sqrt(cov[-1, -1])
        ref["t"][j] = ref["beta"][j] / ref["se"][j]
        ref["p"][j] = 2 * stats.t.sf(abs(ref["t"][j]), df)
    return ref


@pytest.fixture(scope="module")
def runs(cohort, client):
    """The library's results for both modes, with and without covariates (one operator each)."""
    root = cohort
    store = open_store(root / "c.zarr")
    out = {}
    for covariates in (False, True):
        traits = load_traits(store.sample_id, root / "c.pheno", covar=root / "c.covar" if covariates else None)
        with GenotypeOperator(
            root / "c.zarr", None, union_samples(traits), client=client, dtype=np.float64, shard_variants=130
        ) as op:
            for missing in ("complete-case", "mean-impute"):
                out[covariates, missing] = marginal_gwas(op, traits, missing=missing)
            out[covariates, "passes"] = op.passes
    return out


@pytest.mark.parametrize("missing", ["complete-case", "mean-impute"])
@pytest.mark.parametrize("covariates", [False, True], ids=["no-covar", "covar"])
def test_marginal_gwas__matches_numpy_ols(cohort, runs, missing, covariates):
    result = runs[covariates, missing]
    dosage = read_dosage(cohort / "c", N, M)
    hand = _hand_traits(cohort, covariates)
    assert [t.name for t in result.traits] == ["trait1", "trait2"]
    assert len(hand[0][0]) != len(hand[1][0])  # the traits' sample sets differ
    for trait, (keep, y, X) in zip(result.traits, hand):
        ref = _reference(dosage, keep, y, X, missing)
        assert trait.n == len(keep)
        np.testing.assert_array_equal(trait.obs_ct, ref["obs"])
        np.testing.assert_array_equal(np.isnan(trait.beta), np.isnan(ref["beta"]))
        assert np.isnan(trait.beta).sum() > 0  # some monomorphic variants are reported NA
        assert trait.n_tested == int(np.sum(~np.isnan(ref["beta"])))
        for ours, theirs in (
            (trait.beta, ref["beta"]),
            (trait.se, ref["se"]),
            (trait.t_stat, ref["t"]),
            (trait.p, ref["p"]),
            (trait.a1_freq, ref["freq"]),
        ):
            np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0, equal_nan=True)
        assert sum(trait.skipped.values()) == len(trait.beta) - trait.n_tested
        assert 0.5 < trait.lambda_gc < 2.0


def test_marginal_gwas__one_pass_for_all_traits_and_modes(runs):
    assert runs[True, "passes"] == 2  # one per call, two traits each
    assert runs[True, "complete-case"].passes == 1
    # store-monomorphic variants (excluded from the operator's shards) are summed on the driver
    assert runs[True, "complete-case"].n_driver_variants > 0


def test_log_t_sf__matches_scipy_where_scipy_resolves_it():
    for df in (3.0, 30.0, 300.0, 3000.0):
        for P in (1e-5, 1e-60, 1e-200, 1e-290):
            t = np.array([float(stats.t.isf(P, df))])
            np.testing.assert_allclose(log_t_sf(t, np.array([df])), np.log(stats.t.sf(t, df)), rtol=1e-12)


def test_p_values__below_float_range_from_the_log():
    df = np.array([300.0, 300.0, 300.0, 300.0])
    P, log10_p = p_values(np.array([2.0, -2.0, 150.0, 400.0]), df)
    np.testing.assert_allclose(P[:2], 2 * stats.t.sf(2.0, 300), rtol=1e-14)
    np.testing.assert_allclose(log10_p[2], np.log10(2 * stats.t.sf(150.0, 300)), rtol=1e-12)
    assert log10_p[3] < -400 and np.isfinite(log10_p).all() and P[3] == 0.0
    text = _p_text(P, log10_p)
    assert text[0] == f"{P[0]:.6g}" and text[3].endswith("e-411") and float(text[3].replace("e-411", "")) > 1


def test_dreml_gwas_marginal_cli__files_header_and_gz_round_trip(cohort, runs, client, tmp_path):
    root = cohort
    args = [
        "gwas",
        "marginal",
        "--store",
        str(root / "c.zarr"),
        "--pheno",
        str(root / "c.pheno"),
        "--covar-auto",
        str(root / "c.covar"),
        "--scheduler",
        client.scheduler.address,
    ]
    assert dreml_main(args + ["--out", str(tmp_path / "plain")]) == 0
    assert dreml_main(args + ["--out", str(tmp_path / "z"), "--gz", "--pheno-name", "trait2", "--plot"]) == 0
    for kind in ("manhattan", "qq"):
        assert (tmp_path / f"z.trait2.{kind}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    expected = runs[True, "complete-case"]
    for trait in expected.traits:
        text = (tmp_path / f"plain.{trait.name}.glm.linear").read_text()
        assert text == glm_linear_text(expected, trait)
        lines = text.splitlines()
        assert lines[0].split("\t") == list(HEADER)
        assert lines[0] == "#CHROM\tPOS\tID\tREF\tALT\tA1\tA1_FREQ\tOBS_CT\tBETA\tSE\tT_STAT\tP"
        assert len(lines) == M + 1
        bim = [line.split() for line in open(root / "c.bim")]
        row = lines[1].split("\t")
        assert row[:6] == [bim[0][0], bim[0][3], bim[0][1], bim[0][5], bim[0][4], bim[0][4]]
    with gzip.open(tmp_path / "z.trait2.glm.linear.gz", "rt") as f:
        assert f.read() == glm_linear_text(expected, expected.traits[1])
    assert not (tmp_path / "z.trait1.glm.linear.gz").exists()
    assert not list(tmp_path.glob("*.tmp"))
    report = json.loads((tmp_path / "plain.gwas.json").read_text())
    assert report["passes"] == 1 and report["missing"] == "complete-case"
    assert [t["name"] for t in report["traits"]] == ["trait1", "trait2"]
    assert report["traits"][0]["variants_tested"] == expected.traits[0].n_tested
    assert report["traits"][0]["lambda_gc"] == pytest.approx(expected.traits[0].lambda_gc)
    # --extract and --chr: the selected variants' rows of the full run, and only those
    bim = [line.split() for line in open(root / "c.bim")]
    (tmp_path / "x.snps").write_text("ID\n" + "".join(f"{b[1]}\n" for b in bim[::3]))
    assert dreml_main(args + ["--out", str(tmp_path / "sel"), "--extract", str(tmp_path / "x.snps"), "--chr", bim[0][0]]) == 0
    full = (tmp_path / "plain.trait1.glm.linear").read_text().splitlines()
    wanted = {b[1] for b in bim[::3] if b[0] == bim[0][0]}
    assert (tmp_path / "sel.trait1.glm.linear").read_text().splitlines() == [full[0]] + [
        line for line in full[1:] if line.split("\t")[2] in wanted
    ]


def test_load_traits__raise_on_too_few_values(cohort, tmp_path):
    pheno = tmp_path / "few.pheno"
    lines = ["FID IID a b"] + [f"F{i + 1} I{i + 1} {'1.5' if i < 2 else 'NA'} {i}" for i in range(N)]
    pheno.write_text("\n".join(lines) + "\n")
    store = open_store(cohort / "c.zarr")
    with pytest.raises(InputError, match="trait 'a' has 2 observed value"):
        load_traits(store.sample_id, pheno)


def test_load_traits__raise_on_collinear_covariates(cohort, tmp_path):
    covar = tmp_path / "dup.covar"
    rows = [f.split() for f in open(cohort / "c.covar")]
    covar.write_text("\n".join(" ".join(r + [("age2" if k == 0 else r[3])]) for k, r in enumerate(rows)) + "\n")
    store = open_store(cohort / "c.zarr")
    with pytest.raises(InputError, match=r"rank-deficient.*age, age2\); age2 is a linear combination"):
        load_traits(store.sample_id, cohort / "c.pheno", covar=covar)


def test_dreml_gwas_marginal_cli__raise_on_bad_trait_before_any_cluster(cohort, tmp_path, capsys):
    code = dreml_main(
        [
            "gwas",
            "marginal",
            "--store",
            str(cohort / "c.zarr"),
            "--pheno",
            str(cohort / "c.pheno"),
            "--pheno-name",
            "trait1,nope",
            "--out",
            str(tmp_path / "o"),
            "--workers",
            "1",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no column named 'nope'" in err[0]
    assert [p.name for p in tmp_path.iterdir()] == ["o.log"]  # the run log only


@pytest.mark.skipif(shutil.which("plink2") is None, reason="plink2 is not installed: the plink2 --glm comparison did not run")
def test_dreml_gwas_marginal__matches_plink2_glm(cohort, runs, tmp_path):
    root = cohort
    subprocess.run(
        [
            "plink2",
            "--bfile",
            str(root / "c"),
            "--pheno",
            str(root / "c.pheno"),
            "--covar",
            str(root / "c.covar"),
            "--glm",
            "omit-ref",
            "hide-covar",
            "--covar-variance-standardize",
            "--out",
            str(tmp_path / "p"),
        ],
        check=True,
        capture_output=True,
    )
    expected = runs[True, "complete-case"]
    for trait in expected.traits:
        rows = [line.rstrip("\n").split("\t") for line in open(tmp_path / f"p.{trait.name}.glm.linear")]
        header = rows[0]
        table = {r[header.index("ID")]: r for r in rows[1:]}
        for j, vid in enumerate(expected.variant_id):
            r = table[vid]
            assert int(r[header.index("OBS_CT")]) == trait.obs_ct[j]
            beta = r[header.index("BETA")]
            if beta == "NA":
                assert np.isnan(trait.beta[j])
            else:
                assert float(beta) == pytest.approx(trait.beta[j], rel=1e-5)
                assert float(r[header.index("P")]) == pytest.approx(trait.p[j], rel=1e-4)
