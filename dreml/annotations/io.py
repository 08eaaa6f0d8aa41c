"""Annotation files in, per-variant variances and enrichments out; the fit from a prepared store.

Annotation file (`--annot F`; plain, .gz or .zst, read through `dreml.textio.numbered_lines`):
one line per variant, fields separated by white space: the variant ID, then q numeric
annotations. An optional header names the columns: the first line is one when its first field
is a variant-ID word (SNP, ID, rsid, ...; `dreml.textio.VARIANT_HEADER_WORDS`) or any of its
other fields is not a number; without one the columns are annot1..annotq. Lines that are empty
or start with "##" are skipped. Variants in the file but not in the fit are ignored; those whose
ID is in none of the stores are counted (`Annotations.not_in_store`, logged and recorded) and are
an error when more than `max_missing` (`--max-missing-annot N`); a fitted variant without a line
is an error naming it; a value that is not a finite number is an error naming the line, the
variant and the column. Built-in columns (`maf`, `ld_score`: `dreml.annotations.builtin`) are
appended after the file's (`--annot-builtin`).

Outputs under PREFIX: `.snpvar.tsv` (SNP, sigma2: one row per fitted variant, standardised
scale), `.enrichment.tsv` (annotation, share of variants, share of h2, enrichment, SE, MC_SE),
`.annot.json` (the `AnnotatedResult` report with the inputs) and `.annot.history.tsv` (one row
per iteration).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from dreml.annotations.builtin import minor_allele_frequency, parse_builtin, store_ld_scores
from dreml.annotations.fit import AnnotatedResult, AnnotConfig, fit_annotated
from dreml.annotations.holdout import HeldOut, heldout_loglik
from dreml.errors import InputError
from dreml.textio import VARIANT_HEADER_WORDS, is_number, numbered_lines

logger = logging.getLogger(__name__)


class Annotations(NamedTuple):
    """The annotations of the fitted variants.

    Fields:
        columns: the q column names.
        values: A, shape (m, q), rows in the fitted variants' order.
        not_in_store: IDs in the file that are in none of the stores (or, without store IDs,
            not among the fitted variants).
    """

    columns: tuple[str, ...]
    values: np.ndarray
    not_in_store: int


def read_annotations(
    path: str | Path,
    variant_ids: Sequence[str] | np.ndarray,
    *,
    store_ids: Sequence[str] | np.ndarray | None = None,
    max_missing: int | None = None,
) -> Annotations:
    """The annotations of `variant_ids`, in that order.

    Arguments:
        path: the annotation file (module docstring).
        variant_ids: the fitted variants' IDs, shape (m,).
        store_ids: every variant ID of the stores (None: the fitted ones).
        max_missing: the most file IDs allowed outside `store_ids` (None: no limit).

    Returns:
        `Annotations`.

    Raises:
        InputError: a line with the wrong number of fields, a value that is not a finite
            number, a variant listed twice, a fitted variant without annotations, no columns,
            more than `max_missing` IDs not in the stores.
    """
    columns: tuple[str, ...] | None = None
    rows: dict[str, tuple[int, list[str]]] = {}
    for lineno, line in numbered_lines(path):
        fields = line.split()
        if not fields or fields[0].startswith("##"):
            continue
        if columns is None:
            first = fields[0].lstrip("#").lower()
            if first in VARIANT_HEADER_WORDS or not all(is_number(f) for f in fields[1:]):
                columns = tuple(fields[1:])
                if len(set(columns)) != len(columns):
                    raise InputError(f"{path}: line {lineno}: a column name is repeated in the header")
                continue
            columns = tuple(f"annot{c + 1}" for c in range(len(fields) - 1))
        if len(fields) != len(columns) + 1:
            raise InputError(
                f"{path}: line {lineno}: expected {len(columns) + 1} fields (variant ID, then "
                f"{len(columns)} annotations), got {len(fields)}"
            )
        if fields[0] in rows:
            raise InputError(f"{path}: line {lineno}: variant {fields[0]} is listed twice (first on line {rows[fields[0]][0]})")
        rows[fields[0]] = (lineno, fields[1:])
    if not columns:
        raise InputError(f"{path}: no annotation columns (expected a variant ID then at least one number per line)")
    ids = [str(v) for v in variant_ids]
    known = set(ids) if store_ids is None else {str(v) for v in store_ids}
    absent = [(lineno, v) for v, (lineno, _) in rows.items() if v not in known]
    if max_missing is not None and len(absent) > max_missing:
        raise InputError(
            f"{path}: line {absent[0][0]}: variant {absent[0][1]} is not in the store; {len(absent)} annotated "
            f"variants are not, more than --max-missing-annot {max_missing}"
        )
    missing = [v for v in ids if v not in rows]
    if missing:
        more = f" (and {len(missing) - 1} more of the {len(ids)} fitted variants)" if len(missing) > 1 else ""
        raise InputError(f"{path}: no annotations for variant {missing[0]}{more}")
    A = np.empty((len(ids), len(columns)))
    for j, v in enumerate(ids):
        lineno, values = rows[v]
        for c, text in enumerate(values):
            try:
                x = float(text)
            except ValueError:
                x = math.nan
            if not math.isfinite(x):
                raise InputError(
                    f"{path}: line {lineno}: annotation {columns[c]!r} of variant {v} is not a finite number: {text!r}"
                )
            A[j, c] = x
    logger.info(
        "%s: %d annotation column(s) for %d variants (%d lines not fitted, %d of them not in the store)",
        path,
        len(columns),
        len(ids),
        len(rows) - len(ids),
        len(absent),
    )
    return Annotations(columns, A, len(absent))


def _fmt(x: float) -> str:
    return "NA" if not math.isfinite(x) else f"{x:.6g}"


def snpvar_text(ids: Sequence[str] | np.ndarray, result: AnnotatedResult) -> str:
    """PREFIX.snpvar.tsv: SNP, sigma2 (standardised scale), one row per fitted variant."""
    return "SNP\tsigma2\n" + "".join(f"{v}\t{s:.6e}\n" for v, s in zip(ids, result.sigma2))


def enrichment_text(result: AnnotatedResult) -> str:
    """PREFIX.enrichment.tsv: one row per non-negative annotation column."""
    lines = ["annotation\tshare_variants\tshare_h2\tenrichment\tSE\tMC_SE"]
    lines += [
        f"{e.annotation}\t{_fmt(e.share_variants)}\t{_fmt(e.share_h2)}\t{_fmt(e.enrichment)}\t{_fmt(e.se)}\t{_fmt(e.mc_se)}"
        for e in result.enrichment
    ]
    return "\n".join(lines) + "\n"


def history_text(result: AnnotatedResult) -> str:
    """PREFIX.annot.history.tsv: iteration, loglik, decrement (or mean squared gradient),
    theta_e, Vg, h2, gradient norm, passes so far, seconds."""
    lines = ["iteration\tloglik\tconvergence\ttheta_e\tVg\th2\tgrad_norm\tpasses\ttime"]
    for h in result.history:
        conv = h.get("decrement", h.get("mean_sq_grad", math.nan))
        loglik = math.nan if h["loglik"] is None else h["loglik"]
        lines.append(
            f"{h['iteration']}\t{_fmt(loglik)}\t{_fmt(conv)}\t{_fmt(h['theta_e'])}\t{_fmt(h['vg'])}\t"
            f"{_fmt(h['vg'] / (h['vg'] + h['theta_e']))}\t{_fmt(h['grad_norm'])}\t{h['passes']}\t"
            f"{h['time']:.3f}"
        )
    return "\n".join(lines) + "\n"


def summary_text(result: AnnotatedResult) -> str:
    """A short table for the terminal."""
    lines = [
        f"variance model {result.model['model']} ({result.method} path): {result.status}",
        f"{'parameter':<24}{'estimate':>12}{'SE':>12}{'MC SE':>12}",
    ]
    for name, v, se, mc in zip(result.param_names, result.params, result.params_se, result.params_mc_se):
        lines.append(f"{name:<24}{v:>12.5g}{se:>12.4g}{mc:>12.4g}")
    lines.append(f"{'theta_e':<24}{result.theta_e:>12.5g}{result.theta_e_se:>12.4g}")
    lines.append(f"{'total h2':<24}{result.h2:>12.5g}{result.h2_se:>12.4g}{result.h2_mc_se:>12.4g}")
    lines.append(
        f"logL {result.loglik:.4f} (one-component start: {result.start.get('loglik', math.nan):.4f}); "
        f"{result.iterations} iterations, {result.passes} passes"
    )
    return "\n".join(lines)


def heldout_text(heldout: Sequence[HeldOut]) -> str:
    """The held-out chromosomes' table for the terminal and the log."""
    lines = [f"{'held-out chr':<14}{'m':>8}{'logL':>14}{'grouped logL':>14}{'difference':>12}{'MC SE':>9}"]
    for h in heldout:
        se = math.hypot(h.loglik_se, h.loglik_grouped_se)
        lines.append(f"{h.chromosome:<14}{h.m_test:>8}{h.loglik:>14.4f}{h.loglik_grouped:>14.4f}{h.difference:>12.4f}{se:>9.3g}")
    if len(heldout) > 1:
        total, total_grouped = sum(h.loglik for h in heldout), sum(h.loglik_grouped for h in heldout)
        lines.append(f"{'sum':<14}{'':>8}{total:>14.4f}{total_grouped:>14.4f}{total - total_grouped:>12.4f}")
    return "\n".join(lines)


def write_annotated(
    result: AnnotatedResult, ids: Sequence[str] | np.ndarray, prefix: str, inputs: dict, heldout: Sequence[HeldOut] = ()
) -> list[Path]:
    """Write PREFIX.snpvar.tsv, .enrichment.tsv, .annot.json (with "heldout": one `HeldOut` per
    held-out chromosome) and .annot.history.tsv (module docstring)."""
    from dreml.outputs import atomic_write_text, write_json

    paths = [Path(prefix + s) for s in (".snpvar.tsv", ".enrichment.tsv", ".annot.history.tsv", ".annot.json")]
    atomic_write_text(paths[0], snpvar_text(ids, result))
    atomic_write_text(paths[1], enrichment_text(result))
    atomic_write_text(paths[2], history_text(result))
    write_json({**result.to_dict(), "heldout": [h.to_dict() for h in heldout], "inputs": inputs}, paths[3])
    return paths


@dataclass(frozen=True)
class StoreAnnotations:
    """Where the annotations of a store fit come from (the CLI's flags).

    Arguments:
        annot: the annotation file (`--annot`), or None.
        builtin: built-in columns appended after the file's (`--annot-builtin`: maf, ld_score).
        ld_window: W of ld_score, in variants (`--ld-window`).
        max_missing: the most file IDs allowed outside the stores (`--max-missing-annot`; None: no limit).
        holdout: chromosomes evaluated held out, one at a time (`--annot-holdout-chr`).
    """

    annot: str | Path | None = None
    builtin: tuple[str, ...] = ()
    ld_window: int = 100
    max_missing: int | None = None
    holdout: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "builtin", parse_builtin(self.builtin))
        if self.ld_window < 0:
            raise InputError(f"--ld-window must be >= 0, got {self.ld_window}")
        if self.max_missing is not None and self.max_missing < 0:
            raise InputError(f"--max-missing-annot must be >= 0, got {self.max_missing}")


def store_annotations(source: StoreAnnotations, operator, table) -> tuple[tuple[str, ...], np.ndarray | None, dict]:
    """(columns, A (m, q) or None, a record) of the fitted variants (`dreml.fit.variant_table` order)."""
    ids = np.asarray(table.id).astype(str)
    columns: tuple[str, ...] = ()
    blocks: list[np.ndarray] = []
    record: dict = {}
    if source.annot is not None:
        store_ids = np.concatenate([s.variant_id for s in operator.layout.stores]).astype(str)
        read = read_annotations(source.annot, ids, store_ids=store_ids, max_missing=source.max_missing)
        columns, blocks = read.columns, [read.values]
        record["annot_ids_not_in_store"] = read.not_in_store
    for name in source.builtin:
        if name in columns:
            raise InputError(f"{source.annot}: column {name!r} is also a built-in column (--annot-builtin); rename it")
        if name == "maf":
            blocks.append(minor_allele_frequency(table.frequency)[:, None])
        else:
            blocks.append(
                store_ld_scores(operator.layout, table.store, table.index, table.contig, window=source.ld_window)[:, None]
            )
        columns += (name,)
    return columns, (np.hstack(blocks) if blocks else None), record


def fit_store(
    inputs,
    source: StoreAnnotations,
    *,
    variance_model: str = "linear",
    client=None,
    config: AnnotConfig = AnnotConfig(),  # noqa: B008 (frozen)
    worker_dtype: str = "float32",
    min_maf: float = 0.0,
    max_missing: float = 1.0,
    memory_budget: int | str | None = None,
    frequencies: Literal["store", "samples"] = "store",
) -> tuple[AnnotatedResult, np.ndarray, dict, list[HeldOut]]:
    """The annotated fit on the variants of a prepared fit (`dreml.fit.prepare_inputs`).

    Loads the shards on the cluster (`GenotypeOperator`), reads the annotations of the fitted
    variants (after filters, in `dreml.fit.variant_table` order; `store_annotations`), runs
    `fit_annotated` and, for `source.holdout`, `heldout_loglik`; `ldak` takes p_j from the
    operator's standardisation.

    Returns:
        (the result, the fitted variants' IDs, a description of the inputs for the report,
        one `HeldOut` per held-out chromosome).

    Raises:
        InputError: bad annotations; a variant in several components (the model has one
            variance per variant: use non-overlapping components or one component).
    """
    from dreml.fit import variant_table
    from dreml.operators import GenotypeOperator

    data = inputs.data
    with GenotypeOperator(
        inputs.stores,
        inputs.spec,
        data.sample_index,
        client=client,
        dtype=np.dtype(worker_dtype),
        memory_budget=memory_budget,
        min_maf=min_maf,
        max_missing=max_missing,
        frequencies=frequencies,
    ) as operator:
        table = variant_table(operator)
        keys = table.store.astype(np.int64) * (int(table.index.max()) + 1) + table.index.astype(np.int64)
        if np.unique(keys).size != keys.size:
            raise InputError(
                "annotated fit: a variant belongs to several components; give components that do not "
                "overlap (each variant has one variance)"
            )
        ids = np.asarray(table.id).astype(str)
        columns, A, record = store_annotations(source, operator, table)
        p = np.asarray(table.frequency, dtype=np.float64)
        result = fit_annotated(
            operator, data.y, data.X, annotations=A, columns=columns, variance_model=variance_model, frequencies=p, config=config
        )
        heldout = []
        if source.holdout:
            heldout = heldout_loglik(
                operator,
                data.y,
                data.X,
                chromosomes=np.asarray(table.contig).astype(str),
                holdout=source.holdout,
                annotations=A,
                columns=columns,
                variance_model=variance_model,
                frequencies=p,
                config=dataclasses.replace(config, seed=result.seed),
            )
            logger.info("held-out chromosomes:\n%s", heldout_text(heldout))
    description = {
        **inputs.description,
        "annot": None if source.annot is None else str(source.annot),
        "annot_builtin": list(source.builtin),
        "ld_window": source.ld_window if "ld_score" in source.builtin else None,
        "max_missing_annot": source.max_missing,
        "annot_holdout_chr": list(source.holdout),
        **record,
        "variance_model": variance_model,
        "annotation_columns": list(columns),
        "min_maf": min_maf,
        "max_missing": max_missing,
        "freq_from": frequencies,
        "worker_dtype": worker_dtype,
    }
    return result, ids, description, heldout
