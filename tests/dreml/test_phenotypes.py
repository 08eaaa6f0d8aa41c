"""Phenotype/covariate parsing and alignment, against hand-computed expectations."""

from pathlib import Path

import numpy as np
import pytest

from dreml.errors import InputError
from dreml.phenotypes import CovariateFile, load_analysis_data, read_sample_table
from dreml.selection import SampleSelection

STORE_IID = np.array(["a", "b", "c", "d", "e", "f"])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def pheno(tmp_path):
    return write(tmp_path / "y.pheno", "FID IID t1 t2\nfa a 1.0 3\nfb b NA 4\nfc c 2.5 -9\nfx x 7 7\nfd d 0.5 1\nfe e 3 2\n")


@pytest.fixture
def covar(tmp_path):
    return write(
        tmp_path / "c.covar", "FID IID age sex site\nfa a 40 M s1\nfc c 50 F s2\nfd d NA F s1\nfe e 61 M s3\nff f 30 F s1\n"
    )


def test_load_analysis_data__phenotype_only(pheno):
    data = load_analysis_data(STORE_IID, pheno)
    assert data.phenotype_name == "t1"
    assert list(data.iid) == ["a", "c", "d", "e"]
    assert list(data.sample_index) == [0, 2, 3, 4]
    np.testing.assert_array_equal(data.y, [1.0, 2.5, 0.5, 3.0])
    np.testing.assert_array_equal(data.X, np.ones((4, 1)))
    assert data.report == {
        "store_samples": 6,
        "phenotype_file_samples": 6,
        "dropped_not_in_store": 1,
        "dropped_missing_phenotype": 1,
        "dropped_missing_covariate": 0,
        "samples_used": 4,
    }


def test_load_analysis_data__covariates_and_categorical(pheno, covar):
    # two samples, four columns: rank-deficient, so check the layout via a wider phenotype
    with pytest.raises(InputError, match="rank-deficient"):
        load_analysis_data(STORE_IID, pheno, pheno_name="t2", covar=covar)
    data = load_analysis_data(STORE_IID, pheno, pheno_name="t2", covar=covar, covar_names=["age"])
    assert data.covariate_names == ("intercept", "age")
    np.testing.assert_array_equal(data.X, [[1, 40], [1, 61]])


def test_load_analysis_data__categorical_levels_over_used_samples(tmp_path):
    store_iid = np.array(list("abcdefgh"))
    pheno = write(tmp_path / "p", "FID IID y\nfa a 3\nfd d 1\nfe e 2\nfc c 5\nff f 9\nfg g 4\nfh h 6\n")
    covar = write(
        tmp_path / "c",
        "FID IID age sex site\nfa a 40 M s1\nfc c 50 F s2\nfd d NA F s4\nfe e 61 M s3\nff f 30 F s3\n"
        "fg g 45 M s2\nfh h 35 F s1\n",
    )
    data = load_analysis_data(store_iid, pheno, covar=covar)
    assert list(data.iid) == ["a", "c", "e", "f", "g", "h"]
    np.testing.assert_array_equal(data.y, [3.0, 5.0, 2.0, 9.0, 4.0, 6.0])
    # d (age NA) is dropped, and with it the only s4: levels over the samples used are s1, s2, s3
    assert data.covariate_names == ("intercept", "age", "sex_M", "site_s2", "site_s3")
    np.testing.assert_array_equal(
        data.X,
        [[1, 40, 1, 0, 0], [1, 50, 0, 1, 0], [1, 61, 1, 0, 1], [1, 30, 0, 0, 1], [1, 45, 1, 1, 0], [1, 35, 0, 0, 0]],
    )
    assert data.report["dropped_missing_covariate"] == 1


def test_load_analysis_data__indicator_coding(tmp_path):
    pheno = write(tmp_path / "p", "FID IID y\n" + "".join(f"f{i} s{i} {i % 3 + 0.5 * i}\n" for i in range(8)))
    covar = write(tmp_path / "c", "FID IID grp\n" + "".join(f"f{i} s{i} {'xyz'[i % 3]}\n" for i in range(8)))
    data = load_analysis_data(np.array([f"s{i}" for i in range(8)]), pheno, covar=covar)
    assert data.covariate_names == ("intercept", "grp_y", "grp_z")
    expected = np.array([[1, float(i % 3 == 1), float(i % 3 == 2)] for i in range(8)])
    np.testing.assert_array_equal(data.X, expected)


def test_load_analysis_data__selects_covariate_names(pheno, covar):
    data = load_analysis_data(STORE_IID, pheno, covar=covar, covar_names=["age"])
    assert data.covariate_names == ("intercept", "age")
    np.testing.assert_array_equal(data.X[:, 1], [40, 50, 61])


def test_read_sample_table__raise_on_bad_header(tmp_path):
    with pytest.raises(InputError, match=r"p: line 1: expected 'FID IID value...' \(a header line starts with FID IID"):
        read_sample_table(write(tmp_path / "p", "ID y\n1 2\n"))


def test_read_sample_table__raise_on_field_count(tmp_path):
    with pytest.raises(InputError, match=r"p: line 3: expected 3 fields, found 2"):
        read_sample_table(write(tmp_path / "p", "FID IID y\nf a 1\nf b\n"))


def test_read_sample_table__raise_on_duplicated_iid(tmp_path):
    with pytest.raises(InputError, match=r"p: line 4: duplicated IID 'a' \(first on line 2\)"):
        read_sample_table(write(tmp_path / "p", "FID IID y\nf a 1\nf b 2\ng a 3\n"))


def test_read_sample_table__raise_on_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nothere: file not found"):
        read_sample_table(tmp_path / "nothere")


def test_load_analysis_data__raise_on_non_numeric_phenotype(tmp_path):
    p = write(tmp_path / "p", "FID IID y\nf a 1\n\nf b oops\n")
    with pytest.raises(InputError, match=r"p: line 4: phenotype 'y' has non-numeric value 'oops'"):
        load_analysis_data(np.array(["a", "b"]), p)


def test_load_analysis_data__raise_on_no_overlap(tmp_path):
    p = write(tmp_path / "p", "FID IID y\nf q 1\nf r 2\n")
    with pytest.raises(InputError, match=r"no overlap with the store"):
        load_analysis_data(STORE_IID, p)


def test_load_analysis_data__raise_on_constant_phenotype(tmp_path):
    p = write(tmp_path / "p", "FID IID y\nf a 1\nf b 1\nf c 1\n")
    with pytest.raises(InputError, match=r"phenotype 'y' is constant over the 3 samples"):
        load_analysis_data(STORE_IID, p)


def test_load_analysis_data__raise_on_rank_deficient_covariates(tmp_path, pheno):
    c = write(tmp_path / "c", "FID IID u v\nfa a 1 2\nfc c 2 4\nfd d 3 6\nfe e 4 8\n")
    with pytest.raises(
        InputError,
        match=r"c: covariates are rank-deficient .* \(rank 2 < 3 columns: intercept, u, v\); v is a linear combination",
    ):
        load_analysis_data(STORE_IID, pheno, covar=c)


def test_load_analysis_data__raise_on_unknown_column(pheno):
    with pytest.raises(InputError, match=r"no column named 'zz' \(columns: t1, t2\)"):
        load_analysis_data(STORE_IID, pheno, pheno_name="zz")


def test_load_analysis_data__numeric_missing_codes(tmp_path):
    # PLINK and GCTA compare with -9 numerically: -9.0 is missing like -9 and NA
    p = write(tmp_path / "p", "FID IID y\nf a 1\nf b -9.0\nf c nan\nf d 2\nf e 3\nf f 4\n")
    c = write(tmp_path / "c", "FID IID age\nf a 40\nf b 41\nf c 42\nf d -9.00\nf e 43\nf f 44\n")
    data = load_analysis_data(STORE_IID, p, covar=c)
    assert list(data.iid) == ["a", "e", "f"]
    assert data.report["dropped_missing_phenotype"] == 2 and data.report["dropped_missing_covariate"] == 1


def test_load_analysis_data__raise_on_infinite_phenotype(tmp_path):
    p = write(tmp_path / "p", "FID IID y\nf a 1\nf b inf\n")
    with pytest.raises(InputError, match=r"p: line 3: phenotype 'y' has value 'inf' \(expected a finite number"):
        load_analysis_data(np.array(["a", "b"]), p)


def test_load_analysis_data__raise_on_infinite_covariate(tmp_path, pheno):
    c = write(tmp_path / "c", "FID IID age\nfa a 40\nfc c -inf\nfd d 50\nfe e 61\n")
    with pytest.raises(InputError, match=r"c: line 3: covariate 'age' has value '-inf' \(expected a finite number"):
        load_analysis_data(STORE_IID, pheno, covar=c)


def test_read_sample_table__raise_on_empty_file(tmp_path):
    with pytest.raises(InputError, match=r"p: file is empty \(expected 'FID IID value...' lines"):
        read_sample_table(write(tmp_path / "p", "\n\n"))


def test_read_sample_table__raise_on_duplicated_column(tmp_path):
    with pytest.raises(InputError, match=r"p: line 1: column 'y' appears twice in the header"):
        read_sample_table(write(tmp_path / "p", "FID IID y y\nf a 1 2\n"))


def test_read_sample_table__headerless_gcta_file(tmp_path):
    table = read_sample_table(write(tmp_path / "p", "fa a 1.5 2\nfb b NA 3\n"))
    assert not table.header and table.columns == ("PHENO1", "PHENO2")
    assert list(table.fid) == ["fa", "fb"] and list(table.iid) == ["a", "b"]


@pytest.mark.parametrize("header, fid", [("#FID IID y", True), ("FID IID y", True), ("#IID y", False), ("IID y", False)])
def test_read_sample_table__plink2_headers(tmp_path, header, fid):
    body = "fa a 1\nfb b 2\n" if fid else "a 1\nb 2\n"
    table = read_sample_table(write(tmp_path / "p", f"{header}\n{body}"))
    assert table.columns == ("y",) and list(table.iid) == ["a", "b"] and (table.fid is not None) == fid


def test_load_analysis_data__mpheno_picks_the_kth_column_of_a_headerless_file(tmp_path):
    p = write(tmp_path / "p", "fa a 1 10\nfb b 2 20\nfc c 3 35\n")
    data = load_analysis_data(STORE_IID, p, mpheno=2)
    assert data.phenotype_name == "PHENO2"
    np.testing.assert_array_equal(data.y, [10, 20, 35])
    with pytest.raises(InputError, match=r"p: --mpheno 3: the file has 2 value column\(s\)"):
        load_analysis_data(STORE_IID, p, mpheno=3)
    with pytest.raises(InputError, match="not both"):
        load_analysis_data(STORE_IID, p, mpheno=1, pheno_name="PHENO1")


def test_load_analysis_data__headerless_first_line_with_a_header_word_hints(tmp_path):
    p = write(tmp_path / "p", "ID IID y\nfa a 1\n")
    with pytest.raises(InputError, match=r"line 1: phenotype 'PHENO1' has non-numeric value 'y' .*a header starts with FID IID"):
        load_analysis_data(STORE_IID, p)


def test_load_analysis_data__matches_on_fid_and_iid_when_both_carry_families(tmp_path):
    store_fid = np.array(["f1", "f1", "f2", "f2", "f3", "f3"])
    # sample c is listed under the wrong family: not the store's c
    p = write(tmp_path / "p", "FID IID y\nf1 a 1\nf1 b 2\nf9 c 3\nf2 d 4\n")
    data = load_analysis_data(STORE_IID, p, store_fid=store_fid)
    assert list(data.iid) == ["a", "b", "d"] and data.report["dropped_not_in_store"] == 1
    # a store without families (FID = IID): IID alone
    data = load_analysis_data(STORE_IID, p, store_fid=STORE_IID)
    assert list(data.iid) == ["a", "b", "c", "d"]


def test_load_analysis_data__keep_and_remove(tmp_path, pheno):
    keep = write(tmp_path / "keep", "#FID IID\nfa a\nfc c\nfd d\nfz z\n")
    remove = write(tmp_path / "remove", "d\n")
    data = load_analysis_data(STORE_IID, pheno, samples=SampleSelection(keep=keep, remove=remove))
    assert list(data.iid) == ["a", "c"]
    assert data.report["keep_file_samples"] == 4 and data.report["after_keep"] == 3 and data.report["after_remove"] == 2
    assert data.report["dropped_by_keep_remove"] == 3  # b, d and e are in the store and the file, not selected


def test_load_analysis_data__gcta_qcovar_and_categorical_covar(tmp_path):
    store_iid = np.array([f"s{i}" for i in range(9)])
    p = write(tmp_path / "p", "".join(f"f{i} s{i} {i * 1.5 + (i % 2)}\n" for i in range(9)))
    q = write(tmp_path / "q", "".join(f"f{i} s{i} {20 + 3 * i}\n" for i in range(9)))
    c = write(tmp_path / "c", "".join(f"f{i} s{i} {i % 3 + 1}\n" for i in range(9)))  # numeric batch codes
    data = load_analysis_data(store_iid, p, covar=[CovariateFile(q, "quantitative"), CovariateFile(c, "categorical")])
    assert data.covariate_names == ("intercept", "QCOVAR1", "CCOVAR1_2", "CCOVAR1_3")
    expected = np.array([[1, 20 + 3 * i, float(i % 3 == 1), float(i % 3 == 2)] for i in range(9)])
    np.testing.assert_array_equal(data.X, expected)
    # the same codes in an auto file are a number; --covar-cat makes them categorical
    auto = load_analysis_data(store_iid, p, covar=c)
    assert auto.covariate_names == ("intercept", "COVAR1")
    forced = load_analysis_data(store_iid, p, covar=c, covar_cat=("COVAR1",))
    np.testing.assert_array_equal(forced.X, expected[:, [0, 2, 3]])


def test_load_analysis_data__raise_on_quantitative_text_and_on_pcs_as_categorical(tmp_path):
    store_iid = np.array([f"s{i}" for i in range(60)])
    p = write(tmp_path / "p", "".join(f"f{i} s{i} {i}\n" for i in range(60)))
    q = write(tmp_path / "q", "FID IID sex\n" + "".join(f"f{i} s{i} {'MF'[i % 2]}\n" for i in range(60)))
    with pytest.raises(InputError, match=r"q: line 2: quantitative covariate 'sex' has non-numeric value 'M'"):
        load_analysis_data(store_iid, p, covar=CovariateFile(q, "quantitative"))
    pcs = write(tmp_path / "pcs", "".join(f"f{i} s{i} {np.sin(i):.6f}\n" for i in range(60)))
    with pytest.raises(InputError, match=r"pcs: categorical covariate 'CCOVAR1' has 60 levels over 60 samples: .*--qcovar"):
        load_analysis_data(store_iid, p, covar=CovariateFile(pcs, "categorical"))


def test_load_analysis_data__raise_on_a_column_in_two_covariate_files(tmp_path, pheno, covar):
    other = write(tmp_path / "other", "FID IID age\nfa a 1\n")
    with pytest.raises(InputError, match=r"other: covariate column 'age' is also in .*c.covar"):
        load_analysis_data(STORE_IID, pheno, covar=[covar, other])


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_load_analysis_data__compressed_files(tmp_path, pheno, compress):
    import gzip

    import zstandard

    raw = pheno.read_bytes()
    packed = gzip.compress(raw) if compress == "gzip" else zstandard.ZstdCompressor().compress(raw)
    path = tmp_path / "y.pheno.packed"
    path.write_bytes(packed)
    plain = load_analysis_data(STORE_IID, pheno)
    data = load_analysis_data(STORE_IID, path)
    np.testing.assert_array_equal(data.y, plain.y)
    assert list(data.iid) == list(plain.iid)
