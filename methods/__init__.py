"""Semi-supervised methods, one small module each, registered by name.

Importing this package registers the built-in methods.
"""

from sslbench.methods import mean_teacher, pi_model, supervised, temporal_ensembling
from sslbench.methods.base import Batch, Method, MethodContext, StepLosses
from sslbench.methods.registry import get_method, method_names, register

__all__ = [
    "Batch",
    "Method",
    "MethodContext",
    "StepLosses",
    "get_method",
    "mean_teacher",
    "method_names",
    "pi_model",
    "register",
    "supervised",
    "temporal_ensembling",
]
