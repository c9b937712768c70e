"""Kernel regression with an N×N kernel as K ⊗ I_O (or the full eNTK), as NT's ``predict``.

See `predict`.
"""

from nt_pntk._src.kernels.regression import predict

__all__ = ["predict"]
