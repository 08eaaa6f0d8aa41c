"""`dreml fit --all-pheno --factors K` end to end on a real store and the session Dask cluster.

Reference: `fit_factor_model` on an explicit K built in this file from an independent decode of
the .bed (pgenlib) and the phenotype matrix written here: the loadings, psi, h2 and the
predictions of the missing values agree at 1e-6 (float64 workers, exact path). With candidate
K values and unphenotyped samples: `choose_factor_count` and `predict_factors` on that explicit K
(the held-out scores, the chosen K and the unphenotyped samples' predictions at 1e-6).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from converters import convert
from dreml.cli import build_parser
from dreml.errors import InputError
from dreml.factors import union_design
from dreml.fit import prepare_inputs
from dreml.operators import DenseOperator
from dreml.reml import FitConfig
from dreml.reml.factor_prediction import predict_factors
from dreml.reml.factor_selection import FactorSelectionConfig, choose_factor_count
from dreml.reml.factors import FactorConfig, fit_factor_model
from dreml.simulate import SimulationConfig, simulate_cohort, standardise
from tests.plink_reference import read_dosage

N, M, T = 200, 600, 6


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A store and PREFIX.pheno with T traits from 2 factors (15% of the values NA)."""
    root = tmp_path_factory.mktemp("factors")
    simulate_cohort(SimulationConfig(n_samples=N, n_variants=M, n_chromosomes=2, group_variances=(0.3,), seed=4), root / "c")
    convert("bed", root / "c", root / "c.zarr", variant_chunk=250, sample_chunk=150)
    Z, polymorphic = standardise(read_dosage(root / "c", N, M))
    K = Z[polymorphic].T @ Z[polymorphic] / polymorphic.sum()
    rng = np.random.default_rng(5)
    w, V = np.linalg.eigh(K)
    root_K = V * np.sqrt(np.maximum(w, 0))
    F = np.column_stack(
        [np.sqrt(h) * root_K @ rng.standard_normal(N) + np.sqrt(1 - h) * rng.standard_normal(N) for h in (0.8, 0.4)]
    )
    Y = F @ rng.standard_normal((2, T)) + 0.5 * rng.standard_normal((N, T))
    Y[rng.random((N, T)) < 0.15] = np.nan
    ids = [line.split()[:2] for line in open(root / "c.fam")]
    lines = ["FID IID " + " ".join(f"t{t + 1}" for t in range(T))]
    lines += [" ".join(i + ["NA" if np.isnan(v) else repr(float(v)) for v in row]) for i, row in zip(ids, Y)]
    (root / "f.pheno").write_text("\n".join(lines) + "\n")
    return root, K, Y, ids


def _run(argv: list[str]) -> int:
    """`dreml fit` through its parser and hand-over, errors raised (not turned into exit codes)."""
    args = build_parser().parse_args(argv)
    return args.run(args)


@pytest.mark.parametrize("accelerate", [False, True], ids=["em", "squarem"])
def test_dreml_fit_factors_cli__equals_the_dense_fit_and_writes_the_outputs(cohort, client, tmp_path, accelerate):
    root, K, Y, ids = cohort
    prefix = tmp_path / "f"
    argv = ["fit", "--store", str(root / "c.zarr"), "--pheno", str(root / "f.pheno"), "--all-pheno", "--factors", "2"]
    argv += ["--method", "exact", "--worker-dtype", "float64", "--seed", "7", "--factor-max-iter", "3"]
    argv += ["--factor-accelerate"] if accelerate else []
    assert _run(argv + ["--scheduler", client.scheduler.address, "--out", str(prefix)]) == 0

    union = np.flatnonzero(np.isfinite(Y).any(axis=1))
    config = FactorConfig(n_factors=2, max_iter=3, accelerate=accelerate, reml=FitConfig(method="exact", seed=7))
    ref = fit_factor_model(DenseOperator(K[np.ix_(union, union)]), Y[union], None, config)
    report = json.loads((tmp_path / "f.factors.json").read_text())
    assert report["config"]["accelerate"] is accelerate
    assert [h.get("step") for h in report["history"]] == [h.get("step") for h in ref.history]
    assert report["seed"] == 7 and report["iterations"] == ref.iterations and report["converged"] == ref.converged
    assert report["traits"] == [f"t{t + 1}" for t in range(T)] and len(report["history"]) == ref.iterations
    np.testing.assert_allclose(report["loadings"], ref.loadings, rtol=0, atol=1e-6)
    np.testing.assert_allclose(report["psi"], ref.psi, rtol=1e-6)
    np.testing.assert_allclose(report["h2_total"], ref.h2_total, rtol=0, atol=1e-6)
    np.testing.assert_allclose(report["beta"], ref.beta, rtol=0, atol=1e-6)

    factors = [line.split("\t") for line in (tmp_path / "f.factors.tsv").read_text().splitlines()]
    assert factors[0] == ["factor", "h2", "SE", "MC_SE", "variance_share"] and [r[0] for r in factors[1:]] == ["F1", "F2"]
    np.testing.assert_allclose([float(r[1]) for r in factors[1:]], ref.h2_total, atol=1e-6)
    loadings = [line.split("\t") for line in (tmp_path / "f.loadings.tsv").read_text().splitlines()]
    assert loadings[0] == ["trait", "n", "psi", "F1", "F2"] and len(loadings) == T + 1
    assert [int(r[1]) for r in loadings[1:]] == np.isfinite(Y).sum(axis=0).tolist()

    pred = [line.split("\t") for line in (tmp_path / "f.factors.pred.tsv").read_text().splitlines()]
    missing = np.argwhere(~np.isfinite(Y[union]))
    assert pred[0] == ["FID", "IID", "trait", "kind", "predicted", "genetic_value"] and len(pred) == len(missing) + 1
    expected_pred, expected_gv = ref.predicted(np.ones((len(union), 1))), ref.genetic_values()
    for row, (i, t) in zip(pred[1:], missing):
        assert row[:4] == ids[union[i]] + [f"t{t + 1}", "missing"]
        assert float(row[4]) == pytest.approx(expected_pred[i, t], rel=1e-5, abs=1e-6)
        assert float(row[5]) == pytest.approx(expected_gv[i, t], rel=1e-5, abs=1e-6)
    assert report["selection"] is None and report["unphenotyped"] is None


def test_dreml_fit_factors_cli__chooses_k_and_predicts_unphenotyped_samples(cohort, client, tmp_path):
    """--factors 1-3 --factor-predict-unphenotyped with 25 samples whose every trait is NA."""
    root, K, Y, ids = cohort
    Y = Y.copy()
    new = np.sort(np.random.default_rng(6).choice(N, 25, replace=False))
    Y[new] = np.nan
    lines = ["FID IID " + " ".join(f"t{t + 1}" for t in range(T))]
    lines += [" ".join(i + ["NA" if np.isnan(v) else repr(float(v)) for v in row]) for i, row in zip(ids, Y)]
    (tmp_path / "g.pheno").write_text("\n".join(lines) + "\n")
    argv = ["fit", "--store", str(root / "c.zarr"), "--pheno", str(tmp_path / "g.pheno"), "--all-pheno", "--factors", "1-3"]
    argv += ["--factor-holdout", "0.2", "--factor-predict-unphenotyped", "--method", "exact", "--worker-dtype", "float64"]
    argv += ["--seed", "7", "--factor-max-iter", "3", "--scheduler", client.scheduler.address, "--out", str(tmp_path / "g")]
    assert _run(argv) == 0

    union = np.flatnonzero(np.isfinite(Y).any(axis=1))
    assert np.array_equal(np.setdiff1d(np.arange(N), union), new)
    config = FactorConfig(n_factors=1, max_iter=3, reml=FitConfig(method="exact", seed=7))
    operator = DenseOperator(K[np.ix_(union, union)])
    ref = choose_factor_count(operator, Y[union], None, config, FactorSelectionConfig((1, 2, 3), 0.2, rule="1se"))
    report = json.loads((tmp_path / "g.factors.json").read_text())
    selection = report["selection"]
    assert selection["candidates"] == [1, 2, 3] and selection["chosen"] == ref.chosen and selection["seed"] == 7
    assert selection["rule"] == "1se" and selection["best"] == ref.best  # no --factor-rule: 1se
    assert selection["n_heldout"] == ref.n_heldout and selection["holdout_fraction"] == 0.2
    np.testing.assert_allclose(selection["heldout_log_density"], ref.scores, rtol=0, atol=1e-6)
    assert report["n_factors"] == ref.chosen and report["unphenotyped"]["n_samples"] == len(new)
    assert report["unphenotyped"]["fitted_agreement"] < 1e-6

    factors, blups = predict_factors(DenseOperator(K), union, ref.result)
    expected_pred = ref.result.predicted(np.ones((len(new), 1)), factors[new])
    expected_gv = ref.result.genetic_values(blups[:, new])
    pred = [line.split("\t") for line in (tmp_path / "g.factors.pred.tsv").read_text().splitlines()]
    rows = [row for row in pred[1:] if row[3] == "unphenotyped"]
    assert len(rows) == len(new) * T and len(pred) == 1 + len(rows) + int((~np.isfinite(Y[union])).sum())
    for row, (i, t) in zip(rows, np.ndindex(len(new), T)):
        assert row[:3] == ids[new[i]] + [f"t{t + 1}"]
        assert float(row[4]) == pytest.approx(expected_pred[i, t], rel=1e-5, abs=1e-6)
        assert float(row[5]) == pytest.approx(expected_gv[i, t], rel=1e-5, abs=1e-6)


def test_run_factors__raise_on_prediction_with_sample_frequencies(cohort, tmp_path):
    root, *_ = cohort
    argv = ["fit", "--store", str(root / "c.zarr"), "--pheno", str(root / "f.pheno"), "--all-pheno", "--factors", "2"]
    with pytest.raises(InputError, match="--factor-predict-unphenotyped needs the store's allele frequencies"):
        _run(argv + ["--factor-predict-unphenotyped", "--freq-from", "samples", "--out", str(tmp_path / "x")])


def test_run_factors__raise_on_bad_factor_range(cohort, tmp_path, capsys):
    root, *_ = cohort
    argv = ["fit", "--store", str(root / "c.zarr"), "--pheno", str(root / "f.pheno"), "--all-pheno", "--factors", "3-1"]
    with pytest.raises(SystemExit):
        _run(argv + ["--out", str(tmp_path / "x")])
    assert "expected a range low-high with low <= high, got '3-1'" in capsys.readouterr().err


def test_run_factors__raise_on_factor_count_not_below_trait_count(cohort, tmp_path):
    root, *_ = cohort
    argv = ["fit", "--store", str(root / "c.zarr"), "--pheno", str(root / "f.pheno"), "--pheno-name", "t1,t2"]
    with pytest.raises(InputError, match="factor count K = 2 must be at least 1 and smaller than the number of traits T = 2"):
        _run(argv + ["--factors", "2", "--out", str(tmp_path / "x")])
    assert not list(tmp_path.iterdir())


def test_run_factors__raise_on_no_traits(cohort, tmp_path):
    root, *_ = cohort
    (tmp_path / "empty.pheno").write_text("FID IID\n1 1\n")
    argv = ["fit", "--store", str(root / "c.zarr"), "--pheno", str(tmp_path / "empty.pheno"), "--all-pheno", "--factors", "1"]
    with pytest.raises(InputError, match="header names no value column"):  # T = 0: refused by the phenotype reader
        _run(argv + ["--out", str(tmp_path / "x")])


def test_run_factors__raise_on_no_trait_list(cohort, tmp_path):
    root, *_ = cohort
    argv = ["fit", "--store", str(root / "c.zarr"), "--pheno", str(root / "f.pheno"), "--factors", "1"]
    with pytest.raises(InputError, match="--factors needs the traits: --all-pheno or --pheno-name a,b,c"):
        _run(argv + ["--out", str(tmp_path / "x")])


def test_run_factors__raise_on_refused_option(cohort, tmp_path):
    root, *_ = cohort
    argv = ["fit", "--store", str(root / "c.zarr"), "--pheno", str(root / "f.pheno"), "--all-pheno", "--factors", "1"]
    with pytest.raises(InputError, match="--reml-lrt does not go with --factors"):
        _run(argv + ["--reml-lrt", "1", "--out", str(tmp_path / "x")])
    with pytest.raises(InputError, match="--complete-cases does not go with --factors"):
        _run(argv + ["--complete-cases", "--out", str(tmp_path / "x")])


def test_run_factors__raise_on_trait_named_twice(cohort, tmp_path):
    root, *_ = cohort
    argv = ["fit", "--store", str(root / "c.zarr"), "--pheno", str(root / "f.pheno"), "--pheno-name", "t1,t2,t1"]
    with pytest.raises(InputError, match="--pheno-name lists a trait twice"):
        _run(argv + ["--factors", "1", "--out", str(tmp_path / "x")])


def test_union_design__raise_on_different_covariates(cohort):
    root, *_ = cohort
    plain = prepare_inputs(root / "c.zarr", root / "f.pheno", pheno_name="t1")
    adjusted = prepare_inputs(root / "c.zarr", root / "f.pheno", pheno_name="t2", covar=root / "c.covar")
    with pytest.raises(InputError, match="the traits resolved to different covariate columns"):
        union_design([plain, adjusted])
