"""Opening and reading a genotype store (the contract is in `dreml.store_schema`).

`open_store(path)` validates the group (format, version, `complete` flag, every array's
dtype and shape) and returns a `Store`: counts, metadata, per-variant statistics and
`dosage(start, stop, samples)` blocks. Reading never modifies the store.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from dreml.errors import DremlError, InputError
from dreml.store_schema import ARRAYS, FORMAT_NAME, FORMAT_VERSION, REQUIRED_ATTRS

logger = logging.getLogger(__name__)


class StoreError(DremlError):
    """The path is not a usable dreml genotype store.

    Advice: an incomplete store comes from an interrupted conversion; run `dreml-convert`
    again with `--overwrite`. An unknown version needs the dreml release that wrote it.
    """


def _as_str(values: np.ndarray) -> np.ndarray:
    """Strings as a fixed-width unicode array (Zarr returns variable-length NumPy StringDType)."""
    values = np.asarray(values)
    if values.dtype.kind == "T":  # astype needs an explicit width for this conversion
        return values.astype(f"U{max(1, int(np.strings.str_len(values).max(initial=1)))}")
    return values.astype(str)


def _dim_sizes(group: zarr.Group, attrs: dict) -> dict[str, int]:
    n_contigs = group["contig_id"].shape[0] if "contig_id" in group else 0
    return {
        "variants": int(attrs["n_variants"]),
        "samples": int(attrs["n_samples"]),
        "contigs": int(n_contigs),
        "alleles": 2,
    }


def _validate(path: Path, group: zarr.Group) -> None:
    attrs = group.attrs.asdict()
    if attrs.get("format") != FORMAT_NAME:
        raise StoreError(f"{path}: not a dreml genotype store (attribute 'format' is {attrs.get('format')!r})")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format version {attrs.get('format_version')!r} is not supported "
            f"(this dreml reads version {FORMAT_VERSION})"
        )
    if attrs.get("complete") is not True:
        raise StoreError(
            f"{path}: store is incomplete (conversion was interrupted or is still running); "
            "rerun dreml-convert with --overwrite"
        )
    missing_attrs = [a for a in REQUIRED_ATTRS if a not in attrs]
    if missing_attrs:
        raise StoreError(f"{path}: missing group attribute(s) {', '.join(missing_attrs)}")
    sizes = _dim_sizes(group, attrs)
    for name, spec in ARRAYS.items():
        if name not in group:
            raise StoreError(f"{path}: array '{name}' is missing")
        array = group[name]
        expected = tuple(sizes[d] for d in spec.dims)
        if tuple(array.shape) != expected:
            raise StoreError(
                f"{path}: array '{name}' has shape {tuple(array.shape)}, expected {expected} "
                f"({' x '.join(spec.dims)})"
            )
        kind_ok = (
            array.dtype.kind in "UTO" if spec.dtype == "str" else array.dtype == np.dtype(spec.dtype)
        )
        if not kind_ok:
            raise StoreError(f"{path}: array '{name}' has dtype {array.dtype}, expected {spec.dtype}")


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
    def attrs(self) -> dict:
        return self.group.attrs.asdict()

    @property
    def n_samples(self) -> int:
        return int(self.attrs["n_samples"])

    @property
    def n_variants(self) -> int:
        return int(self.attrs["n_variants"])

    @property
    def chunks(self) -> tuple[int, int]:
        """Chunk shape of `call_dosage`: (variants, samples)."""
        return tuple(self.group["call_dosage"].chunks)

    @functools.cached_property
    def sample_id(self) -> np.ndarray:
        return _as_str(self.group["sample_id"][:])

    @functools.cached_property
    def sample_family_id(self) -> np.ndarray:
        return _as_str(self.group["sample_family_id"][:])

    @functools.cached_property
    def contig_id(self) -> np.ndarray:
        return _as_str(self.group["contig_id"][:])

    @functools.cached_property
    def variant_contig(self) -> np.ndarray:
        return self.group["variant_contig"][:]

    @functools.cached_property
    def variant_position(self) -> np.ndarray:
        return self.group["variant_position"][:]

    @functools.cached_property
    def variant_id(self) -> np.ndarray:
        return _as_str(self.group["variant_id"][:])

    @functools.cached_property
    def variant_allele(self) -> np.ndarray:
        return _as_str(self.group["variant_allele"][:])

    @functools.cached_property
    def variant_call_count(self) -> np.ndarray:
        return self.group["variant_call_count"][:]

    @functools.cached_property
    def variant_dosage_sum(self) -> np.ndarray:
        return self.group["variant_dosage_sum"][:]

    @functools.cached_property
    def variant_dosage_sq_sum(self) -> np.ndarray:
        return self.group["variant_dosage_sq_sum"][:]

    @functools.cached_property
    def variant_allele_frequency(self) -> np.ndarray:
        return self.group["variant_allele_frequency"][:]

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
        block = self.group["call_dosage"][start:stop, :]
        if samples is not None:
            # NumPy lays out a fancy index on the second axis column-major: rows stay contiguous
            # only after a copy, and every consumer walks rows (a shard pass ran 3x slower)
            block = np.ascontiguousarray(block[:, np.asarray(samples, dtype=np.int64)])
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


def open_stores(stores: "Store | str | Path | Sequence[Store | str | Path]") -> tuple[Store, ...]:
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
                f"{str(first.sample_id[i])!r} vs {str(other.sample_id[i])!r}; multi-store operators need the same samples in the same order"
            )
    return opened
