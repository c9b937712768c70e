"""Kernels of datasets larger than memory: `kernel_matrix` (tiled, symmetric, on disk, resumable).

See `nt_pntk._src.tiled.kernel_matrix` for how it works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nt_pntk._src import checks
from nt_pntk._src.kernels.approximations import PNTK, EmpiricalKernelFn, Trace
from nt_pntk._src.kernels.features import NotAGramKernel
from nt_pntk._src.tiled.kernel_matrix import (
    KernelMatrixPlan,
    KernelMatrixStats,
    NonFiniteKernelError,
    kernel_matrix,
    plan_kernel_matrix,
)
from nt_pntk._src.tiled.planning import format_bytes, parse_bytes
from nt_pntk._src.tiled.routes import Choice, Estimate

__all__ = [
    "Choice",
    "Estimate",
    "KernelMatrixPlan",
    "KernelMatrixStats",
    "NonFiniteKernelError",
    "NotAGramKernel",
    "format_bytes",
    "kernel_matrix",
    "parse_bytes",
    "plan_kernel_matrix",
]


def with_jacobian_features(
    kernel_fn: Callable,
    apply_fn: Callable,
    *,
    trace_axes: Any = (-1,),
    diagonal_axes: Any = (),
    vmap_axes: Any = None,
    pseudo: bool = False,
) -> EmpiricalKernelFn:
    """Deprecated: use ``Trace().kernel_fn(apply_fn, ...)`` (or ``PNTK()`` for ``pseudo=True``).

    The kernel function of the approximation, whose Gram features `kernel_matrix`
    reuses; ``kernel_fn`` is not used (it had to be the same kernel).
    """
    new = "nt_pntk.approximations.PNTK().kernel_fn" if pseudo else "nt_pntk.approximations.Trace().kernel_fn"
    checks.deprecated("nt_pntk.tiled.with_jacobian_features", f"{new}(apply_fn, ...)")
    del kernel_fn
    approximation = PNTK() if pseudo else Trace()
    return approximation.kernel_fn(
        apply_fn, trace_axes=trace_axes, diagonal_axes=diagonal_axes, vmap_axes=vmap_axes
    )


def jacobian_features_fn(
    f: Callable, trace_axes: Any = (-1,), diagonal_axes: Any = (), vmap_axes: Any = None, *, pseudo: bool
) -> Callable:
    """Deprecated: use ``PNTK().kernel_fn(f, ...).features_fn()`` (or ``Trace()`` for ``pseudo=False``)."""
    checks.deprecated("nt_pntk.tiled.jacobian_features_fn", "EmpiricalKernelFn.features_fn()")
    approximation = PNTK() if pseudo else Trace()
    return approximation.kernel_fn(
        f, trace_axes=trace_axes, diagonal_axes=diagonal_axes, vmap_axes=vmap_axes
    ).features_fn()
