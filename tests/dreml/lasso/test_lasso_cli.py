"""`dreml fit --sparse-maf-below / --sparse-set` end to end on a real store and Dask cluster.

The store is format 1.1 (the rare penalised variants in sparse shards). The reported effects
at the selected lambda and its theta must equal FISTA on the dense whitened problem built
from the independent PLINK reader; bad inputs give one line and exit 2.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from converters import convert
from dreml.cli import main as dreml_main
from dreml.simulate import SimulationConfig, simulate_cohort, standardise
from dreml.store import open_store
from tests.dreml.lasso.lasso_reference import fista, whitened
from tests.plink_reference import read_dosage

N, M = 360, 500
MAF_BELOW = 0.05


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparse_cli")
    config = SimulationConfig(n_samples=N, n_variants=M, n_chromosomes=1, group_variances=(0.2,), maf_min=0.01, seed=6)
    simulate_cohort(config, root / "c")
    store = convert("bed", root / "c", root / "c.zarr", variant_chunk=128, sample_chunk=128, sparse_below=MAF_BELOW)
    Z, polymorphic = standardise(read_dosage(root / "c", N, M))
    Z = Z.T  # shape: (n, m), the store's frequencies (all samples)
    rare = np.flatnonzero((store.variant_maf > 0) & (store.variant_maf < MAF_BELOW))
    common = np.setdiff1d(np.flatnonzero(polymorphic), rare)
    rng = np.random.default_rng(2)
    causal = rng.choice(rare, 4, replace=False)
    y = Z[:, common] @ rng.standard_normal(len(common)) * np.sqrt(0.2 / len(common))
    y += Z[:, causal] @ np.full(4, 0.3) + rng.standard_normal(N) * 0.7
    ids = store.sample_id
    (root / "y.pheno").write_text("FID IID y\n" + "".join(f"{i} {i} {v:.10g}\n" for i, v in zip(ids, y)))
    return root, store, Z, y, rare, common


def _run(root, client, *extra: str) -> int:
    return dreml_main(
        ["fit", "--store", str(root / "c.zarr"), "--pheno", str(root / "y.pheno"), "--scheduler", client.scheduler.address]
        + ["--method", "exact", "--worker-dtype", "float64", "--seed", "3", *extra]
    )


def test_dreml_fit_sparse__selected_effects_equal_dense_fista(cohort, client, tmp_path):
    root, store, Z, y, rare, common = cohort
    out = tmp_path / "o"
    args = ["--sparse-maf-below", str(MAF_BELOW), "--lambda-path", "5", "--lambda-folds", "2", "--sparse-reml-rounds", "0"]
    assert _run(root, client, *args, "--kkt-check", "--out", str(out)) == 0
    report = json.loads((out.parent / "o.sparse.json").read_text())
    assert report["seed"] == 3 and report["n_penalised"] == len(rare)
    # the path stops after the first lambda with more than n / 10 non-zero effects
    active = [p["n_active"] for p in report["path"]]
    assert 2 <= len(active) <= 5 and active[-1] > N // 10 >= max(active[:-1]), active
    selected = report["selected"]
    assert selected is not None and report["kkt"]["violations"] == 0 and report["converged"]
    theta = np.array(selected["theta"])
    # the reference: the same objective at the reported theta and lambda, from the PLINK reader
    A, y_w = whitened(Z[:, common], Z[:, rare], np.ones((N, 1)), y, theta)
    expected = fista(A, y_w, np.full(len(rare), selected["lambda"]))
    rows = [line.split("\t") for line in (out.parent / "o.sparse.tsv").read_text().splitlines()[1:]]
    got = np.zeros(len(rare))
    position = {store.variant_id[j]: i for i, j in enumerate(rare)}
    for row in rows:
        got[position[row[0]]] = float(row[6])
    assert set(np.flatnonzero(got)) == set(np.flatnonzero(np.abs(expected) > 1e-9))
    np.testing.assert_allclose(got, expected, atol=1e-5 * np.max(np.abs(expected)))
    path_rows = (out.parent / "o.lambda.tsv").read_text().splitlines()
    assert path_rows[0].startswith("LAMBDA\tN_ACTIVE\tTHETA_") and len(path_rows) == len(active) + 1


def test_dreml_fit_sparse__raise_on_bad_penalised_sets(cohort, client, tmp_path, capsys):
    root, store, *_ = cohort
    empty = tmp_path / "empty.txt"
    empty.write_text("SNP\nnot_a_variant\n")
    zero = tmp_path / "zero.txt"
    zero.write_text(f"{store.variant_id[0]} 1.5\n{store.variant_id[1]} 0\n")
    cases = [
        (["--sparse-set", str(empty)], f"{empty}: no variant of the store is listed: the penalised set is empty"),
        (["--sparse-set", str(zero)], f"{zero}, line 2: weight 0 of {store.variant_id[1]} must be positive and finite"),
        (["--sparse-maf-below", "0.05", "--lambda-path", "0"], "--lambda-path must be at least 1 lambda, got 0"),
        (["--sparse-maf-below", "0.001"], "no variant has a MAF below 0.001: the penalised set is empty"),
    ]
    for extra, message in cases:
        assert _run(root, client, *extra, "--out", str(tmp_path / "bad")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].endswith(message), err[-1]
    assert not list(tmp_path.glob("bad.sparse*"))


def test_open_store__penalised_variants_are_sparse_rows(cohort):
    # the rare penalised set is held as sparse shards: every penalised variant has a sparse row
    root, store, _, _, rare, _ = cohort
    assert open_store(root / "c.zarr").format_version == "1.1"
    assert np.all(store.variant_sparse_allele[rare] >= 0)
