"""The N×N approximations of the eNTK as typed objects; ``kernel_fn(f, ...)`` of each has NT's signature.

See `nt_pntk._src.kernels.approximations` for the table of definitions and costs.

Example:
  >>> import jax
  >>> from nt_pntk import approximations
  >>> from neural_tangents import stax
  >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(32), stax.Relu(), stax.Dense(4))
  >>> _, params = init_fn(jax.random.PRNGKey(0), (-1, 3))
  >>> x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
  >>> kernel_fn = approximations.Projection(m=2).kernel_fn(apply_fn, vmap_axes=0)
  >>> kernel_fn(x, None, params).shape
  (5, 5)
  >>> approximations.Projection(m=2).jacobian_rows(outputs=4)
  2
"""

from nt_pntk._src import deprecations as _deprecations
from nt_pntk._src.kernels.approximations import (
    PNTK,
    Approximation,
    EmpiricalKernelFn,
    FullENTK,
    Projection,
    SingleLogit,
    Trace,
    projection_directions,
)
from nt_pntk._src.kernels.features import NotAGramKernel
from nt_pntk._src.kernels.sketch import Sketch, SketchedKernelFn
from nt_pntk._src.numerics import entk_relative_error as relative_error

__all__ = [
    "PNTK",
    "Approximation",
    "EmpiricalKernelFn",
    "FullENTK",
    "NotAGramKernel",
    "Projection",
    "SingleLogit",
    "Sketch",
    "SketchedKernelFn",
    "Trace",
    "projection_directions",
    "relative_error",
]

# Old names (`approximation_fn`, `approximation`, ...): served with a warning from the one table.
__getattr__ = _deprecations.module_getattr(__name__)
