"""The pseudo-NTK (pNTK) as a drop-in beside `nt.empirical_ntk_fn`."""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import neural_tangents as nt

from nt_pntk import _checks
from nt_pntk._tiled.features import jacobian_features_fn

PyTree = Any
Axes = int | tuple[int, ...]
KernelName = Literal["nngp", "ntk", "pntk"]
KERNEL_NAMES: tuple[KernelName, ...] = ("nngp", "ntk", "pntk")


def summed_logits_fn(f: Callable, trace_axes: Axes = (-1,), diagonal_axes: Axes = ()) -> Callable:
    r"""Returns g(params, x) = Σ_{trace_axes} f(params, x) / sqrt(Π sizes of trace_axes).

    The summed axes are kept with size 1, so ``g``'s output has the rank and
    layout of ``f``'s and every axis argument of NT (``trace_axes``,
    ``diagonal_axes``, ``vmap_axes``) means the same for both. The NTK of ``g``
    is the pNTK of ``f``.

    Args:
      f: an apply function ``f(params, x, **kwargs)`` returning an array or a
        PyTree of arrays.
      trace_axes: output axes to sum over (the "logit" axes).
      diagonal_axes: output axes NT will keep diagonal; only checked here.

    Returns:
      The apply function ``g`` with ``f``'s signature.

    Raises:
      ValueError: (when ``g`` is first called) an axis out of range for the
        output rank, repeated, or in both ``trace_axes`` and ``diagonal_axes``.
    """
    trace_axes = _checks.axes_tuple("trace_axes", trace_axes)
    diagonal_axes = _checks.axes_tuple("diagonal_axes", diagonal_axes)

    def sum_logits(fx: jax.Array) -> jax.Array:
        axes, _ = _checks.normalize_output_axes(trace_axes, diagonal_axes, fx.ndim)
        count = math.prod(fx.shape[a] for a in axes)
        # sqrt(O) so that NTK(g) = (1/O) Σ_{o,o'} Θ_{oo'}, the paper's pNTK.
        return jnp.sum(fx, axis=axes, keepdims=True) / jnp.sqrt(jnp.asarray(count, fx.dtype))

    @functools.wraps(f)
    def g(params: PyTree, x: PyTree, **kwargs) -> PyTree:
        return jax.tree_util.tree_map(sum_logits, f(params, x, **kwargs))

    return g


def empirical_pntk_fn(
    f: Callable,
    trace_axes: Axes = (-1,),
    diagonal_axes: Axes = (),
    vmap_axes: Any = None,
    implementation: nt.NtkImplementation | int = nt.NtkImplementation.JACOBIAN_CONTRACTION,
) -> Callable[..., PyTree]:
    r"""Returns a function that computes the empirical pseudo-NTK (pNTK) of `f`.

    For a network :math:`f: \mathbb{R}^D \to \mathbb{R}^O` with Jacobian
    :math:`J = \partial f / \partial \theta` and eNTK block
    :math:`\Theta_{oo'}(x_1, x_2) = J_o(x_1) J_{o'}(x_2)^\top`, the pNTK of
    Mohamadi, Bae & Sutherland (ICML 2023) is

    .. math::
        \mathrm{pNTK}(x_1, x_2)
        = \frac{1}{O} \sum_{o, o'} \Theta_{oo'}(x_1, x_2)
        = \mathrm{NTK}\Big(g = \tfrac{1}{\sqrt{O}} \textstyle\sum_o f_o\Big)(x_1, x_2),

    where the sum runs over the output axes in ``trace_axes`` and ``O`` is the
    product of their sizes. At initialization eNTK ≈ pNTK ⊗ I_O up to
    O(n^{-1/2}) in the width n. It costs one Jacobian row per input instead of
    O: about O times less time and O^2 less memory than the full eNTK.

    NT's own ``empirical_ntk_fn(f, trace_axes=(-1,))`` is a *different*
    approximation, the trace (1/O) Σ_o Θ_oo; ``trace_axes=()`` gives the full
    eNTK.

    The arguments and the returned function's signature and output shape are
    exactly those of ``nt.empirical_ntk_fn``.

    Args:
      f: the apply function ``f(params, x, **kwargs)``; ``params`` and ``x``
        any PyTrees; it returns an array or a PyTree of arrays.
      trace_axes: output axes summed as logits (the pNTK's ``O`` axes).
        ``(-1,)`` is the logit axis of an ``(N, O)`` output; ``()`` gives the
        full eNTK.
      diagonal_axes: output axes of which only the diagonal of the kernel is
        kept, as in NT.
      vmap_axes: as in NT: ``None``, an int, or ``(in_axes, out_axes,
        kwargs_axes)`` when ``f`` treats examples independently along those
        axes (e.g. ``0`` for a batch-independent network; faster).
      implementation: an ``nt.NtkImplementation`` or its int value: ``AUTO``
        (0), ``JACOBIAN_CONTRACTION`` (1), ``NTK_VECTOR_PRODUCTS`` (2) or
        ``STRUCTURED_DERIVATIVES`` (3).

    Returns:
      ``pntk_fn(x1, x2, params, **apply_fn_kwargs)``. ``x2=None`` means
      ``x2 = x1``. For an ``(N, O)`` output and the default ``trace_axes`` it
      returns an ``(N1, N2)`` array; in general the shape of
      ``nt.empirical_ntk_fn`` with the same arguments.

    Raises:
      ValueError: an unknown ``implementation``; ``trace_axes`` or
        ``diagonal_axes`` out of range, repeated or overlapping (when
        ``pntk_fn`` is called); ``x1`` and ``x2`` whose non-batch shapes differ,
        or whose outputs differ in size on a traced or diagonal axis (e.g.
        ``diagonal_axes=(0,)`` with batches of different sizes).
      TypeError: axes that are not ints.

    Example:
      >>> import jax
      >>> import nt_pntk
      >>> from neural_tangents import stax
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(64), stax.Relu(), stax.Dense(10))
      >>> _, params = init_fn(jax.random.PRNGKey(0), (-1, 3))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
      >>> pntk_fn = nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0)
      >>> pntk_fn(x, None, params).shape
      (5, 5)
    """
    implementation = _checks.implementation(implementation)
    trace_axes = _checks.axes_tuple("trace_axes", trace_axes)
    diagonal_axes = _checks.axes_tuple("diagonal_axes", diagonal_axes)
    vmap_axes = _checks.vmap_axes(vmap_axes)
    g = summed_logits_fn(f, trace_axes, diagonal_axes)
    ntk_of_g = nt.empirical_ntk_fn(
        g,
        trace_axes=trace_axes,
        diagonal_axes=diagonal_axes,
        vmap_axes=vmap_axes,
        implementation=implementation,
    )
    in_axes = _input_batch_axes(vmap_axes)

    def pntk_fn(x1: PyTree, x2: PyTree | None, params: PyTree, **apply_fn_kwargs) -> PyTree:
        if _checks.matching_inputs(x1, x2, in_axes):
            _check_output_sizes(f, x1, x2, params, apply_fn_kwargs, trace_axes, diagonal_axes)
        return ntk_of_g(x1, x2, params, **apply_fn_kwargs)

    # Per-example Jacobian rows F with pNTK = F(x1) F(x2)ᵀ: `nt_pntk.tiled.kernel_matrix` reuses them.
    pntk_fn.jacobian_features = jacobian_features_fn(f, trace_axes, diagonal_axes, vmap_axes, pseudo=True)
    return pntk_fn


def _input_batch_axes(vmap_axes: Any) -> Any:
    if isinstance(vmap_axes, tuple) and len(vmap_axes) == 3:
        return vmap_axes[0]
    return vmap_axes


def _check_output_sizes(
    f: Callable,
    x1: PyTree,
    x2: PyTree,
    params: PyTree,
    apply_fn_kwargs: dict[str, Any],
    trace_axes: tuple[int, ...],
    diagonal_axes: tuple[int, ...],
) -> None:
    """f(x1) and f(x2) must agree in size on the traced and diagonal axes.

    Called for inputs of different batch sizes: with the batch axis in
    ``diagonal_axes`` NT fails with an `AssertionError` or a shape error deep
    inside, or (NTK_VECTOR_PRODUCTS) returns a silently wrong kernel; with it
    in ``trace_axes`` the pNTK would sum batches of different sizes into a
    meaningless kernel. It traces `f` twice more (shapes only), so inputs of
    equal batch sizes skip it.
    """
    # The kwargs as NT splits them (a pair goes one to x1, one to x2); only shapes matter here.
    kwargs1, kwargs2 = {}, {}
    for k, v in apply_fn_kwargs.items():
        kwargs1[k], kwargs2[k] = v if isinstance(v, tuple) and len(v) == 2 else (v, v)
    fx1 = jax.eval_shape(lambda p, x: f(p, x, **kwargs1), params, x1)
    fx2 = jax.eval_shape(lambda p, x: f(p, x, **kwargs2), params, x2)
    _checks.matching_output_axes(fx1, fx2, trace_axes, diagonal_axes)


def _axes_checked(f: Callable, trace_axes: tuple[int, ...], diagonal_axes: tuple[int, ...]) -> Callable:
    """`f`, checking `trace_axes` and `diagonal_axes` against its output when called."""

    @functools.wraps(f)
    def checked(params: PyTree, x: PyTree, **kwargs) -> PyTree:
        fx = f(params, x, **kwargs)
        _checks.output_axes(fx, trace_axes, diagonal_axes)
        return fx

    return checked


def empirical_kernel_fn(
    f: Callable,
    trace_axes: Axes = (-1,),
    diagonal_axes: Axes = (),
    vmap_axes: Any = None,
    implementation: nt.NtkImplementation | int = nt.NtkImplementation.JACOBIAN_CONTRACTION,
) -> Callable[..., PyTree]:
    r"""Like `nt.empirical_kernel_fn`, with the pNTK as a third kernel.

    ``kernel_fn(x1, x2, get, params, **apply_fn_kwargs)`` returns the
    empirical NNGP (``'nngp'``), NT's eNTK (``'ntk'``, with NT's meaning of
    ``trace_axes``: the trace (1/O) Σ_o Θ_oo) and the pNTK (``'pntk'``,
    (1/O) Σ_{o,o'} Θ_oo', see `empirical_pntk_fn`), each computed exactly as
    the single-kernel functions do.

    Args:
      f: the apply function ``f(params, x, **kwargs)``.
      trace_axes: see `empirical_pntk_fn`.
      diagonal_axes: see `empirical_pntk_fn`.
      vmap_axes: see `empirical_pntk_fn`; applies to ``'ntk'`` and ``'pntk'``.
      implementation: see `empirical_pntk_fn`; applies to ``'ntk'`` and
        ``'pntk'``.

    Returns:
      ``kernel_fn(x1, x2, get, params, **apply_fn_kwargs)``. ``get`` is one of
      ``'nngp'``, ``'ntk'``, ``'pntk'`` (returns that array), a tuple of them
      (returns an ``EmpiricalKernel`` namedtuple with those fields, which
      ``nt.predict.gradient_descent_mse_ensemble`` accepts), or ``None`` for
      ``('nngp', 'ntk')`` as in NT.

    Raises:
      ValueError: an unknown ``implementation`` or ``get``, and the errors of
        `empirical_pntk_fn`.

    Example:
      >>> import jax
      >>> import nt_pntk
      >>> from neural_tangents import stax
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(32), stax.Relu(), stax.Dense(3))
      >>> _, params = init_fn(jax.random.PRNGKey(0), (-1, 2))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
      >>> kernel_fn = nt_pntk.empirical_kernel_fn(apply_fn, vmap_axes=0)
      >>> k = kernel_fn(x, None, ("ntk", "pntk"), params)
      >>> k.ntk.shape, k.pntk.shape
      ((4, 4), (4, 4))
    """
    implementation = _checks.implementation(implementation)
    trace_axes = _checks.axes_tuple("trace_axes", trace_axes)
    diagonal_axes = _checks.axes_tuple("diagonal_axes", diagonal_axes)
    vmap_axes = _checks.vmap_axes(vmap_axes)
    axes = dict(trace_axes=trace_axes, diagonal_axes=diagonal_axes)
    # NT would raise a bare IndexError for an axis out of range, and ignore a repeated one.
    checked_f = _axes_checked(f, trace_axes, diagonal_axes)
    kernel_fns = {
        "nngp": nt.empirical_nngp_fn(checked_f, **axes),
        "ntk": nt.empirical_ntk_fn(checked_f, **axes, vmap_axes=vmap_axes, implementation=implementation),
        "pntk": empirical_pntk_fn(f, **axes, vmap_axes=vmap_axes, implementation=implementation),
    }
    in_axes = _input_batch_axes(vmap_axes)

    def kernel_fn(
        x1: PyTree,
        x2: PyTree | None,
        get: KernelName | tuple[KernelName, ...] | None,
        params: PyTree,
        **apply_fn_kwargs,
    ) -> PyTree:
        names = _checks.kernel_names(get, KERNEL_NAMES)
        if _checks.matching_inputs(x1, x2, in_axes):
            _check_output_sizes(f, x1, x2, params, apply_fn_kwargs, trace_axes, diagonal_axes)
        values = [kernel_fns[name](x1, x2, params, **apply_fn_kwargs) for name in names]
        if isinstance(get, str):
            return values[0]
        return _empirical_kernel_tuple(names)(*values)

    return kernel_fn


@functools.cache
def _empirical_kernel_tuple(names: tuple[str, ...]) -> type:
    return collections.namedtuple("EmpiricalKernel", names)
