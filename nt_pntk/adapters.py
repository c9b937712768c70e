"""Networks of flax (linen, NNX) and equinox as NT's ``(apply_fn, params)``.

Each adapter returns ``(apply_fn, params)`` with ``apply_fn(params, x, **kwargs)``
acting on a batch along axis 0 and ``params`` holding only the trainable
parameters, so every function of nt_pntk takes them as it takes a stax network:

* `from_linen` ``(module, variables)``: the ``params`` collection; the other
  collections (BatchNorm's ``batch_stats``) held fixed;
* `from_nnx` ``(module)``: the ``nnx.Param`` variables; BatchNorm statistics and
  RNG state held fixed;
* `from_equinox` ``(module, state=None)``: the inexact arrays, the rest static,
  mapped over the examples with ``jax.vmap``.

A model in training mode (BatchNorm normalizing with the batch's statistics, an
active Dropout) makes the examples of a batch depend on each other: the adapters
refuse it with a `ValueError` that names the fix (``module.eval()`` for NNX).
flax and equinox are optional: ``pip install 'nt-pntk[flax]'`` / ``'nt-pntk[equinox]'``.

Example:
  >>> import jax
  >>> import flax.linen as nn
  >>> import nt_pntk
  >>> module = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(2)])
  >>> x = jax.random.normal(jax.random.PRNGKey(1), (3, 4))
  >>> apply_fn, params = nt_pntk.from_linen(module, jax.jit(module.init)(jax.random.PRNGKey(0), x))
  >>> kernel_fn = jax.jit(nt_pntk.empirical_kernel_fn(apply_fn, vmap_axes=0), static_argnums=2)
  >>> kernel_fn(x, None, "pntk", params).shape
  (3, 3)
"""

from nt_pntk._src.adapters.eqx import from_equinox
from nt_pntk._src.adapters.linen import from_linen
from nt_pntk._src.adapters.nnx import from_nnx

__all__ = ["from_equinox", "from_linen", "from_nnx"]
