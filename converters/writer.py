"""Writing a genotype store (the contract is `dreml.store_schema`) from a `Source`.

Three steps, so that a store is never marked complete before all of it is written:
    1. `create_store`: the Zarr v3 group, every array of `ARRAYS`, the metadata, and the
       group attributes with `complete: false`.
    2. `convert_variant_chunk`, one Dask task per variant chunk: reads its variant range
       from the source, writes it to `call_dosage` (the task owns every sample chunk of
       those variants, so no two tasks write the same Zarr chunk) and returns the
       per-variant statistics of the block (`ChunkStats`).
    3. `finalize_store`, on the driver: the statistics arrays and the allele frequency,
       then the attributes with `complete: true`, last.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from converters.source import GenotypeReader, Source, directory_size
from dreml._version import __version__
from dreml.store_schema import ARRAYS, COUNTED_ALLELE, FORMAT_NAME, FORMAT_VERSION, MISSING_DOSAGE

logger = logging.getLogger(__name__)

# Blosc/zstd on bit-shuffled int8: the 0/1/2/-1 codes use 2 of 8 bit planes, which
# bit-shuffling turns into long constant runs. clevel 1 compresses almost as well as higher
# levels at several times the speed; 1 MiB Blosc blocks (instead of Blosc's automatic
# size, tens of KiB for int8) encode ~50% faster and compress slightly better
# (measurements in docs/store_format.md).
DOSAGE_COMPRESSOR = BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle", typesize=1, blocksize=1 << 20)
# Chunk length of the 1-D per-variant arrays (metadata and statistics).
VARIANT_ARRAY_CHUNK = 1 << 18


@dataclass(frozen=True)
class ChunkStats:
    """Per-variant statistics of variants [start, start + len(call_count)), each int64."""

    start: int
    call_count: np.ndarray
    dosage_sum: np.ndarray
    dosage_sq_sum: np.ndarray


def dosage_statistics(block: np.ndarray, start: int = 0) -> ChunkStats:
    """Call count, ALT dosage sum and squared sum per variant of an int8 block (variants x samples).

    From c_k, the number of calls equal to k in a row: call count = n - c_missing, dosage sum
    = c1 + 2 c2, squared sum = c1 + 4 c2. The counts are taken row by row through one reused
    boolean mask, because `np.count_nonzero` on a row is several times faster than an
    `axis=1` reduction over a block-sized temporary (18 ms vs 47 ms for 1024 x 20000).
    """
    m, n = block.shape
    counts = np.empty((3, m), dtype=np.int64)  # c_missing, c1, c2 per variant
    mask = np.empty(n, dtype=bool)
    for j, row in enumerate(block):
        for k, value in enumerate((MISSING_DOSAGE, 1, 2)):
            np.equal(row, value, out=mask)
            counts[k, j] = np.count_nonzero(mask)
    n_missing, n_one, n_two = counts
    return ChunkStats(
        start=start,
        call_count=n - n_missing,
        dosage_sum=n_one + 2 * n_two,
        dosage_sq_sum=n_one + 4 * n_two,
    )


def _dim_sizes(source: Source) -> dict[str, int]:
    return {
        "variants": source.n_variants,
        "samples": source.n_samples,
        "contigs": len(source.variants.contig_id),
        "alleles": 2,
    }


def _array_chunks(name: str, shape: tuple[int, ...], variant_chunk: int, sample_chunk: int) -> tuple[int, ...]:
    if name == "call_dosage":
        return (min(variant_chunk, shape[0]), min(sample_chunk, shape[1]))
    return tuple(max(1, min(VARIANT_ARRAY_CHUNK, size)) for size in shape)


def _size(path: Path) -> int:
    return directory_size(path) if path.is_dir() else path.stat().st_size


def source_attribute(source: Source) -> dict:
    """The store's `source` attribute: the input format, its files' names and sizes, and, when
    set, the options of the conversion, the number of input variants skipped by reason and
    the selection of a subset store (`converters.subset`).

    A directory input (VCF Zarr) is recorded with the total size of the files under it.
    """
    attribute: dict = {
        "format": source.format,
        "files": [{"name": path.name, "size": _size(path)} for path in source.files],
    }
    if source.options:
        attribute["options"] = dict(source.options)
    if source.skipped:
        attribute["skipped_variants"] = dict(source.skipped)
    if source.selection:
        attribute["selection"] = dict(source.selection)
    return attribute


def metadata_arrays(source: Source) -> dict[str, np.ndarray]:
    """The store's sample and variant metadata arrays, by name, as the source holds them."""
    return {
        "sample_id": source.samples.sample_id,
        "sample_family_id": source.samples.family_id,
        "contig_id": source.variants.contig_id,
        "variant_contig": source.variants.contig,
        "variant_position": source.variants.position,
        "variant_id": source.variants.variant_id,
        "variant_allele": source.variants.allele,
    }


def create_store(path: Path, source: Source, *, variant_chunk: int, sample_chunk: int) -> zarr.Group:
    """Create the group at `path` (which must not exist) with all arrays and metadata, incomplete."""
    group = zarr.open_group(str(path), mode="w-", zarr_format=3)
    group.attrs.update(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "counted_allele": COUNTED_ALLELE,
            "missing_dosage": MISSING_DOSAGE,
            "n_samples": source.n_samples,
            "n_variants": source.n_variants,
            "source": source_attribute(source),
            "dreml_version": __version__,
            "complete": False,
        }
    )
    sizes = _dim_sizes(source)
    for name, spec in ARRAYS.items():
        shape = tuple(sizes[d] for d in spec.dims)
        group.create_array(
            name,
            shape=shape,
            dtype=str if spec.dtype == "str" else spec.dtype,
            chunks=_array_chunks(name, shape, variant_chunk, sample_chunk),
            compressors=DOSAGE_COMPRESSOR if name == "call_dosage" else "auto",
            # an unwritten dosage chunk reads as missing, never as a genotype
            fill_value=MISSING_DOSAGE if name == "call_dosage" else None,
            dimension_names=spec.dims,
        )
    for name, values in metadata_arrays(source).items():
        # zarr 3.1.6 writes a non-C-contiguous string array in the wrong order: copy first
        group[name][...] = np.ascontiguousarray(values)
    return group


def convert_variant_chunk(reader: GenotypeReader, store_path: str, start: int, stop: int) -> ChunkStats:
    """The Dask task: copy variants [start, stop) of the source into `call_dosage`."""
    block = reader.read(start, stop)
    array = zarr.open_array(store_path, path="call_dosage", mode="r+")
    array[start:stop, :] = block
    return dosage_statistics(block, start)


def finalize_store(group: zarr.Group, stats: list[ChunkStats]) -> None:
    """Write the statistics arrays and the allele frequency, then mark the store complete."""
    m = int(group.attrs["n_variants"])
    columns = {name: np.zeros(m, dtype=np.int64) for name in ("call_count", "dosage_sum", "dosage_sq_sum")}
    covered = np.zeros(m, dtype=bool)
    for chunk in stats:
        rows = slice(chunk.start, chunk.start + len(chunk.call_count))
        covered[rows] = True
        for name, column in columns.items():
            column[rows] = getattr(chunk, name)
    if not covered.all():
        raise RuntimeError(f"conversion lost variants: {int((~covered).sum())} have no statistics")
    for name, column in columns.items():
        group[f"variant_{name}"][...] = column
    count = columns["call_count"]
    frequency = np.divide(columns["dosage_sum"], 2.0 * count, out=np.full(m, np.nan), where=count > 0)
    group["variant_allele_frequency"][...] = frequency
    group.attrs.update({"complete": True})  # last write: the store is valid from here on
