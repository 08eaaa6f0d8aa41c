"""Annotation files (`read_annotations`) and the output texts."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import zstandard
from annot_sim import genotypes, phenotype

from dreml.annotations import AnnotConfig, fit_annotated
from dreml.annotations.io import (
    enrichment_text,
    history_text,
    read_annotations,
    snpvar_text,
)
from dreml.errors import InputError


def test_read_annotations__header_order_and_extra_variants(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("SNP coding maf\nrs3 1 0.3\nrs1 0 0.1\nrs9 1 0.5\n\nrs2 1 2e-1\n")
    columns, A, _ = read_annotations(path, ["rs1", "rs2", "rs3"])
    assert columns == ("coding", "maf")
    np.testing.assert_array_equal(A, [[0, 0.1], [1, 0.2], [1, 0.3]])


@pytest.mark.parametrize("compress", ["gz", "zst"])
def test_read_annotations__compressed_without_header(tmp_path, compress):
    text = b"rs1\t0.5\t1\nrs2\t-1\t0\n"
    path = tmp_path / f"a.{compress}"
    path.write_bytes(gzip.compress(text) if compress == "gz" else zstandard.ZstdCompressor().compress(text))
    columns, A, _ = read_annotations(path, ["rs2", "rs1"])
    assert columns == ("annot1", "annot2")
    np.testing.assert_array_equal(A, [[-1, 0], [0.5, 1]])


def test_read_annotations__raise_on_missing_variant(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("SNP x\nrs1 1\n")
    with pytest.raises(InputError, match=r"no annotations for variant rs2 \(and 1 more of the 3 fitted variants\)"):
        read_annotations(path, ["rs1", "rs2", "rs3"])


@pytest.mark.parametrize("value", ["nan", "inf", "NA", "x1"])
def test_read_annotations__raise_on_non_finite(tmp_path, value):
    path = tmp_path / "a.txt"
    path.write_text(f"SNP x y\nrs1 1 2\nrs2 3 {value}\n")
    with pytest.raises(InputError, match=f"line 3: annotation 'y' of variant rs2 is not a finite number: '{value}'"):
        read_annotations(path, ["rs1", "rs2"])


def test_read_annotations__raise_on_field_count(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("SNP x y\nrs1 1 2\nrs2 3\n")
    with pytest.raises(InputError, match="line 3: expected 3 fields"):
        read_annotations(path, ["rs1", "rs2"])


def test_read_annotations__raise_on_duplicate_variant(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("rs1 1\nrs1 2\n")
    with pytest.raises(InputError, match="line 2: variant rs1 is listed twice"):
        read_annotations(path, ["rs1"])


def test_read_annotations__raise_on_no_columns(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("rs1\nrs2\n")
    with pytest.raises(InputError, match="no annotation columns"):
        read_annotations(path, ["rs1"])


def test_output_texts():
    Z, _ = genotypes(80, 40, seed=3)
    A = np.zeros((40, 2))
    A[:25, 0] = A[25:, 1] = 1
    fit = fit_annotated(
        Z, phenotype(Z, np.full(40, 0.01), 0.5, 4), annotations=A, columns=("a", "b"), config=AnnotConfig(method="exact", seed=1)
    )
    ids = [f"rs{j}" for j in range(40)]
    rows = snpvar_text(ids, fit).splitlines()
    assert rows[0] == "SNP\tsigma2" and len(rows) == 41 and rows[1].startswith("rs0\t")
    assert float(rows[1].split("\t")[1]) == pytest.approx(fit.sigma2[0], rel=1e-6)
    enrichment = enrichment_text(fit).splitlines()
    assert enrichment[0].split("\t") == ["annotation", "share_variants", "share_h2", "enrichment", "SE", "MC_SE"]
    assert [r.split("\t")[0] for r in enrichment[1:]] == ["a", "b"]
    assert len(history_text(fit).splitlines()) == len(fit.history) + 1
