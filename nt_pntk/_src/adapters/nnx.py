"""A flax NNX module as NT's ``(apply_fn, params)``: `from_nnx`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nt_pntk._src import checks
from nt_pntk._src.adapters import common

PyTree = Any
_FIX = "Call `module.eval()` first (it sets use_running_average=True and deterministic=True throughout)."
# The attribute that holds a Variable's array in the state's key paths (flax >= 0.11 / older).
_VALUE_KEYS = ("value", "raw_value")


def from_nnx(module: Any) -> tuple[Callable, dict[str, Any]]:
    r"""A flax NNX module as ``(apply_fn, params)``, differentiating only its ``nnx.Param`` variables.

    The module is split once into its graph, its trainable parameters (the
    floating-point ``nnx.Param`` variables) and everything else: BatchNorm's
    statistics (``nnx.BatchStat``), RNG state (``nnx.RngState``), integer
    parameters and any other variables, held fixed at their values here.
    ``apply_fn(params, x, **kwargs)`` rebuilds the module with ``params`` and
    calls ``module(x, **kwargs)`` on a batch along axis 0; the module passed in
    is never changed.

    ``params`` is a flat dict from each parameter's path (``"linear1.kernel"``)
    to its array: a plain PyTree that every kernel, `kernel_matrix`'s records on
    disk and float64 casts (``jax.tree.map``) handle.

    The module must be in evaluation mode: a BatchNorm normalizing with the
    batch's statistics or an active Dropout couples the examples of a batch (or
    draws random numbers), so the kernel would not be defined. Such a module is
    refused with a `ValueError` naming the fix, ``module.eval()``; so is one
    that changes any of its state while computing its outputs (checked on each
    trace of ``apply_fn``).

    Args:
      module: a ``flax.nnx.Module``.

    Returns:
      ``(apply_fn, params)``, ready for every kernel function of nt_pntk
      (``empirical_pntk_fn(apply_fn, vmap_axes=0)`` for a module that treats
      examples independently), `kernel_matrix` and ``nt-pntk kernel --function``.

    Raises:
      ImportError: flax (0.8.5 or newer, which has ``flax.nnx``) is not
        installed: ``pip install 'nt-pntk[flax]'``.
      TypeError: ``module`` is not an NNX module.
      ValueError: the module is in training mode, or (when ``apply_fn`` is
        called) changes its state; the module has no floating-point
        ``nnx.Param``.

    Example:
      >>> import jax
      >>> from flax import nnx
      >>> import nt_pntk
      >>> class MLP(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.hidden = nnx.Linear(4, 32, rngs=rngs)
      ...         self.norm = nnx.BatchNorm(32, rngs=rngs)
      ...         self.dropout = nnx.Dropout(0.1, rngs=rngs)
      ...         self.readout = nnx.Linear(32, 3, rngs=rngs)
      ...     def __call__(self, x):
      ...         return self.readout(self.dropout(jax.nn.relu(self.norm(self.hidden(x)))))
      >>> module = MLP(nnx.Rngs(0))
      >>> module.eval()  # BatchNorm uses its running statistics, Dropout is off
      >>> apply_fn, params = nt_pntk.from_nnx(module)
      >>> sorted(params)[:2]
      ['hidden.bias', 'hidden.kernel']
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
      >>> jax.jit(nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0))(x, None, params).shape
      (5, 5)
    """
    common.require("flax", "flax", "0.8.5", "flax", "nt_pntk.from_nnx")
    nnx = common.require("flax.nnx", "flax", "0.8.5", "flax", "nt_pntk.from_nnx")
    import jax

    if not isinstance(module, nnx.Module):
        raise checks.UsageTypeError(
            f"`module` must be a flax.nnx.Module; got {type(module).__name__}.{common.hint(module)}"
        )
    name = type(module).__qualname__
    _check_eval_mode(nnx, module, name)

    graphdef, param_state, other_state = nnx.split(module, nnx.Param, ...)
    param_paths, param_tree = jax.tree_util.tree_flatten_with_path(param_state)
    other_leaves, other_tree = jax.tree_util.tree_flatten(other_state)
    param_leaves = [leaf for _, leaf in param_paths]
    names = common.flat_names([path for path, _ in param_paths], skip=_VALUE_KEYS)
    trainable = [common.is_inexact_array(leaf) for leaf in param_leaves]
    if not any(trainable):
        raise checks.UsageError(
            f"`module` ({name}) has no floating-point nnx.Param to differentiate; its parameters: "
            f"{names or 'none'}."
        )
    params = {n: leaf for n, leaf, t in zip(names, param_leaves, trainable, strict=True) if t}
    fixed = {i: leaf for i, (leaf, t) in enumerate(zip(param_leaves, trainable, strict=True)) if not t}
    other_paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(other_state)[0]]

    def apply_fn(params: dict[str, Any], x: PyTree, **kwargs) -> PyTree:
        leaves = [fixed[i] if i in fixed else params[n] for i, n in enumerate(names)]
        # Fresh variables on every call: whatever the call does to them stays inside it.
        state = jax.tree_util.tree_unflatten(param_tree, leaves)
        others = jax.tree_util.tree_unflatten(other_tree, list(other_leaves))
        model = nnx.merge(graphdef, state, others)
        out = model(x, **kwargs)
        _, state_after, others_after = nnx.split(model, nnx.Param, ...)
        changed = [
            common.path_name(path, _VALUE_KEYS)
            for path, before, after in zip(
                other_paths, other_leaves, jax.tree_util.tree_leaves(others_after), strict=False
            )
            if before is not after
        ]
        after = jax.tree_util.tree_leaves(state_after)
        changed += [n for n, b, a in zip(names, leaves, after, strict=False) if b is not a]
        if changed or len(jax.tree_util.tree_leaves(others_after)) != len(other_leaves):
            raise common.training_mode_error(
                f"module {name}",
                f"computing its outputs changed its state ({', '.join(changed) or 'new variables'}), as "
                "BatchNorm does when it normalizes with the batch's statistics and Dropout when it draws "
                "random numbers",
                _FIX,
            )
        return out

    return common.named(apply_fn, f"from_nnx({name})"), params


def _check_eval_mode(nnx: Any, module: Any, name: str) -> None:
    """Refuses a module with a BatchNorm using batch statistics or an active Dropout (before any trace)."""
    iterate = getattr(nnx, "iter_modules", None)  # flax >= 0.11; older releases have the method
    submodules = iterate(module) if iterate is not None else module.iter_modules()
    found = []
    for path, sub in submodules:
        where = f"{type(sub).__name__} at {'.'.join(map(str, path))}" if path else name
        if getattr(sub, "use_running_average", None) is False:
            found.append(f"{where} normalizes with the batch's statistics (use_running_average=False)")
        rate = max(float(getattr(sub, "rate", 0) or 0), float(getattr(sub, "dropout_rate", 0) or 0))
        if getattr(sub, "deterministic", None) is False and rate > 0:
            found.append(f"{where} drops units at random (deterministic=False, rate {rate:g})")
    if found:
        raise common.training_mode_error(f"module {name}", "; ".join(found), _FIX)
