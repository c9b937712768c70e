"""Every route to every kernel against per-example gradients (see `differential`).

Three tiers: the cases that were wrong before the fixes of the XLA:CPU miscompile (the small one in
the quick run ``-m "not slow"``, all of them in CI's full run); the pairwise
design (every pair of values of two dimensions in some case, about 60 cases,
minutes), marked ``slow``, in CI's full run; the sweep (every architecture ×
kernel × implementation × route × jit, about 1,200 cases, hours), marked
``sweep`` and collected only with ``--sweep``: ``nox -s differential`` or
``pytest --sweep -m sweep tests/test_differential.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from differential import (
    BATCH,
    DIMENSIONS,
    DTYPES,
    FLOAT32_ONLY,
    RTOL,
    TILE,
    Case,
    all_cases,
    allowed,
    expected_kernel,
    inputs,
    kernel_function,
    network,
    pairwise_cases,
    reference_kernel,
    relative_error,
    run_case,
    tolerance,
)

import nt_pntk

# isort: split
import neural_tangents as nt

# Wrong before their fixes: jaxlib 0.10.2 miscompiled the pNTK's readout under jit
# (STRUCTURED_DERIVATIVES, 64 or more examples); JAX 0.10's `slice` broke STRUCTURED_DERIVATIVES
# for the single-logit kernel.
REGRESSIONS = (
    Case("cnn_gap", "pntk", 3, 0, True, "other", "large", "direct"),
    Case("cnn_gap", "pntk", 3, 0, False, "other", "large", "nt.batch"),
    Case("mlp", "single_logit", 3, 0, False, "none", "small", "direct"),
    # Issue 16: STRUCTURED_DERIVATIVES' first dense layer took A·Aᵀ in the input's dtype (uint8 pixels
    # and int8 wrapped around, float16 overflowed, bool saturated), in kernel_matrix and AUTO. int16
    # on the layernorm network, which keeps the first layer's share (the MLP's erf saturates).
    *(
        Case("mlp", "pntk", 3, 0, False, "none", "small", "kernel_matrix", dtype=dtype)
        for dtype in ("bool", "uint8", "int8", "float16")
    ),
    Case("layernorm", "pntk", 3, 0, False, "none", "small", "kernel_matrix", dtype="int16"),
    Case("layernorm", "pntk", 0, 0, False, "other", "small", "kernel_matrix", dtype="uint8"),
)
PAIRWISE = pairwise_cases(REGRESSIONS)
SWEEP = [case for case in all_cases() if case not in set(PAIRWISE)]


def _check(case: Case) -> None:
    expected = expected_kernel(case)
    got = run_case(case)
    error = relative_error(got, expected)
    assert error < tolerance(case), f"{case.id}: relative error {error:.3g}"


# The large cases need the float64 reference of 192 examples (seconds): slow; the small one is quick.
@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=[pytest.mark.slow] if c.size == "large" else []) for c in REGRESSIONS],
    ids=lambda c: c.id,
)
def test_route_that_was_wrong_matches_reference(case: Case):
    _check(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in PAIRWISE if c not in REGRESSIONS], ids=lambda c: c.id)
def test_route_matches_reference(case: Case):
    _check(case)


@pytest.mark.sweep
@pytest.mark.parametrize("case", SWEEP, ids=lambda c: c.id)
def test_route_matches_reference_sweep(case: Case):
    _check(case)


def test_fast_cases_cover_every_pair():
    """The design itself: each value of each dimension meets each value of each other one."""
    assert set(REGRESSIONS) <= set(PAIRWISE)
    names = list(DIMENSIONS)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            seen = {(getattr(c, a), getattr(c, b)) for c in PAIRWISE}
            for va in DIMENSIONS[a]:
                for vb in DIMENSIONS[b]:
                    if allowed({a: va, b: vb}):
                        assert (va, vb) in seen, (a, va, b, vb)
    # The only pairs left out: the eNTK through kernel_matrix, and stax CNNs on other dtypes.
    assert not allowed({"kernel": "entk", "route": "kernel_matrix"})
    assert all(allowed({"architecture": a, "dtype": "float32"}) for a in DIMENSIONS["architecture"])
    assert sum(not allowed({"architecture": a, "dtype": d}) for a in FLOAT32_ONLY for d in DTYPES) == 40


def test_reference_catches_a_wrong_kernel():
    """The comparison can fail: the trace is not the pNTK, and a 1% change is seen."""
    trace = reference_kernel("mlp", "trace", "small", "none")
    pntk = reference_kernel("mlp", "pntk", "small", "none")
    assert relative_error(trace, pntk) > 100 * RTOL
    assert relative_error(pntk * 1.01, pntk) > 10 * RTOL


@pytest.mark.slow
def test_reference_pntk_is_the_ntk_of_summed_logits():
    """Two definitions of the reference agree: Σ blocks / O, and ∇(Σ_o f_o / √O) Gram."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    net = network("cnn_gap")
    x1, _ = inputs("cnn_gap", "small")
    jax.config.update("jax_enable_x64", True)
    try:
        flat, unravel = ravel_pytree(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), net.params))

        def g(theta, example):
            return jnp.sum(net.apply_fn(unravel(theta), example[None])) / np.sqrt(10)

        # One example at a time: batched float64 convolutions are slow on XLA:CPU.
        grads = np.asarray(jax.lax.map(lambda e: jax.grad(g)(flat, e), jnp.asarray(x1, jnp.float64)))
    finally:
        jax.config.update("jax_enable_x64", False)
    expected = reference_kernel("cnn_gap", "pntk", "small", "none")
    np.testing.assert_allclose(grads @ grads.T, expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max())


def test_kernel_matrix_refuses_the_full_entk():
    """The one excluded pair: kernel_matrix tiles (N1, N2) kernels and says so for the eNTK."""
    case = Case("mlp", "entk", 1, 0, False, "none", "small", "kernel_matrix")
    fn = kernel_function(case)
    x1, _ = inputs("mlp", "small")
    with pytest.raises(ValueError, match=r"must give an \(N1, N2\) kernel; got the full eNTK"):
        nt_pntk.kernel_matrix(fn, x1, None, network("mlp").params, progress=False)


@pytest.mark.parametrize("route", DIMENSIONS["route"])
def test_non_finite_network_outputs(route):
    """Inputs that overflow float32 in the network: ``fn`` gives non-finite entries in their rows
    and columns and the reference's values elsewhere; kernel_matrix says which rows, and keeps the
    same kernel when asked to."""
    case = Case("mlp", "pntk", 1, 0, False, "none", "small", route)
    x1, _ = inputs("mlp", "small")
    x1 = x1.copy()
    x1[2] = 3e38
    params, fn = network("mlp").params, kernel_function(case)
    good = np.r_[0:2, 3 : len(x1)]
    expected = reference_kernel("mlp", "pntk", "small", "none")[np.ix_(good, good)]
    if route == "kernel_matrix":
        with pytest.raises(nt_pntk.tiled.NonFiniteKernelError, match=r"for inputs x1 rows 2 \("):
            nt_pntk.kernel_matrix(fn, x1, None, params, tile_size=TILE["small"], progress=False)
        k = nt_pntk.kernel_matrix(
            fn, x1, None, params, tile_size=TILE["small"], progress=False, allow_non_finite=True
        )
    elif route == "nt.batch":
        k = nt.batch(fn, BATCH["small"])(x1, None, params)
    else:
        k = fn(x1, None, params)
    k = np.asarray(k)
    assert not np.isfinite(k[2]).any() and not np.isfinite(k[:, 2]).any()
    assert relative_error(k[np.ix_(good, good)], expected) < RTOL


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != "float32"])
def test_every_route_refuses_inputs_the_network_refuses(dtype: str):
    """Where `fn` itself is not defined (a stax CNN's convolution takes only float32 inputs), every
    route refuses with a TypeError that says why, kernel_matrix naming x1's dtype and a fix."""
    from differential import x64

    case = Case("cnn_flatten", "pntk", 0, 0, False, "none", "small", "direct", dtype=dtype)
    with x64(dtype):
        fn = kernel_function(case)
        params = network(case.architecture).params
        x1, _ = inputs(case.architecture, case.size, dtype)
        with pytest.raises(
            TypeError, match="conv_general_dilated requires arguments to have the same dtypes"
        ):
            fn(x1, None, params)
        for route in ("direct", "nt.batch"):
            with pytest.raises(TypeError, match="conv_general_dilated requires arguments to have the same"):
                run_case(dataclasses.replace(case, route=route))
        message = (
            rf"`fn` fails on `x1` of dtype {dtype} with `params` of dtype float32: .*conv_general.*x1.astype"
        )
        with pytest.raises(TypeError, match=message):
            run_case(dataclasses.replace(case, route="kernel_matrix"))


def test_dtype_inputs_hold_their_natural_values():
    """The dtype axis is what it claims: each dtype, pixels over 0-255, int8 over its range, int16
    beyond int8's, six float16 pixels' squares beyond float16's range."""
    x = {d: inputs("mlp", "small", d)[0] for d in DTYPES}
    assert {d: str(a.dtype) for d, a in x.items()} == {d: d for d in DTYPES}
    assert x["uint8"].max() > 200 and x["float16"].max() > 200 and x["bool"].any() and not x["bool"].all()
    assert np.abs(x["int8"]).max() > 100 and np.abs(x["int16"]).max() > 500
    assert (x["float16"].astype(np.float64) ** 2).sum(axis=1).max() > np.finfo(np.float16).max
