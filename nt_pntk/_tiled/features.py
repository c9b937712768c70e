r"""Per-example Jacobian features: the (p)NTK as a Gram matrix K(x1, x2) = F(x1) F(x2)ᵀ.

For an apply function ``f`` with a per-example output of ``R`` entries (all of
them traced) and parameters θ,

* the pNTK is the NTK of g = Σ_o f_o / √R, so F(x) = ∂g(x)/∂θ, one row of P
  numbers per example (P = number of parameters);
* NT's eNTK with every output axis traced is (1/R) Σ_o J_o(x1) J_o(x2)ᵀ, so
  F(x) = [J_1(x), ..., J_R(x)] / √R, R·P numbers per example.

`kernel_matrix` uses F to compute each input's Jacobian once per resident row
block instead of once per tile. A kernel function advertises its features with
an attribute ``jacobian_features``: a callable ``features(x, params,
**apply_fn_kwargs)`` returning a list of arrays ``(B, size_l)`` (one per
parameter leaf, not concatenated, to save a copy), such that
``fn(x1, x2, params) == Σ_l F_l(x1) F_l(x2)ᵀ``. It raises `NotAGramKernel`
(a ValueError) when the kernel of that output is not such a Gram matrix, for
example when an output axis is not traced or is kept diagonal; `kernel_matrix`
then tiles ``fn`` itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from nt_pntk import _checks

PyTree = Any
FEATURES_ATTRIBUTE = "jacobian_features"


class NotAGramKernel(ValueError):
    """The kernel of this output is not Σ_l F_l(x1) F_l(x2)ᵀ for per-example features F."""


def jacobian_features_fn(
    f: Callable,
    trace_axes: Any = (-1,),
    diagonal_axes: Any = (),
    vmap_axes: Any = None,
    *,
    pseudo: bool,
) -> Callable[..., list[jax.Array]]:
    """Returns ``features(x, params, **apply_fn_kwargs)``: the per-example Jacobian rows of the kernel.

    Args:
      f: the apply function ``f(params, x, **kwargs)``; its output must be one
        array with the batch axis at ``vmap_axes``' output axis (0 by default).
      trace_axes: output axes summed (pNTK) or traced (NTK); must be every
        output axis except the batch axis, or the kernel is not a plain Gram
        matrix (`NotAGramKernel` when called).
      diagonal_axes: must be empty (else `NotAGramKernel` when called).
      vmap_axes: as in ``nt.empirical_ntk_fn``: ``None``, an int, or
        ``(in_axes, out_axes, kwargs_axes)``. Inputs must have their batch axis
        at 0 and ``kwargs_axes`` must not batch any keyword argument. Examples
        are always taken one at a time, so with ``None`` the network must treat
        examples independently (as every ``stax`` network does, and as any
        tiling of the kernel assumes). Axes that are not ints raise a
        `TypeError` here; an int axis outside an input's or the output's rank
        raises a `ValueError` when ``features`` is called (NT would take it
        modulo the rank).
      pseudo: True for the pNTK (F = ∂(Σ_o f_o / √R)/∂θ), False for NT's eNTK
        with the output axes traced (F = [J_o]_o / √R).

    Returns:
      ``features(x, params, **apply_fn_kwargs)`` returning one ``(B, size_l)``
      array per parameter leaf, with a ``config`` dict attribute describing it.
    """
    trace_axes = _checks.axes_tuple("trace_axes", trace_axes)
    diagonal_axes = _checks.axes_tuple("diagonal_axes", diagonal_axes)
    check_vmap_axes(vmap_axes)

    def features(x: PyTree, params: PyTree, **apply_fn_kwargs) -> list[jax.Array]:
        _check_input_axes(vmap_axes, x)
        fx = jax.eval_shape(lambda p, x_: f(p, x_, **apply_fn_kwargs), params, x)
        if not isinstance(fx, jax.ShapeDtypeStruct):
            raise NotAGramKernel("the network's output is a PyTree; its kernel is a PyTree of kernels")
        ndim = len(fx.shape)
        out_axis = _batch_output_axis(vmap_axes, ndim)
        traced, diagonal = _checks.normalize_output_axes(trace_axes, diagonal_axes, ndim)
        if diagonal or set(traced) != set(range(ndim)) - {out_axis}:
            raise NotAGramKernel(
                f"trace_axes={trace_axes} and diagonal_axes={diagonal_axes} leave output axes of "
                f"an output of shape {fx.shape} in the kernel"
            )
        count = math.prod(fx.shape[a] for a in traced)
        scale = 1.0 / math.sqrt(count)

        def one_example(x_i: PyTree) -> list[jax.Array]:
            x_b = jax.tree_util.tree_map(lambda leaf: jnp.expand_dims(leaf, 0), x_i)

            def output(p: PyTree) -> jax.Array:
                return f(p, x_b, **apply_fn_kwargs)

            if pseudo:
                grads = jax.grad(lambda p: jnp.sum(output(p)) * jnp.asarray(scale, fx.dtype))(params)
                return [leaf.reshape(-1) for leaf in jax.tree_util.tree_leaves(grads)]
            jac = jax.jacrev(output)(params)
            return [
                leaf.reshape(-1) * jnp.asarray(scale, leaf.dtype) for leaf in jax.tree_util.tree_leaves(jac)
            ]

        return jax.vmap(one_example)(x)

    features.config = {
        "kind": "pntk" if pseudo else "ntk",
        "f": _describe(f),
        "trace_axes": trace_axes,
        "diagonal_axes": diagonal_axes,
        "vmap_axes": repr(vmap_axes),
    }
    return features


def with_jacobian_features(
    kernel_fn: Callable,
    apply_fn: Callable,
    *,
    trace_axes: Any = (-1,),
    diagonal_axes: Any = (),
    vmap_axes: Any = None,
    pseudo: bool = False,
) -> Callable:
    """``kernel_fn`` with a ``jacobian_features`` attribute, for `kernel_matrix`'s Jacobian reuse.

    Use it for NT's own eNTK (``pseudo=False``), which carries no attribute:

    >>> import jax, nt_pntk
    >>> import neural_tangents as nt
    >>> from nt_pntk import models, tiled
    >>> m = models.get_model("fc", width=16, out=3)
    >>> _, params = m.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
    >>> ntk_fn = nt.empirical_ntk_fn(m.apply_fn, vmap_axes=0)
    >>> ntk_fn = tiled.with_jacobian_features(ntk_fn, m.apply_fn, vmap_axes=0)
    >>> x = jax.numpy.ones((5, 8, 8, 1))
    >>> tiled.kernel_matrix(ntk_fn, x, None, params, progress=False).shape
    (5, 5)

    ``trace_axes``, ``diagonal_axes`` and ``vmap_axes`` must be those
    ``kernel_fn`` was made with (they are not read from it). Functions made by
    `nt_pntk.empirical_pntk_fn` already carry the attribute.

    Returns:
      A function with ``kernel_fn``'s signature and results.
    """

    @functools.wraps(kernel_fn)
    def wrapped(*args, **kwargs):
        return kernel_fn(*args, **kwargs)

    setattr(
        wrapped,
        FEATURES_ATTRIBUTE,
        jacobian_features_fn(apply_fn, trace_axes, diagonal_axes, vmap_axes, pseudo=pseudo),
    )
    return wrapped


def check_vmap_axes(vmap_axes: Any) -> None:
    """A `TypeError` for a `vmap_axes` that NT cannot use (see `_checks.vmap_axes`)."""
    _checks.vmap_axes(vmap_axes)


def _split_vmap_axes(vmap_axes: Any) -> tuple[Any, Any, Any]:
    if isinstance(vmap_axes, tuple) and len(vmap_axes) == 3:
        return vmap_axes
    return vmap_axes, vmap_axes, {}


def _check_range(vmap_axes: Any, axis: int, ndim: int, what: str) -> None:
    # NT takes axes modulo the rank, so an axis 5 of a rank-2 output would silently mean axis 1.
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"`vmap_axes`={vmap_axes!r} puts the batch axis of {what} of rank {ndim} at {axis}, out of "
            f"range; use an axis in [{-ndim}, {ndim}) (e.g. vmap_axes=0 when examples are along axis 0)."
        )


def _check_input_axes(vmap_axes: Any, x: PyTree) -> None:
    """A `ValueError` for an int input batch axis outside the rank of an input."""
    if vmap_axes is None:
        return
    in_axes, _, _ = _split_vmap_axes(vmap_axes)
    if _checks.is_int(in_axes):
        for leaf in jax.tree_util.tree_leaves(x):
            _check_range(vmap_axes, int(in_axes), max(len(leaf.shape), 1), "the input")


def _batch_output_axis(vmap_axes: Any, ndim: int) -> int:
    """The batch axis of an output of rank `ndim` (in [0, ndim)); `NotAGramKernel` for axes the
    features do not handle, a `ValueError` for an axis out of range."""
    if vmap_axes is None:
        return 0
    in_axes, out_axes, kwargs_axes = _split_vmap_axes(vmap_axes)
    if _checks.is_int(out_axes):
        _check_range(vmap_axes, int(out_axes), max(ndim, 1), "the network's output")
    if _checks.is_int(in_axes):
        # An in-range int axis (checked by `_check_input_axes`); the features take examples along 0.
        if int(in_axes) != 0:
            raise NotAGramKernel(f"inputs batched along axis {in_axes!r}; kernel_matrix tiles axis 0")
    elif any(a != 0 for a in jax.tree_util.tree_leaves(in_axes)):
        raise NotAGramKernel(f"inputs batched along axes {in_axes!r}; kernel_matrix tiles axis 0")
    if any(a is not None for a in jax.tree_util.tree_leaves(kwargs_axes or {})):
        raise NotAGramKernel(f"keyword arguments batched along {kwargs_axes!r}")
    if not _checks.is_int(out_axes):
        raise NotAGramKernel(f"output batch axes {out_axes!r} are not one int")
    return int(out_axes) % max(ndim, 1)


def _describe(f: Callable) -> str:
    """A name of `f` stable across processes (no memory addresses)."""
    if isinstance(f, functools.partial):
        return f"partial({_describe(f.func)})"
    module = getattr(f, "__module__", None) or ""
    name = getattr(f, "__qualname__", None) or type(f).__qualname__
    return f"{module}.{name}" if module else name
