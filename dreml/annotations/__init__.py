"""Annotation-driven per-variant variances learned by full-likelihood REML (issue 12).

    Var(y) = Z diag(sigma2) Z^T + theta_e I,   sigma2_j = f(a_j; phi)

`fit_annotated(variants, y, X, annotations=..., variance_model="ldak" | "linear" | "mlp")`
on explicit Z or a genotype operator; `fit_store` from a fit's prepared inputs and an
annotation file (the CLI's `--annot`, `--annot-builtin`); `heldout_loglik` for held-out
chromosomes (`--annot-holdout-chr`). Mathematics: docs/math.md, "Annotation-driven
per-variant variances".
"""

from dreml.jax_setup import configure_jax

configure_jax()

from dreml.annotations.fit import (
    AnnotatedResult,
    AnnotConfig,
    Enrichment,
    fit_annotated,
)
from dreml.annotations.holdout import HeldOut, heldout_loglik
from dreml.annotations.maps import FixedMap, LdakMap, LinearMap, MlpMap, make_map
from dreml.annotations.variants import DenseVariants, GenotypeVariants

__all__ = [
    "AnnotConfig",
    "AnnotatedResult",
    "DenseVariants",
    "Enrichment",
    "FixedMap",
    "GenotypeVariants",
    "HeldOut",
    "LdakMap",
    "LinearMap",
    "MlpMap",
    "fit_annotated",
    "heldout_loglik",
    "make_map",
]
