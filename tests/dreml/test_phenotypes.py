"""Phenotype/covariate parsing and alignment, against hand-computed expectations."""

from pathlib import Path

import numpy as np
import pytest

from dreml.errors import InputError
from dreml.phenotypes import load_analysis_data, read_sample_table

STORE_IID = np.array(["a", "b", "c", "d", "e", "f"])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def pheno(tmp_path):
    return write(tmp_path / "y.pheno", "FID IID t1 t2\nfa a 1.0 3\nfb b NA 4\nfc c 2.5 -9\nfx x 7 7\nfd d 0.5 1\nfe e 3 2\n")


@pytest.fixture
def covar(tmp_path):
    return write(tmp_path / "c.covar", "FID IID age sex site\nfa a 40 M s1\nfc c 50 F s2\nfd d NA F s1\nfe e 61 M s3\nff f 30 F s1\n")


def test_load_analysis_data__phenotype_only(pheno):
    data = load_analysis_data(STORE_IID, pheno)
    assert data.phenotype_name == "t1"
    assert list(data.iid) == ["a", "c", "d", "e"]
    assert list(data.sample_index) == [0, 2, 3, 4]
    np.testing.assert_array_equal(data.y, [1.0, 2.5, 0.5, 3.0])
    np.testing.assert_array_equal(data.X, np.ones((4, 1)))
    assert data.report == {
        "store_samples": 6, "phenotype_file_samples": 6, "dropped_not_in_store": 1,
        "dropped_missing_phenotype": 1, "dropped_missing_covariate": 0, "samples_used": 4,
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
    with pytest.raises(InputError, match=r"p: line 1: expected a header 'FID IID name...'"):
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
    with pytest.raises(InputError, match=r"c: covariates are rank-deficient .* \(rank 2 < 3 columns: intercept, u, v\); v is a linear combination"):
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
    with pytest.raises(InputError, match=r"p: file is empty \(expected a header 'FID IID name...'\)"):
        read_sample_table(write(tmp_path / "p", "\n\n"))


def test_read_sample_table__raise_on_duplicated_column(tmp_path):
    with pytest.raises(InputError, match=r"p: line 1: column 'y' appears twice in the header"):
        read_sample_table(write(tmp_path / "p", "FID IID y y\nf a 1 2\n"))
