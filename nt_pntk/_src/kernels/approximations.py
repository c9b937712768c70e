r"""The N×N approximations of the eNTK as typed objects, and the kernel functions they make.

For a network :math:`f: \mathbb{R}^D \to \mathbb{R}^O` with eNTK blocks
:math:`\Theta_{oo'}(x_1, x_2) = J_o(x_1) J_{o'}(x_2)^\top`, each approximation is
one N×N kernel :math:`K`, meant as :math:`K \otimes I_O`, and each is NT's NTK
of a *wrapped* network g, traced over its output axes:

=====================  ==============================================  ================  ==========
approximation          K                                               g                 rows/input
=====================  ==============================================  ================  ==========
``PNTK()``             :math:`\frac1O \sum_{o,o'} \Theta_{oo'}`        Σ_o f_o / √O      1
``Trace()``            :math:`\frac1O \sum_o \Theta_{oo}`              f                 O
``SingleLogit(k)``     :math:`\Theta_{kk}`                             f_k               1
``Projection(m, s)``   :math:`\frac1m \sum_j w_j^\top \Theta w_j`      (w_j·f)_j         m
``FullENTK()``         :math:`\Theta` itself, (N1, N2, O, O)           f (not traced)    O
=====================  ==============================================  ================  ==========

with :math:`w_j \sim \mathcal N(0, I_O/O)` seeded by ``s`` (unbiased for the
trace; the pNTK is ``m = 1``, :math:`w = \mathbb 1/\sqrt O`). The traced NTK of g
is a Gram matrix of per-example Jacobian rows of g (``rows/input`` of them), so
every N×N approximation also gives its *Gram features*, which `kernel_matrix`
reuses across tiles (`EmpiricalKernelFn.features_fn`).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal, get_args

import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np

from nt_pntk._src import checks, deprecations
from nt_pntk._src.kernels import features, keyword_args

PyTree = Any
Axes = int | tuple[int, ...]
ApproximationName = Literal["entk", "pntk", "trace", "single_logit", "projection"]
APPROXIMATION_NAMES: tuple[ApproximationName, ...] = get_args(ApproximationName)
DEFAULT_IMPLEMENTATION = nt.NtkImplementation.JACOBIAN_CONTRACTION


@dataclasses.dataclass(frozen=True)
class Wrapped:
    """A network g built from f, and the output axes of g that NT traces."""

    g: Callable
    trace_axes: tuple[int, ...]


class Approximation(abc.ABC):
    """An approximation of the eNTK: how to wrap the network, and what that costs.

    Subclasses are frozen dataclasses; their fields are the approximation's
    options (``SingleLogit(logit=3)``, ``Projection(m=8, seed=1)``).
    """

    #: The name the command line and the validation's configurations know it by.
    name: ClassVar[ApproximationName]

    @abc.abstractmethod
    def wrap(self, f: Callable, trace_axes: tuple[int, ...], diagonal_axes: tuple[int, ...]) -> Wrapped:
        """The wrapped network g of `f` (checked axes) and the axes of g that NT traces."""

    @abc.abstractmethod
    def jacobian_rows(self, outputs: int) -> int:
        """Jacobian rows per input for a network with `outputs` logits (the cost, and the Gram
        features' rows)."""

    def kernel_fn(
        self,
        f: Callable,
        *,
        trace_axes: Axes = (-1,),
        diagonal_axes: Axes = (),
        vmap_axes: Any = None,
        implementation: nt.NtkImplementation | int = DEFAULT_IMPLEMENTATION,
    ) -> EmpiricalKernelFn:
        """The kernel function ``fn(x1, x2, params, **apply_fn_kwargs)`` of this approximation of f.

        Args:
          f: the apply function ``f(params, x, **kwargs)``.
          trace_axes: the logit axes of f's output (the ``O`` axes).
          diagonal_axes: as in ``nt.empirical_ntk_fn``.
          vmap_axes: as in ``nt.empirical_ntk_fn``.
          implementation: an ``nt.NtkImplementation`` or its int value.

        Returns:
          An `EmpiricalKernelFn`, called like the functions of ``nt.empirical_ntk_fn``.

        Raises:
          ValueError: an unknown ``implementation``; axes out of range, repeated or
            overlapping, and inputs whose shapes do not match (when called).
          TypeError: axes or ``vmap_axes`` that are not ints.
        """
        return EmpiricalKernelFn(
            self,
            f,
            checks.axes_tuple("trace_axes", trace_axes),
            checks.axes_tuple("diagonal_axes", diagonal_axes),
            checks.vmap_axes(vmap_axes),
            checks.implementation(implementation),
        )


class EmpiricalKernelFn:
    """An approximation's kernel function of one network: ``fn(x1, x2, params, **apply_fn_kwargs)``.

    Called exactly like the functions ``nt.empirical_ntk_fn`` returns (``x2=None``
    means ``x2 = x1``), and as usable with ``jax.jit`` and ``nt.batch``. It also
    says what it is (`approximation`, `f`, the axes, `implementation`) and gives
    its per-example Gram features (`features_fn`), which `nt_pntk.kernel_matrix`
    reuses across tiles.
    """

    def __init__(
        self,
        approximation: Approximation,
        f: Callable,
        trace_axes: tuple[int, ...],
        diagonal_axes: tuple[int, ...],
        vmap_axes: Any,
        implementation: nt.NtkImplementation,
    ):
        self.approximation = approximation
        self.f = f
        self.trace_axes = trace_axes
        self.diagonal_axes = diagonal_axes
        self.vmap_axes = vmap_axes
        self.implementation = implementation
        self._wrapped = approximation.wrap(f, trace_axes, diagonal_axes)
        self._ntk_fn = self._nt_kernel(self._wrapped.g)
        self.in_axes = vmap_axes[0] if isinstance(vmap_axes, tuple) and len(vmap_axes) == 3 else vmap_axes
        # Not `functools.update_wrapper`: its `__wrapped__` would give this function f's signature
        # (`inspect.signature` follows it), and `jax.jit(fn, static_argnames=...)` would then map
        # names to f's positions.
        for name in ("__module__", "__name__", "__qualname__"):
            if hasattr(f, name):
                setattr(self, name, getattr(f, name))
        self.__doc__ = f"The {approximation!r} kernel of {getattr(f, '__qualname__', f)!r}."

    def __call__(self, x1: PyTree, x2: PyTree | None, params: PyTree, **apply_fn_kwargs) -> PyTree:
        """The kernel; the keyword arguments split between x1 and x2 as NT does (see `keyword_args`)."""
        kwargs1, kwargs2 = keyword_args.split(apply_fn_kwargs, x1, x2)
        return self.call_split(x1, x2, params, kwargs1, kwargs2)

    def call_split(
        self, x1: PyTree, x2: PyTree | None, params: PyTree, kwargs1: dict[str, Any], kwargs2: dict[str, Any]
    ) -> PyTree:
        """The kernel with x1's and x2's keyword arguments given (already split, e.g. for a tile of
        rows of x1 and columns of x2: they are those of the whole x1 and x2)."""
        checks.has_parameters(params)
        if checks.matching_inputs(x1, x2, self.in_axes):
            # Batches of different sizes: the axes that pair x1's and x2's outputs must agree.
            paired = self._wrapped.trace_axes
            check_output_sizes(self.f, x1, x2, params, (kwargs1, kwargs2), paired, self.diagonal_axes)
        ntk_fn = self._ntk_fn
        if not features.all_differentiable(params):
            # Integer leaves held constant (no share of the kernel) and Python scalars as arrays, for
            # every implementation: NT's Jacobian ones fail on integers, and two of them on scalars.
            params, rebuild = features.differentiable(params)
            g = self._wrapped.g
            ntk_fn = self._nt_kernel(lambda p, x, **kwargs: g(rebuild(p), x, **kwargs))
        try:
            return ntk_fn(x1, x2, params, kwargs1, kwargs2)
        except TypeError as e:
            if "requires real-valued outputs" not in str(e):
                raise
            raise TypeError(
                f"the network's output is complex, which implementation={self.implementation.name} "
                "(a Jacobian, `jax.jacrev`) cannot differentiate; pass implementation="
                "NTK_VECTOR_PRODUCTS (2) or STRUCTURED_DERIVATIVES (3), which can."
            ) from e

    def _nt_kernel(self, g: Callable) -> keyword_args.NTKernel:
        """NT's kernel function of the wrapped network g, called with each side's keyword arguments."""
        make = functools.partial(
            _nt_ntk_fn,
            trace_axes=self._wrapped.trace_axes,
            diagonal_axes=self.diagonal_axes,
            implementation=self.implementation,
        )
        return keyword_args.NTKernel(make, g, self.vmap_axes)

    def features_fn(self, *, structured: bool = False) -> Callable[..., list]:
        """Per-example Gram features ``F(x, params, **kw)``: ``fn(x1, x2) = Σ_l F_l(x1) F_l(x2)ᵀ``.

        With ``structured=True`` a dense layer's parameters come as a pair of
        factors ``(A, D)``, their share of the kernel ``(A Aᵀ) ⊙ (D Dᵀ)`` (see
        `nt_pntk._src.kernels.structured`): far fewer numbers per example.

        Raises (when the returned function is called) `NotAGramKernel` where the
        kernel is not such a Gram matrix: an output axis left in the kernel (not
        traced, or diagonal), or a PyTree output.
        """
        wrapped = self._wrapped
        return features.gram_features_fn(
            wrapped.g, wrapped.trace_axes, self.diagonal_axes, self.vmap_axes, structured=structured
        )

    def with_implementation(self, implementation: nt.NtkImplementation | int) -> EmpiricalKernelFn:
        """The same kernel, computed by another NT implementation."""
        return EmpiricalKernelFn(
            self.approximation,
            self.f,
            self.trace_axes,
            self.diagonal_axes,
            self.vmap_axes,
            checks.implementation(implementation),
        )

    def describe(self) -> dict[str, str]:
        """What this kernel is, in words stable across processes (for records on disk)."""
        return {
            "approximation": repr(self.approximation),
            "f": features.describe(self.f),
            "trace_axes": repr(self.trace_axes),
            "diagonal_axes": repr(self.diagonal_axes),
            "vmap_axes": repr(self.vmap_axes),
            "implementation": self.implementation.name,
        }

    def __repr__(self) -> str:
        return (
            f"EmpiricalKernelFn({self.approximation!r}, f={features.describe(self.f)}, "
            f"trace_axes={self.trace_axes}, vmap_axes={self.vmap_axes!r}, "
            f"implementation={self.implementation.name})"
        )


def _nt_ntk_fn(g: Callable, vmap_axes: Any, **options: Any) -> Callable:
    return nt.empirical_ntk_fn(g, vmap_axes=vmap_axes, **options)


# --- The approximations ------------------------------------------------------------------------


def _mapped(f: Callable, transform: Callable[[jax.Array], jax.Array]) -> Callable:
    """g = `transform` applied to every output leaf of `f`."""

    @functools.wraps(f)
    def g(params: PyTree, x: PyTree, **kwargs) -> PyTree:
        return jax.tree_util.tree_map(transform, f(params, x, **kwargs))

    return g


def summed_logits(f: Callable, trace_axes: tuple[int, ...], diagonal_axes: tuple[int, ...]) -> Callable:
    """g = Σ_{trace_axes} f / √(Π sizes), the summed axes kept with size 1 (see `summed_logits_fn`)."""

    def sum_logits(fx: jax.Array) -> jax.Array:
        axes, _ = checks.normalize_output_axes(trace_axes, diagonal_axes, fx.ndim)
        count = math.prod(fx.shape[a] for a in axes)
        # sqrt(O) so that NTK(g) = (1/O) Σ_{o,o'} Θ_{oo'}, the paper's pNTK.
        return jnp.sum(fx, axis=axes, keepdims=True) / jnp.sqrt(jnp.asarray(count, fx.dtype))

    return _mapped(f, sum_logits)


def _checked(f: Callable, trace_axes: tuple[int, ...], diagonal_axes: tuple[int, ...]) -> Callable:
    """`f`, checking the axes against its output when called (NT raises a bare IndexError)."""

    def check(fx: jax.Array) -> jax.Array:
        checks.normalize_output_axes(trace_axes, diagonal_axes, fx.ndim)
        return fx

    return _mapped(f, check)


@dataclasses.dataclass(frozen=True)
class PNTK(Approximation):
    r"""The pseudo-NTK: :math:`\frac1O \sum_{o,o'} \Theta_{oo'}`, the NTK of :math:`\sum_o f_o / \sqrt O`."""

    name: ClassVar[ApproximationName] = "pntk"

    def wrap(self, f, trace_axes, diagonal_axes):
        return Wrapped(summed_logits(f, trace_axes, diagonal_axes), trace_axes)

    def jacobian_rows(self, outputs: int) -> int:
        return 1


@dataclasses.dataclass(frozen=True)
class Trace(Approximation):
    r"""NT's ``trace_axes`` kernel: :math:`\frac1O \sum_o \Theta_{oo}` (``nt.empirical_ntk_fn``'s default)."""

    name: ClassVar[ApproximationName] = "trace"

    def wrap(self, f, trace_axes, diagonal_axes):
        return Wrapped(_checked(f, trace_axes, diagonal_axes), trace_axes)

    def jacobian_rows(self, outputs: int) -> int:
        return outputs


@dataclasses.dataclass(frozen=True)
class SingleLogit(Approximation):
    r"""The NTK of one output :math:`f_k`: :math:`\Theta_{kk}`, k = ``logit`` (negative: from the end)."""

    logit: int = 0
    name: ClassVar[ApproximationName] = "single_logit"

    def __post_init__(self):
        checks.integer("logit", self.logit)

    def wrap(self, f, trace_axes, diagonal_axes):
        axis = _single_axis(self.name, trace_axes)
        logit = self.logit

        def select(fx: jax.Array) -> jax.Array:
            (a,), _ = checks.normalize_output_axes((axis,), diagonal_axes, fx.ndim)
            size = fx.shape[a]
            if not -size <= logit < size:
                raise checks.UsageError(
                    f"`logit` must index the logit axis {axis} of size O={size} (the network output has "
                    f"shape {tuple(fx.shape)}): use 0 <= logit < {size} (or -{size} <= logit < 0); "
                    f"got logit={logit}."
                )
            k = logit % size
            return jax.lax.slice_in_dim(fx, k, k + 1, axis=a)

        return Wrapped(_mapped(f, select), (axis,))

    def jacobian_rows(self, outputs: int) -> int:
        return 1


@dataclasses.dataclass(frozen=True)
class Projection(Approximation):
    r"""Random projections: :math:`\frac1m \sum_j w_j^\top \Theta\, w_j`, :math:`w_j \sim N(0, I_O/O)`.

    Unbiased for the trace, :math:`\mathbb E[w^\top \Theta w] = \operatorname{tr}\Theta / O`;
    an entry's variance is :math:`2 \operatorname{tr}(\Theta_s^2)/(m O^2)` with
    :math:`\Theta_s = (\Theta + \Theta^\top)/2`. The directions are
    `projection_directions` ``(m, O, seed=seed)``.
    """

    m: int = 1
    seed: int = 0
    name: ClassVar[ApproximationName] = "projection"

    def __post_init__(self):
        checks.positive_int("m", self.m)
        checks.seed("seed", self.seed)

    def wrap(self, f, trace_axes, diagonal_axes):
        axis = _single_axis(self.name, trace_axes)
        m, seed = self.m, self.seed

        def project(fx: jax.Array) -> jax.Array:
            (a,), _ = checks.normalize_output_axes((axis,), diagonal_axes, fx.ndim)
            w = jnp.asarray(_directions(m, fx.shape[a], seed), fx.dtype)
            return jnp.moveaxis(jnp.tensordot(fx, w, axes=((a,), (1,))), -1, a)

        return Wrapped(_mapped(f, project), (axis,))

    def jacobian_rows(self, outputs: int) -> int:
        return self.m


@dataclasses.dataclass(frozen=True)
class FullENTK(Approximation):
    r"""The full eNTK :math:`\Theta_{oo'}` itself, ``(N1, N2, O, O)``: the reference, not an N×N kernel."""

    name: ClassVar[ApproximationName] = "entk"

    def wrap(self, f, trace_axes, diagonal_axes):
        return Wrapped(_checked(f, trace_axes, diagonal_axes), ())

    def jacobian_rows(self, outputs: int) -> int:
        return outputs


APPROXIMATIONS: dict[str, type[Approximation]] = {
    cls.name: cls for cls in (FullENTK, PNTK, Trace, SingleLogit, Projection)
}


def projection_directions(
    m: int, outputs: int | None = None, *, seed: int = 0, out: int | None = None
) -> Any:
    r"""The ``m`` Gaussian directions :math:`w_j \sim \mathcal N(0, I_O / O)` of `Projection`.

    Drawn with NumPy (``np.random.default_rng(seed)``), so the same on every
    backend and JAX version; rows are the directions.

    Args:
      m: number of directions, at least 1.
      outputs: O, the size of the logit axis, at least 1.
      seed: an int in [0, 2**32).
      out: deprecated name of ``outputs``.

    Returns:
      A float64 array of shape ``(m, outputs)``.

    Raises:
      ValueError: ``m`` or ``outputs`` below 1, or a ``seed`` outside [0, 2**32).
      TypeError: an argument that is not an int.

    Example:
      >>> from nt_pntk import approximations
      >>> approximations.projection_directions(3, 10, seed=1).shape
      (3, 10)
    """
    outputs = deprecations.renamed("projection_directions", "out", out, "outputs", outputs, required=True)
    return _directions(
        checks.positive_int("m", m),
        checks.positive_int("outputs", outputs),
        checks.seed("seed", seed),
    ).copy()


@functools.lru_cache(maxsize=32)
def _directions(m: int, outputs: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((m, outputs)) / np.sqrt(outputs)


def _single_axis(name: str, trace_axes: tuple[int, ...]) -> int:
    if len(trace_axes) != 1:
        raise checks.UsageError(
            f"`trace_axes` must name exactly one output axis, the logit axis, for the {name!r} "
            f"approximation; got {trace_axes!r}. Use trace_axes=(-1,) for an (N, O) output, or "
            "'pntk' or 'trace', which take several axes."
        )
    return trace_axes[0]


def check_output_sizes(
    f: Callable,
    x1: PyTree,
    x2: PyTree,
    params: PyTree,
    apply_fn_kwargs: tuple[dict[str, Any], dict[str, Any]],
    paired_axes: tuple[int, ...],
    diagonal_axes: tuple[int, ...],
) -> None:
    """f(x1) and f(x2) must agree in size on the axes the kernel pairs element by element.

    Called for inputs of different batch sizes: with the batch axis in
    ``diagonal_axes`` NT fails with an `AssertionError` or a shape error deep
    inside, or (NTK_VECTOR_PRODUCTS) returns a silently wrong kernel; with it
    in the summed or traced axes the kernel would pair batches of different
    sizes into a meaningless number. It traces `f` twice more (shapes only).
    """
    # Each side's keyword arguments (`keyword_args.split`); closed over, so static values stay static.
    kwargs1, kwargs2 = apply_fn_kwargs
    fx1 = jax.eval_shape(lambda p, x: f(p, x, **kwargs1), params, x1)
    fx2 = jax.eval_shape(lambda p, x: f(p, x, **kwargs2), params, x2)
    checks.matching_output_axes(fx1, fx2, paired_axes, diagonal_axes)


# --- The functions, one per approximation, with NT's signature --------------------------------


def approximation_fn(
    name: ApproximationName,
    f: Callable,
    *,
    trace_axes: Axes = (-1,),
    diagonal_axes: Axes = (),
    vmap_axes: Any = None,
    implementation: nt.NtkImplementation | int = DEFAULT_IMPLEMENTATION,
    **options: int,
) -> EmpiricalKernelFn:
    r"""The kernel function of the approximation called ``name``: ``APPROXIMATIONS[name](**options)``.

    A thin lookup for code that chooses approximations by name (the command
    line, configuration files); ``approximation_fn("projection", f, m=8)`` is
    ``Projection(m=8).kernel_fn(f)``. Public only as a deprecated name
    (`nt_pntk._src.deprecations`).

    Args:
      name: ``'pntk'``, ``'trace'``, ``'single_logit'``, ``'projection'`` or ``'entk'``.
      f: the apply function ``f(params, x, **kwargs)``.
      trace_axes: the logit axes; one axis for ``'single_logit'`` and ``'projection'``.
      diagonal_axes: as in NT.
      vmap_axes: as in NT.
      implementation: an ``nt.NtkImplementation`` or its int value.
      **options: the approximation's fields: ``logit`` for ``'single_logit'``;
        ``m`` and ``seed`` for ``'projection'``.

    Returns:
      The `EmpiricalKernelFn`.

    Raises:
      ValueError: an unknown ``name``, and the errors of `Approximation.kernel_fn`.
      TypeError: an option that ``name`` does not take.

    Example:
      >>> import jax
      >>> from nt_pntk._src.kernels import approximations
      >>> from neural_tangents import stax
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(16), stax.Relu(), stax.Dense(3))
      >>> _, params = init_fn(jax.random.PRNGKey(0), (-1, 2))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
      >>> approximations.approximation_fn("single_logit", apply_fn, logit=1)(x, None, params).shape
      (4, 4)
    """
    return approximation(name, **options).kernel_fn(
        f,
        trace_axes=trace_axes,
        diagonal_axes=diagonal_axes,
        vmap_axes=vmap_axes,
        implementation=implementation,
    )


def approximation(name: ApproximationName, **options: int) -> Approximation:
    """The approximation object of that name with those options (e.g. ``approximation("projection", m=8)``).

    Raises:
      ValueError: an unknown ``name``.
      TypeError: a ``name`` that is not a string; an option that ``name`` does not take.
    """
    if not isinstance(name, str):
        raise checks.UsageTypeError(
            f"`name` must be one of {APPROXIMATION_NAMES}; got {name!r} of type {type(name).__name__}."
        )
    cls = APPROXIMATIONS.get(name)
    if cls is None:
        raise checks.UsageError(f"`name` must be one of {APPROXIMATION_NAMES}; got {name!r}.")
    takes = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        choices = "; ".join(
            f"{n}: {[fld.name for fld in dataclasses.fields(c)] or 'none'}" for n, c in APPROXIMATIONS.items()
        )
        said = f"takes only {takes}" if takes else "takes no options"
        raise checks.UsageTypeError(
            f"approximation {name!r} {said}; got {unknown}. The options are: {choices}."
        )
    return cls(**options)


def jacobian_rows(
    name: ApproximationName, outputs: int | None = None, *, out: int | None = None, **options
) -> int:
    """Jacobian rows per input that approximation ``name`` computes for ``outputs`` = O logits.

    Raises:
      ValueError: an unknown ``name``.
    """
    outputs = deprecations.renamed("jacobian_rows", "out", out, "outputs", outputs, required=True)
    return approximation(name, **options).jacobian_rows(outputs)


def _function(cls: type[Approximation], doc: str) -> Callable[..., EmpiricalKernelFn]:
    def make(
        f: Callable,
        trace_axes: Axes = (-1,),
        diagonal_axes: Axes = (),
        vmap_axes: Any = None,
        implementation: nt.NtkImplementation | int = DEFAULT_IMPLEMENTATION,
        **options: int,
    ) -> EmpiricalKernelFn:
        return approximation(cls.name, **options).kernel_fn(
            f,
            trace_axes=trace_axes,
            diagonal_axes=diagonal_axes,
            vmap_axes=vmap_axes,
            implementation=implementation,
        )

    make.__doc__ = doc
    return make


_SIGNATURE_NOTE = """

    The arguments, the returned function's signature and its output shape are those of
    ``nt.empirical_ntk_fn``; see `Approximation.kernel_fn` for the errors.

    Example:
      >>> import jax
      >>> import nt_pntk
      >>> from neural_tangents import stax
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(16), stax.Relu(), stax.Dense(3))
      >>> _, params = init_fn(jax.random.PRNGKey(0), (-1, 2))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
      >>> nt_pntk.{name}(apply_fn, vmap_axes=0{options})(x, None, params).shape
      {shape}
    """

empirical_trace_fn = _function(
    Trace,
    "Returns NT's trace approximation :math:`\\frac1O \\sum_o \\Theta_{oo}` (`Trace`), with checked "
    "arguments." + _SIGNATURE_NOTE.format(name="empirical_trace_fn", options="", shape="(4, 4)"),
)
empirical_single_logit_fn = _function(
    SingleLogit,
    "Returns the single-logit kernel :math:`\\Theta_{kk}` (`SingleLogit`, keyword ``logit=k``)."
    + _SIGNATURE_NOTE.format(name="empirical_single_logit_fn", options=", logit=2", shape="(4, 4)"),
)
empirical_projection_fn = _function(
    Projection,
    "Returns the random-projection kernel (`Projection`, keywords ``m`` and ``seed``)."
    + _SIGNATURE_NOTE.format(name="empirical_projection_fn", options=", m=8, seed=1", shape="(4, 4)"),
)
empirical_entk_fn = _function(
    FullENTK,
    "Returns the full eNTK :math:`\\Theta_{oo'}`, ``(N1, N2, O, O)`` (`FullENTK`): "
    "``nt.empirical_ntk_fn(f, trace_axes=())`` with the logit axes checked."
    + _SIGNATURE_NOTE.format(name="empirical_entk_fn", options="", shape="(4, 4, 3, 3)"),
)
for _fn, _name in (
    (empirical_trace_fn, "empirical_trace_fn"),
    (empirical_single_logit_fn, "empirical_single_logit_fn"),
    (empirical_projection_fn, "empirical_projection_fn"),
    (empirical_entk_fn, "empirical_entk_fn"),
):
    _fn.__name__ = _fn.__qualname__ = _name
