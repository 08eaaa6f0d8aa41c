"""Converters from PLINK filesets, VCF Zarr and BGEN to the dreml genotype store (CLI: `dreml-convert`).

One module per job: `plink_text` (text companions, plain or compressed), `bed`, `pgen`,
`vcz` and `bgen` (inputs behind the `source.Source` interface), `tables` (their metadata),
`writer` (the Zarr store), `convert` (the atomic, Dask-parallel driver), `verify`
(re-reading an input against a store), `cli`.
"""

from converters.convert import DEFAULT_SAMPLE_CHUNK, DEFAULT_VARIANT_CHUNK, convert, open_source
from converters.source import Source

__all__ = ["DEFAULT_SAMPLE_CHUNK", "DEFAULT_VARIANT_CHUNK", "Source", "convert", "open_source"]
