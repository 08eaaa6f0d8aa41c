"""Phenotype and covariate files, and aligning them with a store's samples.

Files are PLINK-style: whitespace-separated, a header `FID IID name...`, one sample a line,
`NA` or `-9` for a missing value (as PLINK and GCTA: any token that reads as the number -9,
such as `-9.0`, and `nan` are missing too). Samples are matched on IID (each file's IIDs must be
unique; the store's are by construction). A covariate column with any non-numeric value is
categorical and becomes indicator columns, one per level but the first in sorted order.
An intercept is always the first column of X.

Samples analysed = store samples with a phenotype value and every requested covariate
value; how many each step drops is recorded in `AnalysisData.report`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dreml.errors import InputError

logger = logging.getLogger(__name__)

MISSING_TOKENS = frozenset({"NA", "-9", "nan", "NaN"})
MISSING_VALUE = -9.0


def is_missing(token: str) -> bool:
    """True for `NA`, and for any token that reads as NaN or as the number -9 (PLINK's code)."""
    if token in MISSING_TOKENS:
        return True
    try:
        value = float(token)
    except ValueError:
        return False
    return np.isnan(value) or value == MISSING_VALUE


@dataclass(frozen=True)
class SampleTable:
    """One PLINK-style file: its columns as strings, keyed by IID.

    Attributes:
        path: the file read.
        columns: names of the value columns (after FID IID).
        iid: sample IDs in file order.
        values: strings, shape (samples, columns).
        line: the file line number of each sample, for messages.
    """

    path: Path
    columns: tuple[str, ...]
    iid: np.ndarray
    values: np.ndarray
    line: np.ndarray

    def column(self, name: str | None) -> tuple[str, np.ndarray]:
        """The named column (default: the first) as (name, strings)."""
        if name is None:
            name = self.columns[0]
        if name not in self.columns:
            raise InputError(
                f"{self.path}: no column named {name!r} (columns: {', '.join(self.columns)})"
            )
        return name, self.values[:, self.columns.index(name)]


def read_sample_table(path: str | Path) -> SampleTable:
    """Parse a `FID IID name...` file; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    with open(path) as f:
        lines = [(i + 1, line.split()) for i, line in enumerate(f) if line.strip()]
    if not lines:
        raise InputError(f"{path}: file is empty (expected a header 'FID IID name...')")
    header_line, header = lines[0]
    if len(header) < 3 or header[0] not in ("FID", "#FID") or header[1] != "IID":
        raise InputError(f"{path}: line {header_line}: expected a header 'FID IID name...', got {' '.join(header[:3])!r}")
    columns = tuple(header[2:])
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise InputError(f"{path}: line {header_line}: column {repeated[0]!r} appears twice in the header (expected unique names)")
    iid, rows, seen, numbers = [], [], {}, []
    for number, fields in lines[1:]:
        if len(fields) != len(header):
            raise InputError(f"{path}: line {number}: expected {len(header)} fields, found {len(fields)}")
        if fields[1] in seen:
            raise InputError(f"{path}: line {number}: duplicated IID {fields[1]!r} (first on line {seen[fields[1]]})")
        seen[fields[1]] = number
        iid.append(fields[1])
        rows.append(fields[2:])
        numbers.append(number)
    values = np.array(rows, dtype=object).reshape(len(rows), len(columns))
    return SampleTable(path=path, columns=columns, iid=np.array(iid, dtype=str), values=values, line=np.array(numbers, dtype=np.int64))


def _parse_numeric(raw: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Values as floats (NaN for missing) and the index of the first non-numeric token, if any."""
    out = np.full(len(raw), np.nan)
    for i, token in enumerate(raw):
        if is_missing(token):
            continue
        try:
            out[i] = float(token)
        except ValueError:
            return out, i
    return out, None


def _raise_on_infinite(values: np.ndarray, raw: np.ndarray, table: SampleTable, lines: np.ndarray, what: str) -> None:
    """An infinite value would reach the solver as a silent NaN: name its line instead."""
    infinite = np.flatnonzero(np.isinf(values))
    if len(infinite):
        i = infinite[0]
        raise InputError(f"{table.path}: line {lines[i]}: {what} has value {raw[i]!r} (expected a finite number, NA or -9)")


def _design_columns(name: str, raw: np.ndarray, table: SampleTable, lines: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Design columns of one covariate (no missing values): itself if numeric, else indicators.

    `table` and `lines` (the file line of each value) only serve error messages.
    """
    numeric, bad = _parse_numeric(raw)
    if bad is None:
        _raise_on_infinite(numeric, raw, table, lines, f"covariate {name!r}")
        return [name], numeric[:, None]
    levels = sorted(set(raw))
    cols = np.array([[float(t == level) for level in levels[1:]] for t in raw]).reshape(len(raw), -1)
    return [f"{name}_{level}" for level in levels[1:]], cols


def redundant_columns(X: np.ndarray, names: list[str]) -> list[str]:
    """The columns of X (in order) that lie in the span of the columns before them."""
    out, rank = [], 0
    for j in range(X.shape[1]):
        r = np.linalg.matrix_rank(X[:, : j + 1])
        if r == rank:
            out.append(names[j])
        rank = r
    return out


@dataclass(frozen=True)
class AnalysisData:
    """Phenotype, design matrix and the store samples they belong to.

    Attributes:
        sample_index: indices into the store's samples, shape (n,).
        iid: the IIDs of those samples.
        y: phenotype, shape (n,).
        X: fixed-effect design, shape (n, p); column 0 is the intercept.
        covariate_names: names of the columns of X.
        phenotype_name: the phenotype column used.
        report: sample counts at each step (JSON-serialisable).
    """

    sample_index: np.ndarray
    iid: np.ndarray
    y: np.ndarray
    X: np.ndarray
    covariate_names: tuple[str, ...]
    phenotype_name: str
    report: dict = field(default_factory=dict)


def load_analysis_data(
    store_iid: np.ndarray,
    pheno: str | Path,
    *,
    pheno_name: str | None = None,
    covar: str | Path | None = None,
    covar_names: list[str] | None = None,
) -> AnalysisData:
    """Align a phenotype (and covariates) with the store's samples.

    Arguments:
        store_iid: the store's sample IDs in store order.
        pheno: phenotype file; `pheno_name` picks the column (default: the first).
        covar: optional covariate file; `covar_names` picks columns (default: all).

    Returns:
        `AnalysisData` for the samples present everywhere with no missing value.
    """
    store_iid = np.asarray(store_iid, dtype=str)
    table = read_sample_table(pheno)
    name, raw = table.column(pheno_name)
    y_all, bad = _parse_numeric(raw)
    if bad is not None:
        raise InputError(
            f"{table.path}: line {table.line[bad]}: phenotype {name!r} has non-numeric value {raw[bad]!r} (expected a number, NA or -9)"
        )
    _raise_on_infinite(y_all, raw, table, table.line, f"phenotype {name!r}")
    position = {iid: i for i, iid in enumerate(store_iid)}
    report = {"store_samples": int(len(store_iid)), "phenotype_file_samples": int(len(table.iid))}

    in_store = np.array([iid in position for iid in table.iid], dtype=bool)
    observed = in_store & ~np.isnan(y_all)
    report["dropped_not_in_store"] = int((~in_store).sum())
    report["dropped_missing_phenotype"] = int((in_store & np.isnan(y_all)).sum())
    iid = table.iid[observed]
    y = y_all[observed]

    raw_covariates: list[tuple[str, np.ndarray]] = []
    if covar is not None:
        ctable = read_sample_table(covar)
        cpos = {c: i for i, c in enumerate(ctable.iid)}
        has_row = np.array([c in cpos for c in iid], dtype=bool)
        report["dropped_not_in_covariates"] = int((~has_row).sum())
        iid, y = iid[has_row], y[has_row]
        rows = np.array([cpos[c] for c in iid], dtype=np.int64)
        raw_covariates = [ctable.column(c) for c in (covar_names or list(ctable.columns))]
        raw_covariates = [(c, values[rows]) for c, values in raw_covariates]
    complete = np.ones(len(iid), dtype=bool)
    for _, values in raw_covariates:
        complete &= np.array([not is_missing(t) for t in values], dtype=bool)
    report["dropped_missing_covariate"] = int((~complete).sum())
    iid, y = iid[complete], y[complete]
    # levels of categorical covariates are taken over the samples actually used
    columns, names = [np.ones((len(iid), 1))], ["intercept"]
    for cname, values in raw_covariates:
        cnames, cols = _design_columns(cname, values[complete], ctable, ctable.line[rows[complete]])
        columns.append(cols)
        names.extend(cnames)
    X = np.hstack(columns)
    report["samples_used"] = int(len(iid))

    if len(iid) == 0:
        raise InputError(f"{table.path}: no sample has a phenotype value, covariates and genotypes (no overlap with the store)")
    if np.ptp(y) == 0:
        raise InputError(f"{table.path}: phenotype {name!r} is constant over the {len(y)} samples used")
    rank = np.linalg.matrix_rank(X)
    if rank < X.shape[1]:
        source = covar if covar is not None else pheno
        raise InputError(
            f"{source}: covariates are rank-deficient over the {len(y)} samples used "
            f"(rank {rank} < {X.shape[1]} columns: {', '.join(names)}); {', '.join(redundant_columns(X, names))} "
            f"is a linear combination of the columns before it (a constant is one of the intercept): drop it"
        )
    sample_index = np.array([position[c] for c in iid], dtype=np.int64)
    order = np.argsort(sample_index, kind="stable")  # store order keeps shard reads sequential
    for step, count in report.items():
        logger.info("samples: %s = %d", step, count)
    return AnalysisData(
        sample_index=sample_index[order], iid=iid[order], y=y[order], X=X[order],
        covariate_names=tuple(names), phenotype_name=name, report=report,
    )
