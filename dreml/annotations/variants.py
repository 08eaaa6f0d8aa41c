"""Per-variant products Z^T U and Z B for the annotated model, on explicit Z or a genotype operator.

Z (n x m) is the standardised genotype matrix of the fitted variants, the same standardisation
as the components' (`dreml.operators`). The annotated covariance products are
    K(sigma2) V = Z (sigma2 * (Z^T V))
through `zt` then `z`: two passes per product on a genotype operator (its `zt_matmat` then its
`z_matmat`). A fused one-pass weighted shard product (Z_s diag(sigma2_s) Z_s^T V per shard,
as `matmat(V, weights)` does per component) would halve that; it is a later optimisation of
the operator layer.

`DenseVariants` holds Z explicitly (small n; the reference); `GenotypeVariants` wraps any
operator with `zt_matmat` / `z_matmat` / `m` (`StreamingOperator`, `GenotypeOperator`): its
variants are those of every component in component order (the order of
`dreml.fit.variant_table`). `OneComponent` turns either into a one-component GRM operator
K = Z Z^T / m for `fit_reml` (the warm start). `SubsetVariants` restricts either to some of its
variants (a held-out chromosome, or the others): a full pass each, the other rows dropped or
zero.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from dreml.operators.protocol import as_block


class VariantOperator(Protocol):
    """Products with the standardised genotypes Z (n x m) of the fitted variants."""

    @property
    def n(self) -> int: ...

    @property
    def m(self) -> int: ...

    @property
    def passes(self) -> int: ...

    def zt(self, U: np.ndarray) -> np.ndarray:
        """Z^T U, shape (m, k) for U of shape (n, k). One pass."""

    def z(self, B: np.ndarray) -> np.ndarray:
        """Z B, shape (n, k) for B of shape (m, k). One pass."""

    def explicit(self) -> np.ndarray:
        """Z as an (n, m) float64 array (small n only)."""

    def sum_squares(self) -> np.ndarray | None:
        """||z_j||^2 per variant, shape (m,), exactly; None when unknown (no control variates)."""


class DenseVariants:
    """Z held as an explicit (n, m) float64 matrix."""

    def __init__(self, Z: np.ndarray) -> None:
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2:
            raise ValueError(f"Z must have shape (n, m), got {Z.shape}")
        self.Z = Z
        self._passes = 0

    @property
    def n(self) -> int:
        return self.Z.shape[0]

    @property
    def m(self) -> int:
        return self.Z.shape[1]

    @property
    def passes(self) -> int:
        return self._passes

    def zt(self, U: np.ndarray) -> np.ndarray:
        self._passes += 1
        return self.Z.T @ U

    def z(self, B: np.ndarray) -> np.ndarray:
        self._passes += 1
        return self.Z @ B

    def explicit(self) -> np.ndarray:
        return self.Z

    def sum_squares(self) -> np.ndarray:
        return np.einsum("ij,ij->j", self.Z, self.Z)


class GenotypeVariants:
    """The variants of a genotype operator (every component, in component order).

    A variant that belongs to several components appears once per component: give the
    annotated fit components that do not overlap (`dreml.annotations.fit_genotypes` checks).
    """

    def __init__(self, operator) -> None:
        self.operator = operator
        self._sizes = [int(x) for x in operator.m]
        self._bounds = np.cumsum([0] + self._sizes)

    @property
    def n(self) -> int:
        return self.operator.shape[0]

    @property
    def m(self) -> int:
        return int(self._bounds[-1])

    @property
    def passes(self) -> int:
        return self.operator.passes

    def zt(self, U: np.ndarray) -> np.ndarray:
        block, _ = as_block(U, self.n)
        return np.concatenate(self.operator.zt_matmat(block), axis=0)

    def z(self, B: np.ndarray) -> np.ndarray:
        B = np.asarray(B, dtype=np.float64)
        B = B[:, None] if B.ndim == 1 else B
        parts = [B[a:b] for a, b in zip(self._bounds[:-1], self._bounds[1:])]
        return self.operator.z_matmat(parts).sum(axis=0)

    def explicit(self) -> np.ndarray:
        return self.zt(np.eye(self.n)).T

    def sum_squares(self) -> None:
        return None


class SubsetVariants:
    """The variants `index` (shape (k,)) of another `VariantOperator`: Z[:, index]."""

    def __init__(self, variants: VariantOperator, index: np.ndarray) -> None:
        self.variants = variants
        self.index = np.asarray(index, dtype=np.int64)
        norms = variants.sum_squares()
        self._sum_squares = None if norms is None else norms[self.index]

    @property
    def n(self) -> int:
        return self.variants.n

    @property
    def m(self) -> int:
        return int(self.index.size)

    @property
    def passes(self) -> int:
        return self.variants.passes

    def zt(self, U: np.ndarray) -> np.ndarray:
        return self.variants.zt(U)[self.index]

    def z(self, B: np.ndarray) -> np.ndarray:
        B = np.asarray(B, dtype=np.float64)
        full = np.zeros((self.variants.m, *B.shape[1:]))
        full[self.index] = B
        return self.variants.z(full)

    def explicit(self) -> np.ndarray:
        return self.variants.explicit()[:, self.index]

    def sum_squares(self) -> np.ndarray | None:
        return self._sum_squares


class OneComponent:
    """K = Z Z^T / m as a one-component `GRMOperator` (two passes per product)."""

    def __init__(self, variants: VariantOperator, name: str = "G1") -> None:
        self.variants = variants
        self._name = name
        self._sum_squares = variants.sum_squares()
        if self._sum_squares is None:
            # hides traces(): the engine then estimates tr(K) from its probes
            self.traces = None  # type: ignore[method-assign,assignment]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.variants.n, self.variants.n)

    @property
    def n_components(self) -> int:
        return 1

    @property
    def component_names(self) -> tuple[str, ...]:
        return (self._name,)

    @property
    def passes(self) -> int:
        return self.variants.passes

    def traces(self) -> np.ndarray:
        """tr(K) = sum_j ||z_j||^2 / m, shape (1,)."""
        assert self._sum_squares is not None  # else traces is None (__init__)
        return np.array([self._sum_squares.sum() / self.variants.m])

    def matmat(self, V: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        block, vector = as_block(V, self.variants.n)
        out = self.variants.z(self.variants.zt(block)) / self.variants.m
        if weights is not None:
            out = float(np.asarray(weights).reshape(-1)[0]) * out
        else:
            out = out[None]
        return out[..., 0] if vector else out
