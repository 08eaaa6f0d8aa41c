"""Helpers for the converter tests: small PLINK1 and PLINK2 filesets written for real.

PLINK1 filesets come from `dreml.plink_write` (an encoder independent of `converters.bed`);
PGEN filesets from pgenlib's own writer, with .pvar/.psam written here.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pgenlib
import pytest
import zstandard

from converters.convert import partial_path
from dreml.plink_write import write_plink1
from dreml.store import StoreError, open_store


def random_dosage(rng: np.random.Generator, m: int, n: int, missing: float = 0.05) -> np.ndarray:
    """int8 ALT dosages (variants x samples) with varied frequencies and missing calls (-1)."""
    p = rng.uniform(0.02, 0.98, size=(m, 1))
    dosage = rng.binomial(2, p, size=(m, n)).astype(np.int8)
    dosage[rng.random((m, n)) < missing] = -1
    return dosage


def metadata(m: int, n: int, n_contigs: int = 3) -> dict[str, np.ndarray]:
    """Multi-chromosome variant and sample metadata for `write_plink1`/`write_pgen_fileset`."""
    contig = np.sort(np.arange(m) % n_contigs) + 1
    contig = np.array([f"chr{c}" if c % 2 else str(c) for c in contig])
    return {
        "contig": contig,
        "variant_id": np.array([f"snp{j}" for j in range(m)]),
        "position": np.arange(m) * 37 + 1000,
        "alt": np.array(["A", "C", "G", "T"])[np.arange(m) % 4],
        "ref": np.array(["G", "T", "AC", "C"])[np.arange(m) % 4],
        "family_id": np.array([f"fam{i // 2}" for i in range(n)]),
        "sample_id": np.array([f"ind{i}" for i in range(n)]),
    }


def write_bed_fileset(prefix: Path, dosage: np.ndarray, n_contigs: int = 3) -> dict[str, np.ndarray]:
    """PREFIX.bed/.bim/.fam holding `dosage`; returns the metadata written."""
    meta = metadata(*dosage.shape, n_contigs=n_contigs)
    write_plink1(prefix, dosage, **meta)
    return meta


def write_pgen_fileset(prefix: Path, dosage: np.ndarray, meta: dict[str, np.ndarray]) -> None:
    """PREFIX.pgen (pgenlib's writer), .pvar (with header) and .psam (#FID IID SEX)."""
    m, n = dosage.shape
    writer = pgenlib.PgenWriter(f"{prefix}.pgen".encode(), n, variant_ct=m, nonref_flags=False)
    writer.append_biallelic_batch(np.where(dosage < 0, -9, dosage).astype(np.int8))
    writer.close()
    with open(f"{prefix}.pvar", "w") as f:
        f.write("##fileformat=PVARv1.0\n#CHROM\tPOS\tID\tREF\tALT\n")
        for row in zip(meta["contig"], meta["position"], meta["variant_id"], meta["ref"], meta["alt"]):
            f.write("\t".join(map(str, row)) + "\n")
    with open(f"{prefix}.psam", "w") as f:
        f.write("#FID\tIID\tSEX\n")
        for fid, iid in zip(meta["family_id"], meta["sample_id"]):
            f.write(f"{fid}\t{iid}\tNA\n")


def read_bed_with_pgenlib(path: Path, n: int) -> np.ndarray:
    """The independent reader: pgenlib decoding a .bed, -9 mapped to -1."""
    reader = pgenlib.PgenReader(str(path).encode(), raw_sample_ct=n)
    out = np.empty((reader.get_variant_ct(), n), dtype=np.int8)
    reader.read_range(0, reader.get_variant_ct(), out)
    reader.close()
    out[out == -9] = -1
    return out


def assert_no_complete_store(out: Path) -> None:
    """Neither OUT nor its temporary sibling opens as a valid store."""
    for path in (out, partial_path(out)):
        with pytest.raises(StoreError):
            open_store(path)


def write_pgen_with_multiallelic(
    prefix: Path, dosage: np.ndarray, meta: dict[str, np.ndarray], multiallelic: list[int]
) -> np.ndarray:
    """Like `write_pgen_fileset`, but the rows `multiallelic` become 3-allele variants (ALT 'X,Y'
    in the .pvar, some samples carrying allele 2); returns the dosages of the other rows."""
    m, n = dosage.shape
    writer = pgenlib.PgenWriter(f"{prefix}.pgen".encode(), n, variant_ct=m, nonref_flags=False, allele_ct_limit=3)
    for j in range(m):
        if j in multiallelic:  # sample i carries alleles (0, i % 3): 0/0, 0/1, 0/2, ...
            codes = np.stack([np.zeros(n, dtype=np.int32), np.arange(n, dtype=np.int32) % 3], axis=1)
            writer.append_alleles(codes.ravel(), allele_ct=3)
        else:
            writer.append_biallelic(np.where(dosage[j] < 0, -9, dosage[j]).astype(np.int8))
    writer.close()
    alt = np.array([f"{a},T" if j in multiallelic else a for j, a in enumerate(meta["alt"])])
    with open(f"{prefix}.pvar", "w") as f:
        f.write("#CHROM\tPOS\tID\tREF\tALT\n")
        for row in zip(meta["contig"], meta["position"], meta["variant_id"], meta["ref"], alt):
            f.write("\t".join(map(str, row)) + "\n")
    with open(f"{prefix}.psam", "w") as f:
        f.write("#IID\n" + "".join(f"{iid}\n" for iid in meta["sample_id"]))
    return np.delete(dosage, multiallelic, axis=0)


def compress_file(path: Path, kind: str) -> Path:
    """Replace `path` by path.gz or path.zst holding the same bytes (real gzip / Zstandard)."""
    data = path.read_bytes()
    packed = gzip.compress(data) if kind == "gz" else zstandard.ZstdCompressor().compress(data)
    target = path.with_name(f"{path.name}.{kind}")
    target.write_bytes(packed)
    path.unlink()
    return target
