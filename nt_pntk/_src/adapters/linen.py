"""A flax linen module as NT's ``(apply_fn, params)``: `from_linen`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nt_pntk._src import checks
from nt_pntk._src.adapters import common

PyTree = Any
# module.apply's own keyword arguments that turn on training-mode behaviour.
_TRAINING_KWARGS = ("rngs", "mutable")
_FIX = (
    "Apply it in evaluation mode: construct the layers with use_running_average=True (BatchNorm) and "
    "deterministic=True (Dropout), or pass your module's own flag for that (e.g. train=False) as a "
    "keyword argument of the kernel function."
)


def from_linen(module: Any, variables: Mapping[str, PyTree]) -> tuple[Callable, PyTree]:
    r"""A flax linen module as ``(apply_fn, params)``, differentiating only its ``params`` collection.

    ``apply_fn(params, x, **kwargs)`` is ``module.apply({**variables, "params":
    params}, x, **kwargs)``: the other collections of ``variables`` (BatchNorm's
    ``batch_stats``, any others) are held fixed at their values here, and only
    ``params`` is an argument, so every kernel differentiates the trainable
    parameters alone. ``x`` is a batch along axis 0, as ``module.apply`` takes it.

    The module must be in evaluation mode: a BatchNorm normalizing with the
    batch's statistics or an active Dropout couples the examples of a batch (or
    draws random numbers), so the kernel would not be defined; calling
    ``apply_fn`` then raises a `ValueError` that says how to fix it, and so do
    the keyword arguments ``rngs`` and ``mutable`` of ``module.apply``.

    Args:
      module: a ``flax.linen.Module``.
      variables: what ``module.init(key, x)`` returned: a mapping of collections
        with a ``"params"`` collection.

    Returns:
      ``(apply_fn, params)``, ``params = variables["params"]``, ready for every
      kernel function of nt_pntk (``empirical_pntk_fn(apply_fn, vmap_axes=0)``
      for a module that treats examples independently), `kernel_matrix` and
      ``nt-pntk kernel --function``.

    Raises:
      ImportError: flax is not installed (``pip install 'nt-pntk[flax]'``).
      TypeError: ``module`` is not a linen module, or ``variables`` not a mapping.
      ValueError: ``variables`` has no ``"params"`` collection; (when
        ``apply_fn`` is called) the module is in training mode.

    Example:
      >>> import jax
      >>> import flax.linen as nn
      >>> import nt_pntk
      >>> module = nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(3)])
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
      >>> variables = jax.jit(module.init)(jax.random.PRNGKey(0), x)  # {"params": ...}
      >>> apply_fn, params = nt_pntk.from_linen(module, variables)
      >>> jax.jit(nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0))(x, None, params).shape
      (5, 5)
    """
    nn = common.require("flax.linen", "flax", "0.8.5", "flax", "nt_pntk.from_linen")
    errors = common.require("flax.errors", "flax", "0.8.5", "flax", "nt_pntk.from_linen")
    if not isinstance(module, nn.Module):
        raise checks.UsageTypeError(
            f"`module` must be a flax.linen.Module; got {type(module).__name__}.{common.hint(module)}"
        )
    if not isinstance(variables, Mapping):
        raise checks.UsageTypeError(
            f"`variables` must be the mapping of collections that module.init(key, x) returns; got "
            f"{type(variables).__name__}."
        )
    if "params" not in variables:
        raise checks.UsageError(
            f"`variables` must hold a 'params' collection, as module.init(key, x) returns it; got the "
            f"collections {sorted(map(str, variables))}. Pass the whole result of module.init, not "
            "variables['params']."
        )
    fixed = {name: value for name, value in variables.items() if name != "params"}
    name = type(module).__qualname__

    def apply_fn(params: PyTree, x: PyTree, **kwargs) -> PyTree:
        training = sorted(k for k in _TRAINING_KWARGS if k in kwargs)
        if training:
            raise common.training_mode_error(
                f"module {name}",
                f"called with {', '.join(k + '=...' for k in training)}, which turn on training mode "
                "(module.apply's `rngs` feed Dropout's random draws, `mutable` lets BatchNorm update its "
                "statistics from the batch)",
                f"Leave out {', '.join(training)}. {_FIX}",
            )
        try:
            return module.apply({**fixed, "params": params}, x, **kwargs)
        except errors.ModifyScopeVariableError as e:  # BatchNorm updating batch_stats from the batch
            raise common.training_mode_error(
                f"module {name}", f"a layer normalizes with the batch's statistics ({e})", _FIX
            ) from e
        except errors.InvalidRngError as e:  # Dropout (or another layer) asking for random numbers
            raise common.training_mode_error(
                f"module {name}", f"a layer draws random numbers, as an active Dropout does ({e})", _FIX
            ) from e

    return common.named(apply_fn, f"from_linen({name})"), variables["params"]
