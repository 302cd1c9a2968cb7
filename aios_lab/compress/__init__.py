"""Compression: int8 / int4 / bf16 quantisation and magnitude pruning of a job's parameters, a jitted
forward that keeps them compressed, and a side-by-side evaluation of the accuracy and size change.

>>> rep = aios.compress("digits-mlp", "int8")       # or %aios compress digits-mlp --method int8
"""

from .api import compress, variant, variants
from .evaluate import Report
from .qmodel import QForward
from .quant import Method, QTensor, compress_params, dequantize_params, parse_method

__all__ = [
    "compress",
    "variant",
    "variants",
    "Report",
    "QForward",
    "Method",
    "QTensor",
    "compress_params",
    "dequantize_params",
    "parse_method",
]
