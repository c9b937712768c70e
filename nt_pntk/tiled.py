"""Kernels of datasets larger than memory: `kernel_matrix` (tiled, symmetric, on disk, resumable).

See `nt_pntk._src.tiled.kernel_matrix` for how it works.
"""

from __future__ import annotations

from nt_pntk._src import deprecations as _deprecations
from nt_pntk._src.tiled.feature_matrix import feature_matrix
from nt_pntk._src.tiled.kernel_matrix import (
    KernelMatrixPlan,
    KernelMatrixStats,
    NonFiniteKernelError,
    kernel_matrix,
    plan_kernel_matrix,
)

__all__ = [
    "KernelMatrixPlan",
    "KernelMatrixStats",
    "NonFiniteKernelError",
    "feature_matrix",
    "kernel_matrix",
    "plan_kernel_matrix",
]

# Old names (`with_jacobian_features`, `format_bytes`, ...): served with a warning from the one table.
__getattr__ = _deprecations.module_getattr(__name__)
