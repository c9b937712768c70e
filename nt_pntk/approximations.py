"""The N×N approximations of the eNTK, as typed objects and as functions with NT's signature.

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

from nt_pntk._src.kernels.approximations import (
    APPROXIMATION_NAMES,
    APPROXIMATIONS,
    PNTK,
    Approximation,
    ApproximationName,
    EmpiricalKernelFn,
    FullENTK,
    Projection,
    SingleLogit,
    Trace,
    approximation,
    approximation_fn,
    empirical_entk_fn,
    empirical_projection_fn,
    empirical_single_logit_fn,
    empirical_trace_fn,
    jacobian_rows,
    projection_directions,
)
from nt_pntk._src.kernels.features import NotAGramKernel
from nt_pntk._src.kernels.pntk import empirical_pntk_fn
from nt_pntk._src.numerics import entk_relative_error as relative_error

__all__ = [
    "APPROXIMATIONS",
    "APPROXIMATION_NAMES",
    "PNTK",
    "Approximation",
    "ApproximationName",
    "EmpiricalKernelFn",
    "FullENTK",
    "NotAGramKernel",
    "Projection",
    "SingleLogit",
    "Trace",
    "approximation",
    "approximation_fn",
    "empirical_entk_fn",
    "empirical_pntk_fn",
    "empirical_projection_fn",
    "empirical_single_logit_fn",
    "empirical_trace_fn",
    "jacobian_rows",
    "projection_directions",
    "relative_error",
]
