"""`--sparse-below`: the sparse representation of rare variants (store format 1.1), written
chunk-parallel and checked against the int8 matrix written and an independent decoding."""

from __future__ import annotations

import importlib

import distributed
import numpy as np
import pytest
import zarr
from plink_fixtures import write_bed_fileset
from test_converters_subset import selection

import converters.writer as writer_module
from converters import convert
from converters.cli import main
from converters.verify import verify
from converters.writer import plan_sparse, sparse_rows
from dreml.errors import InputError
from dreml.store import open_store
from dreml.store_schema import SPARSE_ARRAYS

convert_module = importlib.import_module("converters.convert")


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def rare_dosage(rng: np.random.Generator, m: int, n: int, missing: float = 0.03) -> np.ndarray:
    """int8 ALT dosages with MAF 0-0.3, the ALT allele the major one for every third variant."""
    p = rng.uniform(0.0, 0.3, size=(m, 1))
    p[::3] = 1 - p[::3]
    dosage = rng.binomial(2, p, size=(m, n)).astype(np.int8)
    dosage[rng.random((m, n)) < missing] = -1
    return dosage


def expected_sparse(dosage: np.ndarray, below: float, fraction: float = writer_module.SPARSE_MAX_CALL_FRACTION):
    """Independently of the writer: the allele each variant's sparse row counts (-1: none)."""
    n = dosage.shape[1]
    observed = dosage >= 0
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(observed, dosage, 0).sum(axis=1) / (2.0 * observed.sum(axis=1))
    counts_ref = p > 0.5
    minor = np.where(counts_ref[:, None], np.where(observed, 2 - dosage, -1), dosage)  # minor-allele dosage
    calls = (minor != 0).sum(axis=1)
    sparse = observed.any(axis=1) & (np.minimum(p, 1 - p) < below) & (calls < fraction * n)
    return np.where(sparse, np.where(counts_ref, 0, 1), -1).astype(np.int8), minor


def assert_sparse_store(store, dosage: np.ndarray, below: float) -> None:
    """The 1.1 store's sparse arrays hold exactly the minor-allele calls of its sparse variants."""
    allele, minor = expected_sparse(dosage, below)
    assert store.format_version == "1.1" and store.sparse_below == below
    np.testing.assert_array_equal(store.variant_sparse_allele, allele)
    np.testing.assert_array_equal(store.dosage(0, store.n_variants), dosage)  # call_dosage stays complete
    calls = store.sparse_calls(0, store.n_variants)
    for j in range(store.n_variants):
        row = slice(calls.indptr[j], calls.indptr[j + 1])
        if allele[j] < 0:
            assert calls.indptr[j] == calls.indptr[j + 1]
            continue
        nonzero = np.flatnonzero(minor[j])
        np.testing.assert_array_equal(calls.sample[row], nonzero)
        np.testing.assert_array_equal(calls.dosage[row], minor[j, nonzero])
    sparse = np.flatnonzero(allele >= 0)
    np.testing.assert_array_equal(calls.take(sparse).dense(store.n_samples), dosage[sparse])


@pytest.mark.parametrize("sparse_chunk", [5, 64, 1 << 18])  # calls in several, few and one chunk
@pytest.mark.parametrize(("variant_chunk", "sample_chunk"), [(7, 5), (64, 64)])
def test_convert__sparse_below_holds_minor_allele_calls(tmp_path, rng, monkeypatch, sparse_chunk, variant_chunk, sample_chunk):
    monkeypatch.setattr(writer_module, "SPARSE_CHUNK", sparse_chunk)
    dosage = rare_dosage(rng, 61, 29)
    dosage[4] = -1  # no observed call: never sparse
    dosage[5] = 0  # monomorphic: sparse, no calls
    write_bed_fileset(tmp_path / "x", dosage)

    store = convert(
        "bed", tmp_path / "x", tmp_path / "x.zarr", variant_chunk=variant_chunk, sample_chunk=sample_chunk, sparse_below=0.1
    )

    assert_sparse_store(store, dosage, 0.1)
    assert store.variant_sparse_allele[4] == -1 and store.variant_sparse_allele[5] == 1
    assert 10 < np.sum(store.variant_sparse_allele >= 0) < 50  # both kinds present
    assert set(store.variant_sparse_allele[store.variant_sparse_allele >= 0]) == {0, 1}
    assert zarr.open_group(str(store.path))["call_sparse_sample"].chunks == (min(sparse_chunk, store.variant_sparse_calls.sum()),)
    assert verify(store, tmp_path / "x").ok


def test_convert__sparse_tasks_write_whole_chunks_on_a_cluster(tmp_path, rng, monkeypatch, client):
    """On a real cluster the tasks write their whole chunks and hand back only the ends."""
    monkeypatch.setattr(writer_module, "SPARSE_CHUNK", 4)
    pieces = []
    run_sparse = convert_module._run_sparse

    def counting(group, *args):
        original = convert_module.write_sparse_piece
        convert_module.write_sparse_piece = lambda g, piece: (pieces.append(piece), original(g, piece))
        try:
            run_sparse(group, *args)
        finally:
            convert_module.write_sparse_piece = original

    monkeypatch.setattr(convert_module, "_run_sparse", counting)
    dosage = rare_dosage(rng, 90, 41)
    write_bed_fileset(tmp_path / "x", dosage)

    store = convert("bed", tmp_path / "x", tmp_path / "x.zarr", variant_chunk=11, client=client, sparse_below=0.08)

    assert_sparse_store(store, dosage, 0.08)
    assert all(len(piece.sample) < 2 * 4 for piece in pieces)  # only partial chunks reach the driver
    assert sum(len(piece.sample) for piece in pieces) < store.variant_sparse_calls.sum()
    assert verify(store, tmp_path / "x").ok


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_convert__sparse_below_small_sample_counts(tmp_path, rng, monkeypatch, n):
    monkeypatch.setattr(writer_module, "SPARSE_MAX_CALL_FRACTION", 1.0)  # every rare row, however short n is
    monkeypatch.setattr(writer_module, "SPARSE_CHUNK", 3)
    dosage = rare_dosage(rng, 17, n, missing=0.1)
    write_bed_fileset(tmp_path / "x", dosage)

    store = convert("bed", tmp_path / "x", tmp_path / "x.zarr", variant_chunk=4, sample_chunk=3, sparse_below=0.5)

    allele, _ = expected_sparse(dosage, 0.5, fraction=1.0)
    np.testing.assert_array_equal(store.variant_sparse_allele, allele)
    sparse = np.flatnonzero(allele >= 0)
    np.testing.assert_array_equal(store.sparse_calls(0, 17).take(sparse).dense(n), dosage[sparse])


def test_plan_sparse__maf_missing_calls_and_allele():
    n = 100
    # per variant: calls of code -1, 0, 1, 2
    codes = np.array(
        [
            [0, 99, 1, 0],  # ALT rare: 1 call
            [0, 0, 1, 99],  # REF rare: counts REF, 1 call
            [30, 69, 1, 0],  # rare but 31 calls >= n/5: dense
            [0, 96, 4, 0],  # MAF 0.02, not below 0.02
            [100, 0, 0, 0],  # no observed call
            [0, 100, 0, 0],  # monomorphic: sparse without calls
            [2, 0, 0, 98],  # monomorphic ALT/ALT: counts REF, the 2 missing calls
            [0, 25, 50, 25],  # p = 0.5
        ]
    )
    columns = {
        "call_count": codes[:, 1:].sum(axis=1),
        "dosage_sum": codes[:, 2] + 2 * codes[:, 3],
        "dosage_sq_sum": codes[:, 2] + 4 * codes[:, 3],
    }

    plan = plan_sparse(columns, n, 0.02)

    np.testing.assert_array_equal(plan.allele, [1, 0, -1, -1, -1, 1, 0, -1])
    np.testing.assert_array_equal(np.diff(plan.indptr), [1, 1, 0, 0, 0, 0, 2, 0])
    assert plan_sparse(columns, n, 0.5).allele[7] == -1  # MAF 0.5 is below no threshold


def test_sparse_rows__ref_rows_count_2_minus_x():
    block = np.array([[0, 1, -1, 2, 0], [2, 2, 1, -1, 0]], dtype=np.int8)

    lengths, sample, dosage = sparse_rows(block, np.array([1, 0], dtype=np.int8))

    np.testing.assert_array_equal(lengths, [3, 3])
    np.testing.assert_array_equal(sample, [1, 2, 3, 2, 3, 4])
    np.testing.assert_array_equal(dosage, [1, -1, 2, 1, -1, 2])
    assert block[1, 0] == 2  # the block is not modified


def test_convert__sparse_variants_from_the_kept_samples(tmp_path, rng):
    """With --keep, MAF (and so the sparse variants) come from the kept samples only."""
    dosage = rare_dosage(rng, 40, 30)
    dosage[:, 10:] = np.where(dosage[:, 10:] >= 0, 0, dosage[:, 10:])  # samples 10.. carry no ALT
    dosage[::3, 10:] = np.where(dosage[::3, 10:] >= 0, 2, -1)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    keep = tmp_path / "keep.txt"
    keep.write_text("".join(f"{f} {i}\n" for f, i in zip(meta["family_id"][:10], meta["sample_id"][:10])))

    store = convert("bed", tmp_path / "x", tmp_path / "x.zarr", selection=selection(keep=keep), sparse_below=0.05)

    assert store.n_samples == 10
    assert_sparse_store(store, dosage[:, :10], 0.05)
    assert not np.array_equal(expected_sparse(dosage[:, :10], 0.05)[0], expected_sparse(dosage, 0.05)[0])
    assert verify(store, tmp_path / "x").ok


def test_verify__raise_on_sparse_calls_differing_from_call_dosage(tmp_path, rng):
    dosage = rare_dosage(rng, 30, 25)
    write_bed_fileset(tmp_path / "x", dosage)
    store = convert("bed", tmp_path / "x", tmp_path / "x.zarr", variant_chunk=8, sparse_below=0.1)
    first = int(np.flatnonzero(store.variant_sparse_calls > 0)[0])
    group = zarr.open_group(str(store.path), mode="r+")
    entry = int(group["call_sparse_indptr"][first])
    group["call_sparse_dosage"][entry] = 3 - abs(int(group["call_sparse_dosage"][entry]))  # 1 <-> 2, -1 -> 2

    report = verify(open_store(store.path), tmp_path / "x")

    start = first // 8 * 8
    assert report.mismatches == [
        f"{store.path}: the sparse calls differ from call_dosage at 1 variant(s) of [{start}, {start + 8}), first 'snp{first}'"
    ]


def test_verify__raise_on_sparse_variants_differing_from_statistics(tmp_path, rng):
    dosage = rare_dosage(rng, 30, 25)
    write_bed_fileset(tmp_path / "x", dosage)
    store = convert("bed", tmp_path / "x", tmp_path / "x.zarr", sparse_below=0.1)
    zarr.open_group(str(store.path), mode="r+").attrs.update({"sparse_below": 0.001})

    report = verify(open_store(store.path), tmp_path / "x")

    assert f"{store.path}: variant_sparse_allele differs from the sparse variants below MAF 0.001" in report.mismatches


@pytest.mark.parametrize("below", [0, -0.1, 0.6, float("nan"), True, "0.1"])
def test_convert__raise_on_bad_sparse_below(tmp_path, rng, below):
    write_bed_fileset(tmp_path / "x", rare_dosage(rng, 5, 4))
    with pytest.raises(InputError, match=r"sparse_below must be a minor allele frequency in \(0, 0.5\]"):
        convert("bed", tmp_path / "x", tmp_path / "x.zarr", sparse_below=below)
    assert not (tmp_path / "x.zarr").exists()


def test_cli__sparse_below_and_info(tmp_path, rng, capsys):
    dosage = rare_dosage(rng, 40, 31)
    write_bed_fileset(tmp_path / "x", dosage)
    out = tmp_path / "x.zarr"

    assert main(["-q", "bed", str(tmp_path / "x"), str(out), "--workers", "1", "--sparse-below", "0.05"]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0

    store = open_store(out)
    allele, _ = expected_sparse(dosage, 0.05)
    calls = int(store.variant_sparse_calls.sum())
    info = capsys.readouterr().out
    on_disk = sum(store.array_bytes(name) for name in SPARSE_ARRAYS)
    assert "format         dreml-genotype-store v1.1" in info
    assert f"sparse         {int(np.sum(allele >= 0))} variants below MAF 0.05: {calls} calls, {on_disk} bytes on disk" in info
    assert main(["-q", "verify", str(out), str(tmp_path / "x")]) == 0


def test_cli__raise_on_bad_sparse_below_exit_2(tmp_path, rng, capsys):
    write_bed_fileset(tmp_path / "x", rare_dosage(rng, 5, 4))
    assert main(["-q", "bed", str(tmp_path / "x"), str(tmp_path / "x.zarr"), "--sparse-below", "0.7"]) == 2
    assert "sparse_below must be a minor allele frequency in (0, 0.5], got 0.7" in capsys.readouterr().err
