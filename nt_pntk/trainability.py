"""Trainability at initialization: λ_max, λ_min and the condition number of a kernel on a minibatch
(TE-NAS's training-free score), from the pNTK, any other N×N approximation, or the full eNTK; and
Kendall's τ of such scores with the accuracies networks reach.

See `scores`, `scores_from_kernel` and `kendall_tau`.
"""

from nt_pntk._src.recipes.trainability import (
    RankCorrelation,
    TrainabilityScores,
    kendall_tau,
    scores,
    scores_from_kernel,
)

__all__ = ["RankCorrelation", "TrainabilityScores", "kendall_tau", "scores", "scores_from_kernel"]
