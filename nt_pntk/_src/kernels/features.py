r"""Per-example Gram features: a traced NTK as a Gram matrix K(x1, x2) = Σ_l F_l(x1) F_l(x2)ᵀ.

NT's NTK of a network g whose every output axis but the batch axis is traced
(summed over its diagonal and divided by the number R of traced entries) is

    K(x1, x2) = (1/R) Σ_r J_r(x1) J_r(x2)ᵀ,    J_r = ∂g_r/∂θ,

so F(x) = [J_1(x), ..., J_R(x)] / √R, R rows of P numbers (P parameters) per
example: one row (∂g/∂θ) for the pNTK's summed logits, O for NT's trace, m for
m random projections. `kernel_matrix` computes F once per input instead of once
per tile. F comes as a list of ``(B, R·size_l)`` arrays, one per floating
parameter leaf (not concatenated, to save a copy; integer leaves have no
gradient and no share, as in NT). Where the kernel is not such a Gram matrix
(an output axis kept in it, a PyTree output, or a complex network),
`NotAGramKernel` is raised and `kernel_matrix` tiles the kernel function itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from nt_pntk._src import checks

PyTree = Any


class NotAGramKernel(ValueError):
    """The kernel of this output is not Σ_l F_l(x1) F_l(x2)ᵀ for per-example features F."""


def differentiable(params: PyTree) -> tuple[list, Callable[[list], PyTree]]:
    """``(leaves, rebuild)``: the floating and complex leaves of `params`, and ``rebuild(leaves)``, the
    parameters with those leaves replaced and every other leaf (ints, bools, keys) held constant.

    Integer leaves have no gradient: NT's NTK_VECTOR_PRODUCTS and STRUCTURED_DERIVATIVES give them
    no share of the kernel, while its Jacobian implementations fail on them; differentiating every
    route with respect to these leaves only gives all of them NT's kernel. Python scalars become
    (weakly typed) arrays, as ``jax.jit`` would make them.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    leaves = [as_array(leaf) for leaf in leaves]
    keep = [jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) for leaf in leaves]

    def rebuild(values: list) -> PyTree:
        it = iter(values)
        return treedef.unflatten([next(it) if k else leaf for leaf, k in zip(leaves, keep, strict=True)])

    return [leaf for leaf, k in zip(leaves, keep, strict=True) if k], rebuild


def as_array(leaf: Any) -> Any:
    """A Python scalar as a weakly typed JAX array (as ``jax.jit`` passes it); anything else as is."""
    return jnp.asarray(leaf) if isinstance(leaf, (bool, int, float, complex)) else leaf


def all_differentiable(params: PyTree) -> bool:
    """Whether every leaf of `params` is a floating or complex array (`differentiable` changes nothing)."""
    return all(
        not isinstance(leaf, (bool, int, float, complex))
        and jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
        for leaf in jax.tree_util.tree_leaves(params)
    )


def gram_features_fn(
    g: Callable,
    trace_axes: tuple[int, ...],
    diagonal_axes: tuple[int, ...],
    vmap_axes: Any,
    *,
    structured: bool = False,
    conv: bool = False,
    factor_conv: Callable[[int, int, int], bool] | None = None,
) -> Callable[..., list]:
    """``features(x, params, **apply_fn_kwargs)``: the per-example Gram features of g's traced NTK.

    Args:
      g: the (wrapped) apply function ``g(params, x, **kwargs)``; its output must be
        one array with the batch axis at ``vmap_axes``' output axis (0 by default).
      trace_axes: g's traced output axes: every axis but the batch axis, or the
        kernel is not a plain Gram matrix (`NotAGramKernel` when called).
      diagonal_axes: must be empty (else `NotAGramKernel` when called).
      vmap_axes: as in ``nt.empirical_ntk_fn``. Inputs must have their batch axis at
        0 and ``kwargs_axes`` must not batch any keyword argument. Examples are
        always taken one at a time, so with ``None`` the network must treat
        examples independently (as every ``stax`` network does, and as any tiling
        of the kernel assumes). An axis outside an input's or the output's rank is
        a `ValueError` when ``features`` is called (NT would take it modulo the rank).
      structured: the parameters of dense layers as a pair of factors (see
        `nt_pntk._src.kernels.structured`) instead of their Jacobian rows.
      conv: with ``structured``, convolution kernels' rows formed from their input
        patches and output cotangents (entries permuted alike for every example).
      factor_conv: with ``conv``, ``factor_conv(positions, d_in, d_out)`` picks the
        convolutions that come as their factors (`structured.ConvFactors`), for a sketch.

    Returns:
      ``features(x, params, **apply_fn_kwargs)`` returning one entry per floating parameter
      leaf: a ``(B, R·size_l)`` array of Jacobian rows, or (``structured``) a pair
      ``(A, D)`` whose share of the kernel is ``(A Aᵀ) ⊙ (D Dᵀ)``.
    """
    checks.vmap_axes(vmap_axes)

    def features(x: PyTree, params: PyTree, **apply_fn_kwargs) -> list[jax.Array]:
        _check_input_axes(vmap_axes, x)
        leaves, rebuild = differentiable(params)

        def h(p: list, x_: PyTree, **kwargs) -> Any:
            return g(rebuild(p), x_, **kwargs)

        gx = jax.eval_shape(lambda p, x_: h(p, x_, **apply_fn_kwargs), leaves, x)
        if not isinstance(gx, jax.ShapeDtypeStruct):
            raise NotAGramKernel("the network's output is a PyTree; its kernel is a PyTree of kernels")
        if jnp.issubdtype(gx.dtype, jnp.complexfloating) or any(
            jnp.issubdtype(leaf.dtype, jnp.complexfloating) for leaf in leaves
        ):
            # Real Gram features only; the kernel function itself handles complex networks.
            raise NotAGramKernel("the network is complex (its output or parameters)")
        ndim = len(gx.shape)
        out_axis = _batch_output_axis(vmap_axes, ndim)
        traced, diagonal = checks.normalize_output_axes(trace_axes, diagonal_axes, ndim)
        if diagonal or set(traced) != set(range(ndim)) - {out_axis}:
            raise NotAGramKernel(
                f"trace_axes={trace_axes} and diagonal_axes={diagonal_axes} leave output axes of "
                f"an output of shape {gx.shape} in the kernel"
            )
        count = math.prod(gx.shape[a] for a in traced)
        if structured:
            from nt_pntk._src.kernels.structured import structured_features

            return structured_features(
                h, leaves, x, apply_fn_kwargs, count, gx.dtype, conv=conv, factor_conv=factor_conv
            )
        scale = jnp.asarray(1.0 / math.sqrt(count), gx.dtype)

        def one_example(x_i: PyTree) -> list[jax.Array]:
            x_b = jax.tree_util.tree_map(lambda leaf: jnp.expand_dims(leaf, 0), x_i)

            def output(p: list) -> jax.Array:
                return h(p, x_b, **apply_fn_kwargs)

            if count == 1:  # one row: a gradient is cheaper than a Jacobian
                grads = jax.grad(lambda p: jnp.sum(output(p)))(leaves)
                return [leaf.reshape(-1) for leaf in jax.tree_util.tree_leaves(grads)]
            jac = jax.jacrev(output)(leaves)
            return [leaf.reshape(-1) * scale.astype(leaf.dtype) for leaf in jax.tree_util.tree_leaves(jac)]

        return jax.vmap(one_example)(x)

    return features


def _split_vmap_axes(vmap_axes: Any) -> tuple[Any, Any, Any]:
    if isinstance(vmap_axes, tuple) and len(vmap_axes) == 3:
        return vmap_axes
    return vmap_axes, vmap_axes, {}


def _check_range(vmap_axes: Any, axis: int, ndim: int, what: str) -> None:
    # NT takes axes modulo the rank, so an axis 5 of a rank-2 output would silently mean axis 1.
    if not -ndim <= axis < ndim:
        raise checks.UsageError(
            f"`vmap_axes`={vmap_axes!r} puts the batch axis of {what} of rank {ndim} at {axis}, out of "
            f"range; use an axis in [{-ndim}, {ndim}) (e.g. vmap_axes=0 when examples are along axis 0)."
        )


def _check_input_axes(vmap_axes: Any, x: PyTree) -> None:
    """A `ValueError` for an int input batch axis outside the rank of an input."""
    if vmap_axes is None:
        return
    in_axes, _, _ = _split_vmap_axes(vmap_axes)
    if checks.is_int(in_axes):
        for leaf in jax.tree_util.tree_leaves(x):
            _check_range(vmap_axes, int(in_axes), max(len(leaf.shape), 1), "the input")


def _batch_output_axis(vmap_axes: Any, ndim: int) -> int:
    """The batch axis of an output of rank `ndim` (in [0, ndim)); `NotAGramKernel` for axes the
    features do not handle, a `ValueError` for an axis out of range."""
    if vmap_axes is None:
        return 0
    in_axes, out_axes, kwargs_axes = _split_vmap_axes(vmap_axes)
    if checks.is_int(out_axes):
        _check_range(vmap_axes, int(out_axes), max(ndim, 1), "the network's output")
    if checks.is_int(in_axes):
        # An in-range int axis (checked by `_check_input_axes`); the features take examples along 0.
        if int(in_axes) != 0:
            raise NotAGramKernel(f"inputs batched along axis {in_axes!r}; kernel_matrix tiles axis 0")
    elif any(a != 0 for a in jax.tree_util.tree_leaves(in_axes)):
        raise NotAGramKernel(f"inputs batched along axes {in_axes!r}; kernel_matrix tiles axis 0")
    if any(a is not None for a in jax.tree_util.tree_leaves(kwargs_axes or {})):
        raise NotAGramKernel(f"keyword arguments batched along {kwargs_axes!r}")
    if not checks.is_int(out_axes):
        raise NotAGramKernel(f"output batch axes {out_axes!r} are not one int")
    return int(out_axes) % max(ndim, 1)


def describe(f: Callable) -> str:
    """A name of `f` stable across processes (no memory addresses)."""
    if isinstance(f, functools.partial):
        return f"partial({describe(f.func)})"
    module = getattr(f, "__module__", None) or ""
    name = getattr(f, "__qualname__", None) or type(f).__qualname__
    return f"{module}.{name}" if module else name
