"""The paper's Figure 1: wall time of the eNTK and the pNTK for a pair of inputs over ResNet depths.

``nt-pntk figure1`` runs it.
"""

from nt_pntk._src.experiments.figure1 import (
    DEFAULT_DEPTHS,
    DEFAULT_OUTPUTS,
    FULL_SIZE,
    REDUCED,
    measure,
    plot,
)

__all__ = ["DEFAULT_DEPTHS", "DEFAULT_OUTPUTS", "FULL_SIZE", "REDUCED", "measure", "plot"]
