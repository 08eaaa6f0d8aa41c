"""`dreml.cv` and `dreml cv` on real stores and a real local Dask cluster.

References written here with NumPy from an independent decode of the .bed (pgenlib) and an
independent standardisation (`dreml.simulate.standardise`): explicit K_g, the GLS beta on the
training rows and yhat_S = X_S beta + sum_g theta_g (K_g)_ST P_T y_T, fold by fold.
"""

import json

import numpy as np
import pytest
from scipy.linalg import cho_factor, cho_solve

from converters import convert
from dreml.cli import main as dreml_main
from dreml.cv import (
    CVOptions,
    assign_folds,
    cross_validate,
    cross_validate_prepared,
    fold_labels,
    read_fold_file,
)
from dreml.errors import InputError
from dreml.fit import ComponentChoice, prepare_inputs
from dreml.operators import DenseOperator
from dreml.reml import FitConfig
from dreml.simulate import SimulationConfig, simulate_cohort, standardise
from tests.plink_reference import hand_alignment, read_dosage

N, M = 400, 1200  # the small cohort: two components, covariates
NB, MB, H2 = 1500, 2500, 0.5  # the accuracy cohort: one component


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv")
    simulate_cohort(SimulationConfig(n_samples=N, n_variants=M, seed=8, group_variances=(0.4, 0.2)), root / "c")
    convert("bed", root / "c", root / "c.zarr", variant_chunk=400, sample_chunk=300)
    return root


def dense_gblup(K, y, X, folds, theta, *, cond=False):
    """Held-out GBLUP written out: per fold, H_T = sum_g theta_g K_g,TT + theta_e I,
    beta = (X_T' H_T^-1 X_T)^-1 X_T' H_T^-1 y_T, yhat_S = X_S beta + sum_g theta_g K_g,ST H_T^-1 (y_T - X_T beta).
    theta: one vector, or a dict fold label -> vector. Returns yhat and (with `cond`) the
    2-norm condition number of each H_T."""
    out, conds = np.full(len(y), np.nan), []
    for label in np.unique(folds):
        S, T = np.flatnonzero(folds == label), np.flatnonzero(folds != label)
        th = theta[label] if isinstance(theta, dict) else theta
        H = np.tensordot(th[:-1], K[:, T[:, None], T], axes=1) + th[-1] * np.eye(T.size)
        factor = cho_factor(H)
        HiX, Hiy = cho_solve(factor, X[T]), cho_solve(factor, y[T])
        beta = np.linalg.solve(X[T].T @ HiX, HiX.T @ y[T])
        out[S] = X[S] @ beta + np.tensordot(th[:-1], K[:, S[:, None], T], axes=1) @ (Hiy - HiX @ beta)
        if cond:
            eigenvalues = np.linalg.eigvalsh(H)
            conds.append(eigenvalues[-1] / eigenvalues[0])
    return out, np.array(conds)


def relative(a, b):
    return np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b)


def test_cross_validate__fixed_variance_matches_dense_formula(cohort, client):
    """(a) float64 workers, PCG tolerance 1e-12: every fold's predictions equal the dense
    formula to 1e-8 relative. Bound: each PCG column stops at ||r|| <= tol ||b||, so its
    solution (H_T^-1 X_T, H_T^-1 y_T) is within cond(H_T) tol of the exact one (relative);
    beta and P_T y are smooth functions of those solves, so the predictions carry an error of a
    few cond(H_T) tol; cond(H_T) is computed below and cond * tol < 1e-10 leaves a margin of
    100 under 1e-8 (float64 products add about 1e-15 sqrt(m))."""
    root = cohort
    inputs = prepare_inputs(
        root / "c.zarr", root / "c.pheno", covar=root / "c.covar", components=ComponentChoice(spec=root / "c.components.tsv")
    )
    tol = 1e-12
    config = FitConfig(method="exact", worker_dtype="float64", pcg_tol=tol, loglik=False)
    options = CVOptions(folds=4, seed=13, fixed_variance=True)
    result = cross_validate_prepared(inputs, options, client=client, config=config)
    # reference: standardised over all samples of the store (dreml's default frequencies)
    Z_all, _ = standardise(read_dosage(root / "c", N, M))
    keep, y, X = hand_alignment(root, N)
    group_of = dict(line.rstrip("\n").split("\t") for line in open(root / "c.components.tsv"))
    group = np.array([group_of[line.split()[1]] for line in open(root / "c.bim")])
    K = np.stack([z.T @ z / z.shape[0] for z in (Z_all[group == g][:, keep] for g in sorted(set(group)))])
    np.testing.assert_array_equal(result.fold, assign_folds(len(keep), 4, 13))
    np.testing.assert_array_equal(result.observed, y)
    assert result.theta is not None and result.full_fit["converged"] and result.converged
    expected, conds = dense_gblup(K, y, X, result.fold, result.theta, cond=True)
    assert conds.max() * tol < 1e-10
    for fold in result.folds:
        S = result.fold == fold.label
        assert relative(result.predicted[S], expected[S]) < 1e-8
        np.testing.assert_array_equal(fold.theta, result.theta)
        # the iterative path ran: PCG passes, the stacked K_g P y pass (G = 2), the prediction pass
        assert fold.passes >= 3 and fold.converged and fold.n_test == S.sum() and fold.n_train == (~S).sum()
        assert fold.metrics.correlation == pytest.approx(np.corrcoef(y[S], expected[S])[0, 1], rel=1e-8)
    assert result.passes == sum(f.passes for f in result.folds) + result.full_fit["passes"]
    assert result.to_dict()["pooled"]["n"] == len(y)


def test_cross_validate__refit_accuracy_against_dense_gblup_at_true_h2(tmp_path_factory, client):
    """(b) Refit per fold (exact path inside), one component, h2 = 0.5, n = 1,500, m = 2,500.

    1. At each fold's REML theta, the predictions equal the dense formula to 1e-6.
    2. The pooled correlation agrees within 0.02 with the dense GBLUP on the same folds at the
       TRUE variance ratio. Why 0.02 holds: GBLUP's accuracy is flat in h2 near its optimum;
       on this cohort the dense r changes by at most 0.012 for every h2 in [0.3, 0.7]
       (checked below), and each fold's REML h2 lies in that interval (asserted: its SE is
       about 0.05 at n_T = 1,190, so [0.3, 0.7] is a margin of about 4 SE).
    3. Sanity: 0 < r < sqrt(h2) (cov(y_S, yhat_S) = cov(g_S, yhat_S) as the test residuals
       are independent of the training data, so r <= sd(g) / sd(y)), and Daetwyler et al.
       (2008): r = sqrt(h2) sqrt(N h2 / (N h2 + M_e)), N = training samples, with M_e estimated
       from the GRM, 1 / (||K||_F^2 / n^2 - 1 / n) (mean squared LD r^2 between variants, less
       its sampling part 1 / n): 0.38 here, within 0.06 of r (the sampling SE of r is
       (1 - r^2) / sqrt(n) = 0.022; 0.06 is that times 2.7, which also covers the formula's
       approximation; seeds 21-23 gave differences of 0.01-0.02). M_e is about 1,400, not
       m / 40: the AR(1) LD (rho 0.9 on the latent scale) decays within a few variants.
    """
    root = tmp_path_factory.mktemp("cv_accuracy")
    simulate_cohort(SimulationConfig(n_samples=NB, n_variants=MB, n_chromosomes=2, group_variances=(H2,), seed=21), root / "c")
    convert("bed", root / "c", root / "c.zarr", variant_chunk=1000, sample_chunk=700)
    # no covariates in the model: the simulated sex and age effects (variance 0.01^2 * 133 +
    # 0.2^2 / 4 = 0.023) join the residual, so the true h2 of y is 0.5 / 1.023
    inputs = prepare_inputs(root / "c.zarr", root / "c.pheno")
    config = FitConfig(method="exact", worker_dtype="float64", loglik=False)
    result = cross_validate_prepared(inputs, CVOptions(folds=5, seed=1), client=client, config=config)
    y, X, folds = inputs.data.y, inputs.data.X, result.fold
    Z, polymorphic = standardise(read_dosage(root / "c", NB, MB))
    Zk = Z[polymorphic][:, inputs.data.sample_index]
    K = (Zk.T @ Zk / Zk.shape[0])[None]
    at_fit, _ = dense_gblup(K, y, X, folds, {f.label: f.theta for f in result.folds})
    assert relative(result.predicted, at_fit) < 1e-6
    assert all(f.converged and f.passes == 2 for f in result.folds)  # K_TT pass + prediction pass
    assert all(0.3 <= f.h2 <= 0.7 for f in result.folds)
    h2_true = H2 / (1 + 0.01**2 * 40**2 / 12 + 0.2**2 / 4)
    r = result.pooled.correlation

    def dense_r(h2):
        return np.corrcoef(y, dense_gblup(K, y, X, folds, np.array([h2, 1 - h2]))[0])[0, 1]

    r_true = dense_r(h2_true)
    assert max(abs(dense_r(0.3) - r_true), abs(dense_r(0.7) - r_true)) < 0.012
    assert abs(r - r_true) < 0.02
    assert 0 < r < np.sqrt(h2_true)
    n = len(y)
    M_e = 1 / ((K[0] ** 2).sum() / n**2 - 1 / n)
    N_train = np.mean([f.n_train for f in result.folds])
    r_daetwyler = np.sqrt(h2_true) * np.sqrt(N_train * h2_true / (N_train * h2_true + M_e))
    assert abs(r - r_daetwyler) < 0.06


@pytest.mark.parametrize("n, folds", [(2, 2), (5, 2), (9, 4), (103, 5), (1000, 7)])
def test_assign_folds__reproducible_and_balanced(n, folds):
    labels = assign_folds(n, folds, seed=4)
    np.testing.assert_array_equal(labels, assign_folds(n, folds, seed=4))
    sizes = np.bincount(labels, minlength=folds + 1)[1:]
    assert set(np.unique(labels)) == set(range(1, folds + 1))
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == n
    if n > 5:
        assert not np.array_equal(labels, assign_folds(n, folds, seed=5))


def test_cv_options__fresh_seed_recorded():
    a, b = CVOptions(folds=3), CVOptions(folds=3)
    assert isinstance(a.seed, int) and a.seed != b.seed and a.to_dict()["seed"] == a.seed


def test_read_fold_file__formats(tmp_path):
    iid = np.array(["a", "b", "c"])
    (tmp_path / "three").write_text("FID IID fold\nF9 z 4\nFb b -7\nFa a 100\n\nFc c 100\n")
    np.testing.assert_array_equal(read_fold_file(tmp_path / "three", iid), [100, -7, 100])
    (tmp_path / "two").write_text("c 2\na 1\nb 2\n")
    np.testing.assert_array_equal(read_fold_file(tmp_path / "two", iid), [1, 2, 2])
    options = CVOptions(folds=2, fold_file=tmp_path / "two")
    np.testing.assert_array_equal(fold_labels(options, iid), [1, 2, 2])


def test_cross_validate__unconverged_fold_named_not_raised():
    rng = np.random.default_rng(1)
    n = 60
    Z = rng.standard_normal((n, 40))
    y = Z @ rng.standard_normal(40) / np.sqrt(40) + rng.standard_normal(n)
    op = DenseOperator.from_genotypes([Z])
    result = cross_validate(op, y, np.ones((n, 1)), assign_folds(n, 3, 0), config=FitConfig(method="exact", max_iter=1, seed=0))
    assert not result.converged and result.status.startswith("not converged: fold ")
    assert np.isfinite(result.predicted).all()
    assert result.to_dict()["pooled"]["converged"] is False


# (d) errors


def test_cv_options__raise_on_one_fold():
    with pytest.raises(InputError, match=r"^--folds must be a whole number of at least 2, got 1$"):
        CVOptions(folds=1)


def test_cv_options__raise_on_more_folds_than_samples():
    with pytest.raises(InputError, match=r"^--folds 6 is more than the 5 analysed samples"):
        CVOptions(folds=6).check_samples(5)


def test_assign_folds__raise_on_more_folds_than_samples():
    with pytest.raises(InputError, match=r"--folds must lie between 2 and the 3 analysed samples, got 4"):
        assign_folds(3, 4, seed=0)


def test_read_fold_file__raise_on_missing_sample(tmp_path):
    path = tmp_path / "folds"
    path.write_text("FID IID fold\nFa a 1\nFc c 2\n")
    with pytest.raises(InputError, match=rf"^{path}: no fold for 1 of the 3 analysed samples, e.g. IID 'b'"):
        read_fold_file(path, np.array(["a", "b", "c"]))


def test_read_fold_file__raise_on_non_integer_fold(tmp_path):
    path = tmp_path / "folds"
    path.write_text("FID IID fold\nFa a 1\nFb b x2\n")
    with pytest.raises(InputError, match=rf"^{path}: line 3: fold 'x2' of sample 'b' is not a whole number$"):
        read_fold_file(path, np.array(["a", "b"]))


def test_read_fold_file__raise_on_duplicated_iid(tmp_path):
    path = tmp_path / "folds"
    path.write_text("a 1\nb 2\na 2\n")
    with pytest.raises(InputError, match=rf"^{path}: line 3: duplicated IID 'a' \(first on line 1\)$"):
        read_fold_file(path, np.array(["a", "b"]))


def test_read_fold_file__raise_on_field_count(tmp_path):
    path = tmp_path / "folds"
    path.write_text("a 1 x y\n")
    with pytest.raises(InputError, match=rf"^{path}: line 1: expected 'FID IID fold' or 'IID fold', found 4 fields$"):
        read_fold_file(path, np.array(["a"]))


def test_fold_labels__raise_on_fold_count_other_than_folds(tmp_path):
    path = tmp_path / "folds"
    path.write_text("a 1\nb 2\nc 3\n")
    with pytest.raises(InputError, match=r"3 distinct fold\(s\) among the 3 analysed samples, but --folds is 2"):
        fold_labels(CVOptions(folds=2, fold_file=path), np.array(["a", "b", "c"]))


def test_cross_validate__raise_on_one_fold_label():
    op = DenseOperator(np.eye(4))
    with pytest.raises(InputError, match=r"need at least 2 folds, got 1"):
        cross_validate(op, np.arange(4.0), np.ones((4, 1)), np.zeros(4, dtype=int))


def _cv_args(root, out, *extra):
    return ["cv", "--store", str(root / "c.zarr"), "--pheno", str(root / "c.pheno"), "--out", str(out), *extra]


@pytest.mark.parametrize("case", ["one_fold", "more_folds_than_samples", "fold_file_missing_sample"])
def test_dreml_cv_cli__raise_on_bad_folds_before_any_output(cohort, tmp_path, capsys, case):
    root = cohort
    folds = tmp_path / "folds"
    folds.write_text("".join(f"I{i + 1} {i % 2}\n" for i in range(1, N)))  # no line for I1
    extra = {
        "one_fold": ["--folds", "1"],
        "more_folds_than_samples": ["--folds", str(N + 1)],
        "fold_file_missing_sample": ["--folds", "2", "--fold-file", str(folds)],
    }[case]
    code = dreml_main(_cv_args(root, tmp_path / "o", *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    n = sum(line.split()[2] != "NA" for line in list(open(root / "c.pheno"))[1:])  # samples with a phenotype
    expected = {
        "one_fold": "dreml: error: --folds must be a whole number of at least 2, got 1",
        "more_folds_than_samples": f"dreml: error: --folds {N + 1} is more than the {n} analysed samples",
        "fold_file_missing_sample": f"dreml: error: {folds}: no fold for 1 of the {n} analysed samples, e.g. IID 'I1'",
    }[case]
    assert err[-1].startswith(expected)
    assert [p.name for p in tmp_path.glob("o*")] == ["o.log"]  # the run log, ending with the error


def test_dreml_cv_cli__raise_on_invalid_setting(tmp_path, capsys):
    code = dreml_main(
        [
            "cv",
            "--store",
            str(tmp_path / "s.zarr"),
            "--pheno",
            str(tmp_path / "p"),
            "--folds",
            "3",
            "--out",
            str(tmp_path / "o"),
            "--n-probes",
            "0",
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.strip() == "dreml: error: dreml cv: n_probes must be a positive integer, got 0"


# (e) end to end


def test_dreml_cv_cli__fold_file_files_and_table(cohort, client, tmp_path, capsys):
    root = cohort
    labels = {f"I{i + 1}": (10, -2, 7)[i % 3] for i in range(N)}
    (tmp_path / "folds").write_text("FID IID fold\n" + "".join(f"F{i[1:]} {i} {k}\n" for i, k in labels.items()))
    out = tmp_path / "res" / "cv"
    assert (
        dreml_main(
            _cv_args(
                root,
                out,
                "--covar-auto",
                str(root / "c.covar"),
                "--folds",
                "3",
                "--fold-file",
                str(tmp_path / "folds"),
                "--scheduler",
                client.scheduler.address,
                "--seed",
                "5",
                "--exact",
                "--worker-dtype",
                "float64",
            )
        )
        == 0
    )
    printed = capsys.readouterr().out
    keep, y, _ = hand_alignment(root, N)
    assert f"pooled: n {len(y)}" in printed and "wrote" in printed
    rows = [line.split("\t") for line in (tmp_path / "res" / "cv.cv.tsv").read_text().splitlines()]
    assert rows[0] == ["FID", "IID", "fold", "observed", "predicted"]
    assert [r[1] for r in rows[1:]] == [f"I{i + 1}" for i in keep] and all(r[0] == "F" + r[1][1:] for r in rows[1:])
    assert [int(r[2]) for r in rows[1:]] == [labels[r[1]] for r in rows[1:]]
    observed, predicted = np.array([[float(r[3]), float(r[4])] for r in rows[1:]]).T
    np.testing.assert_allclose(observed, y, rtol=1e-9)
    report = json.loads((tmp_path / "res" / "cv.cv.json").read_text())
    assert report["seed"] == 5 and report["config"]["seed"] == 5 and report["mode"] == "refit"
    assert report["inputs"]["options"] == {"folds": 3, "seed": 5, "fixed_variance": False, "fold_file": str(tmp_path / "folds")}
    assert [f["fold"] for f in report["folds"]] == [-2, 7, 10]
    assert report["passes"] == sum(report["passes_per_fold"]) and report["dashboard"].startswith("http")
    assert report["config"]["loglik"] is False and report["config"]["method"] == "exact"
    pooled = report["pooled"]
    assert pooled["converged"] and pooled["n"] == len(y)
    assert pooled["correlation"] == pytest.approx(np.corrcoef(observed, predicted)[0, 1], rel=1e-8)
    assert pooled["r2"] == pytest.approx(
        1 - ((observed - predicted) ** 2).sum() / ((observed - observed.mean()) ** 2).sum(), rel=1e-8
    )
    for f in report["folds"]:
        S = np.array([int(r[2]) == f["fold"] for r in rows[1:]])
        assert f["n_test"] == S.sum() and f["mse"] == pytest.approx(np.mean((observed[S] - predicted[S]) ** 2), rel=1e-8)
    assert not list(tmp_path.rglob("*.tmp"))
