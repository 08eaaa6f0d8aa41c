"""Sparse REML on a store and a cluster: the penalised set, the two operators, the outputs.

The penalised set S is read from a file (`--sparse-set F`: one variant ID a line, optionally a
positive penalty weight in a second column; `#` comments and a header line whose first word
is not a store variant are skipped) or taken as every variant whose MAF over the store is
below a threshold (`--sparse-maf-below X`, weights 1). The weights default to w_j = 1 on the
standardised scale (z_j has unit variance), so rarer variants are not penalised more per unit
of z. Variants of S leave the polygenic components (a variant is either a sparse fixed effect
or part of a variance component, never both); components left empty are dropped. S lives on
its own genotype operator (one component; sparse shards on a format 1.1 store), on the same
cluster and samples. With several stores S is taken from the first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dreml.components import Components
from dreml.errors import InputError
from dreml.fit import FitInputs
from dreml.lasso.metric import PenalisedColumns
from dreml.lasso.path import SparseConfig, SparsePath, fit_sparse_reml
from dreml.operators import GenotypeOperator
from dreml.outputs import atomic_write_text, write_json
from dreml.reml import FitConfig
from dreml.store import Store
from dreml.textio import is_number, numbered_lines

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PenalisedSet:
    """Store variant indices (sorted) and their penalty weights w_j > 0; `source` names where from."""

    indices: np.ndarray  # shape: (s,)
    weights: np.ndarray  # shape: (s,)
    source: str


def read_penalised_set(path: str | Path, store: Store) -> PenalisedSet:
    """`--sparse-set F` (module docstring); one-line errors name the file and line."""
    index_of = {v: j for j, v in enumerate(store.variant_id)}
    found: dict[int, float] = {}
    absent = 0
    for number, line in numbered_lines(path):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] not in index_of:
            if not found and not absent and number == 1 and (len(words) == 1 or not is_number(words[1])):
                continue  # a header line
            absent += 1
            continue
        if len(words) > 2:
            raise InputError(f"{path}, line {number}: expected a variant ID and an optional weight, got {len(words)} fields")
        weight = 1.0
        if len(words) == 2:
            if not is_number(words[1]):
                raise InputError(f"{path}, line {number}: weight {words[1]!r} is not a number")
            weight = float(words[1])
            if not (np.isfinite(weight) and weight > 0):
                raise InputError(f"{path}, line {number}: weight {words[1]} of {words[0]} must be positive and finite")
        j = index_of[words[0]]
        if j in found:
            raise InputError(f"{path}, line {number}: variant {words[0]} is listed twice")
        found[j] = weight
    if absent:
        logger.warning("%s: %d variant ID(s) not in the store, ignored", path, absent)
    if not found:
        raise InputError(f"{path}: no variant of the store is listed: the penalised set is empty")
    indices = np.array(sorted(found), dtype=np.int64)
    return PenalisedSet(indices, np.array([found[j] for j in indices]), str(path))


def rare_penalised_set(store: Store, maf_below: float) -> PenalisedSet:
    """Every variant with store MAF in (0, maf_below), weight 1."""
    if not 0 < maf_below <= 0.5:
        raise InputError(f"--sparse-maf-below must lie in (0, 0.5], got {maf_below}")
    maf = store.variant_maf
    indices = np.flatnonzero((maf > 0) & (maf < maf_below))
    if len(indices) == 0:
        raise InputError(f"{store.path}: no variant has a MAF below {maf_below}: the penalised set is empty")
    return PenalisedSet(indices, np.ones(len(indices)), f"MAF < {maf_below}")


def without(components: Components, penalised: PenalisedSet) -> Components:
    """The components of store 0 without the penalised variants; empty ones dropped (one error if all are)."""
    keep, indices = [], []
    for g, (idx, s) in enumerate(zip(components.variant_indices, components.stores)):
        left = idx if s != 0 else np.setdiff1d(idx, penalised.indices)
        if len(left):
            keep.append(g)
            indices.append(left)
        else:
            logger.warning("component %r holds only penalised variants: dropped", components.names[g])
    if not keep:
        raise InputError("every component variant is in the penalised set: no polygenic component is left")
    return Components(
        names=tuple(components.names[g] for g in keep),
        variant_indices=tuple(indices),
        stores=tuple(components.stores[g] for g in keep),
        annotations=tuple(components.annotations[g] for g in keep),
        source=components.source,
    )


@dataclass(frozen=True)
class SparseResult:
    """The path with the penalised variants it ran on.

    Fields:
        path: the `SparsePath`. variants: store indices of the penalised variants kept
            (monomorphic ones dropped), in the order of `b`. weights: their w_j.
        scale: sqrt(2 p_j (1 - p_j)) of each, to turn a standardised effect into one per allele.
        component_names: the polygenic components. n_samples: analysed samples.
    """

    path: SparsePath
    variants: np.ndarray
    weights: np.ndarray
    scale: np.ndarray
    component_names: tuple[str, ...]
    n_samples: int


def fit_sparse(
    inputs: FitInputs,
    penalised: PenalisedSet,
    *,
    client=None,
    config: FitConfig = FitConfig(),
    sparse: SparseConfig | None = None,
    min_maf: float = 0.0,
    max_missing: float = 1.0,
    memory_budget: int | str | None = None,
) -> SparseResult:
    """Load the polygenic and the penalised operators and run `fit_sparse_reml`."""
    sparse = sparse or SparseConfig()
    data = inputs.data
    components = without(inputs.spec, penalised)
    common = {"client": client, "dtype": np.dtype(config.worker_dtype), "memory_budget": memory_budget}
    with (
        GenotypeOperator(inputs.stores, components, data.sample_index, min_maf=min_maf, max_missing=max_missing, **common) as op,
        GenotypeOperator(inputs.stores, Components(("sparse",), (penalised.indices,)), data.sample_index, **common) as op_s,
    ):
        kept = op_s.layout.components.variant_indices[0]
        if len(kept) < len(penalised.indices):
            logger.warning("%d penalised variant(s) are monomorphic: dropped", len(penalised.indices) - len(kept))
        weights = penalised.weights[np.searchsorted(penalised.indices, kept)]
        path = fit_sparse_reml(op, PenalisedColumns(op_s), data.y, data.X, weights, sparse, config)
        p = op_s.layout.frequencies[0][kept]
        names = tuple(op.component_names)
    return SparseResult(path, kept, weights, np.sqrt(2 * p * (1 - p)), names, len(data.y))


def selected_tsv(result: SparseResult, store: Store) -> str:
    """PREFIX.sparse.tsv: the non-zero effects at the selected lambda (the last one without selection)."""
    point = result.path.selected or result.path.points[-1]
    solution = point.solution
    header = "SNP\tCHR\tBP\tREF\tALT\tWEIGHT\tB_STD\tB_ALLELE\tKKT_RATIO\n"
    rows = []
    for i in solution.active:
        j = result.variants[i]
        ref, alt = store.variant_allele[j][:2]
        ratio = abs(solution.c[i]) / (solution.lam * result.weights[i])
        rows.append(
            f"{store.variant_id[j]}\t{store.contig_id[store.variant_contig[j]]}\t{store.variant_position[j]}\t{ref}\t{alt}\t"
            f"{result.weights[i]:.6g}\t{solution.b[i]:.6g}\t{solution.b[i] / result.scale[i]:.6g}\t{ratio:.6f}\n"
        )
    return header + "".join(rows)


def path_tsv(result: SparseResult) -> str:
    """PREFIX.lambda.tsv: one row per lambda (theta, active variants, KKT, cross-validation)."""
    names = [*result.component_names, "e"]
    header = ["LAMBDA", "N_ACTIVE", *[f"THETA_{n}" for n in names], "H2", "ROUNDS", "KKT_VIOLATIONS", "CV_MSE", "CV_R2"]
    lines = ["\t".join(header)]
    for point in result.path.points:
        theta = point.theta
        lines.append(
            "\t".join(
                [
                    f"{point.solution.lam:.6g}",
                    str(len(point.solution.active)),
                    *[f"{t:.6g}" for t in theta],
                    f"{np.sum(theta[:-1]) / np.sum(theta):.6g}",
                    str(point.rounds),
                    str(point.solution.kkt.violations),
                    f"{point.cv_mse:.6g}",
                    f"{point.cv_r2:.6g}",
                ]
            )
        )
    return "\n".join(lines) + "\n"


def report(result: SparseResult, store: Store, description: dict) -> dict:
    """The PREFIX.sparse.json document."""
    path = result.path
    point = path.selected or path.points[-1]
    kkt = point.solution.kkt
    config = path.config
    return {
        **description,
        "model": "y = X beta + Z_S b + sum_g u_g + e, weighted L1 penalty on b (docs/math.md, sparse REML)",
        "seed": config.seed,
        "settings": {
            "n_lambda": config.n_lambda,
            "lambda_min_ratio": config.lambda_min_ratio,
            "reml_rounds": config.reml_rounds,
            "theta_tol": config.theta_tol,
            "kkt_tol": config.kkt_tol,
            "solve_tol": config.solve_tol,
            "folds": config.folds,
            "rule": config.rule,
            "max_active": config.max_active,
        },
        "lambdas_planned": config.n_lambda,
        "n_samples": result.n_samples,
        "n_penalised": len(result.variants),
        "components": list(result.component_names),
        "lambda_max": path.lambda_max,
        "theta_null": path.theta_null.tolist(),
        "selected": None
        if path.chosen is None
        else {
            "index": path.chosen,
            "lambda": point.solution.lam,
            "criterion": "minimum held-out MSE" if config.rule == "min" else "largest lambda within 1 SE of the minimum MSE",
            "theta": point.theta.tolist(),
            "n_active": len(point.solution.active),
            "variants": [str(store.variant_id[result.variants[i]]) for i in point.solution.active],
            "beta": point.solution.beta.tolist(),
        },
        "kkt": {**kkt.to_dict(), "worst_variant": str(store.variant_id[result.variants[kkt.worst]])},
        "path": [
            {
                "lambda": p.solution.lam,
                "n_active": len(p.solution.active),
                "theta": p.theta.tolist(),
                "rounds": p.rounds,
                "kkt": p.solution.kkt.to_dict(),
                "cv_mse": p.cv_mse,
                "cv_r2": p.cv_r2,
                "cv_mse_se": p.cv_mse_se,
                "converged": p.converged,
                "status": p.status,
            }
            for p in path.points
        ],
        "passes": path.passes,
        "converged": path.converged,
    }


def write_sparse(result: SparseResult, store: Store, prefix: str, description: dict) -> list[Path]:
    """PREFIX.sparse.tsv, PREFIX.lambda.tsv and PREFIX.sparse.json, each through a temporary name."""
    paths = [Path(f"{prefix}.sparse.tsv"), Path(f"{prefix}.lambda.tsv"), Path(f"{prefix}.sparse.json")]
    atomic_write_text(paths[0], selected_tsv(result, store))
    atomic_write_text(paths[1], path_tsv(result))
    write_json(report(result, store, description), paths[2])
    return paths
