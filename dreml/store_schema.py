"""The genotype store contract, version 1, as data.

A store is a Zarr v3 group. Every array is declared here with its dtype and its dimensions;
`dreml.store.open_store` validates an opened group against this table and the converters
create arrays from it, so the two cannot drift apart. Field names follow VCF Zarr / sgkit.

Dimensions:
    variants  m, the number of variants (rows of `call_dosage`)
    samples   n, the number of samples (columns of `call_dosage`)
    contigs   number of distinct chromosomes, in order of first appearance
    alleles   2: column 0 = REF (.bim column 6 / .pvar REF), column 1 = ALT (.bim column 5 / .pvar ALT)

`call_dosage[j, i]` is the count of the ALT allele (0, 1, 2) of variant j in sample i,
or `MISSING_DOSAGE` (-1) when the call is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

FORMAT_NAME = "dreml-genotype-store"
FORMAT_VERSION = 1
MISSING_DOSAGE = -1
COUNTED_ALLELE = "ALT"


@dataclass(frozen=True)
class ArraySpec:
    """One array of the store: its dtype kind ('str' or a NumPy dtype name) and dimensions."""

    dtype: str
    dims: tuple[str, ...]
    doc: str


ARRAYS: dict[str, ArraySpec] = {
    "sample_id": ArraySpec("str", ("samples",), "individual ID (.fam column 2 / .psam IID)"),
    "sample_family_id": ArraySpec(
        "str", ("samples",), "family ID (.fam column 1 / .psam FID; IID when the .psam has none)"
    ),
    "contig_id": ArraySpec("str", ("contigs",), "chromosome names in order of first appearance"),
    "variant_contig": ArraySpec("int32", ("variants",), "index into contig_id"),
    "variant_position": ArraySpec("int64", ("variants",), "base-pair coordinate"),
    "variant_id": ArraySpec("str", ("variants",), "variant ID (.bim column 2 / .pvar ID)"),
    "variant_allele": ArraySpec("str", ("variants", "alleles"), "REF, ALT"),
    "call_dosage": ArraySpec(
        "int8", ("variants", "samples"), "ALT allele count 0/1/2, -1 missing"
    ),
    "variant_call_count": ArraySpec("int64", ("variants",), "number of non-missing calls"),
    "variant_dosage_sum": ArraySpec("int64", ("variants",), "sum of ALT counts over observed calls"),
    "variant_dosage_sq_sum": ArraySpec(
        "int64", ("variants",), "sum of squared ALT counts over observed calls"
    ),
    "variant_allele_frequency": ArraySpec(
        "float64", ("variants",), "ALT frequency among observed calls: dosage_sum / (2 call_count); NaN if none"
    ),
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
