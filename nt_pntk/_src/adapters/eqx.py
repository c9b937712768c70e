"""An equinox module as NT's ``(apply_fn, params)``: `from_equinox`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nt_pntk._src import checks
from nt_pntk._src.adapters import common

PyTree = Any
_FIX = (
    "Use `module = eqx.nn.inference_mode(module)` first (BatchNorm then uses its running statistics, "
    "Dropout is off)."
)


def from_equinox(module: Any, state: Any = None) -> tuple[Callable, dict[str, Any]]:
    r"""An equinox module as ``(apply_fn, params)``: its inexact arrays differentiated, vmapped over examples.

    The module is split as ``eqx.partition(module, eqx.is_inexact_array)``: its
    floating-point arrays are the parameters, everything else (activation
    functions, integers, Python numbers) is static. An equinox module maps one
    example to its outputs, so ``apply_fn(params, x, **kwargs)`` maps
    ``module(x_i, **kwargs)`` over the examples ``x_i`` along axis 0 of ``x``
    (``jax.vmap``; keyword arguments are shared by all examples).

    A stateful module (``eqx.nn.BatchNorm``, made with
    ``eqx.nn.make_with_state``) is called as ``module(x_i, state, **kwargs)``
    with the ``state`` given here held fixed, and the first of its two outputs is
    used.

    ``params`` is a flat dict from each array's path (``"layers.0.weight"``) to
    the array: a plain PyTree that every kernel, `kernel_matrix`'s records on
    disk and float64 casts (``jax.tree.map``) handle.

    The module must be in inference mode: a BatchNorm normalizing with the
    batch's statistics or an active Dropout couples the examples of a batch (or
    draws random numbers), so the kernel would not be defined; such a module is
    refused with a `ValueError` naming the fix, ``eqx.nn.inference_mode``.

    Args:
      module: an ``equinox.Module`` acting on one example.
      state: the ``eqx.nn.State`` of a stateful module (from
        ``eqx.nn.make_with_state``), or ``None`` for a module without state.

    Returns:
      ``(apply_fn, params)``, ready for every kernel function of nt_pntk
      (``empirical_pntk_fn(apply_fn, vmap_axes=0)``: the examples are
      independent), `kernel_matrix` and ``nt-pntk kernel --function``.

    Raises:
      ImportError: equinox is not installed (``pip install 'nt-pntk[equinox]'``).
      TypeError: ``module`` is not an equinox module, or ``state`` not an
        ``eqx.nn.State``.
      ValueError: the module is in training mode; it holds state (a
        BatchNorm) and ``state`` is ``None``; it has no floating-point array.

    Example:
      >>> import jax
      >>> import equinox as eqx
      >>> import nt_pntk
      >>> module = eqx.nn.MLP(4, 3, width_size=32, depth=1, key=jax.random.PRNGKey(0))
      >>> apply_fn, params = nt_pntk.from_equinox(module)
      >>> sorted(params)
      ['layers.0.bias', 'layers.0.weight', 'layers.1.bias', 'layers.1.weight']
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
      >>> jax.jit(nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0))(x, None, params).shape
      (5, 5)
    """
    eqx = common.require("equinox", "equinox", "0.11.4", "equinox", "nt_pntk.from_equinox")
    import jax

    if not isinstance(module, eqx.Module):
        raise checks.UsageTypeError(
            f"`module` must be an equinox.Module; got {type(module).__name__}.{common.hint(module)}"
        )
    if state is not None and not isinstance(state, eqx.nn.State):
        raise checks.UsageTypeError(
            "`state` must be the eqx.nn.State of eqx.nn.make_with_state, or None; got "
            f"{type(state).__name__}."
        )
    name = type(module).__qualname__
    _check_inference_mode(eqx, jax, module, name)
    is_state_index = lambda leaf: isinstance(leaf, eqx.nn.StateIndex)  # noqa: E731
    holds_state = any(map(is_state_index, jax.tree_util.tree_leaves(module, is_leaf=is_state_index)))
    if holds_state and state is None:
        raise checks.UsageError(
            f"`module` ({name}) holds state (a BatchNorm or another stateful layer), so it needs `state`: "
            "module, state = eqx.nn.make_with_state(Model)(...), then from_equinox(module, state)."
        )
    # A StateIndex stays whole on the static side: its initial value is state, not a parameter.
    dynamic, static = eqx.partition(module, common.is_inexact_array, is_leaf=is_state_index)
    paths, tree = jax.tree_util.tree_flatten_with_path(dynamic)
    if not paths:
        raise checks.UsageError(f"`module` ({name}) holds no floating-point array to differentiate.")
    names = common.flat_names([path for path, _ in paths])
    params = {n: leaf for n, (_, leaf) in zip(names, paths, strict=True)}

    def apply_fn(params: dict[str, Any], x: PyTree, **kwargs) -> PyTree:
        model = eqx.combine(jax.tree_util.tree_unflatten(tree, [params[n] for n in names]), static)
        if state is None:
            return jax.vmap(lambda example: model(example, **kwargs))(x)
        return jax.vmap(lambda example: model(example, state, **kwargs)[0])(x)

    return common.named(apply_fn, f"from_equinox({name})"), params


def _check_inference_mode(eqx: Any, jax: Any, module: Any, name: str) -> None:
    """Refuses a BatchNorm using batch statistics or an active Dropout."""
    layers = (eqx.nn.BatchNorm, eqx.nn.Dropout)
    is_layer = lambda leaf: isinstance(leaf, layers)  # noqa: E731
    found = []
    for path, layer in jax.tree_util.tree_flatten_with_path(module, is_leaf=is_layer)[0]:
        if not is_layer(layer) or layer.inference:
            continue
        where = f"{type(layer).__name__} at {common.path_name(path) or name}"
        if isinstance(layer, eqx.nn.BatchNorm):
            found.append(f"{where} normalizes with the batch's statistics (inference=False)")
        elif float(layer.p) > 0:
            found.append(f"{where} drops units at random (inference=False, p={float(layer.p):g})")
    if found:
        raise common.training_mode_error(f"module {name}", "; ".join(found), _FIX)
