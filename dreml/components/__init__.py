"""Genetic components: the spec model, builders, spec files and build-time variant filters."""

from dreml.components.builders import all_variants, by_blocks, by_chromosome, by_maf_bins, per_store
from dreml.components.filters import ComponentReport, FilterReport, VariantStats, filter_components
from dreml.components.io import load_components, read_json, read_npz, read_tsv, write_json, write_npz
from dreml.components.model import Components

__all__ = [
    "ComponentReport",
    "Components",
    "FilterReport",
    "VariantStats",
    "all_variants",
    "by_blocks",
    "by_chromosome",
    "by_maf_bins",
    "filter_components",
    "load_components",
    "per_store",
    "read_json",
    "read_npz",
    "read_tsv",
    "write_json",
    "write_npz",
]
