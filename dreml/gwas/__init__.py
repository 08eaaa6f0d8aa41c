"""Genome-wide association: per-variant tests over the resident shards of a genotype operator.

`marginal_gwas` is the plink2 --glm compatible marginal linear regression (all traits in one
pass); `mixed_gwas` is the leave-one-chromosome-out mixed-model test at a fit's variance
components (`dreml gwas mixed`).
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
from dreml.gwas.mixed import (
    ChromosomeReport,
    LocoLayout,
    MixedConfig,
    MixedResult,
    MixedTraitResult,
    check_fit_inputs,
    glm_mixed_text,
    loco_layout,
    loco_operator,
    loco_operator_weights,
    mixed_gwas,
    write_mixed_outputs,
)

__all__ = [
    "MISSING_MODES",
    "MarginalResult",
    "TraitData",
    "TraitResult",
    "glm_linear_text",
    "load_traits",
    "marginal_gwas",
    "union_samples",
    "write_outputs",
    "ChromosomeReport",
    "LocoLayout",
    "MixedConfig",
    "MixedResult",
    "MixedTraitResult",
    "check_fit_inputs",
    "glm_mixed_text",
    "loco_layout",
    "loco_operator",
    "loco_operator_weights",
    "mixed_gwas",
    "write_mixed_outputs",
]
