"""dreml: distributed, matrix-free REML for genotype-defined variance components."""

from dreml._version import __version__
from dreml.cluster import connect
from dreml.components import Components
from dreml.errors import ComponentSpecError, DremlError, InputError
from dreml.fit import ComponentChoice, fit
from dreml.operators import DenseOperator, GenotypeOperator, GRMOperator, StreamingOperator, dense_reference
from dreml.reml import FitConfig, RemlResult, fit_reml
from dreml.simulate import SimulationConfig, simulate_cohort
from dreml.store import Store, StoreError, open_store

__all__ = [
    "__version__",
    "ComponentChoice",
    "ComponentSpecError",
    "Components",
    "DenseOperator",
    "DremlError",
    "FitConfig",
    "GRMOperator",
    "GenotypeOperator",
    "InputError",
    "RemlResult",
    "SimulationConfig",
    "Store",
    "StoreError",
    "StreamingOperator",
    "connect",
    "dense_reference",
    "fit",
    "fit_reml",
    "open_store",
    "simulate_cohort",
]
