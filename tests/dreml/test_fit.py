"""`dreml.fit` and `dreml fit` end to end on a real store and a real local Dask cluster.

Reference: the same model fitted by the engine's exact path on an explicit K_g built in
this file from an independent decode of the .bed (pgenlib) and a hand alignment of the
phenotype and covariates. Agreement at 1e-6 shows that sample alignment, covariate coding,
component membership and the distributed products all reach the engine unchanged.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from converters import convert
from dreml.cli import main as dreml_main
from dreml.cli.fit import check_out_prefix
from dreml.errors import InputError
from dreml.fit import ComponentChoice, fit, prepare_inputs
from dreml.operators import DenseOperator
from dreml.plink_write import write_plink1
from dreml.reml import FitConfig, fit_reml
from dreml.simulate import SimulationConfig, simulate_cohort, standardise
from dreml.store import open_store
from tests.plink_reference import hand_alignment, read_dosage

N, M = 400, 1200


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    truth = simulate_cohort(SimulationConfig(n_samples=N, n_variants=M, seed=8, group_variances=(0.4, 0.2)), root / "c")
    convert("bed", root / "c", root / "c.zarr", variant_chunk=400, sample_chunk=300)
    return root, truth


def test_fit__exact_matches_dense_reference(cohort, client):
    root, _ = cohort
    config = FitConfig(method="exact", worker_dtype="float64")
    result = fit(
        root / "c.zarr",
        root / "c.pheno",
        covar=root / "c.covar",
        components=ComponentChoice(spec=root / "c.components.tsv"),
        client=client,
        config=config,
    )
    report = result.to_dict()
    # the reference standardises with frequencies over all samples of the store (dreml's
    # default), then keeps the hand-aligned samples and splits variants by the spec file
    Z_all, _ = standardise(read_dosage(root / "c", N, M))
    keep, y, X = hand_alignment(root, N)
    group_of = dict(line.rstrip("\n").split("\t") for line in open(root / "c.components.tsv"))
    group = [group_of[line.split()[1]] for line in open(root / "c.bim")]  # in .bim order
    names = sorted(set(group))
    Zk = Z_all[:, keep]
    ref = fit_reml(DenseOperator.from_genotypes([Zk[np.array(group) == g].T for g in names], names), y, X, config)
    assert report["n_samples"] == len(keep)
    assert [c["name"] for c in report["components"]] == names
    estimates = [c["variance"] for c in report["components"]] + [report["residual_variance"]]
    np.testing.assert_allclose(estimates, ref.theta, rtol=1e-6)
    np.testing.assert_allclose(report["loglik"], ref.loglik, rtol=1e-8)
    assert report["samples"]["samples_used"] == len(keep)
    assert [c["m"] for c in report["components"]] == [int((np.array(group) == g).sum()) for g in names]


def _dense_reml(K, y, X, theta):
    """REML quantities at theta from explicit matrices, written out here: logL, beta, cov(beta), P y."""
    H = np.tensordot(theta[:-1], K, axes=1) + theta[-1] * np.eye(len(y))
    Hi = np.linalg.inv(H)
    cov_beta = np.linalg.inv(X.T @ Hi @ X)
    beta = cov_beta @ X.T @ Hi @ y
    P = Hi - Hi @ X @ cov_beta @ X.T @ Hi
    loglik = -0.5 * (np.linalg.slogdet(H)[1] + np.linalg.slogdet(X.T @ Hi @ X)[1] + y @ P @ y)
    return loglik, beta, cov_beta, P @ y


def test_fit__post_reml_effects_and_lrt_match_dense_numpy(cohort, client):
    """beta, SE(beta), u_g, SNP effects and the LRT of the exact path against dense NumPy/SciPy
    written here (K_g from a pgenlib decode), 1e-8 relative."""
    from scipy.optimize import minimize

    root, _ = cohort
    # logL at the optimum is off by about half the final Newton decrement: converge far below 1e-8
    config = FitConfig(method="exact", worker_dtype="float64", tol_decrement=1e-12)
    result = fit(
        root / "c.zarr",
        root / "c.pheno",
        covar=root / "c.covar",
        components=ComponentChoice(spec=root / "c.components.tsv"),
        client=client,
        config=config,
        reml_lrt=("1",),
    )
    dosage = read_dosage(root / "c", N, M)
    Z_all, _ = standardise(dosage)
    keep, y, X = hand_alignment(root, N)
    group_of = dict(line.rstrip("\n").split("\t") for line in open(root / "c.components.tsv"))
    group = np.array([group_of[line.split()[1]] for line in open(root / "c.bim")])
    names = sorted(set(group))
    Z = [Z_all[group == g][:, keep].T for g in names]  # shape: (n, m_g) each
    K = np.stack([z @ z.T / z.shape[1] for z in Z])
    state = result.state
    theta = state.theta
    loglik, beta, cov_beta, Py = _dense_reml(K, y, X, theta)

    def rel(a, b):
        return np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b)

    assert rel(state.beta, beta) < 1e-8 and rel([e.estimate for e in result.fixed_effects], beta) < 1e-8
    assert rel([e.se for e in result.fixed_effects], np.sqrt(np.diag(cov_beta))) < 1e-8
    assert [e.name for e in result.fixed_effects] == ["intercept", "sex_M", "age"]
    assert rel(state.Py, Py) < 1e-8 and rel(result.loglik, loglik) < 1e-10
    u = np.stack([theta[g] * K[g] @ Py for g in range(len(names))])
    assert rel(state.blup(), u) < 1e-8
    assert rel(state.theta[-1] * state.Py, y - X @ beta - u.sum(axis=0)) < 1e-8  # e = y - X beta - sum u
    # SNP effects: standardised b_g = theta_g Z_g^T P y / m_g, per allele b / sqrt(2p(1-p))
    b = np.concatenate([theta[g] * Z[g].T @ Py / Z[g].shape[1] for g in range(len(names))])
    observed = dosage >= 0
    p = np.where(observed, dosage, 0).sum(axis=1) / (2.0 * observed.sum(axis=1))
    per_allele_scale = np.concatenate([1 / np.sqrt(2 * p[group == g] * (1 - p[group == g])) for g in names])
    assert rel(state.snp_effect, b) < 1e-8 and rel(state.effect_per_allele(), b * per_allele_scale) < 1e-8
    # the reduced model without component 1, maximised here by SciPy over log variances
    lrt = result.lrt
    K0 = K[1:]

    def negative(log_theta):
        return -_dense_reml(K0, y, X, np.exp(log_theta))[0]

    best = minimize(negative, np.log([0.3, 0.7]), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
    assert lrt.dropped == (names[0],) and lrt.df == 1
    assert rel(lrt.loglik0, -best.fun) < 1e-8
    assert abs(lrt.lrt - 2 * (loglik + best.fun)) < 1e-6
    from scipy.stats import chi2

    assert lrt.pvalue == pytest.approx(0.5 * chi2.sf(lrt.lrt, 1), rel=1e-12)
    assert result.passes_by_kind["snp_effects"] == 1 and result.passes == sum(result.passes_by_kind.values())


def test_dreml_fit_cli__randomised_close_to_exact_and_files(cohort, client, tmp_path, capsys):
    root, truth = cohort
    common = [
        "fit",
        "--store",
        str(root / "c.zarr"),
        "--component-file",
        str(root / "c.components.tsv"),
        "--pheno",
        str(root / "c.pheno"),
        "--covar-auto",
        str(root / "c.covar"),
        "--worker-dtype",
        "float64",
    ]
    # the randomised fit on the running cluster, the exact one on a cluster the CLI starts itself
    assert (
        dreml_main(
            common
            + [
                "--out",
                str(tmp_path / "res"),
                "--scheduler",
                client.scheduler.address,
                "--seed",
                "3",
                "--method",
                "randomised",
                "--reml-est-fix",
                "--reml-pred-rand",
                "--blup-snp",
            ]
        )
        == 0
    )
    assert dreml_main(common + ["--out", str(tmp_path / "exact"), "--workers", "1", "--exact"]) == 0
    printed = capsys.readouterr().out
    assert "total h2" in printed and "wrote" in printed
    rand = json.loads((tmp_path / "res.json").read_text())
    exact = json.loads((tmp_path / "exact.json").read_text())
    assert rand["seed"] == 3 and rand["config"]["seed"] == 3 and exact["config"]["method"] == "exact"
    assert rand["method"] == "randomised" and exact["method"] == "exact" and "requested" in exact["method_reason"]
    assert rand["passes"] == sum(rand["passes_by_kind"].values())
    assert 0 < rand["components"][0]["h2_mc_se"] < rand["components"][0]["h2_se"] and exact["h2_total_mc_se"] == 0
    for r, e in zip(rand["components"], exact["components"]):
        # Monte Carlo bound for n ~ 500 (docs/validation.md): the estimator's own noise is
        # about 0.25 SE here; the 0.1 SE criterion holds at n >= 2000 (tests/dreml/reml)
        assert abs(r["h2"] - e["h2"]) < 0.5 * e["h2_se"]
    hsq = dict(line.split("\t")[:2] for line in (tmp_path / "res.hsq").read_text().splitlines()[1:] if line)
    assert float(hsq["V(G1)"]) == pytest.approx(rand["components"][0]["variance"], abs=5e-7)  # 6 decimals
    assert int(hsq["n"]) == rand["n_samples"]
    history = (tmp_path / "res.history.tsv").read_text().splitlines()
    assert len(history) == len(rand["history"]) + 1
    assert not list(tmp_path.glob("*.tmp"))
    _check_blp_files(root, tmp_path / "res", rand)


def _check_blp_files(root, prefix, report):
    """.hsq fixed effects, .indi.blp and .snp.blp as GCTA lays them out, and the SNP effects
    scoring the raw genotypes (missing calls imputed to 2p, as plink2 --score does) to the
    BLUP genetic values up to a constant per component."""
    hsq = Path(f"{prefix}.hsq").read_text().splitlines()
    assert hsq[hsq.index("Fix_eff\tSE") - 1] == "" and len(hsq) - hsq.index("Fix_eff\tSE") - 1 == report["n_covariates"]
    blp = [line.split("\t") for line in Path(f"{prefix}.indi.blp").read_text().splitlines()]
    G = len(report["components"])
    assert len(blp) == report["n_samples"] and all(len(row) == 2 + 2 * (G + 1) for row in blp)
    keep, y, X = hand_alignment(root, N)
    assert [row[1] for row in blp] == [f"I{i + 1}" for i in keep]
    u = np.array([[float(row[3 + 2 * g]) for g in range(G)] for row in blp])  # shape: (n, G)
    fixed = np.array([e["estimate"] for e in report["fixed_effects"]])
    residual = np.array([float(row[-1]) for row in blp])
    np.testing.assert_allclose(X @ fixed + u.sum(axis=1) + residual, y, rtol=1e-4, atol=1e-4)  # 6 digits in the files
    snp = [line.split("\t") for line in Path(f"{prefix}.snp.blp").read_text().splitlines()]
    bim = [line.split() for line in open(root / "c.bim")]
    assert [row[0] for row in snp] == [b[1] for b in bim] and [row[1] for row in snp] == [b[4] for b in bim]
    effects = np.array([[float(v) for v in row[2:]] for row in snp])  # shape: (m, G + 1)
    np.testing.assert_allclose(effects[:, :G].sum(axis=1), effects[:, G], rtol=1e-5, atol=1e-12)
    dosage = read_dosage(root / "c", N, M).astype(np.float64)[:, keep]  # shape: (m, n)
    observed = dosage >= 0
    full = read_dosage(root / "c", N, M)
    p = np.where(full >= 0, full, 0).sum(axis=1) / (2.0 * (full >= 0).sum(axis=1))
    imputed = np.where(observed, dosage, 2 * p[:, None])
    for g in range(G):
        score = imputed.T @ effects[:, g]
        offset = score - u[:, g]
        assert np.ptp(offset) < 1e-4 * np.ptp(u[:, g])


def test_dreml_fit_cli__raise_on_bad_phenotype_before_any_output(cohort, tmp_path, capsys):
    root, _ = cohort
    bad = tmp_path / "bad.pheno"
    bad.write_text("FID IID y\nF1 I1 1.0\nF2 I2 abc\n")
    code = dreml_main(["fit", "--store", str(root / "c.zarr"), "--pheno", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == f"dreml: error: {bad}: line 3: phenotype 'y' has non-numeric value 'abc' (expected a number, NA or -9)"
    assert [p.name for p in tmp_path.glob("o*")] == ["o.log"]  # the run log, ending with the error


def test_dreml_fit_cli__raise_on_missing_store(tmp_path, capsys):
    code = dreml_main(
        ["fit", "--store", str(tmp_path / "none.zarr"), "--pheno", str(tmp_path / "p"), "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert capsys.readouterr().err.strip().endswith("none.zarr: no such store")


def test_dreml_fit_cli__raise_on_complete_cases_without_a_common_sample(cohort, tmp_path, capsys):
    root, _ = cohort
    rows = [line.split() for line in open(root / "c.pheno").readlines()[1:]]
    split = tmp_path / "split.pheno"  # a on the odd samples, b on the even ones
    lines = [f"{r[0]} {r[1]} {r[2] if k % 2 else 'NA'} {'NA' if k % 2 else r[2]}\n" for k, r in enumerate(rows)]
    split.write_text("FID IID a b\n" + "".join(lines))
    args = ["fit", "--store", str(root / "c.zarr"), "--pheno", str(split), "--all-pheno", "--complete-cases"]
    code = dreml_main(args + ["--out", str(tmp_path / "o")])
    assert code == 2
    expected = "--complete-cases: no sample has every trait observed (a, b) with its covariates"
    assert capsys.readouterr().err.strip().endswith(expected)


def test_component_choice_resolve__raise_on_two_choices():
    with pytest.raises(InputError, match=r"choose one of a component spec, by-chromosome and MAF bins"):
        ComponentChoice(by_chromosome=True, maf_bins=(0.01, 0.5)).resolve([])


@pytest.mark.parametrize("choice", [ComponentChoice(by_chromosome=True), ComponentChoice(maf_bins=(0.01, 0.5))])
def test_component_choice_resolve__raise_on_several_stores(cohort, choice):
    root, _ = cohort
    store = open_store(root / "c.zarr")
    with pytest.raises(InputError, match=r"need a single store; use a JSON spec"):
        choice.resolve([store, store])


def test_dreml_fit_cli__raise_on_invalid_setting(tmp_path, capsys):
    code = dreml_main(
        [
            "fit",
            "--store",
            str(tmp_path / "s.zarr"),
            "--pheno",
            str(tmp_path / "p"),
            "--out",
            str(tmp_path / "o"),
            "--n-probes",
            "0",
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.strip() == "dreml: error: dreml fit: n_probes must be a positive integer, got 0"


def test_check_out_prefix__raise_on_unwritable_directory(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(InputError, match=r"afile/sub/fit: cannot write the outputs, .*afile is not a writable directory"):
        check_out_prefix(str(tmp_path / "afile" / "sub" / "fit"))
    check_out_prefix(str(tmp_path / "new" / "fit"))  # a directory write_outputs will create is fine


def test_prepare_inputs__raise_on_stores_with_other_sample_order(tmp_path):
    dosage = np.random.default_rng(0).integers(0, 3, size=(20, 6)).astype(np.int8)
    ids = np.array([f"s{i}" for i in range(6)])
    write_plink1(tmp_path / "a", dosage, sample_id=ids)
    write_plink1(tmp_path / "b", dosage[:, ::-1], sample_id=ids[::-1])
    for name in "ab":
        convert("bed", tmp_path / name, tmp_path / f"{name}.zarr")
    (tmp_path / "p").write_text("FID IID y\n" + "".join(f"{i} {i} {k}\n" for k, i in enumerate(ids)))
    with pytest.raises(InputError, match=r"differ in sample order: sample 0 is 's0' vs 's5'"):
        prepare_inputs([tmp_path / "a.zarr", tmp_path / "b.zarr"], tmp_path / "p")


def test_dreml_fit_cli__gcta_conventions_equal_the_same_analysis_on_plain_files(cohort, client, tmp_path):
    """GCTA/PLINK habits (headerless gzip phenotype, --mpheno, --qcovar + numeric-coded --covar,
    --keep/--remove with FIDs, --extract/--exclude/--chr, a component file with a header,
    --prevalence) give exactly the fit of the same samples, covariates and variants written as
    plain headered files (exact path, 1e-8), and the liability rows equal Lee et al.'s closed form."""
    import gzip

    from scipy.stats import norm

    from dreml.phenotypes import CovariateFile, is_missing

    root, _ = cohort
    fam = [line.split() for line in open(root / "c.fam")]
    bim = [line.split() for line in open(root / "c.bim")]
    pheno = {r[1]: r[2] for r in (line.split() for line in open(root / "c.pheno").readlines()[1:])}
    covar = {r[1]: r[2:] for r in (line.split() for line in open(root / "c.covar").readlines()[1:])}
    values = np.array([float(v) for v in pheno.values() if v != "NA"])
    cut = np.median(values)
    case = {iid: "NA" if v == "NA" else str(int(float(v) > cut)) for iid, v in pheno.items()}
    # GCTA side: headerless gzip pheno (the binary trait second), sex as 1/2 codes, age quantitative
    text = "".join(f"{f} {i} {pheno[i]} {case[i]}\n" for f, i, *_ in fam)
    (tmp_path / "g.pheno.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "g.covar").write_text("".join(f"{f} {i} {1 + (covar[i][0] == 'M')}\n" for f, i, *_ in fam))
    (tmp_path / "g.qcovar").write_text("".join(f"{f} {i} {covar[i][1]}\n" for f, i, *_ in fam))
    (tmp_path / "g.keep").write_text("#FID IID\n" + "".join(f"{f} {i}\n" for f, i, *_ in fam[:300]))
    (tmp_path / "g.remove").write_text("".join(f"{i}\n" for _, i, *_ in fam[:20]))
    chrom_of = {b[1]: b[0] for b in bim}
    extract = [b[1] for b in bim[::2]]
    (tmp_path / "g.extract").write_text("SNP\n" + "\n".join(extract) + "\n")
    (tmp_path / "g.exclude").write_text(extract[0] + "\n")
    spec = [line.split() for line in open(root / "c.components.tsv") if not line.startswith("#")]
    (tmp_path / "g.comp").write_text("SNP component\n" + "".join(f"{s} {c}\n" for s, c in spec))
    chromosomes = sorted({b[0] for b in bim}, key=int)[:-1]  # all but the last chromosome
    args = [
        "fit",
        "--store",
        str(root / "c.zarr"),
        "--pheno",
        str(tmp_path / "g.pheno.gz"),
        "--mpheno",
        "2",
        "--covar",
        str(tmp_path / "g.covar"),
        "--qcovar",
        str(tmp_path / "g.qcovar"),
        "--keep",
        str(tmp_path / "g.keep"),
        "--remove",
        str(tmp_path / "g.remove"),
        "--extract",
        str(tmp_path / "g.extract"),
        "--exclude",
        str(tmp_path / "g.exclude"),
        "--chr",
        ",".join(chromosomes),
        "--component-file",
        str(tmp_path / "g.comp"),
        "--prevalence",
        "0.1",
        "--exact",
        "--worker-dtype",
        "float64",
        "--scheduler",
        client.scheduler.address,
        "--out",
        str(tmp_path / "g"),
    ]
    assert dreml_main(args) == 0
    gcta = json.loads((tmp_path / "g.json").read_text())

    # the same analysis on plain files, selected by hand
    used = [(f, i) for f, i, *_ in fam[20:300] if case[i] != "NA" and not any(is_missing(v) for v in covar[i])]
    (tmp_path / "p.pheno").write_text("FID IID y\n" + "".join(f"{f} {i} {case[i]}\n" for f, i in used))
    (tmp_path / "p.covar").write_text("FID IID sex age\n" + "".join(f"{f} {i} s{covar[i][0]} {covar[i][1]}\n" for f, i in used))
    kept = [s for s in extract[1:] if chrom_of[s] in chromosomes]
    names = [
        c for c in dict.fromkeys(c for s, c in spec) if any(chrom_of[s] in chromosomes and s in kept for s, cc in spec if cc == c)
    ]
    (tmp_path / "p.comp").write_text("".join(f"{s}\t{c}\n" for s, c in spec if s in kept))
    plain = fit(
        root / "c.zarr",
        tmp_path / "p.pheno",
        covar=CovariateFile(tmp_path / "p.covar"),
        components=ComponentChoice(spec=tmp_path / "p.comp"),
        client=client,
        config=FitConfig(method="exact", worker_dtype="float64"),
    ).to_dict()
    assert [c["name"] for c in gcta["components"]] == names == [c["name"] for c in plain["components"]]
    assert gcta["n_samples"] == plain["n_samples"] == len(used)
    for a, b in zip(gcta["components"], plain["components"]):
        assert a["m"] == b["m"] and abs(a["variance"] - b["variance"]) <= 1e-8 * abs(b["variance"]) + 1e-12
    assert gcta["loglik"] == pytest.approx(plain["loglik"], rel=1e-10)
    assert gcta["inputs"]["variant_selection"]["after_exclude"] == len(extract) - 1
    assert gcta["samples"]["after_keep"] == 300 and gcta["samples"]["after_remove"] == 280
    # liability scale, Lee et al. 2011 eq. 23, from scipy here
    K, P = 0.1, np.mean([float(case[i]) for _, i in used])
    z = norm.pdf(norm.ppf(1 - K))
    factor = K**2 * (1 - K) ** 2 / (P * (1 - P) * z**2)
    assert gcta["h2_total_liability"] == pytest.approx(factor * gcta["h2_total"], rel=1e-12)
    hsq = [line.split("\t") for line in (tmp_path / "g.hsq").read_text().splitlines()]
    rows = {r[0]: r[1:] for r in hsq if len(r) > 1}
    assert float(rows["Sum of V(G)_L/Vp"][0]) == pytest.approx(factor * gcta["h2_total"], abs=1e-6)


def _three_traits(cohort, tmp_path) -> Path:
    """m.pheno with a = the cohort's trait, b = a shuffled over the same observed samples and
    c = a with every 7th sample missing (its own sample set)."""
    root, _ = cohort
    rows = [line.split() for line in open(root / "c.pheno").readlines()[1:]]
    rng = np.random.default_rng(4)
    observed = [i for i, r in enumerate(rows) if r[2] != "NA"]
    shuffled = [r[2] for r in rows]
    for i, j in zip(observed, rng.permutation(observed)):
        shuffled[i] = rows[j][2]
    holes = [r[2] if k % 7 else "NA" for k, r in enumerate(rows)]
    path = tmp_path / "m.pheno"
    path.write_text("FID IID a b c\n" + "".join(f"{r[0]} {r[1]} {r[2]} {s} {h}\n" for r, s, h in zip(rows, shuffled, holes)))
    return path


def _traits_base(cohort, client, pheno: Path) -> list[str]:
    root, _ = cohort
    return [
        "fit",
        "--store",
        str(root / "c.zarr"),
        "--pheno",
        str(pheno),
        "--covar-auto",
        str(root / "c.covar"),
        "--method",
        "randomised",
        "--worker-dtype",
        "float64",
        "--scheduler",
        client.scheduler.address,
    ]


def test_dreml_fit_cli__several_traits_share_passes_and_equal_their_own_fits(cohort, client, tmp_path):
    """--pheno-name a,b,c --per-trait-probes: each trait's report equals the fit of that trait
    alone with its spawned seed (float64 workers, 1e-8), a trait with its own missing values
    included, and the traits together take the passes of the longest fit (+1 for all SNP
    effects)."""
    from dreml.reml.traits import trait_seeds

    base = _traits_base(cohort, client, _three_traits(cohort, tmp_path))
    assert dreml_main(base + ["--pheno-name", "a,b,c", "--seed", "5", "--per-trait-probes", "--out", str(tmp_path / "m")]) == 0
    summary = json.loads((tmp_path / "m.traits.json").read_text())
    assert summary["probe_groups"] == []
    table = [line.split("\t") for line in (tmp_path / "m.traits.tsv").read_text().splitlines()]
    assert table[0] == ["trait", "n", "h2", "SE", "converged", "passes", "seed", "status"] and [r[0] for r in table[1:]] == list(
        "abc"
    )
    alone_passes = []
    for name, seed in zip("abc", trait_seeds(5, 3)):
        together = json.loads((tmp_path / f"m.{name}.json").read_text())
        assert dreml_main(base + ["--pheno-name", name, "--seed", str(seed), "--out", str(tmp_path / f"alone_{name}")]) == 0
        alone = json.loads((tmp_path / f"alone_{name}.json").read_text())
        assert together["seed"] == seed and together["n_samples"] == alone["n_samples"]
        for a, b in zip(together["components"], alone["components"]):
            assert a["variance"] == pytest.approx(b["variance"], rel=1e-8)
        assert together["loglik"] == pytest.approx(alone["loglik"], rel=1e-8)
        alone_passes.append(alone["passes"] - alone["passes_by_kind"]["snp_effects"])
    assert summary["passes"] == max(alone_passes) + 1


def test_dreml_fit_cli__traits_on_the_same_samples_share_probes(cohort, client, tmp_path):
    """One component, a and b on the same samples: they share their probes (recorded in the
    summary and each report), and a's fit does not depend on the traits beside it (1e-8: the
    same after --pheno-name b,a); c, alone on its samples, still equals its own fit; with
    --complete-cases all three share, as with --keep of the common samples."""
    from dreml.reml.traits import trait_seeds

    base = _traits_base(cohort, client, _three_traits(cohort, tmp_path))
    assert dreml_main(base + ["--pheno-name", "a,b,c", "--seed", "5", "--out", str(tmp_path / "m")]) == 0
    summary = json.loads((tmp_path / "m.traits.json").read_text())
    assert summary["probe_groups"] == [["a", "b"]]
    a = json.loads((tmp_path / "m.a.json").read_text())
    assert "probes shared" in a["method_reason"] and a["seed"] == 5 and a["passes_by_kind"]["probes"] > 0
    assert dreml_main(base + ["--pheno-name", "b,a", "--seed", "5", "--out", str(tmp_path / "ba")]) == 0
    again = json.loads((tmp_path / "ba.a.json").read_text())
    for x, y in zip(a["components"], again["components"]):
        assert x["variance"] == pytest.approx(y["variance"], rel=1e-8)
    assert a["loglik"] == pytest.approx(again["loglik"], rel=1e-8)
    # --complete-cases: all three on the samples that have c, one probe group; the same
    # fits as --keep of those samples (1e-10)
    assert dreml_main(base + ["--pheno-name", "a,b,c", "--seed", "5", "--complete-cases", "--out", str(tmp_path / "cc")]) == 0
    assert json.loads((tmp_path / "cc.traits.json").read_text())["probe_groups"] == [["a", "b", "c"]]
    pheno = [line.split() for line in (tmp_path / "m.pheno").read_text().splitlines()[1:]]
    (tmp_path / "keep.txt").write_text("".join(f"{r[0]} {r[1]}\n" for r in pheno if r[4] != "NA"))
    keep = ["--keep", str(tmp_path / "keep.txt")]
    assert dreml_main(base + ["--pheno-name", "a,b,c", "--seed", "5", *keep, "--out", str(tmp_path / "kp")]) == 0
    for name in "abc":
        cc, kp = (json.loads((tmp_path / f"{p}.{name}.json").read_text()) for p in ("cc", "kp"))
        assert cc["n_samples"] == kp["n_samples"] < a["n_samples"]
        for x, y in zip(cc["components"], kp["components"]):
            assert x["variance"] == pytest.approx(y["variance"], rel=1e-10)
    c_seed = trait_seeds(5, 3)[2]
    assert dreml_main(base + ["--pheno-name", "c", "--seed", str(c_seed), "--out", str(tmp_path / "alone_c")]) == 0
    c_alone, c_together = (json.loads((tmp_path / f"{p}.json").read_text()) for p in ("alone_c", "m.c"))
    for x, y in zip(c_together["components"], c_alone["components"]):
        assert x["variance"] == pytest.approx(y["variance"], rel=1e-8)


def test_dreml_fit_cli__gcta_reml_flags(cohort, client, tmp_path, capsys):
    """--reml-no-constrain, --reml-priors-var and --reml-maxit reach the engine (recorded in
    the report); maxit 1 is reported as not converged; a wrong prior count fails before a cluster."""
    root, _ = cohort
    base = [
        "fit",
        "--store",
        str(root / "c.zarr"),
        "--pheno",
        str(root / "c.pheno"),
        "--exact",
        "--scheduler",
        client.scheduler.address,
    ]
    assert (
        dreml_main(
            base + ["--reml-no-constrain", "--reml-priors-var", "0.3", "0.6", "--reml-maxit", "1", "--out", str(tmp_path / "a")]
        )
        == 0
    )
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["config"]["constrain"] is False and report["config"]["priors"] == [0.3, 0.6]
    assert report["config"]["max_iter"] == 1 and report["converged"] is False and report["iterations"] == 1
    capsys.readouterr()
    assert dreml_main(base + ["--reml-priors-var", "0.3", "0.2", "0.6", "--out", str(tmp_path / "b")]) == 2
    assert "--reml-priors-var: 3 value(s) for 1 component(s) (all) and the residual: expected 2" in capsys.readouterr().err
