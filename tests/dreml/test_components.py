"""Component specs: builders, spec files (text, JSON, NPZ), filters, and every error."""

from __future__ import annotations

import numpy as np
import pytest

from converters import convert
from dreml.components import (
    Components,
    VariantStats,
    all_variants,
    by_blocks,
    by_chromosome,
    by_maf_bins,
    filter_components,
    load_components,
    per_store,
    read_json,
    read_npz,
    read_tsv,
    write_json,
    write_npz,
)
from dreml.errors import ComponentSpecError
from dreml.plink_write import write_plink1

M, N = 12, 40


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """12 variants on contigs 1, 1, ..., 2, ..., X with known ALT counts among 40 samples."""
    root = tmp_path_factory.mktemp("components")
    alt_counts = np.array([0, 1, 2, 4, 8, 16, 40, 60, 79, 80, 20, 3])  # over 80 alleles
    dosage = np.zeros((M, N), dtype=np.int8)
    for j, c in enumerate(alt_counts):
        flat = np.zeros(2 * N, dtype=np.int8)
        flat[:c] = 1
        dosage[j] = flat[:N] + flat[N:]
    dosage[11, 20:] = -1  # half missing (the ALT carriers are samples 0-2)
    write_plink1(
        root / "c",
        dosage,
        contig=np.array(["1"] * 5 + ["2"] * 5 + ["X"] * 2),
        variant_id=np.array([f"rs{j}" for j in range(M)]),
    )
    return convert("bed", root / "c", root / "c.zarr", variant_chunk=5, sample_chunk=16)


# --- model ---------------------------------------------------------------------------


def test_Components__sorts_indices_and_defaults():
    c = Components(("a", "b"), ([3, 1], np.array([2.0])))
    np.testing.assert_array_equal(c.variant_indices[0], [1, 3])
    assert c.stores == (0, 0) and c.annotations == ({}, {})
    assert list(c.m) == [2, 1]


def test_Components__raise_on_empty_component():
    with pytest.raises(ComponentSpecError, match=r"<memory>: component 'b': empty component \(no variants\)"):
        Components(("a", "b"), ([1], []))


def test_Components__raise_on_duplicated_name():
    with pytest.raises(ComponentSpecError, match=r"component 'a': duplicated component name"):
        Components(("a", "a"), ([1], [2]))


def test_Components__raise_on_negative_index():
    with pytest.raises(ComponentSpecError, match=r"component 'a': variant index -1 out of range \(negative\)"):
        Components(("a",), ([-1, 2],))


def test_Components__raise_on_repeated_index():
    with pytest.raises(ComponentSpecError, match=r"component 'a': variant index 2 listed twice"):
        Components(("a",), ([2, 5, 2],))


def test_Components__raise_on_non_integer_index():
    with pytest.raises(ComponentSpecError, match=r"component 'a': variant indices must be integers"):
        Components(("a",), ([0.5],))


def test_Components__raise_on_empty_name():
    with pytest.raises(ComponentSpecError, match=r"a component has an empty name"):
        Components(("",), ([0],))


def test_Components__raise_on_no_components():
    with pytest.raises(ComponentSpecError, match=r"no components"):
        Components((), ())


def test_check_stores__raise_on_index_out_of_range():
    with pytest.raises(ComponentSpecError, match=r"component 'a': variant index 12 out of range \(store 0 has 12 variants\)"):
        Components(("a",), ([0, 12],)).check_stores([12])


def test_concat__shifts_store_indices():
    both = Components(("a",), ([0],)).concat(Components(("b",), ([1],)), store_offset=1)
    assert both.names == ("a", "b") and both.stores == (0, 1)


# --- builders --------------------------------------------------------------------------


def test_all_variants_and_per_store(store):
    assert list(all_variants(store).m) == [M]
    multi = per_store([store, store], names=["x", "y"])
    assert multi.names == ("x", "y") and multi.stores == (0, 1)
    assert per_store([store]).names == ("c",)


def test_per_store__raise_on_name_count():
    with pytest.raises(ComponentSpecError, match=r"per_store: 1 names for 0 stores"):
        per_store([], names=["x"])


def test_by_chromosome(store):
    c = by_chromosome(store)
    assert c.names == ("chr1", "chr2", "chrX")
    assert list(c.m) == [5, 5, 2]
    assert c.annotations[2] == {"contig": "X"}


def test_by_maf_bins(store):
    # MAF of the 12 variants: 0, .0125, .025, .05, .1, .2, .5, .25, .0125, 0, .25, 3/40
    c = by_maf_bins(store, (0.01, 0.05, 0.5))
    assert c.names == ("maf_0.01_0.05", "maf_0.05_0.5")
    np.testing.assert_array_equal(c.variant_indices[0], [1, 2, 8])
    np.testing.assert_array_equal(c.variant_indices[1], [3, 4, 5, 6, 7, 10, 11])


def test_by_maf_bins__raise_on_empty_bin(store):
    with pytest.raises(ComponentSpecError, match=r"component 'maf_0.3_0.4': empty component"):
        by_maf_bins(store, (0.01, 0.3, 0.4))


def test_by_maf_bins__raise_on_bad_edges(store):
    with pytest.raises(ComponentSpecError, match=r"edges must increase within \[0, 0.5\]"):
        by_maf_bins(store, (0.1, 0.05))


def test_by_blocks(store):
    c = by_blocks(store, 5)
    assert c.names == ("block1", "block2", "block3") and list(c.m) == [5, 5, 2]


def test_by_blocks__raise_on_bad_size(store):
    with pytest.raises(ComponentSpecError, match=r"block_size must be >= 1"):
        by_blocks(store, 0)


# --- text spec -------------------------------------------------------------------------


def test_read_tsv__overlap_comments_and_order(store, tmp_path):
    path = tmp_path / "spec.tsv"
    path.write_text("# header comment\nrs3\tb\nrs1\ta\n\nrs3\ta\nrs2\ta\n")
    c = read_tsv(path, store)
    assert c.names == ("b", "a")
    np.testing.assert_array_equal(c.variant_indices[1], [1, 2, 3])
    assert c.source == str(path)


def test_read_tsv__raise_on_unknown_snp(store, tmp_path):
    path = tmp_path / "spec.tsv"
    path.write_text("rs1\ta\nrs99\ta\n")
    with pytest.raises(ComponentSpecError, match=rf"{path}:2: unknown SNP id 'rs99'"):
        read_tsv(path, store)


def test_read_tsv__raise_on_bad_line(store, tmp_path):
    path = tmp_path / "spec.tsv"
    path.write_text("rs1 a\nrs2 a extra\n")
    with pytest.raises(ComponentSpecError, match=rf"{path}:2: expected 'SNP component' \(two fields"):
        read_tsv(path, store)


@pytest.mark.parametrize("header", ["SNP component", "SNP\tcomponent", "ID group", "#CHROM comment\nrsid set"])
def test_read_tsv__header_line_spaces_and_compression(store, tmp_path, header):
    import gzip

    text = f"{header}\nrs3 b\nrs1\ta\n# a comment\nrs3   a\n"
    plain = tmp_path / "spec.tsv"
    plain.write_text(text)
    packed = tmp_path / "spec.tsv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        c = read_tsv(path, store)
        assert c.names == ("b", "a")
        np.testing.assert_array_equal(c.variant_indices[1], [1, 3])


def test_read_tsv__a_variant_named_like_a_header_word_is_data(tmp_path):
    dosage = np.array([[0, 1, 2, 1], [2, 1, 0, 0]], dtype=np.int8)
    write_plink1(tmp_path / "h", dosage, contig=np.array(["1", "1"]), variant_id=np.array(["SNP", "rs1"]))
    store = convert("bed", tmp_path / "h", tmp_path / "h.zarr")
    path = tmp_path / "spec.tsv"
    path.write_text("SNP a\nrs1 a\n")
    np.testing.assert_array_equal(read_tsv(path, store).variant_indices[0], [0, 1])


def test_read_tsv__raise_on_snp_twice_in_component(store, tmp_path):
    path = tmp_path / "spec.tsv"
    path.write_text("rs1\ta\nrs1\ta\n")
    with pytest.raises(ComponentSpecError, match=rf"{path}:2: SNP 'rs1' listed twice in component 'a'"):
        read_tsv(path, store)


def test_read_tsv__raise_on_no_lines(store, tmp_path):
    path = tmp_path / "spec.tsv"
    path.write_text("# nothing\n")
    with pytest.raises(ComponentSpecError, match=r"no components"):
        read_tsv(path, store)


def test_read_tsv__simulator_output_matches_chromosome_groups(tmp_path):
    from dreml.simulate import SimulationConfig, simulate_cohort

    simulate_cohort(SimulationConfig(n_samples=20, n_variants=60, n_chromosomes=2, seed=2), tmp_path / "s")
    sim = convert("bed", tmp_path / "s", tmp_path / "s.zarr")
    c = load_components(tmp_path / "s.components.tsv", sim)
    assert c.names == ("chr1", "chr2")
    for got, want in zip(c.variant_indices, by_chromosome(sim).variant_indices):
        np.testing.assert_array_equal(got, want)


# --- JSON and NPZ ----------------------------------------------------------------------


def _spec() -> Components:
    return Components(("a", "b"), ([0, 4, 5], [5, 6]), stores=(0, 1), annotations=({"w": 1.5}, {}))


def test_write_json__round_trip(tmp_path):
    write_json(_spec(), tmp_path / "s.json")
    c = load_components(tmp_path / "s.json")
    assert c.names == ("a", "b") and c.stores == (0, 1) and c.annotations == ({"w": 1.5}, {})
    np.testing.assert_array_equal(c.variant_indices[1], [5, 6])


def test_write_npz__round_trip(tmp_path):
    write_npz(_spec(), tmp_path / "s.npz")
    c = load_components(tmp_path / "s.npz")
    assert c.names == ("a", "b") and c.stores == (0, 1)
    np.testing.assert_array_equal(c.variant_indices[0], [0, 4, 5])


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ('{"components": [', r":1: invalid JSON"),
        ("[1, 2]", r"expected an object with a 'components' list"),
        ('{"components": [3]}', r"component #1: expected an object, got int"),
        ('{"components": [{"name": "a", "variant_indices": [1], "weight": 2}]}', r"component #1: unknown field\(s\) weight"),
        ('{"components": [{"variant_indices": [1]}]}', r"component #1: missing field 'name'"),
        ('{"components": [{"name": "a"}]}', r"component #1: missing field 'variant_indices'"),
        ('{"components": [{"name": 1, "variant_indices": [1]}]}', r"component #1: 'name' must be a string"),
        (
            '{"components": [{"name": "a", "variant_indices": ["rs1"]}]}',
            r"component 'a': 'variant_indices' must be a list of integers",
        ),
        (
            '{"components": [{"name": "a", "variant_indices": [1], "annotation": 3}]}',
            r"component 'a': 'annotation' must be an object",
        ),
        ('{"components": [{"name": "a", "variant_indices": [1], "store": "x"}]}', r"component 'a': 'store' must be an integer"),
        ('{"components": [{"name": "a", "variant_indices": []}]}', r"component 'a': empty component"),
        (
            '{"components": [{"name": "a", "variant_indices": [1]}, {"name": "a", "variant_indices": [2]}]}',
            r"component 'a': duplicated component name",
        ),
    ],
)
def test_read_json__raise_on_bad_fields(tmp_path, doc, message):
    path = tmp_path / "spec.json"
    path.write_text(doc)
    with pytest.raises(ComponentSpecError, match=rf"{path}.*{message}"):
        read_json(path)


def test_read_npz__raise_on_pickled_objects(tmp_path):
    path = tmp_path / "spec.npz"
    np.savez(path, names=np.array(["a"], dtype=object), offsets=np.array([0, 1]), indices=np.array([0]))
    with pytest.raises(ComponentSpecError, match=r"not a readable NPZ spec without pickled objects"):
        read_npz(path)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"names": ["a"], "indices": [0]}, r"missing array 'offsets'"),
        ({"names": [1], "offsets": [0, 1], "indices": [0]}, r"'names' must be a 1-d string array"),
        ({"names": ["a"], "offsets": [0, 2], "indices": [0]}, r"'offsets' must be 2 non-decreasing integers"),
        ({"names": ["a"], "offsets": [0, 1], "indices": [0], "stores": [0, 1]}, r"'stores' must hold 1 integers"),
    ],
)
def test_read_npz__raise_on_bad_arrays(tmp_path, arrays, message):
    path = tmp_path / "spec.npz"
    np.savez(path, **{k: np.array(v) for k, v in arrays.items()})
    with pytest.raises(ComponentSpecError, match=message):
        read_npz(path)


def test_load_components__raise_on_missing_file(tmp_path):
    with pytest.raises(ComponentSpecError, match=r"no such component spec file"):
        load_components(tmp_path / "nope.json")


def test_load_components__raise_on_text_without_store(tmp_path):
    (tmp_path / "s.tsv").write_text("rs1\ta\n")
    with pytest.raises(ComponentSpecError, match=r"needs the store to look SNP ids up"):
        load_components(tmp_path / "s.tsv")


# --- filters ---------------------------------------------------------------------------


def test_filter_components__report_counts(store):
    c, report = filter_components(by_chromosome(store), [VariantStats.from_store(store)], min_maf=0.05, max_missing=0.2)
    # chr1: 0 (mono), .0125, .025 (low MAF), .05, .1; chr2: .2, .5, .25, .0125 (low), 0 (mono); chrX: .25, 3/40 (missing .5)
    assert [(r.m_spec, r.m, r.n_monomorphic, r.n_high_missing, r.n_low_maf) for r in report.components] == [
        (5, 2, 1, 0, 2),
        (5, 3, 1, 0, 1),
        (2, 1, 0, 1, 0),
    ]
    np.testing.assert_array_equal(c.variant_indices[0], [3, 4])
    assert list(report.m) == [2, 3, 1]
    assert "chrX" in report.table()


def test_filter_components__raise_on_component_emptied(store):
    spec = Components(("mono",), ([0, 9],))
    with pytest.raises(ComponentSpecError, match=r"component 'mono': no variants left after filters \(2 monomorphic"):
        filter_components(spec, [VariantStats.from_store(store)])


def test_filter_components__raise_on_bad_thresholds(store):
    with pytest.raises(ValueError, match=r"min_maf must lie in \[0, 0.5\]"):
        filter_components(all_variants(store), [VariantStats.from_store(store)], min_maf=0.6)


def test_VariantStats__from_counts():
    stats = VariantStats.from_counts(np.array([4, 0]), np.array([2, 0]), 5)
    assert stats.allele_frequency[0] == 0.25 and np.isnan(stats.allele_frequency[1])
    np.testing.assert_allclose(stats.missing_rate, [0.2, 1.0])
