"""The genotype store contract, versions 1 and 1.1, as data.

A store is a Zarr v3 group. Every array is declared here with its dtype and its dimensions;
`dreml.store.open_store` validates an opened group against this table and the converters
create arrays from it, so the two cannot drift apart. Field names follow VCF Zarr / sgkit.

Dimensions:
    variants         m, the number of variants (rows of `call_dosage`)
    samples          n, the number of samples (columns of `call_dosage`)
    contigs          number of distinct chromosomes, in order of first appearance
    alleles          2: column 0 = REF (.bim column 6 / .pvar REF), column 1 = ALT (.bim column 5 / .pvar ALT)
    variant_offsets  m + 1 (version 1.1): offsets into the sparse calls, one per variant and one past the last
    sparse_calls     E (version 1.1): the number of calls the sparse representation stores

`call_dosage[j, i]` is the count of the ALT allele (0, 1, 2) of variant j in sample i,
or `MISSING_DOSAGE` (-1) when the call is missing.

Version 1.1 adds a sparse representation of the rare variants (`SPARSE_ARRAYS`): for each
variant whose minor allele frequency is below the store's `sparse_below` attribute, the
calls that are not 0 when counting the minor allele: its carriers (dosage 1 or 2 of the
minor allele) and its missing calls (-1), in compressed sparse row form (one row per
variant, columns = samples). `call_dosage` stays complete, so every reader of version 1
reads a 1.1 store's genotypes unchanged; the sparse arrays are a second, smaller copy of
the rare variants for readers that want it (the genotype operators' sparse shards).
"""

from __future__ import annotations

from dataclasses import dataclass

FORMAT_NAME = "dreml-genotype-store"
FORMAT_VERSION = 1
# the version of a store with the sparse representation; a store without it stays version 1
SPARSE_FORMAT_VERSION = "1.1"
FORMAT_VERSIONS = (FORMAT_VERSION, SPARSE_FORMAT_VERSION)
MISSING_DOSAGE = -1
COUNTED_ALLELE = "ALT"
# `variant_sparse_allele` of a variant held in `call_dosage` only
NOT_SPARSE = -1


@dataclass(frozen=True)
class ArraySpec:
    """One array of the store: its dtype kind ('str' or a NumPy dtype name) and dimensions."""

    dtype: str
    dims: tuple[str, ...]
    doc: str


ARRAYS: dict[str, ArraySpec] = {
    "sample_id": ArraySpec("str", ("samples",), "individual ID (.fam column 2 / .psam IID)"),
    "sample_family_id": ArraySpec("str", ("samples",), "family ID (.fam column 1 / .psam FID; IID when the .psam has none)"),
    "contig_id": ArraySpec("str", ("contigs",), "chromosome names in order of first appearance"),
    "variant_contig": ArraySpec("int32", ("variants",), "index into contig_id"),
    "variant_position": ArraySpec("int64", ("variants",), "base-pair coordinate"),
    "variant_id": ArraySpec("str", ("variants",), "variant ID (.bim column 2 / .pvar ID)"),
    "variant_allele": ArraySpec("str", ("variants", "alleles"), "REF, ALT"),
    "call_dosage": ArraySpec("int8", ("variants", "samples"), "ALT allele count 0/1/2, -1 missing"),
    "variant_call_count": ArraySpec("int64", ("variants",), "number of non-missing calls"),
    "variant_dosage_sum": ArraySpec("int64", ("variants",), "sum of ALT counts over observed calls"),
    "variant_dosage_sq_sum": ArraySpec("int64", ("variants",), "sum of squared ALT counts over observed calls"),
    "variant_allele_frequency": ArraySpec(
        "float64", ("variants",), "ALT frequency among observed calls: dosage_sum / (2 call_count); NaN if none"
    ),
}

# Version 1.1 only: the sparse representation of the variants below `sparse_below`.
SPARSE_ARRAYS: dict[str, ArraySpec] = {
    "variant_sparse_allele": ArraySpec(
        "int8",
        ("variants",),
        "allele (index into variant_allele: 0 REF, 1 ALT) whose dosage the sparse calls count; -1: not sparse",
    ),
    "call_sparse_indptr": ArraySpec(
        "int64",
        ("variant_offsets",),
        "the calls of variant j are [indptr[j], indptr[j + 1]) (empty for a variant that is not sparse)",
    ),
    "call_sparse_sample": ArraySpec("int32", ("sparse_calls",), "sample index of each sparse call, ascending within a variant"),
    "call_sparse_dosage": ArraySpec("int8", ("sparse_calls",), "dosage of the counted allele 1 or 2, or -1 for a missing call"),
}

# Group attributes every complete store carries.
REQUIRED_ATTRS = (
    "format",
    "format_version",
    "counted_allele",
    "missing_dosage",
    "n_samples",
    "n_variants",
    "source",
    "dreml_version",
    "complete",
)
# Group attributes a version 1.1 store carries besides: the MAF threshold of its sparse variants.
SPARSE_ATTRS = ("sparse_below",)
