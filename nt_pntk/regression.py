"""Kernel regression with an N×N kernel as K ⊗ I_O (or the full eNTK), as NT's ``predict``; and in the
primal, from features Φ with K = ΦΦᵀ.

See `predict` and `predict_features`.
"""

from nt_pntk._src.kernels.regression import predict
from nt_pntk._src.kernels.regression_features import predict_features

__all__ = ["predict", "predict_features"]
