r"""Sketched kernels: each Jacobian row of an approximation projected to k numbers, unbiased.

For an approximation whose kernel is a Gram matrix of per-example Jacobian rows
(the pNTK's one row :math:`\nabla_\theta g(x)`, the trace's O rows, a
projection's m), `Sketch` replaces each row :math:`J_r(x) \in \mathbb R^P` by
:math:`\varphi_r(x) = S J_r(x) \in \mathbb R^k` with a random
:math:`S \in \mathbb R^{k \times P}` such that :math:`\mathbb E[S^\top S] = I`:

.. math::
    \hat K(x_1, x_2) = \sum_r \varphi_r(x_1) \cdot \varphi_r(x_2), \qquad
    \mathbb E[\hat K] = K, \qquad
    \frac{\lVert \hat K - K \rVert_F}{\lVert K \rVert_F} = O(k^{-1/2}).

S is never formed. It is a sum of one block per parameter array l (the arrays
hashed independently into the same k buckets), each a pure function of
``(seed, l, the array's shape)``: the same on every device, process, tile and
resumed run. Two methods:

``"countsketch"``
    Per-example gradients (``vmap`` of ``grad``), then a CountSketch of each
    parameter array: entry i goes to bucket :math:`h(i)` with sign
    :math:`\sigma(i)` (a sparse JL transform, O(P) per row).
``"tensorsketch"``
    A dense layer's per-example gradient is an outer product :math:`a \otimes
    \delta_r` (its input activation and the cotangent of its output, found as in
    `nt_pntk._src.kernels.structured`); its TensorSketch (Pham & Pagh 2013) is
    :math:`\mathrm{FFT}^{-1}(\mathrm{FFT}(C_1 a) \odot \mathrm{FFT}(C_2 \delta_r))`,
    the CountSketch of the outer product under the bucket :math:`h_1(i) + h_2(j)
    \bmod k` and sign :math:`\sigma_1(i)\sigma_2(j)`: O(d_in + d_out + k log k)
    per row instead of the d_in·d_out of the gradient. A convolution kernel's
    gradient is a sum of such outer products over the output positions p (input
    patch ⊗ output cotangent), so its TensorSketch is
    :math:`\mathrm{FFT}^{-1}(\sum_p \mathrm{FFT}(C_1 a_p) \odot \mathrm{FFT}(C_2 \delta_{rp}))`;
    it is taken that way where the kernel is large against (positions × k)
    (`factor_conv`: the later stages of a ResNet), else from the gradient, formed
    from the same factors (`nt_pntk._src.kernels.structured.conv_gradient`). Every
    other array (biases, norms) is CountSketched from its per-example gradient.

A two-sided sketch :math:`S_\text{in}^\top (a \otimes \delta) S_\text{out}` of the
same factors would cost less still, but its error falls only as :math:`k^{-1/4}`:
the two factors' errors multiply on a rank-one gradient (the user guide's table).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal, get_args

import jax
import jax.numpy as jnp
import neural_tangents as nt

from nt_pntk._src import checks
from nt_pntk._src.kernels import features
from nt_pntk._src.kernels.approximations import (
    PNTK,
    Approximation,
    EmpiricalKernelFn,
    FullENTK,
    check_output_sizes,
)
from nt_pntk._src.kernels.structured import ConvFactors

PyTree = Any
SketchMethod = Literal["countsketch", "tensorsketch"]
SKETCH_METHODS: tuple[str, ...] = get_args(SketchMethod)

#: The version of S's definition (its hashes): results measured under another are another sketch's.
#: 2: distinct buckets for arrays and short factors of at most k entries.
#: 3: large convolution kernels TensorSketched from their factors (`factor_conv`).
SKETCH_VERSION = 3

#: The sketch dimension k when none is given: on the zoo's networks its relative error against the
#: exact pNTK is below the pNTK's own error against the eNTK at their default widths (user guide).
DEFAULT_DIM = 4096


@dataclasses.dataclass(frozen=True)
class Sketch(Approximation):
    r"""Another approximation's Jacobian rows sketched to ``dim`` numbers each: unbiased, error ~ k^-1/2.

    The kernel is :math:`\sum_r (S J_r(x_1)) \cdot (S J_r(x_2))` over the base's Jacobian rows
    (one per input for the pNTK), with a random :math:`S` that is a pure function of ``seed``
    and the parameters' shapes (see `nt_pntk._src.kernels.sketch`). Its features,
    ``(N, dim)`` per input for a one-row base (``(N, rows, dim)`` otherwise), are what
    `nt_pntk.feature_matrix` stores and `nt_pntk.regression.predict_features` regresses on.

    Args:
      base: the approximation sketched: `PNTK` (default), `Trace`, `SingleLogit` or `Projection`.
      dim: k, the numbers per Jacobian row; at least 1 (powers of two are fastest).
      seed: an int in [0, 2**32).
      method: ``"tensorsketch"`` (dense layers from their factors) or ``"countsketch"``
        (every array from its per-example gradient).

    Raises:
      TypeError: a ``base`` that is not an approximation, or an option of the wrong type.
      ValueError: ``base`` a `FullENTK` or a `Sketch`; ``dim`` below 1; ``seed`` outside
        [0, 2**32); an unknown ``method``.

    Example:
      >>> import jax
      >>> from nt_pntk import approximations
      >>> from neural_tangents import stax
      >>> init_fn, apply_fn, _ = stax.serial(stax.Dense(64), stax.Relu(), stax.Dense(10))
      >>> _, params = init_fn(jax.random.PRNGKey(0), (-1, 3))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
      >>> kernel_fn = approximations.Sketch(dim=256).kernel_fn(apply_fn)
      >>> kernel_fn(x, None, params).shape
      (5, 5)
      >>> kernel_fn.sketch_fn()(x, params).shape
      (5, 256)
    """

    base: Approximation = PNTK()  # noqa: RUF009 (frozen, so one shared default is safe)
    dim: int = DEFAULT_DIM
    seed: int = 0
    method: SketchMethod = "tensorsketch"
    name: ClassVar[str] = "sketch"

    def __post_init__(self):
        if not isinstance(self.base, Approximation):
            raise checks.UsageTypeError(
                f"`base` must be an approximation such as PNTK() or Trace(); got {self.base!r} of type "
                f"{type(self.base).__name__}."
            )
        if isinstance(self.base, (FullENTK, Sketch)):
            why = "kernel is (N, N, O, O)" if isinstance(self.base, FullENTK) else "rows are sketched already"
            raise checks.UsageError(
                f"`base` must be an N×N Gram kernel (PNTK(), Trace(), SingleLogit(k), Projection(m)); got "
                f"{self.base!r}, whose {why}."
            )
        checks.positive_int("dim", self.dim)
        checks.seed("seed", self.seed)
        checks.one_of("method", self.method, SKETCH_METHODS)

    def wrap(self, f, trace_axes, diagonal_axes):
        return self.base.wrap(f, trace_axes, diagonal_axes)

    def jacobian_rows(self, outputs: int) -> int:
        return self.base.jacobian_rows(outputs)

    def kernel_fn(
        self,
        f: Callable,
        *,
        trace_axes: Any = (-1,),
        diagonal_axes: Any = (),
        vmap_axes: Any = None,
        implementation: nt.NtkImplementation | int = nt.NtkImplementation.JACOBIAN_CONTRACTION,
    ) -> SketchedKernelFn:
        """The sketched kernel function ``fn(x1, x2, params, **apply_fn_kwargs)`` of f.

        Takes ``nt.empirical_ntk_fn``'s arguments. The kernel must be a Gram matrix: every output
        axis but the batch axis traced (``trace_axes``), ``diagonal_axes=()``. ``implementation``
        is accepted for drop-in use and recorded; the sketch is computed the same way for each.

        Raises:
          ValueError: non-empty ``diagonal_axes``, and the errors of `Approximation.kernel_fn`.
        """
        diagonal = checks.axes_tuple("diagonal_axes", diagonal_axes)
        if diagonal:
            raise checks.UsageError(
                f"`diagonal_axes` must be () for a Sketch, whose kernel is a Gram matrix of sketched "
                f"rows; got {diagonal_axes!r}. Trace those axes instead (add them to trace_axes)."
            )
        return SketchedKernelFn(
            self,
            f,
            checks.axes_tuple("trace_axes", trace_axes),
            diagonal,
            checks.vmap_axes(vmap_axes),
            checks.implementation(implementation),
        )


class SketchedKernelFn(EmpiricalKernelFn):
    """A `Sketch`'s kernel function: ``fn(x1, x2, params, **kw)`` as NT's, plus `sketch_fn`.

    Its Gram features (`features_fn`) are the sketched rows, so `kernel_matrix` computes
    them once per input and each tile as one product of ``(n, rows·dim)`` blocks.
    """

    approximation: Sketch

    def sketch_fn(self) -> Callable[..., jax.Array]:
        """``phi(x, params, **apply_fn_kwargs)``: the sketched rows, ``(B, dim)`` for a one-row
        base, ``(B, rows, dim)`` otherwise; ``fn(x1, x2) = Σ_r phi_r(x1) · phi_r(x2)``."""
        sketch = self.approximation
        rows_fn = self._rows_fn()

        def phi(x: PyTree, params: PyTree, **apply_fn_kwargs) -> jax.Array:
            out = sketch_rows(rows_fn(x, params, **apply_fn_kwargs), params, sketch.dim, sketch.seed)
            return out[:, 0, :] if out.shape[1] == 1 else out

        return phi

    def _rows_fn(self) -> Callable[..., list]:
        """The base's per-example Gram features (dense layers as factor pairs for TensorSketch)."""
        wrapped = self._wrapped
        base = features.gram_features_fn(
            wrapped.g,
            wrapped.trace_axes,
            self.diagonal_axes,
            self.vmap_axes,
            structured=self.approximation.method == "tensorsketch",
            conv=self.approximation.method == "tensorsketch",
            factor_conv=functools.partial(factor_conv, dim=self.approximation.dim),
        )

        def rows(x: PyTree, params: PyTree, **apply_fn_kwargs) -> list:
            try:
                return base(x, params, **apply_fn_kwargs)
            except features.NotAGramKernel as e:
                raise checks.UsageError(
                    f"a Sketch needs a kernel that is a Gram matrix of per-example Jacobian rows: {e}. Trace "
                    "every output axis but the batch axis (trace_axes), batch inputs along axis 0 "
                    "(vmap_axes=0 or None), and give the network one real array output."
                ) from None

        return rows

    def features_fn(self, *, structured: bool = False) -> Callable[..., list]:
        """The sketched rows as Gram features: one ``(B, rows·dim)`` array (``structured`` is ignored:
        the sketch has no factors)."""
        phi = self.sketch_fn()

        def sketched(x: PyTree, params: PyTree, **apply_fn_kwargs) -> list:
            out = phi(x, params, **apply_fn_kwargs)
            return [out.reshape(out.shape[0], -1)]

        return sketched

    def call_split(self, x1, x2, params, kwargs1, kwargs2):
        checks.has_parameters(params)
        if checks.matching_inputs(x1, x2, self.in_axes):
            check_output_sizes(self.f, x1, x2, params, (kwargs1, kwargs2), self._wrapped.trace_axes, ())
        phi = self.sketch_fn()
        phi1 = phi(x1, params, **kwargs1)
        phi2 = phi1 if x2 is None else phi(x2, params, **kwargs2)
        flat1 = phi1.reshape(phi1.shape[0], -1)
        flat2 = phi2.reshape(phi2.shape[0], -1)
        return jnp.matmul(flat1, flat2.T, precision=jax.lax.Precision.HIGHEST)

    def with_implementation(self, implementation: nt.NtkImplementation | int) -> SketchedKernelFn:
        return SketchedKernelFn(
            self.approximation,
            self.f,
            self.trace_axes,
            self.diagonal_axes,
            self.vmap_axes,
            checks.implementation(implementation),
        )


# --- The sketch itself --------------------------------------------------------------------------


def _mix(x: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finalizer: every input bit flips each output bit with probability ~1/2."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def hashes(
    seed: Any, sizes: list[int], dim: int, dtype: Any, injective: list[bool] | None = None
) -> list[tuple[jax.Array, jax.Array]]:
    """The buckets (ints in [0, dim)) and signs (±1 in `dtype`) of one CountSketch per entry of `sizes`.

    Entry i of the concatenated sizes gets bucket ``mix(i·c1 + s1) mod dim`` and the sign of bit 31
    of ``mix(i·c2 + s2)``, with s1, s2 mixed from `seed` (MurmurHash3's finalizer, uint32): a few
    integer operations per entry, where a counter-based generator (threefry) took longer than the
    sketch itself on a 12.5 M-parameter ResNet; the same on every device, backend and PRNG setting.
    (Indices wrap at 2**32 entries, beyond any network this runs.) A segment marked `injective`
    (at most `dim` long) gets distinct buckets instead, ``(j + offset) mod dim`` with a mixed offset:
    its entries never collide with each other (the signs keep every sketch unbiased).
    """
    seed = jnp.asarray(seed, jnp.uint32)
    s1 = _mix(seed ^ jnp.uint32(0x9E3779B9))
    s2 = _mix(s1 ^ jnp.uint32(0x7F4A7C15))
    total = sum(sizes)
    index = jax.lax.iota(jnp.uint32, total)
    buckets = (_mix(index * jnp.uint32(0x9E3779B1) + s1) % jnp.uint32(dim)).astype(jnp.int32)
    bits = _mix(index * jnp.uint32(0x85EBCA77) + s2) >> 31
    signs = (1 - 2 * bits.astype(jnp.int32)).astype(dtype)
    out, start = [], 0
    for size, distinct in zip(sizes, injective or [False] * len(sizes), strict=True):
        segment = buckets[start : start + size]
        if distinct:
            offset = _mix(jnp.uint32(start) * jnp.uint32(0xC2B2AE3D) + s1) % jnp.uint32(dim)
            segment = ((jax.lax.iota(jnp.uint32, size) + offset) % jnp.uint32(dim)).astype(jnp.int32)
        out.append((segment, signs[start : start + size]))
        start += size
    return out


def count_sketch(rows: jax.Array, buckets: jax.Array, signs: jax.Array, dim: int) -> jax.Array:
    """``(B, R, size)`` -> ``(B, R, dim)``: entry i times ``signs[i]`` added to bucket ``buckets[i]``."""
    b, r, size = rows.shape
    data = (rows * signs[None, None, :]).reshape(b * r, size).T
    summed = jax.ops.segment_sum(data, buckets, num_segments=dim)
    return summed.T.reshape(b, r, dim)


#: A convolution kernel is TensorSketched from its factors when its size is at least this many times
#: (output positions per example) × k: the factors cost two FFTs of length k per position, the
#: gradient a product and a scatter of its size. Measured on the zoo's ResNet-18 at width 64 with
#: k = 8,192 (blocks of 16, 32×32×3, one process, the batched backward pass timed alongside): the
#: features ran at 0.36 of the backward pass with no convolution factored, 0.44 with all but the
#: first factored (threshold 1/4), 0.48 at 1, 0.61 at 2, 4 and 8 (the last stage's 3×3 convolutions,
#: 74% of the parameters), 0.56 at 16.
CONV_FACTOR_MIN = 4


def factor_conv(positions: int, d_in: int, d_out: int, *, dim: int) -> bool:
    """Whether a convolution's kernel (``d_in`` offsets × input channels, ``d_out`` output channels,
    ``positions`` output positions per example) is TensorSketched from its factors."""
    return d_in * d_out >= CONV_FACTOR_MIN * positions * dim


def _as_factors(entry: Any, size: int) -> Any:
    """A dense leaf's pair ``(A, D)``, ``(B, d_in)`` and ``(B, R·d_out)``, as the `ConvFactors` of
    one position; every other entry as it is."""
    if isinstance(entry, ConvFactors) or not isinstance(entry, tuple):
        return entry
    a, d = entry
    b, d_in = a.shape
    d_out = size // d_in
    return ConvFactors(a[:, None, :], d.reshape(b, -1, 1, d_out))


def sketch_rows(entries: list, params: PyTree, dim: int, seed: Any) -> jax.Array:
    """The ``(B, R, dim)`` sketch of the base's Gram features `entries` (one per differentiable
    parameter leaf: ``(B, R·size)`` rows, or a dense factor pair ``(A, D)``); `seed` may be traced.

    The hashes are laid out in the order of the differentiable leaves of `params`: a factored
    leaf takes d_in + d_out of them (its TensorSketch), any other leaf its size; an array or the
    shorter factor of at most `dim` entries gets distinct buckets (`hashes`). A dense pair is the
    `ConvFactors` of one position.
    """
    leaves, _ = features.differentiable(params)
    if len(entries) != len(leaves):
        raise AssertionError(f"{len(entries)} feature entries for {len(leaves)} parameter arrays")
    entries = [_as_factors(e, math.prod(jnp.shape(leaf))) for e, leaf in zip(entries, leaves, strict=True)]
    dtype = jnp.result_type(*[e.cotangents if isinstance(e, ConvFactors) else e for e in entries])
    # FFTs run in float32 at least (none in bfloat16 or float16); the result comes back in `dtype`.
    wide = jnp.promote_types(dtype, jnp.float32)
    sizes, injective = [], []
    for entry, leaf in zip(entries, leaves, strict=True):
        size = math.prod(jnp.shape(leaf))
        if isinstance(entry, ConvFactors):
            d_in, d_out = entry.patches.shape[-1], entry.cotangents.shape[-1]
            # The shorter factor's entries in distinct buckets (never both: two shifts would make
            # h1(i) + h2(j) collide along whole anti-diagonals). A readout's cotangent is the same
            # for every input (1/√O each): a collision among its O entries would bias every
            # kernel entry alike, and with seed 0 at k = 4,096 one did (3-4 times the FC's error).
            sizes += [d_in, d_out]
            injective += [d_in <= d_out and d_in <= dim, d_out < d_in and d_out <= dim]
        else:
            sizes.append(size)
            injective.append(size <= dim)
    drawn = iter(hashes(seed, sizes, dim, wide, injective))
    total, spectrum = None, None
    for entry, leaf in zip(entries, leaves, strict=True):
        size = math.prod(jnp.shape(leaf))
        if isinstance(entry, ConvFactors):
            # TensorSketch of Σ_p a_p ⊗ d_rp: Σ_p FFT(C1 a_p) ⊙ FFT(C2 d_rp), one inverse FFT in all.
            b, positions, _ = entry.patches.shape
            rows = entry.cotangents.shape[1]
            (in_buckets, in_signs), (out_buckets, out_signs) = next(drawn), next(drawn)
            ca = count_sketch(entry.patches.astype(wide), in_buckets, in_signs, dim)
            cd = count_sketch(
                entry.cotangents.astype(wide).reshape(b, rows * positions, -1), out_buckets, out_signs, dim
            )
            fa = jnp.fft.rfft(ca, axis=-1)[:, None]  # (B, 1, P, F)
            fd = jnp.fft.rfft(cd, axis=-1).reshape(b, rows, positions, -1)
            product = jnp.sum(fa * fd, axis=2) if positions > 1 else (fa * fd)[:, :, 0]
            spectrum = product if spectrum is None else spectrum + product
        else:
            b = entry.shape[0]
            rows = entry.shape[1] // size
            buckets, signs = next(drawn)
            sketched = count_sketch(entry.astype(wide).reshape(b, rows, size), buckets, signs, dim)
            total = sketched if total is None else total + sketched
    if spectrum is not None:
        from_factors = jnp.fft.irfft(spectrum, n=dim, axis=-1).astype(wide)
        total = from_factors if total is None else total + from_factors
    if total is None:
        raise checks.UsageError("`params` has no floating-point array to differentiate: the kernel is empty.")
    return total.astype(dtype)
