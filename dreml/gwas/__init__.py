"""Genome-wide association: per-variant tests over the resident shards of a genotype operator.

`marginal_gwas` is the plink2 --glm compatible marginal linear regression (all traits in one
pass); a mixed-model (LOCO) test is to follow as `dreml gwas mixed`.
"""

from dreml.gwas.marginal import (
    MISSING_MODES,
    MarginalResult,
    TraitData,
    TraitResult,
    glm_linear_text,
    load_traits,
    marginal_gwas,
    union_samples,
    write_outputs,
)

__all__ = ["MISSING_MODES", "MarginalResult", "TraitData", "TraitResult", "glm_linear_text", "load_traits",
           "marginal_gwas", "union_samples", "write_outputs"]
