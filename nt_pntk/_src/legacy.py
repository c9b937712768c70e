"""What the deprecated functions of `nt_pntk._src.deprecations` do, where no other name does it.

Served (with their warning) by the public modules' ``__getattr__``; removed with their entries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nt_pntk._src.kernels.approximations import PNTK, EmpiricalKernelFn, Trace


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
    del kernel_fn
    approximation = PNTK() if pseudo else Trace()
    return approximation.kernel_fn(
        apply_fn, trace_axes=trace_axes, diagonal_axes=diagonal_axes, vmap_axes=vmap_axes
    )


def jacobian_features_fn(
    f: Callable, trace_axes: Any = (-1,), diagonal_axes: Any = (), vmap_axes: Any = None, *, pseudo: bool
) -> Callable:
    """Deprecated: use ``PNTK().kernel_fn(f, ...).features_fn()`` (or ``Trace()`` for ``pseudo=False``)."""
    approximation = PNTK() if pseudo else Trace()
    return approximation.kernel_fn(
        f, trace_axes=trace_axes, diagonal_axes=diagonal_axes, vmap_axes=vmap_axes
    ).features_fn()
