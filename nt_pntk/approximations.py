r"""The N×N approximations of the eNTK, each with the signature of `empirical_pntk_fn`.

For a network :math:`f: \mathbb{R}^D \to \mathbb{R}^O` with eNTK blocks
:math:`\Theta_{oo'}(x_1, x_2) = J_o(x_1) J_{o'}(x_2)^\top`, each approximation
here is one N×N kernel :math:`K` meant to be used as :math:`K \otimes I_O`:

* ``'pntk'``: :math:`\frac1O \sum_{o,o'} \Theta_{oo'}`, the pNTK (sum of
  logits); 1 Jacobian row per input.
* ``'trace'``: :math:`\frac1O \sum_o \Theta_{oo}`, NT's ``trace_axes``
  kernel; O rows.
* ``'single_logit'``: :math:`\Theta_{kk}`, the NTK of the one output
  :math:`f_k`; 1 row.
* ``'projection'``: :math:`\frac1m \sum_j w_j^\top \Theta\, w_j` with
  :math:`w_j \sim \mathcal N(0, I_O / O)`; m rows.
* ``'entk'``: the full eNTK :math:`\Theta` itself, ``(N, N, O, O)``, the
  reference; O rows.

The random projection is unbiased for the trace approximation,
:math:`\mathbb E[w^\top \Theta w] = \operatorname{tr}(\Theta)/O`, and the pNTK
is its ``m = 1``, :math:`w = \mathbb 1/\sqrt O` case. Every kernel is the NTK of
a wrapped network (the projected, summed or selected outputs), computed by NT
with ``trace_axes``; none builds the full eNTK.

Example:
  >>> import jax
  >>> import nt_pntk
  >>> from nt_pntk import approximations
  >>> from neural_tangents import stax
  >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(32), stax.Relu(), stax.Dense(4))
  >>> _, params = init_fn(jax.random.PRNGKey(0), (-1, 3))
  >>> x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
  >>> kernel_fn = approximations.approximation_fn("projection", apply_fn, vmap_axes=0, m=2)
  >>> kernel_fn(x, None, params).shape
  (5, 5)
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np

from nt_pntk import _checks, _pntk

PyTree = Any
Axes = _pntk.Axes
ApproximationName = Literal["entk", "pntk", "trace", "single_logit", "projection"]
APPROXIMATION_NAMES: tuple[ApproximationName, ...] = get_args(ApproximationName)
_DEFAULT_IMPLEMENTATION = nt.NtkImplementation.JACOBIAN_CONTRACTION
# The keyword options each approximation takes, with their defaults.
_OPTIONS: dict[str, dict[str, int]] = {
    "entk": {},
    "pntk": {},
    "trace": {},
    "single_logit": {"logit": 0},
    "projection": {"m": 1, "seed": 0},
}


def empirical_trace_fn(
    f: Callable,
    trace_axes: Axes = (-1,),
    diagonal_axes: Axes = (),
    vmap_axes: Any = None,
    implementation: nt.NtkImplementation | int = _DEFAULT_IMPLEMENTATION,
) -> Callable[..., PyTree]:
    r"""Returns a function computing NT's trace approximation :math:`\frac1O \sum_o \Theta_{oo}`.

    This is ``nt.empirical_ntk_fn(f, trace_axes=trace_axes, ...)`` itself, with
    the arguments checked up front (NT would raise a bare ``IndexError`` for an
    axis out of range). ``O`` is the product of the sizes of ``trace_axes``.

    Args:
      f: the apply function ``f(params, x, **kwargs)``.
      trace_axes: the logit axes, averaged over their diagonal.
      diagonal_axes: as in NT.
      vmap_axes: as in NT.
      implementation: an ``nt.NtkImplementation`` or its int value.

    Returns:
      ``kernel_fn(x1, x2, params, **apply_fn_kwargs)``: an ``(N1, N2)`` array
      for an ``(N, O)`` output and ``trace_axes=(-1,)``.

    Raises:
      ValueError: the errors of `nt_pntk.empirical_pntk_fn`.
      TypeError: axes that are not ints.

    Example:
      >>> import jax
      >>> from nt_pntk import approximations
      >>> from neural_tangents import stax
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(16), stax.Relu(), stax.Dense(3))
      >>> _, params = init_fn(jax.random.PRNGKey(0), (-1, 2))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
      >>> approximations.empirical_trace_fn(apply_fn, vmap_axes=0)(x, None, params).shape
      (4, 4)
    """
    return _checked_ntk_fn(f, trace_axes, diagonal_axes, vmap_axes, implementation, keep_logits=False)


def empirical_single_logit_fn(
    f: Callable,
    trace_axes: Axes = (-1,),
    diagonal_axes: Axes = (),
    vmap_axes: Any = None,
    implementation: nt.NtkImplementation | int = _DEFAULT_IMPLEMENTATION,
    *,
    logit: int = 0,
) -> Callable[..., PyTree]:
    r"""Returns a function computing the single-logit kernel :math:`\Theta_{kk}`, the NTK of :math:`f_k`.

    .. math::
        K(x_1, x_2) = \Theta_{kk}(x_1, x_2)
        = J_k(x_1) J_k(x_2)^\top, \qquad k = \texttt{logit},

    the NTK of the network restricted to output ``logit`` of the logit axis. It
    costs one Jacobian row per input, like the pNTK, but sees one output only.

    Args:
      f: the apply function ``f(params, x, **kwargs)``.
      trace_axes: the logit axis, exactly one axis (e.g. ``(-1,)``).
      diagonal_axes: as in NT.
      vmap_axes: as in NT.
      implementation: an ``nt.NtkImplementation`` or its int value.
      logit: the output :math:`k` along the logit axis; negative values count
        from the end, as in NumPy indexing.

    Returns:
      ``kernel_fn(x1, x2, params, **apply_fn_kwargs)``: an ``(N1, N2)`` array
      for an ``(N, O)`` output.

    Raises:
      ValueError: ``trace_axes`` not a single axis; ``logit`` outside
        ``[-O, O)`` (when ``kernel_fn`` is called and ``O`` is known); the
        errors of `nt_pntk.empirical_pntk_fn`.
      TypeError: ``logit`` or an axis that is not an int.

    Example:
      >>> import jax
      >>> from nt_pntk import approximations
      >>> from neural_tangents import stax
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(16), stax.Relu(), stax.Dense(3))
      >>> _, params = init_fn(jax.random.PRNGKey(0), (-1, 2))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
      >>> kernel_fn = approximations.empirical_single_logit_fn(apply_fn, vmap_axes=0, logit=2)
      >>> kernel_fn(x, None, params).shape
      (4, 4)
    """
    logit = _int_option("logit", logit)
    implementation = _checks.implementation(implementation)
    vmap_axes = _checks.vmap_axes(vmap_axes)
    diagonal_axes = _checks.axes_tuple("diagonal_axes", diagonal_axes)
    axis = _single_axis("single_logit", trace_axes)

    def select(fx: jax.Array) -> jax.Array:
        a = _normalized_axis(axis, diagonal_axes, fx.ndim)
        size = fx.shape[a]
        if not -size <= logit < size:
            raise ValueError(
                f"`logit` must index the logit axis {axis} of size O={size} (the network output has "
                f"shape {tuple(fx.shape)}): use 0 <= logit < {size} (or -{size} <= logit < 0); "
                f"got logit={logit}."
            )
        k = logit % size
        return jax.lax.slice_in_dim(fx, k, k + 1, axis=a)

    return _ntk_of_wrapped(f, select, (axis,), diagonal_axes, vmap_axes, implementation)


def projection_directions(m: int, out: int, *, seed: int = 0) -> np.ndarray:
    r"""The ``m`` Gaussian directions :math:`w_j \sim \mathcal N(0, I_O / O)` of `empirical_projection_fn`.

    Drawn with NumPy (``np.random.default_rng(seed)``), so the same on every
    backend and JAX version; rows are the directions.

    Args:
      m: number of directions, at least 1.
      out: O, the size of the logit axis, at least 1.
      seed: a non-negative int.

    Returns:
      A float64 array of shape ``(m, out)``.

    Raises:
      ValueError: ``m`` or ``out`` below 1, or a negative ``seed``.
      TypeError: an argument that is not an int.

    Example:
      >>> from nt_pntk import approximations
      >>> approximations.projection_directions(3, 10, seed=1).shape
      (3, 10)
    """
    m = _positive_int("m", m)
    out = _positive_int("out", out)
    seed = _seed(seed)
    return _directions(m, out, seed).copy()


@functools.lru_cache(maxsize=32)
def _directions(m: int, out: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((m, out)) / np.sqrt(out)


def empirical_projection_fn(
    f: Callable,
    trace_axes: Axes = (-1,),
    diagonal_axes: Axes = (),
    vmap_axes: Any = None,
    implementation: nt.NtkImplementation | int = _DEFAULT_IMPLEMENTATION,
    *,
    m: int = 1,
    seed: int = 0,
) -> Callable[..., PyTree]:
    r"""Returns a function computing the random-projection kernel, an unbiased estimate of the trace.

    .. math::
        K(x_1, x_2) = \frac1m \sum_{j=1}^m \mathrm{NTK}(w_j^\top f)(x_1, x_2)
        = \frac1m \sum_{j=1}^m w_j^\top \Theta(x_1, x_2)\, w_j,
        \qquad w_j \sim \mathcal N(0, I_O / O) \text{ i.i.d.}

    With this normalization :math:`\mathbb E[K] = \operatorname{tr}(\Theta)/O
    = \frac1O \sum_o \Theta_{oo}`, NT's trace approximation, and the variance
    of an entry is :math:`2 \operatorname{tr}(\Theta_s^2) / (m O^2)` with
    :math:`\Theta_s = (\Theta + \Theta^\top)/2`. The pNTK is the deterministic
    ``m = 1``, :math:`w = \mathbb 1/\sqrt O` case. Computed as NT's trace
    approximation of the ``m`` stacked projected outputs :math:`W f`: ``m``
    Jacobian rows per input. The directions are `projection_directions` ``(m,
    O, seed=seed)``.

    Args:
      f: the apply function ``f(params, x, **kwargs)``.
      trace_axes: the logit axis, exactly one axis (e.g. ``(-1,)``).
      diagonal_axes: as in NT.
      vmap_axes: as in NT.
      implementation: an ``nt.NtkImplementation`` or its int value.
      m: number of random directions, at least 1.
      seed: a non-negative int seeding the directions.

    Returns:
      ``kernel_fn(x1, x2, params, **apply_fn_kwargs)``: an ``(N1, N2)`` array
      for an ``(N, O)`` output.

    Raises:
      ValueError: ``m`` below 1, a negative ``seed``, ``trace_axes`` not a
        single axis; the errors of `nt_pntk.empirical_pntk_fn`.
      TypeError: ``m``, ``seed`` or an axis that is not an int.

    Example:
      >>> import jax
      >>> from nt_pntk import approximations
      >>> from neural_tangents import stax
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(16), stax.Relu(), stax.Dense(3))
      >>> _, params = init_fn(jax.random.PRNGKey(0), (-1, 2))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
      >>> kernel_fn = approximations.empirical_projection_fn(apply_fn, vmap_axes=0, m=8, seed=1)
      >>> kernel_fn(x, None, params).shape
      (4, 4)
    """
    m = _positive_int("m", m)
    seed = _seed(seed)
    implementation = _checks.implementation(implementation)
    vmap_axes = _checks.vmap_axes(vmap_axes)
    diagonal_axes = _checks.axes_tuple("diagonal_axes", diagonal_axes)
    axis = _single_axis("projection", trace_axes)

    def project(fx: jax.Array) -> jax.Array:
        a = _normalized_axis(axis, diagonal_axes, fx.ndim)
        w = jnp.asarray(_directions(m, fx.shape[a], seed), fx.dtype)
        return jnp.moveaxis(jnp.tensordot(fx, w, axes=((a,), (1,))), -1, a)

    return _ntk_of_wrapped(f, project, (axis,), diagonal_axes, vmap_axes, implementation)


def empirical_entk_fn(
    f: Callable,
    trace_axes: Axes = (-1,),
    diagonal_axes: Axes = (),
    vmap_axes: Any = None,
    implementation: nt.NtkImplementation | int = _DEFAULT_IMPLEMENTATION,
) -> Callable[..., PyTree]:
    r"""Returns a function computing the full eNTK :math:`\Theta_{oo'}(x_1, x_2)`, the reference.

    ``nt.empirical_ntk_fn(f, trace_axes=(), ...)``: the logit axes named by
    ``trace_axes`` are *kept*, so an ``(N, O)`` output gives an ``(N1, N2, O,
    O)`` kernel. It costs O Jacobian rows per input and O² times the memory of
    the N×N kernels.

    Args:
      f: the apply function ``f(params, x, **kwargs)``.
      trace_axes: the logit axes (checked against the output, not traced).
      diagonal_axes: as in NT.
      vmap_axes: as in NT.
      implementation: an ``nt.NtkImplementation`` or its int value.

    Returns:
      ``kernel_fn(x1, x2, params, **apply_fn_kwargs)``.

    Raises:
      ValueError: the errors of `nt_pntk.empirical_pntk_fn`.
      TypeError: axes that are not ints.

    Example:
      >>> import jax
      >>> from nt_pntk import approximations
      >>> from neural_tangents import stax
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(16), stax.Relu(), stax.Dense(3))
      >>> _, params = init_fn(jax.random.PRNGKey(0), (-1, 2))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
      >>> approximations.empirical_entk_fn(apply_fn, vmap_axes=0)(x, None, params).shape
      (4, 4, 3, 3)
    """
    return _checked_ntk_fn(f, trace_axes, diagonal_axes, vmap_axes, implementation, keep_logits=True)


def _checked_ntk_fn(
    f: Callable,
    trace_axes: Any,
    diagonal_axes: Any,
    vmap_axes: Any,
    implementation: Any,
    *,
    keep_logits: bool,
) -> Callable[..., PyTree]:
    """NT's eNTK of `f` with our argument checks: traced over `trace_axes`, or full if `keep_logits`."""
    implementation = _checks.implementation(implementation)
    vmap_axes = _checks.vmap_axes(vmap_axes)
    trace_axes = _checks.axes_tuple("trace_axes", trace_axes)
    diagonal_axes = _checks.axes_tuple("diagonal_axes", diagonal_axes)
    nt_trace_axes = () if keep_logits else trace_axes
    ntk_fn = nt.empirical_ntk_fn(
        _pntk._axes_checked(f, trace_axes, diagonal_axes),
        trace_axes=nt_trace_axes,
        diagonal_axes=diagonal_axes,
        vmap_axes=vmap_axes,
        implementation=implementation,
    )
    return _with_input_checks(ntk_fn, f, nt_trace_axes, diagonal_axes, vmap_axes)


_FUNCTIONS: dict[str, Callable[..., Callable]] = {
    "entk": empirical_entk_fn,
    "pntk": _pntk.empirical_pntk_fn,
    "trace": empirical_trace_fn,
    "single_logit": empirical_single_logit_fn,
    "projection": empirical_projection_fn,
}


def approximation_fn(
    name: ApproximationName,
    f: Callable,
    *,
    trace_axes: Axes = (-1,),
    diagonal_axes: Axes = (),
    vmap_axes: Any = None,
    implementation: nt.NtkImplementation | int = _DEFAULT_IMPLEMENTATION,
    **options: int,
) -> Callable[..., PyTree]:
    r"""Returns the kernel function of approximation ``name`` (see the module's table).

    Args:
      name: ``'pntk'`` (:math:`\frac1O \sum_{o,o'} \Theta_{oo'}`), ``'trace'``
        (:math:`\frac1O \sum_o \Theta_{oo}`), ``'single_logit'``
        (:math:`\Theta_{kk}`), ``'projection'`` (:math:`\frac1m \sum_j
        w_j^\top \Theta w_j`) or ``'entk'`` (the full eNTK).
      f: the apply function ``f(params, x, **kwargs)``.
      trace_axes: the logit axes; one axis for ``'single_logit'`` and
        ``'projection'``.
      diagonal_axes: as in NT.
      vmap_axes: as in NT.
      implementation: an ``nt.NtkImplementation`` or its int value.
      **options: ``logit`` for ``'single_logit'`` (default 0); ``m`` (default
        1) and ``seed`` (default 0) for ``'projection'``.

    Returns:
      ``kernel_fn(x1, x2, params, **apply_fn_kwargs)``, as the function of
      that name: `nt_pntk.empirical_pntk_fn`, `empirical_trace_fn`,
      `empirical_single_logit_fn`, `empirical_projection_fn` or
      `empirical_entk_fn`.

    Raises:
      ValueError: an unknown ``name``, and the errors of that function.
      TypeError: an option that ``name`` does not take.

    Example:
      >>> import jax
      >>> from nt_pntk import approximations
      >>> from neural_tangents import stax
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(16), stax.Relu(), stax.Dense(3))
      >>> _, params = init_fn(jax.random.PRNGKey(0), (-1, 2))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
      >>> approximations.approximation_fn("single_logit", apply_fn, logit=1)(x, None, params).shape
      (4, 4)
    """
    if not isinstance(name, str) or name not in _FUNCTIONS:
        raise ValueError(f"`name` must be one of {APPROXIMATION_NAMES}; got {name!r}.")
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        takes = f"takes only {sorted(_OPTIONS[name])}" if _OPTIONS[name] else "takes no options"
        raise TypeError(
            f"approximation {name!r} {takes}; got {unknown}. The options are: "
            + "; ".join(f"{n}: {sorted(o) or 'none'}" for n, o in _OPTIONS.items())
            + "."
        )
    return _FUNCTIONS[name](
        f,
        trace_axes=trace_axes,
        diagonal_axes=diagonal_axes,
        vmap_axes=vmap_axes,
        implementation=implementation,
        **options,
    )


def jacobian_rows(name: ApproximationName, out: int, **options: int) -> int:
    """Jacobian rows per input that approximation ``name`` computes for ``out`` = O logits.

    Raises:
      ValueError: an unknown ``name``.
    """
    if name not in _FUNCTIONS:
        raise ValueError(f"`name` must be one of {APPROXIMATION_NAMES}; got {name!r}.")
    return {"entk": out, "trace": out, "projection": options.get("m", _OPTIONS["projection"]["m"])}.get(
        name, 1
    )


def relative_error(entk: Any, kernel: Any) -> float:
    r"""The relative Frobenius error of ``kernel`` ⊗ I_O against the full eNTK.

    .. math::
        \frac{\lVert \Theta - K \otimes I_O \rVert_F}{\lVert \Theta \rVert_F}
        = \frac{\big(\sum_{ab} \sum_{o,o'} (\Theta_{oo'}(x_a, x_b)
          - \delta_{oo'} K(x_a, x_b))^2\big)^{1/2}}{\lVert \Theta \rVert_F},

    in float64; a ``kernel`` of the eNTK's own shape is compared as is.

    Args:
      entk: the ``(N1, N2, O, O)`` eNTK :math:`\Theta` (NT's ``trace_axes=()`` layout).
      kernel: an ``(N1, N2)`` kernel :math:`K`, or an ``(N1, N2, O, O)`` one.

    Returns:
      The relative error, a float.

    Raises:
      ValueError: shapes other than these.

    Example:
      >>> import numpy as np
      >>> from nt_pntk import approximations
      >>> k = np.ones((2, 2))
      >>> approximations.relative_error(np.einsum("ab,op->abop", k, np.eye(3)), k)
      0.0
    """
    e = np.asarray(entk, np.float64)
    k = np.asarray(kernel, np.float64)
    if e.ndim != 4 or e.shape[2] != e.shape[3]:
        raise ValueError(
            f"`entk` must be an (N1, N2, O, O) eNTK (NT's trace_axes=() layout); got shape {e.shape}."
        )
    if k.shape == e.shape:
        difference = e - k
    elif k.shape == e.shape[:2]:
        difference = e - np.einsum("ab,op->abop", k, np.eye(e.shape[2]))
    else:
        raise ValueError(
            f"`kernel` must have shape {e.shape[:2]} (used as K ⊗ I_O) or {e.shape} for an `entk` of "
            f"shape {e.shape}; got shape {k.shape}."
        )
    return float(np.linalg.norm(difference) / np.linalg.norm(e))


# --- Helpers. ---


def _ntk_of_wrapped(
    f: Callable,
    transform: Callable[[jax.Array], jax.Array],
    trace_axes: tuple[int, ...],
    diagonal_axes: tuple[int, ...],
    vmap_axes: Any,
    implementation: nt.NtkImplementation,
) -> Callable[..., PyTree]:
    """NT's traced NTK of g = `transform` applied to every output leaf of `f`."""

    @functools.wraps(f)
    def g(params: PyTree, x: PyTree, **kwargs) -> PyTree:
        return jax.tree_util.tree_map(transform, f(params, x, **kwargs))

    ntk_fn = nt.empirical_ntk_fn(
        g,
        trace_axes=trace_axes,
        diagonal_axes=diagonal_axes,
        vmap_axes=vmap_axes,
        implementation=implementation,
    )
    return _with_input_checks(ntk_fn, f, trace_axes, diagonal_axes, vmap_axes)


def _with_input_checks(
    ntk_fn: Callable,
    f: Callable,
    trace_axes: tuple[int, ...],
    diagonal_axes: tuple[int, ...],
    vmap_axes: Any,
) -> Callable[..., PyTree]:
    """`ntk_fn`, first checking `x1`, `x2` and their outputs as `empirical_pntk_fn` does."""
    in_axes = _pntk._input_batch_axes(vmap_axes)

    def kernel_fn(x1: PyTree, x2: PyTree | None, params: PyTree, **apply_fn_kwargs) -> PyTree:
        if _checks.matching_inputs(x1, x2, in_axes):
            _pntk._check_output_sizes(f, x1, x2, params, apply_fn_kwargs, trace_axes, diagonal_axes)
        return ntk_fn(x1, x2, params, **apply_fn_kwargs)

    return kernel_fn


def _single_axis(name: str, trace_axes: Any) -> int:
    axes = _checks.axes_tuple("trace_axes", trace_axes)
    if len(axes) != 1:
        raise ValueError(
            f"`trace_axes` must name exactly one output axis, the logit axis, for the {name!r} "
            f"approximation; got {trace_axes!r}. Use trace_axes=(-1,) for an (N, O) output, or "
            "'pntk' or 'trace', which take several axes."
        )
    return axes[0]


def _normalized_axis(axis: int, diagonal_axes: tuple[int, ...], ndim: int) -> int:
    (a,), _ = _checks.normalize_output_axes((axis,), diagonal_axes, ndim)
    return a


def _int_option(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be an int; got {value!r}.")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"`{name}` must be an int; got {value!r} of type {type(value).__name__}.") from None


def _positive_int(name: str, value: Any) -> int:
    value = _int_option(name, value)
    if value < 1:
        raise ValueError(f"`{name}` must be at least 1; got {name}={value}.")
    return value


def _seed(value: Any) -> int:
    value = _int_option("seed", value)
    if value < 0:
        raise ValueError(f"`seed` must be a non-negative int; got seed={value}.")
    return value
