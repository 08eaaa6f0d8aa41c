"""`dreml.gwas.mixed_gwas` and `dreml gwas mixed` on a real store, a real exact fit and a real
local cluster.

Reference: the LOCO mixed-model statistics written here densely from an independent decode of
the .bed (pgenlib), standardised with the fit's frequencies, the hand-parsed phenotype and
covariates, an explicit V_-c and NumPy solves. Two components (MAF bins), three chromosomes,
shard sizes that do not divide m.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from converters import convert
from dreml.cli import main as dreml_main
from dreml.errors import InputError
from dreml.fit import ComponentChoice, fit
from dreml.fit_result import FitState
from dreml.gwas import (
    MixedConfig,
    check_fit_inputs,
    load_traits,
    loco_layout,
    loco_operator,
    loco_operator_weights,
    mixed_gwas,
)
from dreml.outputs import write_outputs
from dreml.reml import FitConfig
from dreml.simulate import SimulationConfig, simulate_cohort
from dreml.store import open_store
from tests.plink_reference import read_dosage

N, M = 360, 720
RTOL = 1e-8


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Store, exact float64 fit of trait1 with covariates (PREFIX fit.*), and its state."""
    root = tmp_path_factory.mktemp("mixed")
    config = SimulationConfig(
        n_samples=N,
        n_variants=M,
        seed=11,
        n_traits=2,
        missing_rate=0.03,
        phenotype_missing_rate=0.0,
        maf_min=0.01,
        group_variances=(0.3, 0.2),
        n_chromosomes=3,
    )
    simulate_cohort(config, root / "c")
    convert("bed", root / "c", root / "c.zarr", variant_chunk=170, sample_chunk=150)
    result = fit(
        root / "c.zarr",
        root / "c.pheno",
        pheno_name="trait1",
        covar=root / "c.covar",
        components=ComponentChoice(maf_bins=(0.0, 0.2, 0.5)),
        config=FitConfig(method="exact", worker_dtype="float64", seed=1),
    )
    write_outputs(result, str(root / "fit"))
    return root, FitState.load(root / "fit.fit.npz")


def _hand(root, state):
    """y (n, 2) and X = [1, sex M, age] of the fit's samples, parsed by hand."""
    pheno = {f.split()[1]: f.split()[2:] for f in list(open(root / "c.pheno"))[1:]}
    covar = {f.split()[1]: f.split()[2:] for f in list(open(root / "c.covar"))[1:]}
    iid = [str(i) for i in state.sample_iid]
    Y = np.array([[float(v) for v in pheno[i]] for i in iid])
    X = np.array([[1.0, float(covar[i][0] == "M"), float(covar[i][1])] for i in iid])
    return iid, Y, X


def _dense_reference(root, state):
    """chi2, BETA, SE per fit variant (store order) and trait, exact LOCO (module docstring)."""
    iid, Y, X = _hand(root, state)
    cols = np.array([int(i[1:]) - 1 for i in iid])
    dosage = read_dosage(root / "c", N, M)[:, cols].astype(np.float64)  # shape: (M, n)
    v = state.variants
    p = np.full(M, np.nan)
    p[v.index] = v.frequency
    s = 1.0 / np.sqrt(2 * p * (1 - p))
    Z = np.where(dosage >= 0, (dosage - 2 * p[:, None]) * s[:, None], 0.0)  # shape: (M, n)
    chrom = np.array([line.split()[0] for line in open(root / "c.bim")])
    tested = np.unique(v.index)
    out = {k: np.full((len(tested), 2), np.nan) for k in ("chisq", "beta", "se")}
    G = state.n_components
    for c in np.unique(chrom[tested]):
        V = state.theta[-1] * np.eye(len(iid))
        for g in range(G):
            idx = v.index[v.component == g]
            keep = idx[chrom[idx] != c]
            V += state.theta[g] * Z[keep].T @ Z[keep] / len(keep)
        Vi = np.linalg.inv(V)
        P = Vi - Vi @ X @ np.linalg.solve(X.T @ Vi @ X, X.T @ Vi)
        rows = np.flatnonzero(chrom[tested] == c)
        Zc = Z[tested[rows]]
        num = Zc @ P @ Y
        den = np.einsum("jn,jn->j", Zc @ P, Zc)
        out["chisq"][rows] = num**2 / den[:, None]
        out["beta"][rows] = num / den[:, None] * s[tested[rows], None]
        out["se"][rows] = (1 / np.sqrt(den) * s[tested[rows]])[:, None]
    return out


def _run(root, state, client, names, config):
    store = open_store(root / "c.zarr")
    traits = load_traits(store.sample_id, root / "c.pheno", pheno_names=names, covar=root / "c.covar")
    check_fit_inputs(state, [store], traits)
    layout = loco_layout(state, [store])
    with loco_operator([store], layout, traits[0].sample_index, client=client, dtype=np.float64, shard_variants=250) as op:
        result = mixed_gwas(op, state, layout, traits, config=config)
        assert op.passes == result.passes
    return result


@pytest.fixture(scope="module")
def exact(cohort, client):
    root, state = cohort
    return _run(root, state, client, ["trait1", "trait2"], MixedConfig(exact_denominator=True, pcg_tol=1e-10))


@pytest.fixture(scope="module")
def calibrated(cohort, client):
    root, state = cohort
    return _run(root, state, client, ["trait1", "trait2"], MixedConfig(calibration_variants=30, seed=3))


def test_mixed_gwas__exact_matches_dense_loco(cohort, exact):
    root, state = cohort
    ref = _dense_reference(root, state)
    assert state.n_components == 2 and np.all(state.theta > 0)
    assert len(exact.chromosomes) == 3
    for t, trait in enumerate(exact.traits):
        # near-zero statistics (a cancellation in z^T P y) are compared on the scale of the SE
        np.testing.assert_allclose(trait.chisq, ref["chisq"][:, t], rtol=RTOL, atol=RTOL)
        np.testing.assert_allclose(trait.beta / ref["se"][:, t], ref["beta"][:, t] / ref["se"][:, t], rtol=RTOL, atol=RTOL)
        np.testing.assert_allclose(trait.se, ref["se"][:, t], rtol=RTOL)
        np.testing.assert_allclose(trait.t_stat**2, trait.chisq, rtol=1e-12)
        assert np.isfinite(trait.lambda_gc)  # polygenic traits at n = 360: inflated, as expected
    assert all(c.pcg_status == "converged" and c.passes > 1 for c in exact.chromosomes)


def test_mixed_gwas__two_traits_share_passes(cohort, client, calibrated):
    root, state = cohort
    single = _run(root, state, client, ["trait2"], MixedConfig(calibration_variants=30, seed=3))
    assert [c.calibration_factor for c in single.chromosomes] == pytest.approx(
        [c.calibration_factor for c in calibrated.chromosomes], rel=1e-10
    )
    for field in ("chisq", "beta", "se", "p"):
        np.testing.assert_allclose(getattr(single.traits[0], field), getattr(calibrated.traits[1], field), rtol=1e-9)
    # each column runs its own CG recurrence: the pair costs the passes of its slowest column
    for pair, one in zip(calibrated.chromosomes, single.chromosomes):
        assert one.passes <= pair.passes


def test_mixed_gwas__calibrated_within_monte_carlo_bound(calibrated, exact):
    cal = calibrated
    assert cal.config.seed == 3 and cal.config.pcg_tol == 1e-6
    for chrom in cal.chromosomes:
        assert chrom.calibration_variants == 30 and chrom.calibration_se > 0
        # the factor's Monte Carlo SE is small relative to the factor
        assert chrom.calibration_se < 0.02 * chrom.calibration_factor
    for t in range(2):
        rel = np.abs(cal.traits[t].chisq / exact.traits[t].chisq - 1)
        # per chromosome, calibrated chi2 = exact chi2 * r_j / factor: the relative differences
        # are the spread of r_j around its mean (sd = SE sqrt(R)); their median is below 1 sd
        # for a normal spread (0.67 sd), 2 sd leaves room for the factor's own error
        spread = max(c.calibration_se * np.sqrt(c.calibration_variants) / c.calibration_factor for c in cal.chromosomes)
        assert np.median(rel) < 2 * spread
        assert abs(cal.traits[t].lambda_gc / exact.traits[t].lambda_gc - 1) < 4 * spread


def test_loco_operator_weights__sum_to_theta_per_kept_component():
    theta = np.array([0.2, 0.1, 0.7])
    parent = np.array([0, 0, 0, 1, 1])
    chromosome = np.array([0, 1, 2, 0, 1])
    m_sub = np.array([10, 30, 60, 5, 15])
    w = loco_operator_weights(theta, parent, chromosome, m_sub, 1)
    np.testing.assert_allclose(w, [0.2 * 10 / 70, 0, 0.2 * 60 / 70, 0.1, 0])
    # a component wholly on the chromosome left out drops out
    w = loco_operator_weights(theta, np.array([0, 1]), np.array([0, 1]), np.array([5, 5]), 1)
    np.testing.assert_allclose(w, [0.2, 0.0])


def test_check_fit_inputs__raise_on_other_samples(cohort, tmp_path, capsys):
    root, state = cohort
    lines = open(root / "c.pheno").read().splitlines()
    parts = lines[5].split()
    lines[5] = " ".join(parts[:2] + ["NA"] + parts[3:])
    (tmp_path / "p").write_text("\n".join(lines) + "\n")
    store = open_store(root / "c.zarr")
    traits = load_traits(store.sample_id, tmp_path / "p", pheno_names=["trait1"], covar=root / "c.covar")
    with pytest.raises(InputError, match="a fit from other samples"):
        check_fit_inputs(state, [store], traits)
    # the CLI: one line, exit status 2, before any cluster starts
    rc = dreml_main(
        [
            "gwas",
            "mixed",
            "--fit",
            str(root / "fit"),
            "--pheno",
            str(tmp_path / "p"),
            "--pheno-name",
            "trait1",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2
    assert "a fit from other samples" in capsys.readouterr().err


def test_check_fit_inputs__raise_on_another_store(cohort, tmp_path):
    root, state = cohort
    config = SimulationConfig(n_samples=N, n_variants=500, seed=12, n_chromosomes=3)
    simulate_cohort(config, tmp_path / "o")
    convert("bed", tmp_path / "o", tmp_path / "o.zarr")
    other = open_store(tmp_path / "o.zarr")
    traits = load_traits(other.sample_id, root / "c.pheno", pheno_names=["trait1"], covar=root / "c.covar")
    with pytest.raises(InputError, match="a fit from another store"):
        check_fit_inputs(state, [other], traits)


def test_cli_gwas_mixed__end_to_end(cohort, client, calibrated, tmp_path, capsys):
    root, _ = cohort
    out = tmp_path / "m"
    rc = dreml_main(
        [
            "gwas",
            "mixed",
            "--fit",
            str(root / "fit"),
            "--pheno-name",
            "trait1,trait2",
            "--seed",
            "3",
            "--worker-dtype",
            "float64",
            "--out",
            str(out),
            "--plot",
            "--scheduler",
            client.scheduler.address,
        ]
    )
    assert rc == 0
    assert (tmp_path / "m.trait1.qq.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((tmp_path / "m.gwas_mixed.json").read_text())
    assert report["denominator"] == "calibrated" and report["seed"] == 3 and len(report["chromosomes"]) == 3
    assert [t["name"] for t in report["traits"]] == ["trait1", "trait2"]
    lines = (tmp_path / "m.trait2.glm.mixed").read_text().splitlines()
    assert lines[0].split("\t") == [
        "#CHROM",
        "POS",
        "ID",
        "REF",
        "ALT",
        "A1",
        "A1_FREQ",
        "OBS_CT",
        "BETA",
        "SE",
        "T_STAT",
        "P",
        "CHISQ",
    ]
    chisq = np.array([float(line.split("\t")[12]) for line in lines[1:]])
    np.testing.assert_allclose(chisq, calibrated.traits[1].chisq, rtol=1e-5)
    assert "lambda_GC" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        dreml_main(["gwas", "mixed", "--out", str(out)])
