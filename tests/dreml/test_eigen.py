"""`dreml.eigen` and `dreml eigen` against `numpy.linalg.eigh` of an explicit K built here.

Reference: the .bed decoded by bed-reader (not by dreml), standardised with NumPy as GCTA does
(p over all samples, missing -> 0), K = Z Z^T / m and K_g = Z_g Z_g^T / m_g, then eigh.

Tolerances. For a unit Ritz vector u_j with value theta_j and residual norm
r_j = ||K u_j - theta_j u_j||, and delta_j the distance from theta_j to the other eigenvalues:
    |lambda_j - theta_j| <= r_j^2 / delta_j        (Kato-Temple)
    sin angle(u_j, v_j)  <= r_j / delta_j          (Davis-Kahan)
The tests check both bounds with the residuals the result reports (so the reported accuracy
is honest), and the brief's figures: eigenvalues within 1e-6 relative at tol = 1e-5, where the
bounds give about 1e-9 (relative gaps of the top 10 are 0.6-3% here). The eigenvectors are
compared up to sign through the angle; at tol = 1e-5 its bound is below 2e-3.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from converters import convert
from dreml.cli import main as dreml_main
from dreml.eigen import DEFAULT_OVERSAMPLING, METHODS, EigenConfig, top_eigenpairs
from dreml.fit import ComponentChoice, prepare_inputs
from dreml.operators import DenseOperator, GenotypeOperator
from dreml.simulate import SimulationConfig, simulate_cohort
from dreml.store import Store
from tests.plink_reference import read_genotypes

N, M = 2000, 2500  # n x m; the LD blocks of the simulation spread the top of K's spectrum


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, Store]:
    """A simulated cohort with two components (chromosomes 1-2 and 3-4) and its store; chunk
    sizes that divide neither n nor m."""
    root = tmp_path_factory.mktemp("eigen")
    simulate_cohort(SimulationConfig(n_samples=N, n_variants=M, n_chromosomes=4, group_variances=(0.3, 0.2), seed=3), root / "c")
    return root / "c", convert("bed", root / "c", root / "c.zarr", variant_chunk=700, sample_chunk=900)


@pytest.fixture(scope="module")
def reference(cohort) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """eigh (descending) of K over all variants ("all") and of each component's K_g."""
    prefix, _ = cohort
    X = read_genotypes(prefix, N, M)  # shape: (n, m), NaN missing
    p = np.nansum(X, axis=0) / (2.0 * np.sum(~np.isnan(X), axis=0))
    assert np.all((p > 0) & (p < 1))  # every variant polymorphic: m_g is the spec's count
    Z = (X - 2 * p) / np.sqrt(2 * p * (1 - p))
    Z[np.isnan(X)] = 0.0
    group_of = dict(line.split() for line in open(f"{prefix}.components.tsv"))
    group = np.array([group_of[line.split()[1]] for line in open(f"{prefix}.bim")])
    out = {}
    for name, cols in [("all", np.ones(M, bool))] + [(g, group == g) for g in sorted(set(group))]:
        lam, V = np.linalg.eigh(Z[:, cols] @ Z[:, cols].T / cols.sum())
        out[name] = (lam[::-1], V[:, ::-1])
    return out


@pytest.fixture(scope="module")
def operator(cohort, client) -> Iterator[GenotypeOperator]:
    """Both components resident on two worker processes, float64 arithmetic."""
    prefix, store = cohort
    spec = ComponentChoice(spec=f"{prefix}.components.tsv").resolve([store])
    with GenotypeOperator(store, spec, client=client, dtype=np.float64) as op:
        yield op


def check_against_eigh(result, lam: np.ndarray, V: np.ndarray) -> None:
    """Kato-Temple and Davis-Kahan with the reported residuals (module docstring)."""
    k = len(result.eigenvalues)
    theta, U = result.eigenvalues, result.eigenvectors
    r = result.residuals * theta  # absolute residual norms
    delta = np.array([np.min(np.abs(np.delete(lam, j) - theta[j])) for j in range(k)])
    np.testing.assert_array_less(np.abs(theta - lam[:k]), r**2 / delta + 1e-12 * lam[0])
    cosine = np.minimum(np.abs(np.sum(U * V[:, :k], axis=0)), 1.0)
    np.testing.assert_array_less(np.sqrt(1 - cosine**2), r / delta + 1e-7)
    np.testing.assert_allclose(np.linalg.norm(U, axis=0), 1.0, rtol=1e-12)


@pytest.fixture(scope="module")
def genome_results(operator) -> dict:
    """Top 10 of the GRM of all variants at tol 1e-5, by each method at its default oversampling
    (shared by the tests below)."""
    return {method: top_eigenpairs(operator, 10, method=method, tol=1e-5, seed=1) for method in METHODS}


@pytest.mark.parametrize("method", METHODS)
def test_top_eigenpairs__genome_matches_eigh(method, genome_results, operator, reference):
    lam, V = reference["all"]
    result = genome_results[method]
    assert result.config.method == method and result.config.oversampling == DEFAULT_OVERSAMPLING[method]
    assert result.converged and result.status == "converged"
    assert result.passes == result.iterations == len(result.history)
    assert result.restarts == 0
    # default weights m_g / sum m: the two disjoint components make the GRM of all variants
    np.testing.assert_allclose(result.weights, operator.m / operator.m.sum())
    assert np.all(result.residuals <= 1e-5)
    np.testing.assert_allclose(result.eigenvalues, lam[:10], rtol=1e-6)
    check_against_eigh(result, lam, V)
    assert np.all(np.diff(result.eigenvalues) <= 0)


def test_top_eigenpairs__krylov_fewer_passes_than_subspace(genome_results):
    krylov, subspace = genome_results["krylov"].passes, genome_results["subspace"].passes
    # the same accuracy, each at its default block width: Chebyshev-like filters against powers
    assert krylov < subspace, (krylov, subspace)


@pytest.mark.parametrize("method", METHODS)
def test_top_eigenpairs__one_component_by_weights(method, operator, reference):
    name = operator.component_names[1]
    lam, V = reference[name]
    result = top_eigenpairs(operator, 5, weights=np.array([0.0, 1.0]), method=method, tol=1e-5, seed=2)
    assert result.converged
    np.testing.assert_allclose(result.eigenvalues, lam[:5], rtol=1e-6)
    check_against_eigh(result, lam, V)


def test_top_eigenpairs__krylov_restarts_at_max_basis():
    Z = np.random.default_rng(2).standard_normal((300, 400))
    op = DenseOperator.from_genotypes([Z])  # flat spectrum: many passes, so several restarts
    lam, V = np.linalg.eigh(Z @ Z.T / 400)
    lam, V = lam[::-1], V[:, ::-1]
    result = top_eigenpairs(op, 5, oversampling=5, tol=1e-8, max_basis=30, seed=4)
    assert result.converged and result.restarts > 0
    assert result.config.max_basis == 30 and result.to_dict()["restarts"] == result.restarts
    assert result.passes == result.iterations
    np.testing.assert_allclose(result.eigenvalues, lam[:5], rtol=1e-12)
    check_against_eigh(result, lam, V)
    # the restarted run reaches the same pairs as the unrestarted one, in more passes
    full = top_eigenpairs(op, 5, oversampling=5, tol=1e-8, seed=4)
    assert full.restarts == 0 and full.passes < result.passes
    np.testing.assert_allclose(result.eigenvalues, full.eigenvalues, rtol=1e-12)


def test_top_eigenpairs__krylov_stops_on_invariant_space():
    # K of rank 6 (< one block of 8 columns): the second block adds nothing, the Ritz pairs are exact
    Z = np.random.default_rng(1).standard_normal((40, 6))
    result = top_eigenpairs(DenseOperator.from_genotypes([Z]), 3, oversampling=5, tol=1e-12, seed=0)
    lam = np.linalg.eigvalsh(Z @ Z.T / 6)[::-1]
    np.testing.assert_allclose(result.eigenvalues, lam[:3], rtol=1e-12)
    assert result.passes <= 2


def test_eigen_config__oversampling_default_per_method():
    assert EigenConfig(rank=3).method == "krylov"
    assert EigenConfig(rank=3).oversampling == DEFAULT_OVERSAMPLING["krylov"]
    assert EigenConfig(rank=3, method="subspace").oversampling == 80
    assert EigenConfig(rank=3, method="subspace", oversampling=7).to_dict()["oversampling"] == 7


def test_top_eigenpairs__not_converged_at_max_iter(reference):
    lam, V = reference["all"]
    op = DenseOperator((V[:, :200] * lam[:200]) @ V[:, :200].T)  # the top of K, cheap to apply
    result = top_eigenpairs(op, 5, tol=1e-12, max_iter=1, seed=0)
    assert not result.converged
    assert result.iterations == result.passes == 1
    assert result.status.startswith("not converged: after max_iter = 1 iterations the largest relative residual is")
    assert "raise max_iter" in result.status
    assert result.to_dict()["converged"] is False


def small_operator(n: int = 40, m: int = 120) -> DenseOperator:
    Z = np.random.default_rng(0).standard_normal((n, m))
    return DenseOperator.from_genotypes([Z])


def test_top_eigenpairs__seed_recorded_and_reproducible():
    op = small_operator()
    first = top_eigenpairs(op, 3, oversampling=5, tol=1e-3, max_iter=2)
    assert isinstance(first.seed, int) and first.config.seed == first.seed
    again = top_eigenpairs(op, 3, oversampling=5, tol=1e-3, max_iter=2, seed=first.seed)
    np.testing.assert_array_equal(again.eigenvectors, first.eigenvectors)
    # signed so that each vector's largest-magnitude entry is positive
    U = first.eigenvectors
    assert np.all(U[np.argmax(np.abs(U), axis=0), np.arange(3)] > 0)
    assert json.loads(json.dumps(first.to_dict(), allow_nan=False))["seed"] == first.seed


def test_top_eigenpairs__raise_on_rank_not_below_n():
    with pytest.raises(ValueError, match=r"rank must be less than the number of samples \(40\), got 40"):
        top_eigenpairs(small_operator(), 40, oversampling=0)


def test_top_eigenpairs__raise_on_rank_below_one():
    with pytest.raises(ValueError, match="rank must be a whole number of at least 1, got 0"):
        top_eigenpairs(small_operator(), 0)


def test_top_eigenpairs__raise_on_columns_above_n():
    with pytest.raises(ValueError, match=r"rank \+ oversampling = 35 \+ 10 exceeds .* at most 5"):
        top_eigenpairs(small_operator(), 35, oversampling=10)


def test_top_eigenpairs__raise_on_max_basis_below_two_blocks():
    with pytest.raises(
        ValueError,
        match=r"max_basis must be at least 2 \(rank \+ oversampling\) = 16 "
        r"for method 'krylov', got 15",
    ):
        top_eigenpairs(small_operator(), 3, oversampling=5, max_basis=15)
    # no limit where the basis cannot outgrow it (n = 40 columns at most), nor for subspace
    assert top_eigenpairs(small_operator(), 3, oversampling=5, max_basis=40, max_iter=1, seed=0).iterations == 1
    assert top_eigenpairs(small_operator(), 3, method="subspace", max_basis=2, oversampling=5, max_iter=1, seed=0).iterations == 1


def test_top_eigenpairs__raise_on_weights_missing_for_components():
    Z = np.random.default_rng(0).standard_normal((20, 30))
    op = DenseOperator.from_genotypes([Z[:, :10], Z[:, 10:]])
    with pytest.raises(ValueError, match="pass weights"):
        top_eigenpairs(op, 2, oversampling=2)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("tol", 0.0, r"tol must lie in \(0, 1\)"),
        ("oversampling", -1, "oversampling must be a whole number of at least 0"),
        ("max_iter", 0, "max_iter must be a whole number of at least 1"),
        ("seed", -3, "seed must be a non-negative whole number"),
        ("method", "lanczos", "method must be one of 'krylov', 'subspace', got 'lanczos'"),
        ("max_basis", 1, "max_basis must be a whole number of at least 2"),
    ],
)
def test_eigen_config__raise_on_invalid_setting(field, value, match):
    with pytest.raises(ValueError, match=match):
        EigenConfig(**{"rank": 2, "oversampling": 10, field: value})


def test_cli_eigen__one_component_end_to_end(cohort, reference, client, tmp_path):
    prefix, store = cohort
    name = "chr1-2"
    lam, V = reference[name]
    out = tmp_path / "pcs"
    rc = dreml_main(
        [
            "-q",
            "eigen",
            "--store",
            str(store.path),
            "--component-file",
            f"{prefix}.components.tsv",
            "--component",
            name,
            "--rank",
            "4",
            "--seed",
            "5",
            "--out",
            str(out),
            "--scheduler",
            client.scheduler.address,
        ]
    )
    assert rc == 0
    report = json.loads(Path(f"{out}.eigen.json").read_text())
    assert report["converged"] and report["component"] == name
    m_g = sum(line.split()[1] == name for line in open(f"{prefix}.components.tsv"))
    assert report["components"] == [{"name": name, "m": m_g}]
    assert report["seed"] == 5 and report["settings"]["worker_dtype"] == "float32"
    assert report["passes"] == report["iterations"] and report["workers"] == 2
    assert report["config"]["method"] == "krylov"
    assert report["config"]["oversampling"] == DEFAULT_OVERSAMPLING["krylov"]
    eigenval = np.loadtxt(f"{out}.eigenval")
    np.testing.assert_allclose(eigenval, report["eigenvalues"], rtol=1e-9)
    # default tol 1e-4 on float32 workers: bounded by the residuals, well inside 1e-5 here
    np.testing.assert_allclose(eigenval, lam[:4], rtol=1e-5)
    lines = Path(f"{out}.eigenvec").read_text().splitlines()
    assert lines[0].split("\t") == ["#FID", "IID", "PC1", "PC2", "PC3", "PC4"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[1] for r in rows] == list(store.sample_id) and [r[0] for r in rows] == list(store.sample_family_id)
    U = np.array([[float(x) for x in r[2:]] for r in rows])
    cosine = np.abs(np.sum(U * V[:, :4], axis=0)) / np.linalg.norm(U, axis=0)
    np.testing.assert_allclose(cosine, 1.0, atol=1e-3)
    # usable as covariates of a fit as it is
    inputs = prepare_inputs(store.path, f"{prefix}.pheno", covar=f"{out}.eigenvec")
    assert inputs.data.covariate_names == ("intercept", "PC1", "PC2", "PC3", "PC4")
    assert inputs.data.X.shape[1] == 5


def test_cli_eigen__raise_on_rank_not_below_n(cohort, tmp_path, capsys):
    _, store = cohort
    rc = dreml_main(["eigen", "--store", str(store.path), "--rank", str(N), "--out", str(tmp_path / "x"), "--workers", "1"])
    assert rc == 2
    assert capsys.readouterr().err.strip() == (
        f"dreml: error: dreml eigen: --rank must be less than the number of samples ({N}), got {N}"
    )


def test_cli_eigen__raise_on_rank_below_one(cohort, tmp_path, capsys):
    _, store = cohort
    rc = dreml_main(["eigen", "--store", str(store.path), "--rank", "0", "--out", str(tmp_path / "x"), "--workers", "1"])
    assert rc == 2
    assert "--rank must be a whole number of at least 1, got 0" in capsys.readouterr().err


def test_cli_eigen__raise_on_columns_above_n(cohort, tmp_path, capsys):
    _, store = cohort
    rc = dreml_main(["eigen", "--store", str(store.path), "--rank", str(N - 3), "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "--rank + --oversampling" in capsys.readouterr().err


def test_cli_eigen__raise_on_unknown_component(cohort, tmp_path, capsys):
    prefix, store = cohort
    rc = dreml_main(
        [
            "eigen",
            "--store",
            str(store.path),
            "--component-file",
            f"{prefix}.components.tsv",
            "--component",
            "chr9",
            "--rank",
            "2",
            "--out",
            str(tmp_path / "x"),
            "--workers",
            "1",
        ]
    )
    assert rc == 2
    assert capsys.readouterr().err.strip() == (
        "dreml: error: --component chr9: no such component (expected one of: chr1-2, chr3-4)"
    )


def test_cli_eigen__keep_and_chr_select_samples_and_variants(cohort, client, tmp_path):
    """--keep and --chr: the top eigenpairs of K over the kept samples and the chromosomes' variants,
    standardised with the store's frequencies (eigh of that matrix built here from bed-reader)."""
    prefix, store = cohort
    keep = np.arange(0, N, 2)
    (tmp_path / "keep").write_text("".join(f"{store.sample_family_id[i]} {store.sample_id[i]}\n" for i in keep))
    out = tmp_path / "sel"
    assert (
        dreml_main(
            [
                "-q",
                "eigen",
                "--store",
                str(store.path),
                "--keep",
                str(tmp_path / "keep"),
                "--chr",
                "2-3",
                "--rank",
                "3",
                "--tol",
                "1e-6",
                "--worker-dtype",
                "float64",
                "--seed",
                "1",
                "--out",
                str(out),
                "--scheduler",
                client.scheduler.address,
            ]
        )
        == 0
    )
    X = read_genotypes(prefix, N, M)
    p = np.nansum(X, axis=0) / (2.0 * np.sum(~np.isnan(X), axis=0))
    Z = np.where(np.isnan(X), 0.0, (X - 2 * p) / np.sqrt(2 * p * (1 - p)))
    chrom = np.array([line.split()[0] for line in open(f"{prefix}.bim")])
    cols = np.isin(chrom, ["2", "3"])
    lam, V = np.linalg.eigh(Z[np.ix_(keep, cols)] @ Z[np.ix_(keep, cols)].T / cols.sum())
    np.testing.assert_allclose(np.loadtxt(f"{out}.eigenval"), lam[::-1][:3], rtol=1e-6)
    rows = [line.split("\t") for line in Path(f"{out}.eigenvec").read_text().splitlines()[1:]]
    assert [r[1] for r in rows] == list(store.sample_id[keep])
    U = np.array([[float(x) for x in r[2:]] for r in rows])
    cosine = np.abs(np.sum(U * V[:, ::-1][:, :3], axis=0)) / np.linalg.norm(U, axis=0)
    np.testing.assert_allclose(cosine, 1.0, atol=1e-4)
    report = json.loads(Path(f"{out}.eigen.json").read_text())
    assert report["sample_selection"]["after_keep"] == len(keep) and report["variant_selection"]["after_chr"] == cols.sum()
