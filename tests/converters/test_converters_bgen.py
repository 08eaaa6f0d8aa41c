"""`dreml-convert bgen`: BGEN files written here byte by byte (layouts 1 and 2, zlib), converted
through the optional `bgen` package, and compared with hard calls computed from the integers
written, in exact integer arithmetic (independent of the package and of converters.bgen)."""

from __future__ import annotations

import importlib.util
import re
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from plink_fixtures import assert_no_complete_store

from converters import convert
from converters.bgen import MissingDependencyError, open_bgen, read_oxford_sample
from converters.cli import main
from converters.verify import verify
from dreml.errors import InputError

needs_bgen = pytest.mark.skipif(
    importlib.util.find_spec("bgen") is None,
    reason="the optional BGEN reader is not installed (pip install 'dreml[bgen]' or '.[test]')",
)
MISSING = 0x80  # layout 2: bit 7 of a sample's ploidy byte flags a missing call


@dataclass
class Variant:
    """One variant as written: per-sample stored integers (`values`, the last probability of each
    group omitted, as the format does), ploidy bytes, and the exact ALT dosage in 1/`scale` units."""

    varid: str
    rsid: str
    chrom: str
    pos: int
    alleles: list[str]
    values: list[list[int]]
    ploidy: list[int]
    phased: bool = False
    bits: int = 8

    @property
    def scale(self) -> int:
        return 2**self.bits - 1

    def alt_units(self) -> list[int | None]:
        """ALT dosage per sample in 1/scale units (None missing); haploid doubled (PLINK's rule)."""
        out: list[int | None] = []
        for ploidy, values in zip(self.ploidy, self.values):
            if ploidy & MISSING:
                out.append(None)
            elif self.phased:  # one P(REF) per haplotype
                out.append(sum(self.scale - v for v in values))
            elif ploidy == 1:  # P(REF); P(ALT) = scale - P(REF)
                out.append(2 * (self.scale - values[0]))
            else:  # P(REF/REF), P(REF/ALT); P(ALT/ALT) = the rest
                hom_ref, het = values
                out.append(het + 2 * (self.scale - hom_ref - het))
        return out


def str16(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<H", len(data)) + data


def pack_bits(values: list[int], bits: int) -> bytes:
    """Little-endian bit stream: value i in bits [i * bits, (i + 1) * bits)."""
    acc = 0
    for i, value in enumerate(values):
        acc |= value << (i * bits)
    return acc.to_bytes(-(-len(values) * bits // 8), "little")


def layout2_variant(v: Variant) -> bytes:
    head = str16(v.varid) + str16(v.rsid) + str16(v.chrom) + struct.pack("<IH", v.pos, len(v.alleles))
    head += b"".join(struct.pack("<I", len(a)) + a.encode() for a in v.alleles)
    ploidy = [p & 0x3F for p in v.ploidy]
    probabilities = struct.pack("<IHBB", len(v.values), len(v.alleles), min(ploidy), max(ploidy))
    probabilities += bytes(v.ploidy) + struct.pack("<BB", int(v.phased), v.bits)
    probabilities += pack_bits([x for values in v.values for x in values], v.bits)
    packed = zlib.compress(probabilities)
    return head + struct.pack("<II", len(packed) + 4, len(probabilities)) + packed


def layout1_variant(v: Variant) -> bytes:
    """Layout 1: N first, two alleles, three uint16 probabilities per sample over 32768, all zero = missing."""
    head = struct.pack("<I", len(v.values)) + str16(v.varid) + str16(v.rsid) + str16(v.chrom) + struct.pack("<I", v.pos)
    head += b"".join(struct.pack("<I", len(a)) + a.encode() for a in v.alleles)
    triples = [(0, 0, 0) if p & MISSING else (a, b, 32768 - a - b) for p, (a, b) in zip(v.ploidy, v.values)]
    packed = zlib.compress(b"".join(struct.pack("<HHH", *t) for t in triples))
    return head + struct.pack("<I", len(packed)) + packed


def write_bgen(path: Path, variants: list[Variant], samples: list[str] | None, *, layout: int = 2) -> Path:
    n = len(variants[0].values)
    flags = 1 | (layout << 2) | ((1 << 31) if samples else 0)  # zlib compression
    header = struct.pack("<IIII", 20, len(variants), n, 0)[:12] + b"bgen" + struct.pack("<I", flags)
    ids = b""
    if samples:
        body = b"".join(str16(s) for s in samples)
        ids = struct.pack("<II", 8 + len(body), n) + body
    blocks = b"".join((layout2_variant if layout == 2 else layout1_variant)(v) for v in variants)
    path.write_bytes(struct.pack("<I", len(header) + len(ids)) + header + ids + blocks)
    return path


def diploid_values(rng: np.random.Generator, n: int, scale: int) -> list[list[int]]:
    """[P(REF/REF), P(REF/ALT)] per sample: sure, likely and spread-out calls in equal parts."""
    out = []
    for _ in range(n):
        certainty = rng.choice([0.97, 0.85, 0.0])  # a sure call, a likely one, or anything
        probs = np.zeros(3)
        probs[rng.integers(3)] = 1.0
        probs = certainty * probs + (1 - certainty) * rng.dirichlet(np.ones(3))
        hom_ref = int(round(probs[0] * scale))
        het = min(int(round(probs[1] * scale)), scale - hom_ref)
        out.append([hom_ref, het])
    return out


class Layout1Variant(Variant):
    """Layout 1 stores probabilities over 32768 (not 2^bits - 1)."""

    @property
    def scale(self) -> int:
        return 32768


def cohort(rng: np.random.Generator, n: int = 11, *, layout: int = 2) -> list[Variant]:
    """14 variants, one missing sample each; in layout 2 also a multi-allelic variant (row 4), a
    phased one (7), a haploid sample (9), 16-bit probabilities (11), an empty rsID (5) and no
    IDs at all (12)."""
    kind = Variant if layout == 2 else Layout1Variant
    variants = []
    for j in range(14):
        v = kind(
            f"snp{j}",
            f"rs{j}",
            "1" if j < 8 else "2",
            1000 + 10 * j,
            ["A", "G"],
            [],
            [2] * n,
            bits=16 if j == 11 else 8,
        )
        v.values = diploid_values(rng, n, v.scale)
        v.ploidy[j % n] |= MISSING
        variants.append(v)
    if layout == 1:
        return variants
    variants[4].alleles = ["A", "G", "T"]
    variants[4].values = [[variants[4].scale, 0, 0, 0, 0] for _ in range(n)]  # 6 genotypes, 5 stored
    variants[5].rsid = ""
    variants[7].phased = True
    variants[7].values = [[int(rng.integers(0, 256)), int(rng.choice([0, 255]))] for _ in range(n)]
    variants[9].ploidy = [1, 1 | MISSING, *[2] * (n - 2)]
    variants[9].values = [[int(rng.choice([0, 3, 128, 255]))], [0], *variants[9].values[2:]]
    variants[12].varid = variants[12].rsid = "."
    return variants


def expected_calls(variants: list[Variant], threshold: float) -> np.ndarray:
    """Hard calls from the written integers: nearest integer k of u / scale if |u - k scale| <= T scale."""
    rows = []
    for v in variants:
        row = []
        for units in v.alt_units():
            if units is None:
                row.append(-1)
                continue
            k = (2 * units + v.scale) // (2 * v.scale)  # nearest integer to units / scale (no ties: scale odd or T off-grid)
            row.append(k if abs(units - k * v.scale) <= threshold * v.scale else -1)
        rows.append(row)
    return np.array(rows, dtype=np.int8)


def write_sample_file(path: Path, ids: list[str]) -> Path:
    lines = ["ID_1 ID_2 missing sex", "0 0 0 D", *(f"F{s} {s} 0 {1 + i % 2}" for i, s in enumerate(ids))]
    path.write_text("\n".join(lines) + "\n")
    return path


@needs_bgen
@pytest.mark.parametrize(("variant_chunk", "sample_chunk"), [(3, 4), (64, 64), (1, 11)])
def test_convert__bgen_layout2_equals_integer_decode(tmp_path, rng, variant_chunk, sample_chunk):
    variants = cohort(rng)
    ids = [f"s{i}" for i in range(11)]
    write_bgen(tmp_path / "x.bgen", variants, ids)
    write_sample_file(tmp_path / "x.sample", ids)
    store = convert(
        "bgen",
        tmp_path / "x.bgen",
        tmp_path / "x.zarr",
        sample=tmp_path / "x.sample",
        max_alleles=2,
        variant_chunk=variant_chunk,
        sample_chunk=sample_chunk,
    )
    kept = [v for j, v in enumerate(variants) if j != 4]
    np.testing.assert_array_equal(store.dosage(0, store.n_variants), expected_calls(kept, 0.1))
    np.testing.assert_array_equal(store.sample_id, ids)
    np.testing.assert_array_equal(store.sample_family_id, [f"F{s}" for s in ids])
    expected_ids = [v.rsid or v.varid for v in kept]
    expected_ids[kept.index(variants[12])] = "2:1120:A:G"  # neither ID: CHROM:POS:REF:ALT
    np.testing.assert_array_equal(store.variant_id, expected_ids)
    assert expected_ids[4] == "snp5"  # empty rsID: the SNP ID
    np.testing.assert_array_equal(store.variant_allele, [["A", "G"]] * 13)  # first allele REF, second ALT
    np.testing.assert_array_equal(store.variant_position, [v.pos for v in kept])
    np.testing.assert_array_equal(store.contig_id[store.variant_contig], [v.chrom for v in kept])
    source = store.attrs["source"]
    assert [f["name"] for f in source["files"]] == ["x.bgen", "x.sample"]
    assert source["options"] == {"max_alleles": 2, "hard_call_threshold": 0.1}
    assert source["skipped_variants"] == {"multiallelic": 1}
    assert verify(store, tmp_path / "x.bgen").ok  # the recorded .sample, found beside the .bgen


@needs_bgen
def test_convert__bgen_layout1_embedded_ids_and_threshold(tmp_path, rng):
    variants = cohort(rng, n=7, layout=1)
    ids = [f"id{i}" for i in range(7)]
    write_bgen(tmp_path / "x.bgen", variants, ids, layout=1)
    for threshold in (0.1, 0.3, 0.0):
        store = convert(
            "bgen", tmp_path / "x.bgen", tmp_path / f"{threshold}.zarr", hard_call_threshold=threshold, variant_chunk=4
        )
        np.testing.assert_array_equal(store.dosage(0, 14), expected_calls(variants, threshold))
        np.testing.assert_array_equal(store.sample_id, ids)
        np.testing.assert_array_equal(store.sample_family_id, ids)
    assert (store.dosage(0, 14) == -1).sum() > (
        convert("bgen", tmp_path / "x.bgen", tmp_path / "y.zarr").dosage(0, 14) == -1
    ).sum()


@needs_bgen
def test_convert__bgen_on_cluster_matches(tmp_path, rng):
    import distributed

    variants = cohort(rng)
    del variants[4]
    write_bgen(tmp_path / "x.bgen", variants, [f"s{i}" for i in range(11)])
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        store = convert("bgen", tmp_path / "x.bgen", tmp_path / "x.zarr", client=client, variant_chunk=2)
    np.testing.assert_array_equal(store.dosage(0, 13), expected_calls(variants, 0.1))


@needs_bgen
def test_cli__bgen_sample_option_and_report(tmp_path, rng, capsys):
    variants = cohort(rng)
    write_bgen(tmp_path / "x.bgen", variants, None)  # no embedded IDs: --sample is needed
    write_sample_file(tmp_path / "x.sample", [f"s{i}" for i in range(11)])
    out = str(tmp_path / "x.zarr")
    args = ["-q", "bgen", str(tmp_path / "x.bgen"), "--sample", str(tmp_path / "x.sample"), out, "--workers", "1"]
    assert main([*args, "--max-alleles", "2", "--hard-call-threshold", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert "skipped        1 multi-allelic variant(s)" in printed and "option         hard-call-threshold 0.2" in printed
    assert main(["-q", "verify", out, str(tmp_path / "x.bgen"), "--sample", str(tmp_path / "x.sample")]) == 0
    assert main(args[:-2] + ["--workers", "1", "--overwrite"]) == 2  # multi-allelic without --max-alleles
    assert "variant 4: variant 'rs4' at 1:1040 (alleles A,G,T) is multi-allelic" in capsys.readouterr().err


def test_read_oxford_sample__two_and_one_id_columns(tmp_path):
    table = read_oxford_sample(write_sample_file(tmp_path / "a.sample", ["x", "y"]))
    np.testing.assert_array_equal(table.sample_id, ["x", "y"])
    np.testing.assert_array_equal(table.family_id, ["Fx", "Fy"])
    (tmp_path / "b.sample").write_text("ID sex\n0 D\nx 1\ny 2\n")
    table = read_oxford_sample(tmp_path / "b.sample")
    np.testing.assert_array_equal(table.family_id, ["x", "y"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FID IID\n0 0\na a\n", r"line 1: expected a header starting 'ID_1 ID_2' \(or 'ID'\), found 'FID IID'"),
        (
            "ID_1 ID_2 sex\na a 1\n",
            r"line 2: expected the column-types line \(0 0 \.\.\., 3 columns as in the header\)",
        ),
        ("ID_1 ID_2\n0 0\na a\nb\n", r"line 4: expected 2 columns as in the header, found 1"),
        ("ID_1 ID_2\n0 0\na a\nb a\n", r"line 4: duplicate sample ID 'a' \(first on line 3\)"),
    ],
)
def test_read_oxford_sample__raise_on_malformed(tmp_path, text, message):
    (tmp_path / "x.sample").write_text(text)
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "x.sample")) + ": " + message):
        read_oxford_sample(tmp_path / "x.sample")


def test_open_bgen__raise_on_missing_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bgen", None)  # `import bgen` now fails as when it is not installed
    with pytest.raises(
        MissingDependencyError, match=r"^reading BGEN needs the optional package 'bgen': pip install 'dreml\[bgen\]'$"
    ):
        open_bgen(tmp_path / "x.bgen")
    assert main(["bgen", str(tmp_path / "x.bgen"), str(tmp_path / "x.zarr")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "dreml-convert: error: reading BGEN needs the optional package 'bgen': pip install 'dreml[bgen]'"
    ]


@needs_bgen
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("magic", r"x\.bgen: not a BGEN file: bytes 16-19 are 62 67 65 00, expected 'bgen'"),
        ("layout", r"x\.bgen: unsupported BGEN flags 0x800000(0d|1d): layout 3"),
        ("no_ids", r"x\.bgen: holds no sample identifiers; pass the \.sample file \(--sample F\.sample\)"),
        ("sample_count", r"x\.bgen: header counts 11 samples, expected 10 as in x\.sample"),
        (
            "truncated",
            r"x\.bgen: (variant \d+: cannot read the variant block|header counts 14 variants, the file holds \d+)",
        ),
        ("threshold", r"hard_call_threshold must be a number in \[0, 0\.5\), got 0\.5"),
    ],
)
def test_convert__raise_on_bad_bgen(tmp_path, rng, change, message):
    variants = cohort(rng)
    ids = [f"s{i}" for i in range(11)]
    path = write_bgen(tmp_path / "x.bgen", variants, None if change == "no_ids" else ids)
    options = {"max_alleles": 2}
    data = bytearray(path.read_bytes())
    if change == "magic":
        data[19] = 0
    elif change == "layout":
        data[20:24] = struct.pack("<I", 1 | (3 << 2) | (1 << 31))
    elif change == "sample_count":
        options["sample"] = write_sample_file(tmp_path / "x.sample", ids[:10])
    elif change == "truncated":
        data = data[: len(data) - 150]
    elif change == "threshold":
        options["hard_call_threshold"] = 0.5
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=message):
        convert("bgen", path, tmp_path / "x.zarr", **options)
    assert_no_complete_store(tmp_path / "x.zarr")
