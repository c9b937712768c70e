"""The pseudo-NTK (pNTK) as a drop-in beside `nt.empirical_ntk_fn`."""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from typing import Any, Literal

import neural_tangents as nt

from nt_pntk._src import checks
from nt_pntk._src.kernels import approximations, keyword_args

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
    return approximations.summed_logits(
        f, checks.axes_tuple("trace_axes", trace_axes), checks.axes_tuple("diagonal_axes", diagonal_axes)
    )


def empirical_pntk_fn(
    f: Callable,
    trace_axes: Axes = (-1,),
    diagonal_axes: Axes = (),
    vmap_axes: Any = None,
    implementation: nt.NtkImplementation | int = nt.NtkImplementation.JACOBIAN_CONTRACTION,
) -> approximations.EmpiricalKernelFn:
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
      ``pntk_fn(x1, x2, params, **apply_fn_kwargs)``, an
      `nt_pntk.approximations.EmpiricalKernelFn` (``PNTK().kernel_fn(f, ...)``).
      ``x2=None`` means ``x2 = x1``. For an ``(N, O)`` output and the default ``trace_axes`` it
      returns an ``(N1, N2)`` array; in general the shape of
      ``nt.empirical_ntk_fn`` with the same arguments. Keyword arguments are
      split between x1 and x2 as NT splits them (``rng``, 2-tuples); those
      whose values hold no array (``train=False``) reach ``f`` untraced (see
      `nt_pntk._src.kernels.keyword_args`).

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
    return approximations.PNTK().kernel_fn(
        f,
        trace_axes=trace_axes,
        diagonal_axes=diagonal_axes,
        vmap_axes=vmap_axes,
        implementation=implementation,
    )


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
    axes = dict(trace_axes=trace_axes, diagonal_axes=diagonal_axes)
    pntk_fn = approximations.PNTK().kernel_fn(f, **axes, vmap_axes=vmap_axes, implementation=implementation)
    ntk_fn = approximations.Trace().kernel_fn(f, **axes, vmap_axes=vmap_axes, implementation=implementation)
    # NT's NNGP, with the axes checked against the output as the other two do.
    checked = dict(trace_axes=pntk_fn.trace_axes, diagonal_axes=pntk_fn.diagonal_axes)
    nngp_fn = keyword_args.NTKernel(
        lambda g, _: nt.empirical_nngp_fn(g, **checked),
        approximations.Trace().wrap(f, pntk_fn.trace_axes, pntk_fn.diagonal_axes).g,
        None,
    )
    kernel_fns = {"nngp": nngp_fn, "ntk": ntk_fn.call_split, "pntk": pntk_fn.call_split}

    def kernel_fn(
        x1: PyTree,
        x2: PyTree | None,
        get: KernelName | tuple[KernelName, ...] | None,
        params: PyTree,
        **apply_fn_kwargs,
    ) -> PyTree:
        names = checks.kernel_names(get, KERNEL_NAMES)
        # Split once as NT does (see `keyword_args`): every kernel sees the same two sides.
        sides = keyword_args.split(apply_fn_kwargs, x1, x2)
        if names == ("nngp",) and checks.matching_inputs(x1, x2, pntk_fn.in_axes):
            approximations.check_output_sizes(
                f, x1, x2, params, sides, pntk_fn.trace_axes, pntk_fn.diagonal_axes
            )
        values = [kernel_fns[name](x1, x2, params, *sides) for name in names]
        if isinstance(get, str):
            return values[0]
        return _empirical_kernel_tuple(names)(*values)

    return kernel_fn


@functools.cache
def _empirical_kernel_tuple(names: tuple[str, ...]) -> type:
    return collections.namedtuple("EmpiricalKernel", names)
