"""Phenotype and covariate files, and aligning them with a store's samples.

Files are PLINK/GCTA-style: whitespace-separated, plain or compressed (`dreml.textio`), one
sample a line, an optional header (`FID IID name...`, `#FID IID ...`, `#IID ...`; GCTA's
headerless `FID IID v1 v2...` is detected), `NA` or `-9` for a missing value (as PLINK and
GCTA: any token that reads as the number -9, such as `-9.0`, and `nan` are missing too).
Samples are matched to the store by `dreml.selection.match_samples` (FID+IID where both
carry families, else IID; each file's IIDs must be unique, the store's are by construction).
Covariate files are categorical (GCTA `--covar`), quantitative (`--qcovar`) or auto (numeric
columns quantitative, others categorical); a categorical column becomes indicator columns, one
per level but the first in sorted order. An intercept is always the first column of X.

Samples analysed = store samples with a phenotype value and every requested covariate
value; how many each step drops is recorded in `AnalysisData.report`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dreml.errors import InputError
from dreml.selection import SampleSelection, match_samples
from dreml.textio import numbered_lines

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
    """One PLINK/GCTA-style sample file: its value columns as strings.

    Attributes:
        path: the file read.
        columns: names of the value columns (after FID IID, or IID); `PREFIXk` (k from 1,
            PLINK 2's naming) in a headerless file.
        fid: family IDs, or None in an IID-only file.
        iid: sample IDs in file order.
        values: strings, shape (samples, columns).
        line: the file line number of each sample, for messages.
        header: whether line 1 was a header.
    """

    path: Path
    columns: tuple[str, ...]
    fid: np.ndarray | None
    iid: np.ndarray
    values: np.ndarray
    line: np.ndarray
    header: bool = True

    def column(self, name: str | None) -> tuple[str, np.ndarray]:
        """The named column (default: the first) as (name, strings)."""
        if name is None:
            name = self.columns[0]
        if name not in self.columns:
            raise InputError(f"{self.path}: no column named {name!r} (columns: {', '.join(self.columns)})")
        return name, self.values[:, self.columns.index(name)]

    def numbered(self, k: int, option: str) -> str:
        """The name of the k-th value column (1-based, GCTA's `--mpheno k`)."""
        if not 1 <= k <= len(self.columns):
            raise InputError(
                f"{self.path}: {option} {k}: the file has {len(self.columns)} value column(s) (expected 1..{len(self.columns)})"
            )
        return self.columns[k - 1]


_ID_HEADERS = {("FID", "IID"): 2, ("#FID", "IID"): 2, ("#IID",): 1, ("IID",): 1}


def read_sample_table(path: str | Path, unnamed: str = "PHENO") -> SampleTable:
    """Parse a sample file; errors name the file and the line.

    A header `FID IID name...`, `#FID IID name...`, `#IID name...` or `IID name...` is
    detected; any other first line is data (GCTA's headerless `FID IID v1 v2...`), and the
    columns are named `unnamed`1, `unnamed`2, ...
    """
    path = Path(path)
    lines = [(n, line.split()) for n, line in numbered_lines(path) if line.strip()]
    if not lines:
        raise InputError(f"{path}: file is empty (expected 'FID IID value...' lines, with or without a header)")
    first = lines[0][1]
    width = _ID_HEADERS.get(tuple(first[:2]), _ID_HEADERS.get(tuple(first[:1])))
    header = width is not None
    if width is not None:
        columns = tuple(first[width:])
        rows = lines[1:]
        if not columns:
            raise InputError(f"{path}: line {lines[0][0]}: the header names no value column after {' '.join(first)!r}")
    else:
        width = 2
        columns = tuple(f"{unnamed}{k + 1}" for k in range(len(first) - 2))
        rows = lines
        if not columns:
            raise InputError(
                f"{path}: line {lines[0][0]}: expected 'FID IID value...' "
                f"(a header line starts with FID IID, #FID IID or #IID), got {' '.join(first)!r}"
            )
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise InputError(
            f"{path}: line {lines[0][0]}: column {repeated[0]!r} appears twice in the header (expected unique names)"
        )
    fid, iid, values, numbers = [], [], [], []
    seen: dict[str, int] = {}
    for number, fields in rows:
        if len(fields) != width + len(columns):
            raise InputError(f"{path}: line {number}: expected {width + len(columns)} fields, found {len(fields)}")
        sample = fields[width - 1]
        if sample in seen:
            raise InputError(f"{path}: line {number}: duplicated IID {sample!r} (first on line {seen[sample]})")
        seen[sample] = number
        fid.append(fields[0])
        iid.append(sample)
        values.append(fields[width:])
        numbers.append(number)
    return SampleTable(
        path=path,
        columns=columns,
        fid=np.array(fid, dtype=str) if width == 2 else None,
        iid=np.array(iid, dtype=str),
        values=np.array(values, dtype=object).reshape(len(values), len(columns)),
        line=np.array(numbers, dtype=np.int64),
        header=header,
    )


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


COVARIATE_KINDS = ("auto", "quantitative", "categorical")
MAX_LEVEL_FRACTION = 0.2  # a "categorical" column with more levels than this share of samples is a mistake


@dataclass(frozen=True)
class CovariateFile:
    """A covariate file and how its columns enter X.

    Attributes:
        path: the file (FID IID name..., a header optional).
        kind: 'categorical' (GCTA `--covar`: every column, numeric or not, becomes indicators),
            'quantitative' (GCTA `--qcovar`: every column a number) or 'auto' (numeric columns
            quantitative, others categorical; `--covar-auto`, PLINK 2's reading of `--covar`).
    """

    path: Path
    kind: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in COVARIATE_KINDS:
            raise ValueError(f"covariate kind must be one of {COVARIATE_KINDS}, got {self.kind!r}")
        object.__setattr__(self, "path", Path(self.path))

    @property
    def unnamed(self) -> str:
        """Column-name prefix in a headerless file (PLINK 2 names them COVAR1, ...)."""
        return {"auto": "COVAR", "quantitative": "QCOVAR", "categorical": "CCOVAR"}[self.kind]


def covariate_files(covar) -> tuple[CovariateFile, ...]:
    """`covar` as given to the Python API: None, a path (auto mode) or `CovariateFile`s."""
    if covar is None:
        return ()
    if isinstance(covar, (str, Path)):
        return (CovariateFile(Path(covar)),)
    if isinstance(covar, CovariateFile):
        return (covar,)
    return tuple(c if isinstance(c, CovariateFile) else CovariateFile(Path(c)) for c in covar)


def describe_sample_inputs(covar=None, covar_names=None, covar_cat=(), samples: SampleSelection = SampleSelection()) -> dict:
    """The covariate files and sample lists of an analysis, as its JSON report records them
    (and `dreml gwas mixed` reads them back from a fit's report)."""
    return {
        "covar": [{"path": str(f.path), "kind": f.kind} for f in covariate_files(covar)],
        "covar_names": list(covar_names) if covar_names else None,
        "covar_cat": list(covar_cat),
        "keep": None if samples.keep is None else str(samples.keep),
        "remove": None if samples.remove is None else str(samples.remove),
    }


def _design_columns(
    name: str, raw: np.ndarray, categorical: bool | None, table: SampleTable, lines: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """Design columns of one covariate (no missing values): itself if quantitative, else
    indicators of every level but the first in sorted order.

    `categorical`: True / False forces the kind, None decides by the values (non-numeric:
    categorical). `table` and `lines` (the file line of each value) only serve messages.
    """
    numeric, bad = _parse_numeric(raw)
    if categorical is False and bad is not None:
        raise InputError(
            f"{table.path}: line {lines[bad]}: quantitative covariate {name!r} has non-numeric value "
            f"{raw[bad]!r} (expected a number, NA or -9; categorical columns go in --covar or --covar-cat)"
        )
    if not categorical and bad is None:
        _raise_on_infinite(numeric, raw, table, lines, f"covariate {name!r}")
        return [name], numeric[:, None]
    levels = sorted(set(raw), key=lambda t: (float(t), t) if bad is None else (0.0, t))
    if len(levels) > max(20, MAX_LEVEL_FRACTION * len(raw)):
        raise InputError(
            f"{table.path}: categorical covariate {name!r} has {len(levels)} levels over {len(raw)} samples: "
            "quantitative covariates (PCs, age) go in --qcovar (or --covar-auto), not --covar"
        )
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


@dataclass(frozen=True)
class _Covariate:
    """One covariate column before the design: its values for the analysed samples' rows."""

    name: str
    values: np.ndarray
    categorical: bool | None
    table: SampleTable
    lines: np.ndarray


def _read_covariates(
    files: tuple[CovariateFile, ...], names: list[str] | None, force_categorical: tuple[str, ...]
) -> tuple[list[SampleTable], list[tuple[int, str, bool | None]]]:
    """The covariate tables and the columns used: (table index, column, categorical or None)."""
    tables = [read_sample_table(f.path, unnamed=f.unnamed) for f in files]
    owner: dict[str, int] = {}
    for t, table in enumerate(tables):
        for column in table.columns:
            if column in owner:
                raise InputError(
                    f"{table.path}: covariate column {column!r} is also in {tables[owner[column]].path} (expected unique names)"
                )
            owner[column] = t
    for name in list(names or ()) + list(force_categorical):
        if name not in owner:
            raise InputError(
                f"{', '.join(str(f.path) for f in files)}: no covariate column named {name!r} (columns: {', '.join(owner)})"
            )
    chosen = names if names else list(owner)
    fixed = {"auto": None, "quantitative": False, "categorical": True}
    return tables, [(owner[c], c, True if c in force_categorical else fixed[files[owner[c]].kind]) for c in chosen]


def load_analysis_data(
    store_iid: np.ndarray,
    pheno: str | Path,
    *,
    pheno_name: str | None = None,
    mpheno: int | None = None,
    covar=None,
    covar_names: list[str] | None = None,
    covar_cat: tuple[str, ...] = (),
    store_fid: np.ndarray | None = None,
    samples: SampleSelection = SampleSelection(),
) -> AnalysisData:
    """Align a phenotype (and covariates) with the store's samples.

    Arguments:
        store_iid, store_fid: the store's sample IDs and family IDs in store order (without
            `store_fid`, files are matched on IID alone).
        pheno: phenotype file; `pheno_name` or `mpheno` (1-based column number, GCTA's
            `--mpheno`) picks the column (default: the first).
        covar: covariate file(s): a path (auto mode) or `CovariateFile`s; `covar_names` picks
            columns over all of them (default: all), `covar_cat` forces columns categorical.
        samples: `--keep`/`--remove` lists.

    Returns:
        `AnalysisData` for the samples present everywhere with no missing value.
    """
    store_iid = np.asarray(store_iid, dtype=str)
    store_fid = store_iid if store_fid is None else np.asarray(store_fid, dtype=str)
    if pheno_name is not None and mpheno is not None:
        raise InputError("give --pheno-name or --mpheno, not both")
    table = read_sample_table(pheno)
    name, raw = table.column(table.numbered(mpheno, "--mpheno") if mpheno is not None else pheno_name)
    y_all, bad = _parse_numeric(raw)
    if bad is not None:
        hint = (
            " (line 1 is read as data: a header starts with FID IID, #FID IID or #IID)" if not table.header and bad == 0 else ""
        )
        raise InputError(
            f"{table.path}: line {table.line[bad]}: phenotype {name!r} has non-numeric value {raw[bad]!r} "
            f"(expected a number, NA or -9){hint}"
        )
    _raise_on_infinite(y_all, raw, table, table.line, f"phenotype {name!r}")
    report = {"store_samples": int(len(store_iid))}
    allowed, selection_report = samples.mask(store_fid, store_iid)
    report.update(selection_report)
    report["phenotype_file_samples"] = int(len(table.iid))
    position, rule = match_samples(store_fid, store_iid, table.fid, table.iid)
    logger.info("samples: %s matched to the store on %s", table.path, rule)

    in_store = position >= 0
    selected = in_store & allowed[np.maximum(position, 0)]
    observed = selected & ~np.isnan(y_all)
    report["dropped_not_in_store"] = int((~in_store).sum())
    if len(selection_report):
        report["dropped_by_keep_remove"] = int((in_store & ~selected).sum())
    report["dropped_missing_phenotype"] = int((selected & np.isnan(y_all)).sum())
    index, y = position[observed], y_all[observed]

    files = covariate_files(covar)
    tables, chosen = _read_covariates(files, covar_names, tuple(covar_cat))
    rows = []
    has_row = np.ones(len(index), dtype=bool)
    for ctable in tables:
        cpos, crule = match_samples(store_fid, store_iid, ctable.fid, ctable.iid)
        logger.info("samples: %s matched to the store on %s", ctable.path, crule)
        row_of = np.full(len(store_iid), -1, dtype=np.int64)
        row_of[cpos[cpos >= 0]] = np.flatnonzero(cpos >= 0)
        rows.append(row_of[index])
        has_row &= rows[-1] >= 0
    if files:
        report["dropped_not_in_covariates"] = int((~has_row).sum())
    index, y, rows = index[has_row], y[has_row], [r[has_row] for r in rows]
    covariates = [
        _Covariate(c, tables[t].column(c)[1][rows[t]], kind, tables[t], tables[t].line[rows[t]]) for t, c, kind in chosen
    ]
    complete = np.ones(len(index), dtype=bool)
    for cov in covariates:
        complete &= np.array([not is_missing(v) for v in cov.values], dtype=bool)
    report["dropped_missing_covariate"] = int((~complete).sum())
    index, y = index[complete], y[complete]
    # levels of categorical covariates are taken over the samples actually used
    columns, names = [np.ones((len(index), 1))], ["intercept"]
    for cov in covariates:
        cnames, cols = _design_columns(cov.name, cov.values[complete], cov.categorical, cov.table, cov.lines[complete])
        columns.append(cols)
        names.extend(cnames)
    X = np.hstack(columns)
    report["samples_used"] = int(len(index))

    if len(index) == 0:
        raise InputError(f"{table.path}: no sample has a phenotype value, covariates and genotypes (no overlap with the store)")
    if np.ptp(y) == 0:
        raise InputError(f"{table.path}: phenotype {name!r} is constant over the {len(y)} samples used")
    rank = np.linalg.matrix_rank(X)
    if rank < X.shape[1]:
        source = ", ".join(str(f.path) for f in files) if files else pheno
        raise InputError(
            f"{source}: covariates are rank-deficient over the {len(y)} samples used "
            f"(rank {rank} < {X.shape[1]} columns: {', '.join(names)}); {', '.join(redundant_columns(X, names))} "
            f"is a linear combination of the columns before it (a constant is one of the intercept): drop it"
        )
    order = np.argsort(index, kind="stable")  # store order keeps shard reads sequential
    for step, count in report.items():
        logger.info("samples: %s = %d", step, count)
    return AnalysisData(
        sample_index=index[order],
        iid=store_iid[index[order]],
        y=y[order],
        X=X[order],
        covariate_names=tuple(names),
        phenotype_name=name,
        report=report,
    )
