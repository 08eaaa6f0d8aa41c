"""Operators: the dense reference, the in-process streaming operator and the Dask operator."""

from dreml.operators.dense import DenseOperator
from dreml.operators.protocol import GRMOperator

__all__ = ["DenseOperator", "GRMOperator"]
