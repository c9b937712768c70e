"""The paper's Figure 1: wall time of the eNTK and the pNTK for a pair of inputs over ResNet depths."""

from nt_pntk._src.experiments.figure1 import add_arguments, run

__all__ = ["add_arguments", "run"]
