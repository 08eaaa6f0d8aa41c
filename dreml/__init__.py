"""dreml: distributed, matrix-free REML for genotype-defined variance components."""

from dreml._version import __version__
from dreml.errors import ComponentSpecError, DremlError, InputError
from dreml.operators import DenseOperator, GRMOperator
from dreml.simulate import SimulationConfig, simulate_cohort
from dreml.store import Store, StoreError, open_store

__all__ = [
    "__version__",
    "ComponentSpecError",
    "DenseOperator",
    "DremlError",
    "GRMOperator",
    "InputError",
    "SimulationConfig",
    "Store",
    "StoreError",
    "open_store",
    "simulate_cohort",
]
