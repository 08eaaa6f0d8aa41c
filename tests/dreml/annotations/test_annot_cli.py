"""`dreml fit --annot` end to end: a store, the session's local cluster (--scheduler), the outputs,
and the same fit in process on a float64 streaming operator; built-in columns, a held-out
chromosome and --max-missing-annot through the CLI."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from converters import convert
from dreml.annotations import AnnotConfig, fit_annotated
from dreml.annotations.io import read_annotations
from dreml.cli import build_parser
from dreml.cli.annot import run_annotated, wants_annotations
from dreml.cli.fit import config_from_args
from dreml.errors import InputError
from dreml.fit import variant_table
from dreml.operators import StreamingOperator
from dreml.phenotypes import load_analysis_data
from dreml.simulate import SimulationConfig, simulate_cohort
from dreml.store import open_store


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("annot")
    simulate_cohort(
        SimulationConfig(n_samples=300, n_variants=500, n_chromosomes=2, group_variances=(0.4, 0.2), seed=5), root / "c"
    )
    convert("bed", root / "c", root / "c.zarr", variant_chunk=200, sample_chunk=300)
    bim = [line.split() for line in (root / "c.bim").read_text().splitlines()]
    with gzip.open(root / "c.annot.gz", "wt") as f:
        f.write("SNP chr1 pos\n")
        for chrom, snp, _, pos, *_ in bim:
            f.write(f"{snp}\t{int(chrom == '1')}\t{int(pos) / 1e6}\n")
    return root


def _parse(argv):
    return build_parser().parse_args(argv)


def test_dreml_fit_annot__outputs_and_same_fit_in_process(cohort, tmp_path, capsys, client):
    args = _parse(
        [
            "fit",
            "--store",
            str(cohort / "c.zarr"),
            "--pheno",
            str(cohort / "c.pheno"),
            "--annot",
            str(cohort / "c.annot.gz"),
            "--out",
            str(tmp_path / "r"),
            "--scheduler",
            client.scheduler.address,
            "--exact",
            "--worker-dtype",
            "float64",
            "--seed",
            "4",
        ]
    )
    assert wants_annotations(args)
    assert run_annotated(args, config_from_args(args)) == 0
    assert "total h2" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.annot.json").read_text())
    rows = (tmp_path / "r.snpvar.tsv").read_text().splitlines()
    assert report["converged"] and report["method"] == "exact" and report["model"]["model"] == "linear"
    assert len(rows) == report["m"] + 1
    enrichment = (tmp_path / "r.enrichment.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in enrichment[1:]] == ["chr1", "pos"]
    # the same model on an in-process float64 operator
    store = open_store(cohort / "c.zarr")
    data = load_analysis_data(store.sample_id, cohort / "c.pheno", store_fid=store.sample_family_id)
    op = StreamingOperator(cohort / "c.zarr", samples=data.sample_index, dtype=np.float64)
    ids = np.asarray(variant_table(op).id).astype(str)
    columns, A, _ = read_annotations(cohort / "c.annot.gz", ids)
    ref = fit_annotated(op, data.y, data.X, annotations=A, columns=columns, config=AnnotConfig(method="exact", seed=4))
    np.testing.assert_allclose(report["params"], ref.params, rtol=1e-6, atol=1e-8)
    assert report["h2"] == pytest.approx(ref.h2, rel=1e-6)
    assert [r.split("\t")[0] for r in rows[1:4]] == list(ids[:3])


def test_dreml_fit_annot__raise_on_model_without_annotations(cohort, tmp_path):
    args = _parse(
        [
            "fit",
            "--store",
            str(cohort / "c.zarr"),
            "--pheno",
            str(cohort / "c.pheno"),
            "--variance-model",
            "mlp",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    with pytest.raises(InputError, match="--variance-model mlp needs --annot FILE or --annot-builtin COLS"):
        run_annotated(args, config_from_args(args))


def test_dreml_fit_annot_builtin__holdout_in_the_report(cohort, tmp_path, capsys, client):
    """maf and ld_score alone, chromosome 1 held out: the report's columns, the held-out rows and
    the ld_score column the same as `store_ld_scores` on an in-process operator."""
    args = _parse(
        [
            "fit",
            "--store",
            str(cohort / "c.zarr"),
            "--pheno",
            str(cohort / "c.pheno"),
            "--annot-builtin",
            "maf,ld_score",
            "--ld-window",
            "20",
            "--annot-holdout-chr",
            "1",
            "--out",
            str(tmp_path / "r"),
            "--scheduler",
            client.scheduler.address,
            "--exact",
            "--worker-dtype",
            "float64",
            "--seed",
            "4",
        ]
    )
    assert wants_annotations(args)
    assert run_annotated(args, config_from_args(args)) == 0
    out = capsys.readouterr().out
    assert "held-out chr" in out
    report = json.loads((tmp_path / "r.annot.json").read_text())
    assert report["param_names"] == ["intercept", "tau_maf", "tau_ld_score"]
    assert report["inputs"]["annot_builtin"] == ["maf", "ld_score"] and report["inputs"]["ld_window"] == 20
    (h,) = report["heldout"]
    assert h["chromosome"] == "1" and h["m_train"] + h["m_test"] == report["m"]
    assert h["difference"] == pytest.approx(h["loglik"] - h["loglik_grouped"])
    assert np.isfinite([h["loglik"], h["loglik_grouped"]]).all() and h["loglik_se"] == 0


def test_dreml_fit_annot__raise_on_ids_not_in_store(cohort, tmp_path, client):
    annot = tmp_path / "a.txt"
    annot.write_text((cohort / "c.bim").read_text().split()[1] + " 1\nnot_a_variant 2\n")
    args = _parse(
        ["fit", "--store", str(cohort / "c.zarr"), "--pheno", str(cohort / "c.pheno"), "--annot", str(annot)]
        + ["--max-missing-annot", "0", "--out", str(tmp_path / "r"), "--scheduler", client.scheduler.address]
    )
    with pytest.raises(InputError, match="line 2: variant not_a_variant is not in the store; 1 annotated variants are not"):
        run_annotated(args, config_from_args(args))
