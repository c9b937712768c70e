"""Data attribution through a kernel surrogate of a trained network (the pNTK's, exact or sketched),
and the linear datamodeling score that evaluates it.

Scores (N_test × N_train) of the kernel surrogate (Engel et al., ICLR 2024) and TRAK-style (Park et
al., ICML 2023), from kernels (`surrogate_scores`, `trak_scores`) or from features
(`surrogate_feature_scores`, `trak_feature_scores`: linear in N, Φ read in blocks); the margins,
readouts and residuals of a network's logits; `linear_datamodeling_score`. See
`nt_pntk._src.recipes.attribution` for the definitions, and the user guide's "Data attribution" page.
"""

from nt_pntk._src.recipes.attribution import (
    DatamodelingScore,
    linear_datamodeling_score,
    margin_readout,
    margins,
    residuals,
    surrogate_feature_scores,
    surrogate_scores,
    trak_feature_scores,
    trak_scores,
)

__all__ = [
    "DatamodelingScore",
    "linear_datamodeling_score",
    "margin_readout",
    "margins",
    "residuals",
    "surrogate_feature_scores",
    "surrogate_scores",
    "trak_feature_scores",
    "trak_scores",
]
