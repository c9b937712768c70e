"""`empirical_pntk_fn` against independent references (NT's full eNTK and `jax.jacobian`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np
import pytest
from reference import (
    assert_close,
    full_entk_jacobian,
    full_entk_nt,
    kernel,
    nt_shape,
    pntk_from_full,
    problem,
)

import nt_pntk

TRIPLE = (0, 0, {})  # vmap_axes as (in_axes, out_axes, kwargs_axes)

# Deprecation warnings that NT 0.6.5 itself triggers on current JAX (third-party
# code, so ignored here, only for the implementations that trigger them):
# NTK_VECTOR_PRODUCTS calls `jnp.size` on a `jax.ShapeDtypeStruct` (`_std_basis`);
# STRUCTURED_DERIVATIVES calls `lu.wrap_init` without a DebugInfo
# (`_get_primals_out_and_pullback`); AUTO tries both.
SIZE_WARNING = pytest.mark.filterwarnings(
    "ignore:size requires ndarray or scalar arguments, got <class 'jax.ShapeDtypeStruct'>:DeprecationWarning"
)
WRAP_INIT_WARNING = pytest.mark.filterwarnings(
    "ignore:linear_util.wrap_init is missing a DebugInfo object:DeprecationWarning"
)
NT_WARNINGS = {0: [SIZE_WARNING, WRAP_INIT_WARNING], 1: [], 2: [SIZE_WARNING], 3: [WRAP_INIT_WARNING]}
SLOW = pytest.mark.slow
# Each implementation on each zoo model: the ints on "fc", the enum members on "cnn"; the quick run
# takes the two that are neither the default (1, used by every other test) nor AUTO (which tries all).
IMPLEMENTATIONS = [
    pytest.param(
        name,
        i,
        id=f"{name}-{i!r}",
        marks=[*NT_WARNINGS[i], *([] if name == "fc" and i in (2, 3) else [SLOW])],
    )
    for name, values in (("fc", range(4)), ("cnn", nt.NtkImplementation))
    for i in values
]


CONFIGS = [  # (name, trace_axes, diagonal_axes, vmap_axes)
    ("fc", (-1,), (), None),
    ("fc", (-1,), (), 0),
    ("cnn", (-1,), (), 0),
    ("seq", (-1,), (), 0),  # (N, T, O) output: a (N1, N2, T, T) kernel
    ("seq", (1, 2), (), None),
    ("seq", (), (), 0),  # nothing summed: the full eNTK
    ("seq", (-1,), (1,), TRIPLE),
    ("dict", (-1,), (), TRIPLE),
]
# The quick run takes four configurations (the others vary the model or the axes once more); the slow
# run all of them, with and without x2.
QUICK = {(1, True), (4, True), (6, True), (7, False)}


@pytest.mark.parametrize(
    ("name", "trace_axes", "diagonal_axes", "vmap_axes", "with_x2"),
    [
        pytest.param(
            *config,
            with_x2,
            marks=() if (i, with_x2) in QUICK else SLOW,
            id="-".join([*map(str, config), "x2" if with_x2 else "x2=None"]),
        )
        for i, config in enumerate(CONFIGS)
        for with_x2 in (False, True)
    ],
)
def test_matches_nt_full_entk(name, trace_axes, diagonal_axes, vmap_axes, with_x2):
    p = problem(name)
    x2 = p.x2 if with_x2 else None
    axes = dict(trace_axes=trace_axes, diagonal_axes=diagonal_axes, vmap_axes=vmap_axes)
    pntk = kernel(nt_pntk.empirical_pntk_fn(p.f, **axes), p.x1, x2, p.params)
    expected = pntk_from_full(full_entk_nt(p.f, p.x1, x2, p.params), trace_axes, diagonal_axes)
    assert_close(pntk, expected)
    assert pntk.shape == nt_shape(p.f, p.x1, x2, p.params, **axes)


@pytest.mark.parametrize("name", ["fc", "dict"])
def test_matches_hand_written_jacobian(name):
    p = problem(name)
    pntk = kernel(nt_pntk.empirical_pntk_fn(p.f, vmap_axes=0), p.x1, p.x2, p.params)
    assert_close(pntk, pntk_from_full(full_entk_jacobian(p.f, p.x1, p.x2, p.params), (-1,)))


@pytest.mark.parametrize(("name", "implementation"), IMPLEMENTATIONS)
def test_implementations(name, implementation):
    p = problem(name)
    pntk_fn = nt_pntk.empirical_pntk_fn(p.f, vmap_axes=0, implementation=implementation)
    pntk = kernel(pntk_fn, p.x1, p.x2, p.params)
    assert_close(pntk, pntk_from_full(full_entk_nt(p.f, p.x1, p.x2, p.params), (-1,)))
    # NT's shape does not depend on the implementation (and AUTO would compile all three to find it).
    assert pntk.shape == nt_shape(p.f, p.x1, p.x2, p.params, vmap_axes=0)


@pytest.mark.parametrize("out", [1, pytest.param(3, marks=SLOW), 7])  # 3: the default of `problem`
def test_output_sizes(out):
    p = problem("fc", out=out)
    pntk = kernel(nt_pntk.empirical_pntk_fn(p.f, vmap_axes=0), p.x1, p.x2, p.params)
    assert_close(pntk, pntk_from_full(full_entk_nt(p.f, p.x1, p.x2, p.params), (-1,)))
    if out == 1:  # one logit: nothing to sum, the pNTK is NT's eNTK
        assert_close(pntk, kernel(nt.empirical_ntk_fn(p.f, vmap_axes=0), p.x1, p.x2, p.params))


def test_x2_none_is_x1():
    p = problem("fc")
    pntk_fn = nt_pntk.empirical_pntk_fn(p.f, vmap_axes=0)
    pntk = kernel(pntk_fn, p.x1, None, p.params)
    assert_close(pntk, pntk_from_full(full_entk_jacobian(p.f, p.x1, p.x1, p.params), (-1,)))
    assert_close(pntk, pntk.T)


def test_jit_takes_params_as_an_argument():
    p = problem("dict")
    jitted = jax.jit(nt_pntk.empirical_pntk_fn(p.f, vmap_axes=0))
    assert_close(
        jitted(p.x1, p.x2, p.params), pntk_from_full(full_entk_jacobian(p.f, p.x1, p.x2, p.params), (-1,))
    )
    # Not a constant baked in at the first trace.
    params = jax.tree.map(lambda w: 2 * w, p.params)
    assert_close(
        jitted(p.x1, p.x2, params), pntk_from_full(full_entk_jacobian(p.f, p.x1, p.x2, params), (-1,))
    )


@pytest.mark.slow  # NT's eager dispatch takes seconds
def test_eager():
    p = problem("dict")
    pntk = nt_pntk.empirical_pntk_fn(p.f, vmap_axes=0)(p.x1, p.x2, p.params)
    assert_close(pntk, pntk_from_full(full_entk_jacobian(p.f, p.x1, p.x2, p.params), (-1,)))


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("name", [pytest.param("fc", marks=SLOW), "dict"])
def test_float64(name):
    p = problem(name)
    pntk = kernel(nt_pntk.empirical_pntk_fn(p.f, vmap_axes=0), p.x1, p.x2, p.params)
    assert pntk.dtype == np.float64
    assert_close(pntk, pntk_from_full(full_entk_jacobian(p.f, p.x1, p.x2, p.params), (-1,)))


@pytest.mark.parametrize(
    ("name", "trace_axes"), [("fc", (-1,)), pytest.param("seq", (-1,), marks=SLOW), ("seq", (1, 2))], ids=str
)
def test_diagonal_over_examples(name, trace_axes):
    p = problem(name)
    full_pntk = kernel(nt_pntk.empirical_pntk_fn(p.f, trace_axes, vmap_axes=0), p.x1, None, p.params)
    axes = dict(trace_axes=trace_axes, diagonal_axes=(0,), vmap_axes=0)
    diagonal = kernel(nt_pntk.empirical_pntk_fn(p.f, **axes), p.x1, None, p.params)
    # jnp.diagonal puts the diagonal last; NT keeps the examples axis first.
    assert_close(diagonal, jnp.moveaxis(jnp.diagonal(full_pntk, axis1=0, axis2=1), -1, 0))
    assert_close(diagonal, pntk_from_full(full_entk_nt(p.f, p.x1, None, p.params), trace_axes, (0,)))
    assert diagonal.shape == nt_shape(p.f, p.x1, None, p.params, **axes)


@pytest.mark.parametrize("vmap_axes", [pytest.param(None, marks=SLOW), TRIPLE], ids=str)
def test_apply_kwarg(vmap_axes):
    p = problem("dict")
    pntk_fn = nt_pntk.empirical_pntk_fn(p.f, vmap_axes=vmap_axes)
    scale = 3.0
    pntk = kernel(pntk_fn, p.x1, p.x2, p.params, scale=scale)
    assert_close(pntk, pntk_from_full(full_entk_nt(p.f, p.x1, p.x2, p.params, scale=scale), (-1,)))
    assert_close(pntk, scale**2 * kernel(pntk_fn, p.x1, p.x2, p.params))  # f scales, Θ by its square


@pytest.mark.parametrize("with_x2", [pytest.param(False, marks=SLOW), True], ids=["x2=None", "x2"])
def test_rng_kwarg(with_x2):
    """NT hands `rng` to f(x1) and `fold_in(rng, 1)` to f(x2) (the same key for x2=None)."""
    p = problem("dict")
    rng = jax.random.PRNGKey(42)
    x2 = p.x2 if with_x2 else None
    pntk = kernel(nt_pntk.empirical_pntk_fn(p.f), p.x1, x2, p.params, rng=rng)
    kwargs2 = dict(rng=jax.random.fold_in(rng, 1)) if with_x2 else None
    full = full_entk_jacobian(p.f, p.x1, x2, p.params, dict(rng=rng), kwargs2)
    assert_close(pntk, pntk_from_full(full, (-1,)))
    # Dropout is on: without `rng` the kernel differs.
    assert not np.allclose(pntk, kernel(nt_pntk.empirical_pntk_fn(p.f), p.x1, x2, p.params))


def test_pytree_output():
    p = problem("dict")

    def two_heads(params, x):
        logits = p.f(params, x)
        return logits, jnp.tanh(logits[:, :2])

    pntk = kernel(nt_pntk.empirical_pntk_fn(two_heads, vmap_axes=0), p.x1, p.x2, p.params)
    assert isinstance(pntk, tuple) and len(pntk) == 2
    # NT keeps one kernel per output, without cross terms.
    assert_close(pntk, pntk_from_full(full_entk_jacobian(two_heads, p.x1, p.x2, p.params), (-1,)))
    assert jax.tree.map(jnp.shape, pntk) == nt_shape(two_heads, p.x1, p.x2, p.params, vmap_axes=0)


def test_summed_logits_fn_keeps_rank():
    p = problem("seq")
    g = nt_pntk.summed_logits_fn(p.f, trace_axes=(1, 2))
    fx, gx = p.f(p.params, p.x1), g(p.params, p.x1)
    assert gx.shape == (fx.shape[0], 1, 1)
    assert_close(gx[:, 0, 0], fx.sum(axis=(1, 2)) / np.sqrt(fx.shape[1] * fx.shape[2]))


@pytest.mark.parametrize("trace_axes", [(0,), (0, 1)])
def test_summing_batches_of_different_sizes_is_refused(trace_axes):
    """Summing over the batch axis pairs x1's and x2's examples: their counts must agree."""
    p = problem("fc", out=5, n1=6, n2=7)
    pntk_fn = nt_pntk.empirical_pntk_fn(p.f, trace_axes=trace_axes)
    with pytest.raises(ValueError, match=r"`trace_axes` has output axis 0, where f\(x1\) and f\(x2\) differ"):
        pntk_fn(p.x1, p.x2, p.params)
    # One batch: defined, and equal to the reference ((1/O) Σ of the full eNTK's blocks).
    expected = pntk_from_full(full_entk_jacobian(p.f, p.x1, p.x1, p.params), trace_axes)
    assert_close(kernel(pntk_fn, p.x1, None, p.params), expected)


@pytest.mark.parametrize(
    ("vmap_axes", "error", "message"),
    [
        ("a", TypeError, r"`vmap_axes` must be None, an int .*; got 'a'"),
        ((0, "b", {}), TypeError, r"`vmap_axes` must be None, an int .*; got \(0, 'b', \{\}\)"),
        (1.5, TypeError, r"`vmap_axes` must be None"),
    ],
)
def test_vmap_axes_of_the_wrong_type(vmap_axes, error, message):
    p = problem("fc")
    for make in (nt_pntk.empirical_pntk_fn, nt_pntk.empirical_kernel_fn, nt_pntk.empirical_trace_fn):
        with pytest.raises(error, match=message):
            make(p.f, vmap_axes=vmap_axes)


def test_vmap_axes_out_of_range_is_refused_not_wrapped():
    """NT takes an axis modulo the rank; an input batch axis 5 of rank-4 images is an error here."""
    p = problem("cnn", n1=3, n2=2)
    pntk_fn = nt_pntk.empirical_pntk_fn(p.f, vmap_axes=5)
    with pytest.raises(ValueError, match=r"`vmap_axes` puts the batch axis of an input of shape .* at 5"):
        pntk_fn(p.x1, p.x2, p.params)
