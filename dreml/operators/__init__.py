"""Operators: the dense reference, the in-process streaming operator and the Dask operator."""

from dreml.operators.dense import DenseOperator
from dreml.operators.distributed import GenotypeOperator
from dreml.operators.protocol import GRMOperator
from dreml.operators.streaming import StreamingOperator, dense_reference
from dreml.operators.subset import RestrictedOperator, SelectedComponents

__all__ = [
    "DenseOperator",
    "GRMOperator",
    "GenotypeOperator",
    "RestrictedOperator",
    "SelectedComponents",
    "StreamingOperator",
    "dense_reference",
]
