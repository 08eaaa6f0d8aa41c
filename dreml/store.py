"""Opening and reading a genotype store (the contract is in `dreml.store_schema`).

`open_store(path)` validates the group (format, version, `complete` flag, every array's
dtype and shape) and returns a `Store`: counts, metadata, per-variant statistics and
`dosage(start, stop, samples)` blocks. A version 1.1 store also answers
`sparse_calls(start, stop, samples)`: the sparse representation of its rare variants
(`SparseCalls`). Reading never modifies the store.

Every chunk read goes through `_read_rows`: a chunk that cannot be decoded (a truncated or
overwritten chunk file, or, in a store with `crc32c` checksums, a flipped bit) raises
`DamagedStoreError`, one line naming the store, the array and the chunk.
`Store.damaged_chunks` lists every damaged chunk of an array (`dreml-convert verify`).
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from dreml.errors import DremlError, InputError
from dreml.store_schema import (
    ARRAYS,
    FORMAT_NAME,
    FORMAT_VERSIONS,
    NOT_SPARSE,
    REQUIRED_ATTRS,
    SPARSE_ARRAYS,
    SPARSE_ATTRS,
    SPARSE_FORMAT_VERSION,
    ArraySpec,
)

logger = logging.getLogger(__name__)


class StoreError(DremlError):
    """The path is not a usable dreml genotype store.

    Advice: an incomplete store comes from an interrupted conversion; run `dreml-convert`
    again with `--overwrite`. An unknown version needs the dreml release that wrote it.
    """


class DamagedStoreError(InputError):
    """A chunk of a store cannot be decoded: its file was truncated or overwritten, or its
    `crc32c` checksum (in stores that have one) does not match its bytes.

    Advice: convert the input again (`dreml-convert ... --overwrite`); `dreml-convert
    verify` lists every damaged chunk of a store.
    """


def _array(path: Path, group: zarr.Group, name: str) -> zarr.Array:
    """The array `name` of the group (StoreError when it is missing or a group)."""
    if name not in group:
        raise StoreError(f"{path}: array '{name}' is missing")
    array = group[name]
    if not isinstance(array, zarr.Array):
        raise StoreError(f"{path}: '{name}' is a group, not an array")
    return array


def _chunk_coords(array: zarr.Array, start: int, stop: int) -> list[tuple[int, ...]]:
    """The chunk grid coordinates of rows [start, stop) of `array` (all of its other dimensions)."""
    if stop <= start:
        return []
    rows = range(start // array.chunks[0], (stop - 1) // array.chunks[0] + 1)
    others = [range(-(-size // chunk)) for size, chunk in zip(array.shape[1:], array.chunks[1:], strict=True)]
    return [(i, *rest) for i in rows for rest in itertools.product(*others)]


def _reason(exc: BaseException) -> str:
    """The codec's message on one line (zarr's checksum message quotes raw bytes: shortened)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return "crc32c checksum does not match the chunk's bytes" if "checksum do not match" in text else text


def _damage_line(path: Path, name: str, coords: tuple[int, ...] | str, reason: str) -> str:
    where = coords if isinstance(coords, str) else f"chunk {coords[0] if len(coords) == 1 else coords}"
    return f"{path}: array {name}, {where} is damaged ({reason}): re-convert the store"


def _chunk_damage(array: zarr.Array, coords: tuple[int, ...]) -> str | None:
    """Why the chunk at `coords` cannot be decoded, or None when it can."""
    try:
        array.get_block_selection(coords)
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # the codecs raise RuntimeError, ValueError, TypeError... on bad bytes
        return _reason(exc)
    return None


def _read_rows(path: Path, name: str, array: zarr.Array, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of `array` (all of its other dimensions), as a NumPy array.

    A chunk that cannot be decoded raises `DamagedStoreError` naming the first such chunk
    (or the chunk range read, when no single chunk fails on its own).
    """
    try:
        return np.asarray(array[start:stop])
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # the codecs raise RuntimeError, ValueError, TypeError... on bad bytes
        coords = _chunk_coords(array, start, stop)
        for chunk in coords:
            reason = _chunk_damage(array, chunk)
            if reason is not None:
                raise DamagedStoreError(_damage_line(path, name, chunk, reason)) from exc
        where = f"chunks {coords[0]} to {coords[-1]}" if coords else f"rows [{start}, {stop})"
        raise DamagedStoreError(_damage_line(path, name, where, _reason(exc))) from exc


def _as_str(values: np.ndarray) -> np.ndarray:
    """Strings as a fixed-width unicode array (Zarr returns variable-length NumPy StringDType)."""
    values = np.asarray(values)
    if values.dtype.kind == "T":  # astype needs an explicit width for this conversion
        return values.astype(f"U{max(1, int(np.strings.str_len(values).max(initial=1)))}")
    return values.astype(str)


def _dim_sizes(path: Path, group: zarr.Group, attrs: dict[str, Any]) -> dict[str, int]:
    n_contigs = _array(path, group, "contig_id").shape[0] if "contig_id" in group else 0
    n_calls = _array(path, group, "call_sparse_sample").shape[0] if "call_sparse_sample" in group else 0
    return {
        "variants": int(attrs["n_variants"]),
        "samples": int(attrs["n_samples"]),
        "contigs": int(n_contigs),
        "alleles": 2,
        "variant_offsets": int(attrs["n_variants"]) + 1,
        "sparse_calls": int(n_calls),
    }


def _supported(version: object) -> bool:
    return not isinstance(version, bool) and any(version == v and type(version) is type(v) for v in FORMAT_VERSIONS)


def _check_arrays(path: Path, group: zarr.Group, arrays: dict[str, ArraySpec], sizes: dict[str, int]) -> None:
    for name, spec in arrays.items():
        array = _array(path, group, name)
        expected = tuple(sizes[d] for d in spec.dims)
        if tuple(array.shape) != expected:
            raise StoreError(
                f"{path}: array '{name}' has shape {tuple(array.shape)}, expected {expected} ({' x '.join(spec.dims)})"
            )
        kind_ok = array.dtype.kind in "UTO" if spec.dtype == "str" else array.dtype == np.dtype(spec.dtype)
        if not kind_ok:
            raise StoreError(f"{path}: array '{name}' has dtype {array.dtype}, expected {spec.dtype}")


def _validate(path: Path, group: zarr.Group) -> None:
    attrs = group.attrs.asdict()
    if attrs.get("format") != FORMAT_NAME:
        raise StoreError(f"{path}: not a dreml genotype store (attribute 'format' is {attrs.get('format')!r})")
    if not _supported(attrs.get("format_version")):
        raise StoreError(
            f"{path}: store format version {attrs.get('format_version')!r} is not supported "
            f"(this dreml reads versions {' and '.join(map(str, FORMAT_VERSIONS))})"
        )
    if attrs.get("complete") is not True:
        raise StoreError(
            f"{path}: store is incomplete (conversion was interrupted or is still running); rerun dreml-convert with --overwrite"
        )
    missing_attrs = [a for a in REQUIRED_ATTRS if a not in attrs]
    if missing_attrs:
        raise StoreError(f"{path}: missing group attribute(s) {', '.join(missing_attrs)}")
    sizes = _dim_sizes(path, group, attrs)
    _check_arrays(path, group, ARRAYS, sizes)
    if attrs["format_version"] != SPARSE_FORMAT_VERSION:
        return
    missing_attrs = [a for a in SPARSE_ATTRS if a not in attrs]
    if missing_attrs:
        raise StoreError(f"{path}: missing group attribute(s) {', '.join(missing_attrs)} (format version 1.1)")
    _check_arrays(path, group, SPARSE_ARRAYS, sizes)
    m = sizes["variants"]
    last = int(_read_rows(path, "call_sparse_indptr", _array(path, group, "call_sparse_indptr"), m, m + 1)[0])
    if last != sizes["sparse_calls"]:
        raise StoreError(
            f"{path}: array 'call_sparse_indptr' ends at {last} but the store holds {sizes['sparse_calls']} sparse calls"
        )


@dataclass(frozen=True)
class SparseCalls:
    """The sparse calls of a variant range, one row per variant (compressed sparse rows).

    Row j (variant start + j) holds the calls that are not 0 when counting the allele
    `allele[j]` (0 REF, 1 ALT; -1: the variant is not sparse and its row is empty): sample
    positions `sample[indptr[j]:indptr[j + 1]]`, ascending, with dosage 1 or 2 of that
    allele, or -1 for a missing call. Every other sample carries 0 copies of it.
    """

    indptr: np.ndarray  # shape: (rows + 1,), int64, indptr[0] == 0
    sample: np.ndarray  # shape: (E,), int32
    dosage: np.ndarray  # shape: (E,), int8
    allele: np.ndarray  # shape: (rows,), int8

    @property
    def n_rows(self) -> int:
        return len(self.allele)

    def take(self, rows: np.ndarray) -> SparseCalls:
        """The rows `rows` (indices into this block's rows, in that order)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = np.diff(self.indptr)[rows]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # entry e of the result comes from entry starts[row] + (e - indptr[row]) of this block
        entries = np.repeat(self.indptr[rows] - indptr[:-1], lengths) + np.arange(indptr[-1], dtype=np.int64)
        return SparseCalls(indptr, self.sample[entries], self.dosage[entries], self.allele[rows])

    def dense(self, n_samples: int) -> np.ndarray:  # shape: (rows, n_samples), int8
        """The ALT dosages of the rows (int8, -1 missing), as `call_dosage` holds them.

        Rows that are not sparse read as all 0 (they are empty here: take them from
        `call_dosage`).
        """
        out = np.zeros((self.n_rows, n_samples), dtype=np.int8)
        out[self.allele == 0] = 2  # counting REF: a sample with no REF call is ALT/ALT
        row = np.repeat(np.arange(self.n_rows), np.diff(self.indptr))
        ref = self.allele[row] == 0
        out[row, self.sample] = np.where((self.dosage >= 0) & ref, 2 - self.dosage, self.dosage)
        return out


@dataclass(frozen=True, eq=False)
class Store:
    """A validated, read-only genotype store.

    Attributes:
        path: location of the Zarr group.
        group: the opened Zarr group (read-only).
    """

    path: Path
    group: zarr.Group

    @property
    def attrs(self) -> dict[str, Any]:
        return self.group.attrs.asdict()

    def array(self, name: str) -> zarr.Array:
        """The Zarr array `name` (StoreError when the store has none)."""
        return _array(self.path, self.group, name)

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of the array `name` (all of it by default), as a NumPy array;
        a damaged chunk raises `DamagedStoreError`."""
        array = self.array(name)
        return _read_rows(self.path, name, array, start, array.shape[0] if stop is None else stop)

    def damaged_chunks(self, name: str, start: int = 0, stop: int | None = None) -> list[str]:
        """One line per chunk of the array `name` that cannot be decoded, among the chunks
        holding its rows [start, stop) (all of it by default); empty when every chunk decodes."""
        array = self.array(name)
        stop = array.shape[0] if stop is None else stop
        lines = []
        for coords in _chunk_coords(array, start, stop):
            reason = _chunk_damage(array, coords)
            if reason is not None:
                lines.append(_damage_line(self.path, name, coords, reason))
        return lines

    @property
    def n_samples(self) -> int:
        return int(self.attrs["n_samples"])

    @property
    def n_variants(self) -> int:
        return int(self.attrs["n_variants"])

    @property
    def format_version(self) -> int | str:
        """1, or "1.1" for a store with the sparse representation of its rare variants."""
        return self.attrs["format_version"]

    @property
    def has_sparse(self) -> bool:
        """True for a version 1.1 store (`sparse_calls` available)."""
        return self.format_version == SPARSE_FORMAT_VERSION

    @property
    def sparse_below(self) -> float | None:
        """The MAF threshold of the sparse variants (None for a version 1 store)."""
        return float(self.attrs["sparse_below"]) if self.has_sparse else None

    @functools.cached_property
    def variant_sparse_allele(self) -> np.ndarray:
        """Per variant: the allele its sparse calls count (0 REF, 1 ALT), or -1 (int8; all -1
        in a version 1 store)."""
        if not self.has_sparse:
            return np.full(self.n_variants, NOT_SPARSE, dtype=np.int8)
        return self.read("variant_sparse_allele")

    @functools.cached_property
    def variant_sparse_calls(self) -> np.ndarray:
        """Per variant: the number of calls its sparse row stores (0 for a variant that is not
        sparse), int64."""
        if not self.has_sparse:
            return np.zeros(self.n_variants, dtype=np.int64)
        return np.diff(self.read("call_sparse_indptr"))

    def sparse_calls(self, start: int, stop: int, samples: np.ndarray | None = None) -> SparseCalls:
        """The sparse rows of variants [start, stop) (`SparseCalls`; empty rows for the
        variants that are not sparse).

        Arguments:
            start, stop: variant range, 0 <= start <= stop <= n_variants.
            samples: optional integer indices of the samples to keep, in the order wanted:
                the sample positions are then positions in `samples`, ascending within a row.
        """
        if not self.has_sparse:
            raise StoreError(f"{self.path}: format version {self.format_version!r} has no sparse representation")
        if not 0 <= start <= stop <= self.n_variants:
            raise IndexError(f"variant range [{start}, {stop}) outside [0, {self.n_variants})")
        indptr = self.read("call_sparse_indptr", start, stop + 1)
        lo, hi = int(indptr[0]), int(indptr[-1])
        sample = self.read("call_sparse_sample", lo, hi)
        dosage = self.read("call_sparse_dosage", lo, hi)
        allele = self.read("variant_sparse_allele", start, stop)
        indptr = indptr - lo
        if samples is None:
            return SparseCalls(indptr, sample, dosage, allele)
        samples = np.asarray(samples, dtype=np.int64)
        position = np.full(self.n_samples, -1, dtype=np.int64)
        position[samples] = np.arange(len(samples))
        row = np.repeat(np.arange(stop - start), np.diff(indptr))
        new = position[sample]
        kept = new >= 0
        row, new, dosage = row[kept], new[kept], dosage[kept]
        order = np.lexsort((new, row))  # ascending positions within each row
        indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=stop - start))]).astype(np.int64)
        return SparseCalls(indptr, new[order].astype(np.int32), dosage[order], allele)

    def array_bytes(self, name: str) -> int:
        """Bytes on disk of the array `name` (its chunk files and metadata)."""
        root = self.path / name
        return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.is_dir() else 0

    @property
    def chunks(self) -> tuple[int, int]:
        """Chunk shape of `call_dosage`: (variants, samples)."""
        variants, samples = self.array("call_dosage").chunks
        return (variants, samples)

    @functools.cached_property
    def sample_id(self) -> np.ndarray:
        return _as_str(self.read("sample_id"))

    @functools.cached_property
    def sample_family_id(self) -> np.ndarray:
        return _as_str(self.read("sample_family_id"))

    @functools.cached_property
    def contig_id(self) -> np.ndarray:
        return _as_str(self.read("contig_id"))

    @functools.cached_property
    def variant_contig(self) -> np.ndarray:
        return self.read("variant_contig")

    @functools.cached_property
    def variant_position(self) -> np.ndarray:
        return self.read("variant_position")

    @functools.cached_property
    def variant_id(self) -> np.ndarray:
        return _as_str(self.read("variant_id"))

    @functools.cached_property
    def variant_allele(self) -> np.ndarray:
        return _as_str(self.read("variant_allele"))

    @functools.cached_property
    def variant_call_count(self) -> np.ndarray:
        return self.read("variant_call_count")

    @functools.cached_property
    def variant_dosage_sum(self) -> np.ndarray:
        return self.read("variant_dosage_sum")

    @functools.cached_property
    def variant_dosage_sq_sum(self) -> np.ndarray:
        return self.read("variant_dosage_sq_sum")

    @functools.cached_property
    def variant_allele_frequency(self) -> np.ndarray:
        return self.read("variant_allele_frequency")

    @property
    def variant_missing_rate(self) -> np.ndarray:
        return 1.0 - self.variant_call_count / max(self.n_samples, 1)

    @property
    def variant_maf(self) -> np.ndarray:
        p = self.variant_allele_frequency
        return np.minimum(p, 1.0 - p)

    def dosage(self, start: int, stop: int, samples: np.ndarray | None = None) -> np.ndarray:
        """ALT dosages of variants [start, stop) as int8, shape (stop - start, n or len(samples)).

        Arguments:
            start, stop: variant range, 0 <= start <= stop <= n_variants.
            samples: optional integer indices of the samples to keep, in the order wanted.
        """
        if not 0 <= start <= stop <= self.n_variants:
            raise IndexError(f"variant range [{start}, {stop}) outside [0, {self.n_variants})")
        block = self.read("call_dosage", start, stop)
        if samples is not None:
            samples = np.asarray(samples, dtype=np.int64)
            if len(samples) == self.n_samples and np.array_equal(samples, np.arange(self.n_samples)):
                return block
            # np.take writes rows contiguously (every consumer walks rows); a fancy index on the
            # second axis is laid out column-major and needed a copy: 10x slower (measured)
            block = np.take(block, samples, axis=1)
        return block

    def summary(self) -> str:
        """A short human-readable description (used by `dreml-convert info`)."""
        attrs = self.attrs
        maf = self.variant_maf
        lines = [
            f"store          {self.path}",
            f"format         {attrs['format']} v{attrs['format_version']} (dreml {attrs['dreml_version']})",
            f"samples        {self.n_samples}",
            f"variants       {self.n_variants}",
            f"contigs        {', '.join(self.contig_id)}",
            f"chunks         {self.chunks[0]} variants x {self.chunks[1]} samples",
            f"counted allele {attrs['counted_allele']} (missing = {attrs['missing_dosage']})",
            f"missing rate   {float(np.mean(self.variant_missing_rate)) if self.n_variants else 0.0:.4f}",
            f"monomorphic    {int(np.sum(~(maf > 0))) if self.n_variants else 0}",
        ]
        if self.has_sparse:
            sparse = int(np.sum(self.variant_sparse_allele != NOT_SPARSE))
            stored = sum(self.array_bytes(name) for name in SPARSE_ARRAYS)
            lines.append(
                f"sparse         {sparse} variants below MAF {self.sparse_below:g}: "
                f"{self.array('call_sparse_sample').shape[0]} calls, {stored} bytes on disk "
                f"(call_dosage {self.array_bytes('call_dosage')} bytes holds every variant)"
            )
        for src in attrs["source"].get("files", []):
            lines.append(f"source         {src['name']} ({src['size']} bytes)")
        return "\n".join(lines)


def open_store(path: str | Path) -> Store:
    """Open and validate a genotype store; raise `StoreError` with a clear message otherwise.

    The store's arrays keep VCF Zarr / sgkit names and dimensions (`variants`, `samples`,
    `contigs`, `alleles`), so users of those tools find (docs/store_format.md, "The store in
    VCF Zarr / sgkit terms"):

        sample_id, contig_id, variant_contig, variant_position, variant_id
                                   the same arrays as in VCF Zarr (contigs: only those with
                                   variants, in order of first appearance; a VCF Zarr or BGEN
                                   variant without ID is named CHROM:POS:REF:ALT)
        variant_allele             VCF Zarr's, REF first, always 2 alleles (REF, ALT)
        call_dosage                sgkit's call_dosage: count of allele 1 (ALT), int8 with -1
                                   missing (sgkit's float dosage uses NaN); as call_genotype:
                                   0 = [0, 0], 1 = [0, 1] unphased, 2 = [1, 1], -1 = [-1, -1]
        variant_call_count         sgkit's variant_n_called
        variant_dosage_sum         sgkit's variant_allele_count[:, 1]
        variant_allele_frequency   sgkit's variant_allele_frequency[:, 1] (1-D here)
        sample_family_id, variant_dosage_sq_sum
                                   dreml only (PLINK FID; sum of squared dosages)
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a non-group path
        raise StoreError(f"{path}: not a Zarr v3 group ({exc})") from exc
    _validate(path, group)
    return Store(path=path, group=group)


def open_stores(stores: Store | str | Path | Sequence[Store | str | Path]) -> tuple[Store, ...]:
    """Open one or several stores; several must hold the same samples in the same order (InputError)."""
    items = [stores] if isinstance(stores, (Store, str, Path)) else list(stores)
    if not items:
        raise InputError("no genotype store given")
    opened = tuple(s if isinstance(s, Store) else open_store(s) for s in items)
    first = opened[0]
    for other in opened[1:]:
        if other.n_samples != first.n_samples:
            raise InputError(
                f"stores {first.path} and {other.path} hold different samples "
                f"({first.n_samples} vs {other.n_samples}); multi-store operators need the same samples in the same order"
            )
        differ = np.flatnonzero(first.sample_id != other.sample_id)
        if differ.size:
            i = int(differ[0])
            raise InputError(
                f"stores {first.path} and {other.path} differ in sample order: sample {i} is "
                f"{str(first.sample_id[i])!r} vs {str(other.sample_id[i])!r}; "
                "multi-store operators need the same samples in the same order"
            )
    return opened
