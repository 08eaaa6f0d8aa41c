"""Variance maps f: per-variant variances sigma2_j = f(a_j; phi) from annotations, in JAX.

Notation (used across `dreml.annotations`):
    m        variants in the model;  a_j  the annotations of variant j (a row of A, m x q)
    phi      the map's parameters, one flat float64 vector (JAX autodiff gives J = d sigma2 / d phi)
    sigma2_j the variance of variant j's standardised effect: Var(y) = Z diag(sigma2) Z^T + theta_e I

Maps (docs/math.md, "Annotation-driven per-variant variances"):
    ldak    sigma2_j = s v_j / mean_k v_k,  v_j = [2 p_j (1 - p_j)]^(1 + alpha),  phi = (log s, alpha).
            LDAK's alpha model on the standardised scale (Speed et al. 2012, 2017) without LD
            weights: the expected heritability of variant j is proportional to
            [p_j (1 - p_j)]^(1 + alpha); alpha = -1 is GCTA's equal-variance model, LDAK's
            default alpha = -0.25. Normalising by the mean makes s the mean sigma2_j, so
            sum_j sigma2_j = m s whatever alpha, and s and alpha are nearly orthogonal.
    linear  sigma2_j = exp(d_j^T tau),  d_j = (1, a_j) (log-linear; positive whatever tau).
            The intercept is dropped when the constant lies in the span of the columns (binary
            annotations partitioning the variants: then exp(tau_c) is the per-variant variance of
            group c and the model is exactly the partitioned multi-component REML).
            A constant column, or columns that are linearly dependent, are an `InputError`.
    mlp     sigma2_j = s softplus(h(a~_j)) / log 2, h a small multilayer perceptron (tanh hidden
            layers, linear output), a~ the columns standardised to mean 0 and SD 1,
            phi = (log s, the network's weights). The output layer starts at zero, so the
            start is the constant sigma2_j = s.

Every map has `init(c)`: parameters at which sigma2_j = c for every j (the warm start from the
one-component REML fit, c = theta_g / m), `sigma2(phi)` and `names` for its parameters, and
`predict(phi, annotations, frequencies)`: f(a; phi) on other variants (held-out chromosomes),
with the fitted variants' normalisations (ldak's mean of v, mlp's column means and SDs).
`FixedMap` holds a given sigma2 and no parameters (theta_e alone is fitted).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from dreml.errors import InputError

MODELS = ("ldak", "linear", "mlp")


class VarianceMap(Protocol):
    """What the annotated fit needs from a variance map."""

    @property
    def name(self) -> str:
        """The model's name ("ldak", "linear", "mlp")."""

    @property
    def names(self) -> tuple[str, ...]:
        """One name per parameter in phi."""

    @property
    def small(self) -> bool:
        """Few parameters: Fisher scoring (average information) applies; else Adam."""

    def init(self, c: float) -> np.ndarray:
        """phi at which sigma2_j = c for every variant."""

    def sigma2(self, phi: jax.Array) -> jax.Array:
        """sigma2_j for every variant, shape (m,)."""

    def predict(self, phi: np.ndarray, annotations: np.ndarray | None, frequencies: np.ndarray | None) -> np.ndarray:
        """f(a; phi) for other variants' annotations (k, q) / frequencies (k,), shape (k,)."""

    def to_dict(self) -> dict:
        """The map's settings (not its data) for the record."""


def _checked_matrix(A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    A = np.asarray(A, dtype=np.float64)
    if A.ndim == 1:
        A = A[:, None]
    if A.ndim != 2 or A.shape[1] != len(names):
        raise InputError(f"annotations must have shape (m, {len(names)}), got {A.shape}")
    if not np.isfinite(A).all():
        j, c = np.argwhere(~np.isfinite(A))[0]
        raise InputError(f"annotation {names[c]!r} is not finite for variant {j}: {A[j, c]!r}")
    return A


@dataclass(frozen=True, eq=False)
class LdakMap:
    """LDAK's alpha model; `frequencies` p_j of the variants (the operator's standardisation)."""

    frequencies: np.ndarray  # shape: (m,)
    name: str = "ldak"
    _log_v: jax.Array = field(init=False, repr=False)  # shape: (m,), log 2 p_j (1 - p_j)

    def __post_init__(self) -> None:
        p = np.asarray(self.frequencies, dtype=np.float64)
        if p.ndim != 1 or not np.isfinite(p).all() or ((p <= 0) | (p >= 1)).any():
            raise InputError("ldak: every variant needs an allele frequency strictly between 0 and 1")
        object.__setattr__(self, "frequencies", p)
        object.__setattr__(self, "_log_v", jnp.asarray(np.log(2.0 * p * (1.0 - p))))

    @property
    def names(self) -> tuple[str, ...]:
        return ("log_s", "alpha")

    @property
    def small(self) -> bool:
        return True

    def init(self, c: float) -> np.ndarray:
        return np.array([np.log(c), -1.0])

    def sigma2(self, phi: jax.Array) -> jax.Array:
        w = (1.0 + phi[1]) * self._log_v
        w = w - jnp.max(w)  # the normalisation cancels the shift: no overflow for large |alpha|
        v = jnp.exp(w)
        return jnp.exp(phi[0]) * v / jnp.mean(v)

    def predict(self, phi: np.ndarray, annotations: np.ndarray | None, frequencies: np.ndarray | None) -> np.ndarray:
        """s v_k / mean_j v_j: v_k of the new variants over the fitted variants' mean."""
        if frequencies is None:
            raise InputError("ldak variance model: the variants' allele frequencies are needed")
        p = np.asarray(frequencies, dtype=np.float64)
        w = (1.0 + phi[1]) * np.asarray(self._log_v)
        shift = w.max()
        v_new = np.exp((1.0 + phi[1]) * np.log(2.0 * p * (1.0 - p)) - shift)
        return np.exp(phi[0]) * v_new / np.exp(w - shift).mean()

    def to_dict(self) -> dict:
        return {"model": self.name}


@dataclass(frozen=True, eq=False)
class LinearMap:
    """Log-linear map exp(d_j^T tau) on annotation columns `A` (m x q) named `columns`."""

    A: np.ndarray  # shape: (m, q)
    columns: tuple[str, ...]
    name: str = "linear"
    intercept: bool = field(init=False, default=True)
    _D: jax.Array = field(init=False, repr=False)  # shape: (m, q + intercept)

    def __post_init__(self) -> None:
        A = _checked_matrix(self.A, tuple(self.columns))
        for c, col in enumerate(self.columns):
            if np.ptp(A[:, c]) == 0:
                raise InputError(
                    f"linear variance model: annotation {col!r} is constant over the fitted variants "
                    f"(value {A[0, c]:g}); drop it (the intercept already models a constant)"
                )
        q = A.shape[1]
        if q and np.linalg.matrix_rank(A) < q:
            raise InputError(
                f"linear variance model: the annotation columns {', '.join(self.columns)} are linearly dependent; drop one"
            )
        D = np.hstack([np.ones((A.shape[0], 1)), A])
        intercept = np.linalg.matrix_rank(D) == q + 1
        object.__setattr__(self, "A", A)
        object.__setattr__(self, "intercept", bool(intercept))
        object.__setattr__(self, "_D", jnp.asarray(D if intercept else A))

    @property
    def names(self) -> tuple[str, ...]:
        return (("intercept",) if self.intercept else ()) + tuple(f"tau_{c}" for c in self.columns)

    @property
    def small(self) -> bool:
        return True

    def init(self, c: float) -> np.ndarray:
        D = np.asarray(self._D)
        tau, *_ = np.linalg.lstsq(D, np.full(D.shape[0], np.log(c)), rcond=None)
        return tau

    def sigma2(self, phi: jax.Array) -> jax.Array:
        return jnp.exp(self._D @ phi)

    def predict(self, phi: np.ndarray, annotations: np.ndarray | None, frequencies: np.ndarray | None) -> np.ndarray:
        """exp(d_k^T tau) with the fitted variants' choice of intercept (a column may be constant here)."""
        A = np.asarray(annotations, dtype=np.float64).reshape(-1, len(self.columns))
        D = np.hstack([np.ones((A.shape[0], 1)), A]) if self.intercept else A
        return np.exp(D @ np.asarray(phi))

    def to_dict(self) -> dict:
        return {"model": self.name, "columns": list(self.columns), "intercept": self.intercept}


def _mlp_apply(weights, x):
    for W, b in weights[:-1]:
        x = jnp.tanh(x @ W + b)
    W, b = weights[-1]
    return (x @ W + b)[:, 0]


@dataclass(frozen=True, eq=False)
class MlpMap:
    """Small MLP map; `hidden` layer sizes, `seed` for the initial hidden weights."""

    A: np.ndarray  # shape: (m, q)
    columns: tuple[str, ...]
    hidden: tuple[int, ...] = (16,)
    seed: int = 0
    name: str = "mlp"
    _At: jax.Array = field(init=False, repr=False)  # shape: (m, q), standardised A
    _centre: np.ndarray = field(init=False, repr=False)  # shape: (q,), column means of A
    _scale: np.ndarray = field(init=False, repr=False)  # shape: (q,), column SDs (1 for a constant)
    _flat0: np.ndarray = field(init=False, repr=False)  # the initial phi
    _unravel: Callable[[Any], Any] = field(init=False, repr=False)  # phi -> (log_s, layers)

    def __post_init__(self) -> None:
        A = _checked_matrix(self.A, tuple(self.columns))
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise InputError(f"mlp variance model: hidden layer sizes must be positive, got {self.hidden!r}")
        centre, sd = A.mean(axis=0), A.std(axis=0)
        scale = np.where(sd > 0, sd, 1.0)
        At = (A - centre) / scale
        rng = np.random.default_rng(self.seed)
        sizes = (A.shape[1], *[int(h) for h in self.hidden])
        layers = [(rng.standard_normal((a, b)) / np.sqrt(max(a, 1)), np.zeros(b)) for a, b in itertools.pairwise(sizes)]
        layers.append((np.zeros((sizes[-1], 1)), np.zeros(1)))  # output 0: the start is constant
        flat, unravel = ravel_pytree((0.0, layers))
        object.__setattr__(self, "A", A)
        object.__setattr__(self, "_At", jnp.asarray(At))
        object.__setattr__(self, "_centre", centre)
        object.__setattr__(self, "_scale", scale)
        object.__setattr__(self, "_flat0", np.asarray(flat))
        object.__setattr__(self, "_unravel", unravel)

    @property
    def names(self) -> tuple[str, ...]:
        return ("log_s",) + tuple(f"w{i}" for i in range(1, self._flat0.size))

    @property
    def small(self) -> bool:
        return False

    def init(self, c: float) -> np.ndarray:
        phi = self._flat0.copy()
        phi[0] = np.log(c)
        return phi

    def _at(self, phi: jax.Array, At: jax.Array) -> jax.Array:
        log_s, layers = self._unravel(phi)
        return jnp.exp(log_s) * jax.nn.softplus(_mlp_apply(layers, At)) / np.log(2.0)

    def sigma2(self, phi: jax.Array) -> jax.Array:
        return self._at(phi, self._At)

    def predict(self, phi: np.ndarray, annotations: np.ndarray | None, frequencies: np.ndarray | None) -> np.ndarray:
        """The network on the new rows, standardised with the fitted variants' column means and SDs."""
        A = np.asarray(annotations, dtype=np.float64).reshape(-1, len(self.columns))
        return np.asarray(self._at(jnp.asarray(phi), jnp.asarray((A - self._centre) / self._scale)), dtype=np.float64)

    def to_dict(self) -> dict:
        return {"model": self.name, "columns": list(self.columns), "hidden": list(self.hidden), "seed": self.seed}


@dataclass(frozen=True, eq=False)
class FixedMap:
    """A given sigma2 (shape (m,)) and no parameters: `fit_annotated` then fits theta_e alone."""

    values: np.ndarray  # shape: (m,)
    name: str = "fixed"

    @property
    def names(self) -> tuple[str, ...]:
        return ()

    @property
    def small(self) -> bool:
        return True

    def init(self, c: float) -> np.ndarray:
        return np.zeros(0)

    def sigma2(self, phi: jax.Array) -> jax.Array:
        return jnp.asarray(self.values, dtype=jnp.float64)

    def to_dict(self) -> dict:
        return {"model": self.name}


def make_map(
    model: str,
    *,
    annotations: np.ndarray | None,
    columns: tuple[str, ...],
    frequencies: np.ndarray | None,
    hidden: tuple[int, ...] = (16,),
    seed: int = 0,
) -> VarianceMap:
    """The map named `model` ("ldak", "linear", "mlp") on the fitted variants' data."""
    if model == "ldak":
        if frequencies is None:
            raise InputError("ldak variance model: the variants' allele frequencies are needed")
        return LdakMap(np.asarray(frequencies))
    if model in ("linear", "mlp"):
        if annotations is None:
            raise InputError(f"{model} variance model: annotations are needed (--annot)")
        if model == "linear":
            return LinearMap(annotations, tuple(columns))
        return MlpMap(annotations, tuple(columns), tuple(hidden), seed)
    raise InputError(f"unknown variance model {model!r}: choose one of {', '.join(MODELS)}")
