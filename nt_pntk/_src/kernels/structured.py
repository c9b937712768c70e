r"""Structured Gram features: a dense layer's share of a traced NTK as a product of two small Grams.

For a parameter W that enters the network once, through a dense product
``z = a·W`` of one example's activation a (d_in numbers) with W (d_in × d_out),
the gradient of an output g_r is the outer product :math:`a \otimes \delta_r` with
:math:`\delta_r = \partial g_r / \partial z`, so W's share of the kernel is

.. math::
    \frac1R \sum_r \langle a_i \otimes \delta_{ir}, a_j \otimes \delta_{jr} \rangle
    = (a_i \cdot a_j)\; \frac1R \sum_r \delta_{ir} \cdot \delta_{jr},

a product of a Gram of activations (d_in per example) and a Gram of
cotangents (R·d_out), instead of one Gram of Jacobian rows (R·d_in·d_out): for
a 512-wide dense layer and the pNTK (R = 1), 1,024 numbers per example instead
of 262,144. This is the factorization NT's STRUCTURED_DERIVATIVES use for dense
layers, kept per example so that `kernel_matrix` computes it once per input.

Which parameters qualify is read from the jaxpr of one example's forward pass:
a parameter leaf used exactly once, directly as an operand of a ``dot_general``
without batch dimensions, whose other operand has no free dimension but the
example's (size 1). The cotangents δ come from the gradient with respect to a
zero added to that product's output; every other parameter (biases, convolution
kernels, normalization scales, weights used twice) keeps its Jacobian rows.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

PyTree = Any


#: A dense leaf is factored only when its Jacobian rows are this many times longer than its
#: factors: two thin products and an elementwise one cost more per number than one Gram product.
#: Measured when the structured route was made: factoring a 3×512 FC net's 512 × 10 readout (a
#: saving of 9.8) cut its 4,000² pNTK by a quarter; 256 × 256 layers are 50 times faster as factors.
MIN_SAVING = 4


@dataclasses.dataclass(frozen=True)
class DenseUse:
    """Where a parameter leaf enters: the index of its ``dot_general``, its operand position, and the
    sizes it multiplies (d_in: the activation's, d_out: the product's)."""

    equation: int
    operand: int
    d_in: int
    d_out: int


def single_uses(jaxpr: Any, param_count: int) -> dict[int, tuple[Any, int, int]]:
    """The parameter leaves (indices into the first `param_count` inputs) used exactly once, by an
    equation (not returned as an output): index -> (the variable, the equation, the operand)."""
    params = jaxpr.invars[:param_count]
    uses: dict[Any, list[tuple[int, int]]] = {v: [] for v in params}
    for k, eqn in enumerate(jaxpr.eqns):
        for position, v in enumerate(eqn.invars):
            if not isinstance(v, jex_core.Literal) and v in uses:
                uses[v].append((k, position))
    for v in jaxpr.outvars:  # a parameter returned as an output is used there too
        if not isinstance(v, jex_core.Literal) and v in uses:
            uses[v].append((-1, -1))
    return {
        index: (v, *uses[v][0]) for index, v in enumerate(params) if len(uses[v]) == 1 and uses[v][0][0] >= 0
    }


def dense_uses(jaxpr: Any, param_count: int) -> dict[int, DenseUse]:
    """The parameter leaves (indices into the first `param_count` inputs) that enter as a dense product."""
    found = {}
    for index, (v, k, position) in single_uses(jaxpr, param_count).items():
        eqn = jaxpr.eqns[k]
        if eqn.primitive.name != "dot_general" or position not in (0, 1):
            continue
        (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
        if lhs_batch or rhs_batch:
            continue
        other = eqn.invars[1 - position]
        other_contract = lhs_contract if position == 1 else rhs_contract
        free = [d for d in range(len(other.aval.shape)) if d not in other_contract]
        if math.prod(other.aval.shape[d] for d in free) != 1:
            continue
        d_in = math.prod(other.aval.shape[d] for d in other_contract)
        found[index] = DenseUse(k, position, d_in, math.prod(v.aval.shape) // max(d_in, 1))
    return found


def conv_uses(jaxpr: Any, param_count: int, batch: int = 1) -> dict[int, DenseUse]:
    """The parameter leaves that enter once, as the kernel (rhs) of a plain convolution of an input of
    `batch` examples (no feature or batch groups, no input dilation): their per-example gradient is
    formed from the input and the output's cotangents (`conv_gradient`)."""
    found = {}
    for index, (v, k, position) in single_uses(jaxpr, param_count).items():
        eqn = jaxpr.eqns[k]
        if eqn.primitive.name != "conv_general_dilated" or position != 1:
            continue
        p = eqn.params
        lhs = eqn.invars[0].aval.shape
        if (
            p["feature_group_count"] != 1
            or p["batch_group_count"] != 1
            or any(d != 1 for d in p["lhs_dilation"])
            or lhs[p["dimension_numbers"].lhs_spec[0]] != batch
        ):
            continue
        c_out = v.aval.shape[p["dimension_numbers"].rhs_spec[0]]
        found[index] = DenseUse(k, 1, math.prod(v.aval.shape) // c_out, c_out)  # d_in: offsets · c_in
    return found


class ConvFactors(NamedTuple):
    """A convolution kernel's per-example gradient as factors: ``Σ_p a[p] ⊗ d[r, p]`` over the
    output positions p, with ``a`` ``(..., P, d_in)`` the input patches (kernel offset-major, then
    input channel) and ``d`` ``(..., R, P, d_out)`` the output's cotangents, one per Jacobian row r."""

    patches: jax.Array
    cotangents: jax.Array


def _windows(eqn_params: dict, kernel_shape: tuple[int, ...], lhs: jax.Array, cotangent: jax.Array):
    """The input window of each kernel offset, ``(batch, *out_spatial, c_in)`` each, and the
    cotangent as ``(R, batch, *out_spatial, c_out)``: strided, dilated and padded as the convolution's."""
    numbers = eqn_params["dimension_numbers"]
    spatial = [kernel_shape[d] for d in numbers.rhs_spec[2:]]
    strides, dilation = eqn_params["window_strides"], eqn_params["rhs_dilation"]
    # Inputs and cotangents as (batch, *spatial, channels).
    x = jnp.transpose(lhs, [numbers.lhs_spec[0], *numbers.lhs_spec[2:], numbers.lhs_spec[1]])
    x = jax.lax.pad(
        x, jnp.zeros((), x.dtype), [(0, 0, 0), *[(lo, hi, 0) for lo, hi in eqn_params["padding"]], (0, 0, 0)]
    )
    out_order = [numbers.out_spec[0], *numbers.out_spec[2:], numbers.out_spec[1]]
    d = jnp.transpose(cotangent, [0, *(1 + a for a in out_order)])  # (R, batch, *out_spatial, c_out)
    out_spatial = d.shape[2:-1]
    windows = []
    for offset in itertools.product(*[range(k) for k in spatial]):
        starts = [0, *(o * r for o, r in zip(offset, dilation, strict=True)), 0]
        limits = [
            x.shape[0],
            *(s0 + st * (n - 1) + 1 for s0, st, n in zip(starts[1:-1], strides, out_spatial, strict=True)),
            x.shape[-1],
        ]
        windows.append(jax.lax.slice(x, starts, limits, [1, *strides, 1]))
    return windows, d


def conv_gradient(eqn_params: dict, kernel_shape: tuple[int, ...], lhs: jax.Array, cotangent: jax.Array):
    """The gradient of a convolution's kernel for each of `cotangent`'s leading rows: ``(R, size)``.

    For each kernel offset, Σ over output positions of (the input at that offset from the position)
    ⊗ (the output's cotangent there): one product per offset of the padded input, strided and
    dilated as the convolution's. On XLA:CPU this takes half the time of differentiating each
    example's convolution (``vmap`` of its transpose), and a third of forming the input's patches.
    Entries come offset-major, then input and output channel: a fixed permutation of the kernel's,
    which leaves every Gram product and sketch of them unchanged in distribution.
    """
    windows, d = _windows(eqn_params, kernel_shape, lhs, cotangent)
    grads = [jnp.einsum("b...i,rb...o->rio", w, d, precision=jax.lax.Precision.HIGHEST) for w in windows]
    return jnp.stack(grads, axis=1).reshape(cotangent.shape[0], -1)


def conv_factors(
    eqn_params: dict, kernel_shape: tuple[int, ...], lhs: jax.Array, cotangent: jax.Array
) -> ConvFactors:
    """The factors of `conv_gradient` before their sum over output positions: for one example
    (``batch`` 1), ``conv_gradient(...)[r] == Σ_p patches[p] ⊗ cotangents[r, p]`` (flattened)."""
    windows, d = _windows(eqn_params, kernel_shape, lhs, cotangent)
    patches = jnp.stack(windows, axis=-2)  # (batch, *out_spatial, offsets, c_in)
    positions = math.prod(patches.shape[:-2])
    return ConvFactors(patches.reshape(positions, -1), d.reshape(cotangent.shape[0], positions, d.shape[-1]))


def conv_positions(eqn: Any) -> int:
    """The number of output positions of one example's convolution (its output's size / c_out)."""
    out = eqn.outvars[0].aval.shape
    numbers = eqn.params["dimension_numbers"]
    return math.prod(out) // (out[numbers.out_spec[0]] * out[numbers.out_spec[1]])


def interpret(closed: Any, uses: dict[int, DenseUse], leaves: list, x: Any, shifts: dict[int, jax.Array]):
    """Evaluates the closed jaxpr of ``h(*leaves, *x_leaves)``, adding ``shifts[i]`` to leaf i's dense
    product and recording the activation multiplying it.

    Returns:
      ``(outputs, activations)``: the jaxpr's outputs, and leaf index -> activation.
    """
    jaxpr = closed.jaxpr
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    for v, value in zip(jaxpr.constvars, closed.consts, strict=True):
        env[v] = value
    for v, value in zip(jaxpr.invars, [*leaves, *jax.tree_util.tree_leaves(x)], strict=True):
        env[v] = value
    by_equation = {use.equation: index for index, use in uses.items()}
    activations = {}
    for k, eqn in enumerate(jaxpr.eqns):
        inputs = [read(v) for v in eqn.invars]
        # As `jax.core.eval_jaxpr` binds: JAX up to 0.4.x returns (subfunctions, params), later JAX params.
        bind = eqn.primitive.get_bind_params(eqn.params)
        subfuns, bind_params = bind if isinstance(bind, tuple) else ((), bind)
        out = eqn.primitive.bind(*subfuns, *inputs, **bind_params)
        if k in by_equation:
            index = by_equation[k]
            # The product is computed in its output's dtype (a uint8 or float16 image times float32
            # weights is a float32 dot_general): so is the activations' Gram, not in the input's.
            activations[index] = inputs[1 - uses[index].operand].astype(out.dtype)
            out = out + shifts[index]
        outs = out if eqn.primitive.multiple_results else [out]
        for v, value in zip(eqn.outvars, outs, strict=True):
            if not isinstance(v, jex_core.DropVar):
                env[v] = value
    return [read(v) for v in jaxpr.outvars], activations


def structured_features(
    g: Callable,
    params: PyTree,
    x: PyTree,
    apply_fn_kwargs: dict,
    count: int,
    dtype: Any,
    *,
    conv: bool = False,
    factor_conv: Callable[[int, int, int], bool] | None = None,
) -> list:
    """The per-example Gram features of g's traced NTK (all `count` outputs traced) for the batch `x`.

    Returns a list, one entry per parameter leaf: ``J`` (B, count·size), Jacobian
    rows, or a pair ``(A, D)`` (B, d_in), (B, count·d_out) for a dense leaf, with
    ``K = Σ J Jᵀ + Σ (A Aᵀ) ⊙ (D Dᵀ)``. Rows and cotangents are scaled by
    1/√count, as NT's trace divides by the number of traced entries. With `conv`, a
    convolution kernel's rows are formed from its input patches and output cotangents
    (`conv_gradient`, one batched product per layer, far faster than differentiating each
    example's convolution), in the patches' order of entries: a permutation of the kernel's,
    the same for every example, so every Gram product of the rows is unchanged. A convolution
    for which ``factor_conv(positions, d_in, d_out)`` holds comes as its `ConvFactors` instead
    (for a sketch, which never needs the gradient itself).
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    x_leaves, x_treedef = jax.tree_util.tree_flatten(x)

    def example_output(leaf_list: list, *x_one: Any) -> jax.Array:
        x_b = jax.tree_util.tree_map(lambda leaf: jnp.expand_dims(leaf, 0), x_treedef.unflatten(list(x_one)))
        return g(treedef.unflatten(list(leaf_list)), x_b, **apply_fn_kwargs).reshape(-1)

    structs = [jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in leaves]
    x_structs = [jax.ShapeDtypeStruct(jnp.shape(a)[1:], jnp.result_type(a)) for a in x_leaves]
    closed = jax.make_jaxpr(example_output)(structs, *x_structs)
    uses = {
        i: use
        for i, use in dense_uses(closed.jaxpr, len(leaves)).items()
        if use.d_in * use.d_out * count >= MIN_SAVING * (use.d_in + count * use.d_out)
    }
    factored = dict(uses)
    convs = conv_uses(closed.jaxpr, len(leaves)) if conv else {}
    factored_convs = {
        i
        for i, use in convs.items()
        if factor_conv is not None
        and factor_conv(conv_positions(closed.jaxpr.eqns[use.equation]), use.d_in, use.d_out)
    }
    uses = {**uses, **convs}
    rest = [i for i in range(len(leaves)) if i not in uses]
    scale = jnp.asarray(1.0 / math.sqrt(count), dtype)
    out_shapes = {i: closed.jaxpr.eqns[use.equation].outvars[0].aval for i, use in uses.items()}

    def conv_entry(i: int, lhs: jax.Array, cotangents: jax.Array) -> jax.Array | ConvFactors:
        eqn = closed.jaxpr.eqns[convs[i].equation]
        if i in factored_convs:
            return conv_factors(eqn.params, tuple(jnp.shape(leaves[i])), lhs, cotangents)
        return conv_gradient(eqn.params, tuple(jnp.shape(leaves[i])), lhs, cotangents).reshape(-1)

    def one_example(x_one: list) -> list:
        shifts = {i: jnp.zeros(aval.shape, aval.dtype) for i, aval in out_shapes.items()}

        def outputs(shifts: dict, rest_leaves: list) -> tuple[jax.Array, dict]:
            full = list(leaves)
            for i, leaf in zip(rest, rest_leaves, strict=True):
                full[i] = leaf
            (out,), activations = interpret(closed, uses, full, x_one, shifts)
            return out, activations

        rest_leaves = [leaves[i] for i in rest]
        if count == 1:  # one row: a gradient is cheaper than a Jacobian

            def summed(s: dict, r: list) -> tuple[jax.Array, dict]:
                out, activations = outputs(s, r)
                return jnp.sum(out), activations

            (_, activations), (d_shift, d_rest) = jax.value_and_grad(summed, argnums=(0, 1), has_aux=True)(
                shifts, rest_leaves
            )
            rows = {i: d.reshape(-1) for i, d in zip(rest, d_rest, strict=True)}
            cotangents = {i: d.reshape(-1) for i, d in d_shift.items() if i in factored}
            for i in convs:
                rows[i] = conv_entry(i, activations[i], d_shift[i][None])
        else:
            _, pullback, activations = jax.vjp(outputs, shifts, rest_leaves, has_aux=True)
            d_shift, d_rest = jax.vmap(pullback)(jnp.eye(count, dtype=dtype))
            rows = {i: d.reshape(-1) * scale.astype(d.dtype) for i, d in zip(rest, d_rest, strict=True)}
            cotangents = {
                i: d.reshape(-1) * scale.astype(d.dtype) for i, d in d_shift.items() if i in factored
            }
            for i in convs:
                entry = conv_entry(i, activations[i], d_shift[i])
                if isinstance(entry, ConvFactors):  # the cotangents carry the 1/√count
                    d = entry.cotangents
                    rows[i] = entry._replace(cotangents=d * scale.astype(d.dtype))
                else:
                    rows[i] = entry * scale.astype(entry.dtype)
        return [
            (activations[i].reshape(-1), cotangents[i]) if i in factored else rows[i]
            for i in range(len(leaves))
        ]

    return jax.vmap(one_example)(x_leaves)
