"""The network's keyword arguments on every route: NT's convention, and static values kept static.

A kernel ``fn(x1, x2, params, **apply_fn_kwargs)`` calls the network twice,
``f(params, x1, **kwargs1)`` and ``f(params, x2, **kwargs2)``. NT splits the
keyword arguments into the two sides (`split`, NT's ``utils.split_kwargs``):

* ``rng`` (when ``x2`` is given): x1 gets the key, x2 ``fold_in(key, 1)``, or the
  same key when x2 equals x1; a pair of keys ``(k1, k2)`` as NT reads it;
* any other 2-tuple ``(a, b)``: ``a`` for x1, ``b`` for x2 (with ``x2=None`` only ``a``);
* anything else: the same value for both.

Every route (the kernel function itself, `kernel_matrix`'s tiles, Gram
features and probe) derives the two sides once, from the whole ``x1`` and
``x2``, and then calls the network with them: a tile of rows of x1 and
columns of x2 sees x1's and x2's keyword arguments, never a split of its own.
So an ``rng`` gives the kernel of ``fn(x1, x2, params, rng=key)`` on every
route, for a network whose examples are independent given the key (e.g. noise
drawn with a shape that does not include the batch). A network that draws per
example over the batch's shape (dropout masks of ``x.shape``) couples each
example to its position in the batch: its kernel is not defined tile by tile
(nor by ``nt.batch``), as for any network whose examples are not independent.

NT traces every keyword argument, so a Python value that steers the network
(``train=False``, equinox's ``inference=True``, flax's ``mutable=[...]``) fails
inside NT with a `TracerBoolConversionError` or a JAX type error. Here a
keyword argument whose value holds no array is *static* (`bind`): it reaches
the network as the Python value it is, closed over, never traced. Only arrays
(and pairs of different Python numbers, as NT traces them) pass through NT's
tracing.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nt_pntk._src import checks

PyTree = Any
RNG = "rng"
# The name `rng` takes through NT: NT re-derives keys from any keyword named `rng`; by another name a
# pair of keys passes through its split unchanged.
_RNG_ALIAS = "_nt_pntk_rng_sides"


def is_array(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def has_arrays(value: Any) -> bool:
    """Whether `value` (a PyTree) holds an array: then NT traces it; otherwise it is static."""
    return any(is_array(leaf) for leaf in jax.tree_util.tree_leaves(value))


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2


def x1_is_x2(x1: PyTree, x2: PyTree) -> Any:
    """NT's ``utils.x1_is_x2`` (equal to 1e-12, a traced bool under jit) for PyTree inputs too."""
    from neural_tangents._src.utils.utils import x1_is_x2 as array_is

    if x1 is x2:
        return True
    leaves1, tree1 = jax.tree_util.tree_flatten(x1)
    leaves2, tree2 = jax.tree_util.tree_flatten(x2)
    if tree1 != tree2:
        return False
    same: Any = True
    for a, b in zip(leaves1, leaves2, strict=True):
        a, b = jnp.asarray(a), jnp.asarray(b)
        if _is_key(a) != _is_key(b) or (_is_key(a) and a.dtype != b.dtype):
            return False  # a typed key and raw key bits (or keys of two implementations)
        same = jnp.logical_and(same, array_is(a, b))
    return same


def _is_key(a: jax.Array) -> bool:
    return jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)


def _read_keys(key: Any, x1: PyTree, x2: PyTree) -> tuple[Any, Any]:
    """NT's ``utils._read_keys`` (without its warning), for PyTree inputs too."""
    if _is_pair(key):
        key1, key2 = (jnp.asarray(k) for k in key)
        if _is_key(key1) != _is_key(key2):
            raise checks.UsageTypeError(
                f"`{RNG}` is a pair of a typed key (jax.random.key) and raw key bits (jax.random.PRNGKey): "
                f"got dtypes {key1.dtype} and {key2.dtype}. Pass two keys of one kind."
            )
        new_key = jnp.where(x1_is_x2(key1, key2), jax.random.fold_in(key2, 1), key2)
        return key1, jnp.where(x1_is_x2(x1, x2), key1, new_key)
    if not isinstance(key, jax.Array) and not isinstance(key, np.ndarray):
        raise checks.UsageTypeError(
            f"`{RNG}` must be a PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed)), a pair of "
            f"keys (one for x1, one for x2) or None; got {key!r} of type {type(key).__name__}."
        )
    key = jnp.asarray(key)
    return key, jnp.where(x1_is_x2(x1, x2), key, jax.random.fold_in(key, 1))


def split(kwargs: dict[str, Any], x1: PyTree, x2: PyTree | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """x1's and x2's keyword arguments, as NT's ``split_kwargs`` derives them from the whole inputs.

    With ``x2=None`` the second dict is x1's (NT computes only x1's side).
    """
    kwargs1, kwargs2 = {}, {}
    for k, v in kwargs.items():
        if x2 is not None and k == RNG and v is not None:
            kwargs1[k], kwargs2[k] = _read_keys(v, x1, x2)
        elif _is_pair(v):
            kwargs1[k], kwargs2[k] = v
        else:
            kwargs1[k] = kwargs2[k] = v
    return kwargs1, (kwargs1 if x2 is None else kwargs2)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # values that do not compare to a bool are not the same value
        return False


@dataclasses.dataclass(frozen=True)
class Bound:
    """Each side's keyword arguments as the network gets them: `static` values (no array, the same
    for both sides, never traced) and each side's arrays, `dynamic1` and `dynamic2`."""

    static: dict[str, Any]
    dynamic1: dict[str, Any]
    dynamic2: dict[str, Any]

    def nt_kwargs(self) -> dict[str, tuple[Any, Any]]:
        """The dynamic arguments for an NT kernel function of `with_static`'s network: explicit pairs,
        which NT's split gives back unchanged (x1's first), `rng` by a name NT does not re-derive."""
        return {_alias(k): (v, self.dynamic2[k]) for k, v in self.dynamic1.items()}


def bind(kwargs1: dict[str, Any], kwargs2: dict[str, Any]) -> Bound:
    """Each side's keyword arguments (from `split`) separated into static values and arrays.

    Raises:
      TypeError: a keyword argument whose two sides are different non-array values that are not
        numbers (e.g. ``train=(True, False)``): one network cannot take both untraced.
    """
    static, dynamic1, dynamic2 = {}, {}, {}
    for k, a in kwargs1.items():
        b = kwargs2[k]
        if not has_arrays(a) and not has_arrays(b):
            if _same(a, b):
                static[k] = a
                continue
            # Numbers are traced as NT traces them; bools (flags for Python's `if`) and the rest refused.
            if not all(isinstance(v, numbers.Number) and not isinstance(v, bool) for v in (a, b)):
                raise checks.UsageTypeError(
                    f"keyword argument `{k}` gives x1 {a!r} and x2 {b!r} (NT's pair convention): different "
                    f"values that are not arrays would need two networks. Pass one value ({k}={a!r}), "
                    "or arrays."
                )
            a, b = jnp.asarray(a), jnp.asarray(b)  # as NT traces Python numbers: weakly typed
        dynamic1[k], dynamic2[k] = a, b
    return Bound(static, dynamic1, dynamic2)


def _alias(name: str) -> str:
    return _RNG_ALIAS if name == RNG else name


def with_static(f: Callable, static: dict[str, Any]) -> Callable:
    """``f(params, x, **kwargs)`` with the `static` keyword arguments closed over, and `rng` taken by
    the name `Bound.nt_kwargs` gives it."""

    def g(params: PyTree, x: PyTree, **kwargs) -> PyTree:
        if _RNG_ALIAS in kwargs:
            kwargs[RNG] = kwargs.pop(_RNG_ALIAS)
        return f(params, x, **static, **kwargs)

    return g


def nt_vmap_axes(vmap_axes: Any, static: dict[str, Any]) -> Any:
    """`vmap_axes` for the network of `with_static`: ``rng``'s axis under its alias, static arguments
    left out (a `ValueError` if one is batched: a value without arrays has no batch axis)."""
    if not (isinstance(vmap_axes, tuple) and len(vmap_axes) == 3) or not isinstance(vmap_axes[2], dict):
        return vmap_axes
    in_axes, out_axes, kwargs_axes = vmap_axes
    for k in static:
        if any(a is not None for a in jax.tree_util.tree_leaves(kwargs_axes.get(k))):
            raise checks.UsageError(
                f"`vmap_axes`={vmap_axes!r} batches keyword argument `{k}` along {kwargs_axes[k]!r}, but "
                f"its value {static[k]!r} holds no array; pass an array with the batch axis, or leave "
                f"`{k}` out of vmap_axes' keyword axes."
            )
    return in_axes, out_axes, {_alias(k): a for k, a in kwargs_axes.items() if k not in static}


def batched(vmap_axes: Any, kwargs: dict[str, Any]) -> list[str]:
    """The keyword arguments among `kwargs` that `vmap_axes` batches (an axis that is not None)."""
    if not (isinstance(vmap_axes, tuple) and len(vmap_axes) == 3) or not isinstance(vmap_axes[2], dict):
        return []
    axes = vmap_axes[2]
    return [
        k
        for k in kwargs
        if any(a is not None for a in jax.tree_util.tree_leaves(axes.get(k))) and has_arrays(kwargs[k])
    ]


class NTKernel:
    """An NT kernel function of a network, called with each side's keyword arguments (no re-split).

    ``make(g, vmap_axes)`` builds the NT function (e.g. ``nt.empirical_ntk_fn``
    with its other arguments fixed); it is built once for calls without
    static arguments, and per call with them (building costs nothing: NT
    traces when called).
    """

    def __init__(self, make: Callable[[Callable, Any], Callable], f: Callable, vmap_axes: Any):
        self.make, self.f, self.vmap_axes = make, f, vmap_axes
        self.plain = make(with_static(f, {}), nt_vmap_axes(vmap_axes, {}))

    def __call__(self, x1: PyTree, x2: PyTree | None, params: PyTree, kwargs1: dict, kwargs2: dict) -> PyTree:
        bound = bind(kwargs1, kwargs2)
        if bound.static:
            nt_fn = self.make(with_static(self.f, bound.static), nt_vmap_axes(self.vmap_axes, bound.static))
        else:
            nt_fn = self.plain
        return nt_fn(x1, x2, params, **bound.nt_kwargs())
