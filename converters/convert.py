"""`convert`: PLINK fileset, VCF Zarr or BGEN -> genotype store, chunk-parallel on Dask, atomic.

The store is written under a deterministic temporary sibling, `OUT.partial` (removed when a
conversion starts), marked complete, and only then renamed to OUT. An existing OUT (with
`overwrite`) is renamed aside to `OUT.replaced` just before and deleted only after the new
store is in place. An interrupted conversion therefore leaves at most an incomplete
`OUT.partial`, which `open_store` refuses, and OUT is at every moment the old complete
store, the new complete store, or (between the two renames) absent with both on disk.
"""

from __future__ import annotations

import inspect
import logging
import numbers
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import distributed
import numpy as np
from dask.callbacks import Callback
from tqdm import tqdm

from converters.bed import open_bed
from converters.bgen import open_bgen
from converters.pgen import open_pgen
from converters.source import Source
from converters.subset import select
from converters.vcz import open_vcz
from converters.writer import (
    ChunkStats,
    SparsePlan,
    convert_variant_chunk,
    create_sparse_arrays,
    create_store,
    finalize_store,
    mark_complete,
    plan_sparse,
    sparse_variant_chunk,
    write_sparse_piece,
    write_statistics,
)
from dreml.errors import InputError
from dreml.selection import Selection
from dreml.store import Store, open_store

logger = logging.getLogger(__name__)

# Each opener takes the input's path (a PLINK prefix, a .vcz directory, a .bgen file) and its
# format's options as keyword arguments.
OPENERS: dict[str, Callable[..., Source]] = {"bed": open_bed, "pgen": open_pgen, "vcz": open_vcz, "bgen": open_bgen}
# Keyword arguments of `convert` that go to the opener rather than to `write_store`.
SOURCE_OPTIONS = ("max_alleles", "sample", "hard_call_threshold")
DEFAULT_VARIANT_CHUNK = 1024
DEFAULT_SAMPLE_CHUNK = 65536


def open_source(fmt: str, prefix: str | Path, **options: Any) -> Source:
    """Open the input `prefix` of format `fmt` with that format's `options`.

    Arguments:
        fmt: "bed" (PREFIX.bed/.bim/.fam), "pgen" (PREFIX.pgen/.pvar/.psam), "vcz" (a VCF
            Zarr directory) or "bgen" (a .bgen file).
        prefix: the fileset's path without extension, or the .vcz / .bgen path.
        options: `max_alleles` (pgen, vcz, bgen), `sample` and `hard_call_threshold` (bgen);
            an option left None takes its default.
    """
    if fmt not in OPENERS:
        raise InputError(f"format {fmt!r} is not supported (expected one of {', '.join(OPENERS)})")
    opener = OPENERS[fmt]
    accepted = inspect.signature(opener).parameters
    for name, value in options.items():
        if name not in accepted and value is not None:
            raise InputError(f"option {name!r} does not apply to format {fmt!r}")
    return opener(prefix, **{name: value for name, value in options.items() if value is not None})


def partial_path(out: Path) -> Path:
    """Where a conversion to `out` writes before the final rename."""
    return out.with_name(out.name + ".partial")


def replaced_path(out: Path) -> Path:
    """Where an existing store at `out` waits, during an overwrite, until the new one is in place."""
    return out.with_name(out.name + ".replaced")


def _remove(path: Path) -> None:
    """Delete a file, link or store directory, if present.

    A store's group `zarr.json` goes first: `shutil.rmtree` interrupted midway could otherwise
    leave a `zarr.json` saying `complete: true` above deleted chunks, which would open as a
    valid store whose lost genotypes read as missing calls.
    """
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        (path / "zarr.json").unlink(missing_ok=True)
        shutil.rmtree(path)


def _move_into_place(partial: Path, out: Path) -> None:
    """Rename the complete store `partial` to `out`, deleting a store at `out` only afterwards."""
    replaced = replaced_path(out)
    _remove(replaced)  # left by a conversion killed between the two renames below
    if out.exists() or out.is_symlink():
        out.rename(replaced)
    partial.rename(out)
    _remove(replaced)


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing `out` without overwrite, and any existing non-Zarr path."""
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise InputError(f"{out}: output already exists (pass --overwrite / overwrite=True to replace it)")
    if not (out / "zarr.json").is_file():
        raise InputError(f"{out}: exists and is not a Zarr store; refusing to delete it even with overwrite")


def check_sparse_below(sparse_below: float | None) -> None:
    """The sparse threshold is a MAF in (0, 0.5], or None (no sparse representation)."""
    if sparse_below is None:
        return
    if isinstance(sparse_below, bool) or not isinstance(sparse_below, numbers.Real) or not 0 < sparse_below <= 0.5:
        raise InputError(f"sparse_below must be a minor allele frequency in (0, 0.5], got {sparse_below!r}")


def check_chunk_sizes(variant_chunk: int, sample_chunk: int) -> None:
    """Chunk sizes are integers >= 1 (a float such as 4.0 would reach Zarr and range())."""
    for name, value in (("variant_chunk", variant_chunk), ("sample_chunk", sample_chunk)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


class _ProgressCallback(Callback):
    """Advances a tqdm bar once per finished task of the local threaded scheduler."""

    def __init__(self, bar: tqdm) -> None:
        super().__init__()
        self._bar = bar

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        self._bar.update(1)


def _run_chunks(
    source: Source, store_path: Path, bounds: list[tuple[int, int]], client: distributed.Client | None, bar: tqdm
) -> list[ChunkStats]:
    """Run one `convert_variant_chunk` task per variant chunk; return their statistics."""
    if client is None:
        tasks = [
            dask.delayed(convert_variant_chunk, pure=False)(source.genotypes.for_chunk(start, stop), str(store_path), start, stop)
            for start, stop in bounds
        ]
        with _ProgressCallback(bar):
            return list(dask.compute(*tasks, scheduler="threads"))
    futures = [
        client.submit(convert_variant_chunk, source.genotypes.for_chunk(start, stop), str(store_path), start, stop, pure=False)
        for start, stop in bounds
    ]
    results = []
    try:
        for future in distributed.as_completed(futures):
            results.append(future.result())
            bar.update(1)
    finally:  # after a failed chunk, stop writing to a store that will never be complete
        client.cancel(futures)
    return results


def _run_sparse(
    group, store_path: Path, plan: SparsePlan, variant_chunk: int, client: distributed.Client | None, bar: tqdm
) -> None:
    """Step 3b (converters.writer): one `sparse_variant_chunk` task per variant chunk with
    sparse variants; the pieces they return are written here as they arrive."""
    m = len(plan.allele)
    bounds = [(a, min(a + variant_chunk, m)) for a in range(0, m, variant_chunk)]
    args = [
        (str(store_path), a, b, plan.allele[a:b], plan.indptr[a : b + 1]) for a, b in bounds if plan.indptr[b] > plan.indptr[a]
    ]
    bar.reset(total=len(args))
    if client is None:
        tasks = [dask.delayed(sparse_variant_chunk, pure=False)(*a) for a in args]
        with _ProgressCallback(bar):
            for pieces in dask.compute(*tasks, scheduler="threads"):
                for piece in pieces:
                    write_sparse_piece(group, piece)
        return
    futures = [client.submit(sparse_variant_chunk, *a, pure=False) for a in args]
    try:
        for future in distributed.as_completed(futures):
            for piece in future.result():
                write_sparse_piece(group, piece)
            bar.update(1)
    finally:
        client.cancel(futures)


def convert(fmt: str, prefix: str | Path, out: str | Path, *, selection: Selection | None = None, **options: Any) -> Store:
    """Convert the input `prefix` of format `fmt` into a genotype store at `out` and open it.

    Arguments:
        fmt: "bed" (PREFIX.bed/.bim/.fam), "pgen" (PREFIX.pgen/.pvar/.psam), "vcz" (a VCF
            Zarr directory) or "bgen" (a .bgen file).
        prefix: the fileset's path without extension, or the .vcz / .bgen path.
        out: the store to create (a directory, conventionally named *.zarr).
        selection: the samples (`--keep/--remove`) and variants (`--extract/--exclude/--chr`)
            to store (`converters.subset`); None stores them all.
        options: the input's options (`max_alleles`, `sample`, `hard_call_threshold`; see
            `open_source`) and `client`, `variant_chunk`, `sample_chunk`, `sparse_below`,
            `overwrite`, `progress` of `write_store`.

    Returns:
        The new store, opened and validated.
    """
    source_options = {name: options.pop(name) for name in SOURCE_OPTIONS if name in options}
    # every input check (the selection's too) happens before anything is written
    return write_store(select(open_source(fmt, prefix, **source_options), selection), out, **options)


def write_store(
    source: Source,
    out: str | Path,
    *,
    client: distributed.Client | None = None,
    variant_chunk: int = DEFAULT_VARIANT_CHUNK,
    sample_chunk: int = DEFAULT_SAMPLE_CHUNK,
    sparse_below: float | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Store:
    """Write the store of an opened `source` at `out` and open it (see `convert`).

    The CLI opens the source itself, to check every input before it starts a cluster.

    Arguments:
        source: the opened input fileset.
        out: the store to create (a directory, conventionally named *.zarr).
        client: a Dask client whose cluster runs the chunk tasks; None runs them in this
            process on Dask's threaded scheduler.
        variant_chunk, sample_chunk: chunk shape of `call_dosage` (variants x samples);
            one task converts one variant chunk.
        sparse_below: a MAF threshold in (0, 0.5]: the variants below it are also stored
            sparse (format version 1.1, docs/store_format.md); None (default): version 1.
        overwrite: replace an existing store at `out` (never a non-Zarr path).
        progress: show a progress bar over chunks.

    Returns:
        The new store, opened and validated.
    """
    check_chunk_sizes(variant_chunk, sample_chunk)
    check_sparse_below(sparse_below)
    out = Path(out)
    check_output(out, overwrite)
    partial = partial_path(out)
    if partial.exists() or partial.is_symlink():
        logger.info("removing %s left by an earlier conversion", partial)
    _remove(partial)
    group = create_store(partial, source, variant_chunk=variant_chunk, sample_chunk=sample_chunk, sparse_below=sparse_below)
    m = source.n_variants
    bounds = [(start, min(start + variant_chunk, m)) for start in range(0, m, variant_chunk)]
    logger.info("converting %d variants x %d samples in %d chunks into %s", m, source.n_samples, len(bounds), out)
    with tqdm(total=len(bounds), unit="chunk", disable=not progress, desc="convert") as bar:
        stats = _run_chunks(source, partial, bounds, client, bar)
    if sparse_below is None:
        finalize_store(group, stats)
    else:
        plan = plan_sparse(write_statistics(group, stats), source.n_samples, sparse_below)
        create_sparse_arrays(group, plan)
        logger.info(
            "%d of %d variants below MAF %g stored sparse too: %d calls",
            int(np.sum(plan.allele >= 0)),
            m,
            sparse_below,
            plan.n_calls,
        )
        with tqdm(total=0, unit="chunk", disable=not progress, desc="sparse") as bar:
            _run_sparse(group, partial, plan, variant_chunk, client, bar)
        mark_complete(group)
    _move_into_place(partial, out)
    return open_store(out)
