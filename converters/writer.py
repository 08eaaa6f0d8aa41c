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

A store with a sparse representation (`sparse_below`, format version 1.1) runs step 3 in
two parts, `write_statistics` and `mark_complete`, with the sparse arrays between them:
    3a. `write_statistics`; `plan_sparse` decides from the statistics which variants are
        sparse (MAF below the threshold, and a sparse row smaller than the int8 row) and
        which allele they count, and gives every variant's offset into the sparse calls
        (its number of calls follows from the code counts: carriers plus missing calls);
        `create_sparse_arrays` writes `variant_sparse_allele` and `call_sparse_indptr`.
    3b. `sparse_variant_chunk`, one Dask task per variant chunk with sparse variants:
        reads its rows back from `call_dosage` and writes its calls
        [indptr[start], indptr[stop]) into `call_sparse_sample` / `call_sparse_dosage`.
        A task writes only the Zarr chunks that lie wholly inside its range (no other task
        touches them) and returns the partial chunks at its two ends (`SparsePiece`,
        fewer than 2 x SPARSE_CHUNK calls), which the driver writes as they arrive.
    3c. `mark_complete`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import zarr
from zarr.abc.codec import BytesBytesCodec
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from converters.source import GenotypeReader, Source, directory_size
from dreml._version import __version__
from dreml.store_schema import (
    ARRAYS,
    COUNTED_ALLELE,
    FORMAT_NAME,
    FORMAT_VERSION,
    MISSING_DOSAGE,
    NOT_SPARSE,
    SPARSE_ARRAYS,
    SPARSE_FORMAT_VERSION,
)

logger = logging.getLogger(__name__)

# Every array's chunks end in a CRC-32C checksum of their compressed bytes (4 bytes a chunk):
# a chunk whose bytes changed on disk (a flipped bit) fails to decode instead of reading as
# other genotypes, and `dreml.store` reports it as damaged. Stores written before have none
# and open all the same (Zarr reads each array's codecs from its metadata).
CHECKSUM = Crc32cCodec()
# The other arrays' compression: Zarr's default ("auto") for numbers and strings in zarr 3.1.
DEFAULT_COMPRESSOR = ZstdCodec(level=0, checksum=False)
# Blosc/zstd on bit-shuffled int8: the 0/1/2/-1 codes use 2 of 8 bit planes, which
# bit-shuffling turns into long constant runs. clevel 1 compresses almost as well as higher
# levels at several times the speed; 1 MiB Blosc blocks (instead of Blosc's automatic
# size, tens of KiB for int8) encode ~50% faster and compress slightly better
# (measurements in docs/store_format.md).
DOSAGE_COMPRESSOR = BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle", typesize=1, blocksize=1 << 20)
# Chunk length of the 1-D per-variant arrays (metadata and statistics).
VARIANT_ARRAY_CHUNK = 1 << 18
# Chunk length of the sparse call arrays (1 MiB of int32 sample indices); a sparse task
# hands back at most two partial chunks, so this also bounds what reaches the driver
SPARSE_CHUNK = 1 << 18
# Sorted int32 sample indices: byte shuffle puts their (slowly changing) high bytes
# together; the int8 dosages (1, 2, -1) compress like call_dosage.
SPARSE_SAMPLE_COMPRESSOR = BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=4, blocksize=1 << 20)
# A sparse call costs 5 bytes (int32 sample index, int8 dosage) against 1 byte per genotype
# in call_dosage: a variant is stored sparse only when its row holds fewer calls than this
# fraction of the samples, whatever its MAF (a rare variant with many missing calls stays dense)
SPARSE_MAX_CALL_FRACTION = 1 / 5


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


def _compressors(compressor: BytesBytesCodec) -> tuple[BytesBytesCodec, BytesBytesCodec]:
    """A chunk's bytes-to-bytes codecs: `compressor`, then the checksum of what it wrote."""
    return (compressor, CHECKSUM)


def _array(group: zarr.Group, name: str) -> zarr.Array:
    """The array `name` of a store being written (`create_store` made it: never a group)."""
    array = group[name]
    assert isinstance(array, zarr.Array), name
    return array


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


def create_store(
    path: Path, source: Source, *, variant_chunk: int, sample_chunk: int, sparse_below: float | None = None
) -> zarr.Group:
    """Create the group at `path` (which must not exist) with all arrays and metadata, incomplete.

    With `sparse_below` the store is format version 1.1 and records the threshold; its
    sparse arrays are created later (`create_sparse_arrays`), once their sizes are known.
    """
    group = zarr.open_group(str(path), mode="w-", zarr_format=3)
    sparse = {} if sparse_below is None else {"sparse_below": float(sparse_below)}
    group.attrs.update(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION if sparse_below is None else SPARSE_FORMAT_VERSION,
            "counted_allele": COUNTED_ALLELE,
            "missing_dosage": MISSING_DOSAGE,
            "n_samples": source.n_samples,
            "n_variants": source.n_variants,
            "source": source_attribute(source),
            "dreml_version": __version__,
            **sparse,
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
            compressors=_compressors(DOSAGE_COMPRESSOR if name == "call_dosage" else DEFAULT_COMPRESSOR),
            # an unwritten dosage chunk reads as missing, never as a genotype
            fill_value=MISSING_DOSAGE if name == "call_dosage" else None,
            dimension_names=spec.dims,
        )
    for name, values in metadata_arrays(source).items():
        # zarr 3.1.6 writes a non-C-contiguous string array in the wrong order: copy first
        _array(group, name)[...] = np.ascontiguousarray(values)
    return group


def convert_variant_chunk(reader: GenotypeReader, store_path: str, start: int, stop: int) -> ChunkStats:
    """The Dask task: copy variants [start, stop) of the source into `call_dosage`."""
    block = reader.read(start, stop)
    array = zarr.open_array(store_path, path="call_dosage", mode="r+")
    array[start:stop, :] = block
    return dosage_statistics(block, start)


def write_statistics(group: zarr.Group, stats: list[ChunkStats]) -> dict[str, np.ndarray]:
    """Write the statistics arrays and the allele frequency; return the int64 columns
    (`call_count`, `dosage_sum`, `dosage_sq_sum`)."""
    m = int(cast(int, group.attrs["n_variants"]))  # a JSON value to zarr: an int here
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
        _array(group, f"variant_{name}")[...] = column
    count = columns["call_count"]
    frequency = np.divide(columns["dosage_sum"], 2.0 * count, out=np.full(m, np.nan), where=count > 0)
    _array(group, "variant_allele_frequency")[...] = frequency
    return columns


def mark_complete(group: zarr.Group) -> None:
    """The last write to a store: from here on it opens."""
    group.attrs.update({"complete": True})


def finalize_store(group: zarr.Group, stats: list[ChunkStats]) -> None:
    """Write the statistics arrays and the allele frequency, then mark the store complete."""
    write_statistics(group, stats)
    mark_complete(group)


# ----------------------------------------------------------------------------- sparse representation


@dataclass(frozen=True)
class SparsePlan:
    """Which variants a store holds sparse, and where their calls go.

    Attributes:
        allele: per variant, the allele its sparse row counts (0 REF, 1 ALT) or -1 (int8).
        indptr: per variant, the offset of its calls (m + 1 entries, int64).
    """

    allele: np.ndarray  # shape: (m,)
    indptr: np.ndarray  # shape: (m + 1,)

    @property
    def n_calls(self) -> int:
        return int(self.indptr[-1])


def plan_sparse(columns: dict[str, np.ndarray], n_samples: int, sparse_below: float) -> SparsePlan:
    """The sparse variants of a store from its statistics (`write_statistics`).

    With c_k the calls of code k (c2 = (sq_sum - sum) / 2, c1 = sum - 2 c2,
    c0 = count - c1 - c2) and p = sum / (2 count): a variant is sparse when
    min(p, 1 - p) < `sparse_below` and its row holds fewer than
    SPARSE_MAX_CALL_FRACTION x n calls. The row counts the minor allele: ALT when
    p <= 1/2 (calls: c1 + c2 carriers and the missing calls), else REF (c0 + c1 carriers,
    dosage 2 - x, and the missing calls). A variant without calls is never sparse.
    """
    count, total, squares = columns["call_count"], columns["dosage_sum"], columns["dosage_sq_sum"]
    c2 = (squares - total) // 2
    c1 = total - 2 * c2
    c0 = count - c1 - c2
    missing = n_samples - count
    with np.errstate(invalid="ignore", divide="ignore"):
        p = total / (2.0 * count)
    counts_ref = p > 0.5
    calls = missing + np.where(counts_ref, c0 + c1, c1 + c2)
    sparse = (count > 0) & (np.minimum(p, 1.0 - p) < sparse_below) & (calls < SPARSE_MAX_CALL_FRACTION * n_samples)
    allele = np.where(sparse, np.where(counts_ref, 0, 1), NOT_SPARSE).astype(np.int8)
    indptr = np.concatenate([[0], np.cumsum(np.where(sparse, calls, 0))]).astype(np.int64)
    return SparsePlan(allele, indptr)


def create_sparse_arrays(group: zarr.Group, plan: SparsePlan) -> None:
    """Create the sparse arrays of `SPARSE_ARRAYS` and write the per-variant ones."""
    m = len(plan.allele)
    sizes = {"variants": m, "variant_offsets": m + 1, "sparse_calls": plan.n_calls}
    compressors = {"call_sparse_sample": SPARSE_SAMPLE_COMPRESSOR, "call_sparse_dosage": DOSAGE_COMPRESSOR}
    for name, spec in SPARSE_ARRAYS.items():
        shape = tuple(sizes[d] for d in spec.dims)
        entries = spec.dims == ("sparse_calls",)
        group.create_array(
            name,
            shape=shape,
            dtype=spec.dtype,
            chunks=(max(1, min(SPARSE_CHUNK if entries else VARIANT_ARRAY_CHUNK, shape[0])),),
            compressors=_compressors(compressors.get(name, DEFAULT_COMPRESSOR)),
            fill_value=NOT_SPARSE if name == "variant_sparse_allele" else 0,
            dimension_names=spec.dims,
        )
    _array(group, "variant_sparse_allele")[...] = plan.allele
    _array(group, "call_sparse_indptr")[...] = plan.indptr


@dataclass(frozen=True)
class SparsePiece:
    """Sparse calls [offset, offset + len(sample)) that a task leaves to the driver."""

    offset: int
    sample: np.ndarray  # shape: (e,), int32
    dosage: np.ndarray  # shape: (e,), int8


def sparse_rows(block: np.ndarray, allele: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sparse calls of the rows of an int8 ALT-dosage block (variants x samples).

    Arguments:
        block: the rows, shape (r, n).
        allele: per row, 1 (count ALT: the calls x != 0) or 0 (count REF: dosage 2 - x,
            the calls x != 2); missing calls (-1) are kept as -1 either way.

    Returns:
        (lengths (r,) int64, sample (E,) int32, dosage (E,) int8), rows in order and
        samples ascending within a row.
    """
    counted = block.copy()
    ref = allele == 0
    counted[ref] = np.where(block[ref] >= 0, 2 - block[ref], MISSING_DOSAGE)
    row, sample = np.nonzero(counted)  # row-major: rows in order, samples ascending
    return np.bincount(row, minlength=len(block)).astype(np.int64), sample.astype(np.int32), counted[row, sample]


def sparse_variant_chunk(store_path: str, start: int, stop: int, allele: np.ndarray, indptr: np.ndarray) -> list[SparsePiece]:
    """The Dask task of step 3b: the sparse calls of variants [start, stop).

    Arguments:
        store_path: the (incomplete) store, whose `call_dosage` rows are written.
        start, stop: the variant range.
        allele: `variant_sparse_allele` of the range, shape (stop - start,).
        indptr: `call_sparse_indptr[start:stop + 1]`.

    Returns:
        The calls outside the Zarr chunks that lie wholly in the task's range, for the
        driver to write.
    """
    group = zarr.open_group(store_path, mode="r+")
    rows = np.flatnonzero(allele != NOT_SPARSE)
    block = np.asarray(_array(group, "call_dosage")[start:stop, :])
    lengths, sample, dosage = sparse_rows(block[rows], allele[rows])
    lo, hi = int(indptr[0]), int(indptr[-1])
    if not np.array_equal(lengths, np.diff(indptr)[rows]):
        raise RuntimeError(f"variants [{start}, {stop}): the sparse calls found differ from the statistics' counts")
    chunk = _array(group, "call_sparse_sample").chunks[0]
    first, last = -(-lo // chunk) * chunk, hi // chunk * chunk  # the whole chunks inside [lo, hi)
    if first >= last:
        return [SparsePiece(lo, sample, dosage)] if hi > lo else []
    _array(group, "call_sparse_sample")[first:last] = sample[first - lo : last - lo]
    _array(group, "call_sparse_dosage")[first:last] = dosage[first - lo : last - lo]
    return [
        SparsePiece(offset, sample[a - lo : b - lo], dosage[a - lo : b - lo])
        for offset, a, b in ((lo, lo, first), (last, last, hi))
        if b > a
    ]


def write_sparse_piece(group: zarr.Group, piece: SparsePiece) -> None:
    """Write a task's partial chunks (on the driver, one piece at a time)."""
    end = piece.offset + len(piece.sample)
    _array(group, "call_sparse_sample")[piece.offset : end] = piece.sample
    _array(group, "call_sparse_dosage")[piece.offset : end] = piece.dosage
