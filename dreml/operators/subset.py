"""An operator restricted to a subset S of its samples, without new shards.

    (K_g)_SS V = [K_g pad_S(V)]_S,   pad_S(V) = V on the rows S, 0 elsewhere

so a fit on S (a cross-validation training fold, a trait's observed samples) runs on the
shards already resident for all samples, at the cost of passes over n instead of |S| columns
of samples. This holds because the standardisation of Z_g does not depend on S (frequencies
from the store, or from the operator's own samples). Exact traces tr((K_g)_SS) = sum_{i in S}
diag(K_g)_i come from the operator's exact diagonal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dreml.operators.protocol import GRMOperator, GRMOperatorWithTraces, as_block, with_diagonal


class RestrictedOperator:
    """K_g on the samples `rows` of `operator` (which must offer `diagonal()`).

    Arguments:
        operator: a genotype or dense operator over n samples.
        rows: the kept samples, indices into the operator's samples (unique).
    """

    def __init__(self, operator: GRMOperator, rows: Sequence[int] | np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        n = operator.shape[0]
        if rows.ndim != 1 or rows.size == 0 or rows.min() < 0 or rows.max() >= n or np.unique(rows).size != rows.size:
            raise ValueError(f"rows must be unique sample indices in [0, {n})")
        self.operator, self.rows = operator, rows
        self._traces: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), len(self.rows))

    @property
    def n_components(self) -> int:
        return self.operator.n_components

    @property
    def component_names(self) -> tuple[str, ...]:
        return self.operator.component_names

    @property
    def passes(self) -> int:
        return self.operator.passes

    def traces(self) -> np.ndarray:
        """tr((K_g)_SS), shape (G,), from the operator's exact diagonal (computed once)."""
        if self._traces is None:
            self._traces = with_diagonal(self.operator).diagonal()[:, self.rows].sum(axis=1)
        return self._traces

    def pad(self, V: np.ndarray) -> np.ndarray:
        """pad_S(V): shape (n, k) from (|S|, k)."""
        out = np.zeros((self.operator.shape[0],) + V.shape[1:])
        out[self.rows] = V
        return out

    def matmat(self, V: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        block, vector = as_block(V, self.shape[0])
        out = np.asarray(self.operator.matmat(self.pad(block), weights=weights))[..., self.rows, :]
        return out[..., 0] if vector else out


class SelectedComponents:
    """The components `keep` of an operator (a reduced model for a likelihood-ratio test).

    Weighted passes give the dropped components weight 0, which the genotype operators skip;
    stacked passes compute every component and return the kept ones.

    Arguments:
        operator: any GRM operator with exact traces.
        keep: indices of the kept components, in order.
    """

    def __init__(self, operator: GRMOperatorWithTraces, keep: Sequence[int]) -> None:
        self.operator, self.keep = operator, [int(g) for g in keep]
        if not self.keep or len(set(self.keep)) != len(self.keep) or not all(0 <= g < operator.n_components for g in self.keep):
            raise ValueError(f"keep must be distinct component indices in [0, {operator.n_components})")

    @property
    def shape(self) -> tuple[int, int]:
        return self.operator.shape

    @property
    def n_components(self) -> int:
        return len(self.keep)

    @property
    def component_names(self) -> tuple[str, ...]:
        return tuple(self.operator.component_names[g] for g in self.keep)

    @property
    def passes(self) -> int:
        return self.operator.passes

    def traces(self) -> np.ndarray:
        return np.asarray(self.operator.traces())[self.keep]

    def matmat(self, V: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        if weights is None:
            return np.asarray(self.operator.matmat(V))[self.keep]
        full = np.zeros(self.operator.n_components)
        full[self.keep] = np.asarray(weights, dtype=np.float64).reshape(-1)
        return self.operator.matmat(V, weights=full)
