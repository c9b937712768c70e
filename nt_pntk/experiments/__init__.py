"""Experiments with the pNTK: the model zoo, real data, the validation of the paper's claims, Figure 1.

Submodules: `models`, `data`, `validation`, `figure1`.
"""

import importlib
from typing import Any

__all__ = ["data", "figure1", "models", "validation"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"nt_pntk.experiments.{name}")
    raise AttributeError(f"module 'nt_pntk.experiments' has no attribute {name!r}")
