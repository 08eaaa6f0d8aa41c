"""Operators: the dense reference, the in-process streaming operator and the Dask operator."""

from dreml.operators.dense import DenseOperator
from dreml.operators.distributed import GenotypeOperator
from dreml.operators.protocol import GRMOperator
from dreml.operators.streaming import StreamingOperator, dense_reference

__all__ = ["DenseOperator", "GRMOperator", "GenotypeOperator", "StreamingOperator", "dense_reference"]
