"""`empirical_kernel_fn`: the NNGP, NT's traced eNTK and the pNTK behind one `get`, usable by `nt.predict`.

Every expected value comes from the network itself, not from the functions under
test: the NNGP from its outputs, the two NTKs from ``jax.jacobian`` (see `reference`).
"""

from __future__ import annotations

import jax.numpy as jnp
import neural_tangents as nt
import numpy as np
import pytest
from reference import (
    assert_close,
    full_entk_jacobian,
    kernel,
    outputs_outer,
    pntk_from_full,
    problem,
    trace_from_full,
)

import nt_pntk
from nt_pntk._src.kernels.pntk import KERNEL_NAMES

# (problem, trace_axes, diagonal_axes, vmap_axes)
CONFIGS = [("fc", (-1,), (), 0), ("seq", (-1,), (1,), None)]


def references(p, trace_axes, diagonal_axes, **kwargs):
    """What each `get` must equal, in float64: the NNGP (1/O) Σ_o f_o(x1) f_o(x2), NT's eNTK
    (1/O) Σ_o Θ_oo and the pNTK (1/O) Σ_{o,o'} Θ_oo' over `trace_axes`."""
    entk = full_entk_jacobian(p.f, p.x1, p.x2, p.params, kwargs)
    return {
        "nngp": trace_from_full(
            outputs_outer(p.f, p.x1, p.x2, p.params, **kwargs), trace_axes, diagonal_axes
        ),
        "ntk": trace_from_full(entk, trace_axes, diagonal_axes),
        "pntk": pntk_from_full(entk, trace_axes, diagonal_axes),
    }


def kernel_with_get(kernel_fn, get, p, **kwargs):
    def with_get(x1, x2, params, **kw):
        return kernel_fn(x1, x2, get, params, **kw)

    return kernel(with_get, p.x1, p.x2, p.params, **kwargs)


@pytest.mark.parametrize(
    ("name", "trace_axes", "diagonal_axes", "vmap_axes", "get"),
    [
        # The quick run: every kernel on the fc network, the NNGP with a diagonal axis (the pNTK of
        # those axes is in test_pntk's quick run).
        pytest.param(*config, get, marks=pytest.mark.slow if config[0] == "seq" and get != "nngp" else ())
        for config in CONFIGS
        for get in KERNEL_NAMES
    ],
    ids=str,
)
def test_single_kernel(name, trace_axes, diagonal_axes, vmap_axes, get):
    p = problem(name)
    kernel_fn = nt_pntk.empirical_kernel_fn(p.f, trace_axes, diagonal_axes, vmap_axes)
    expected = references(p, trace_axes, diagonal_axes)[get]
    assert_close(kernel_with_get(kernel_fn, get, p), expected)


def test_the_three_kernels_differ():
    """The references tell the kernels apart (so a `get` returning the wrong one fails)."""
    p = problem("fc")
    k = references(p, (-1,), ())
    for a, b in (("nngp", "ntk"), ("ntk", "pntk"), ("nngp", "pntk")):
        assert not np.allclose(k[a], k[b], rtol=0.1), (a, b)


@pytest.mark.parametrize(
    "get", [pytest.param(("pntk", "nngp"), marks=pytest.mark.slow), ("ntk", "pntk", "nngp"), ["ntk"]], ids=str
)
def test_tuple_get(get):
    p = problem("fc")
    kernel_fn = nt_pntk.empirical_kernel_fn(p.f, vmap_axes=0)
    k = kernel_with_get(kernel_fn, get, p)
    assert k._fields == tuple(get)
    expected = references(p, (-1,), ())
    for name in get:
        assert_close(getattr(k, name), expected[name])


def test_get_none_is_nngp_and_ntk_as_in_nt():
    p = problem("dict")
    kernel_fn = nt_pntk.empirical_kernel_fn(p.f, vmap_axes=0)
    k = kernel_with_get(kernel_fn, None, p, scale=2.0)
    assert k._fields == ("nngp", "ntk")
    expected = references(p, (-1,), (), scale=2.0)
    assert_close(tuple(k), (expected["nngp"], expected["ntk"]))


def as_matrix(k):
    """An (N1, N2, O1, O2) kernel as the (N1·O1, N2·O2) matrix."""
    n1, n2, o1, o2 = k.shape
    return k.transpose(0, 2, 1, 3).reshape(n1 * o1, n2 * o2)


@pytest.mark.usefixtures("float64")
@pytest.mark.slow  # NT's prediction calls the kernel function eagerly, in float64
@pytest.mark.parametrize("trace_axes", [(-1,), ()], ids=str)
def test_gradient_descent_mse_ensemble(trace_axes):
    """NT's infinite-time prediction, with `params` passed through as a kernel kwarg, is kernel regression."""
    p = problem("dict", n1=4, n2=2)  # x1: train, x2: test
    x_train, x_test = p.x1, p.x2
    y_train = jnp.asarray(np.random.default_rng(0).standard_normal((len(x_train), 3)))
    kernel_fn = nt_pntk.empirical_kernel_fn(p.f, trace_axes=trace_axes, vmap_axes=0)
    predict_fn = nt.predict.gradient_descent_mse_ensemble(
        kernel_fn, x_train, y_train, trace_axes=trace_axes, params=p.params
    )
    mean = predict_fn(x_test=x_test, get="ntk", t=None)

    # The regression written out, on the reference eNTK ((N1, O, N2, O) from jax.jacobian).
    k_train = trace_from_full(full_entk_jacobian(p.f, x_train, None, p.params), trace_axes)
    k_test = trace_from_full(full_entk_jacobian(p.f, x_test, x_train, p.params), trace_axes)
    if not trace_axes:  # (N1, N2, O, O) kernels: one regression on the (N·O, N·O) matrices
        k_train, k_test, y_train = as_matrix(k_train), as_matrix(k_test), y_train.reshape(-1)
    expected = (k_test @ np.linalg.solve(k_train, y_train)).reshape(len(x_test), -1)
    assert mean.dtype == np.float64
    # NT solves by Cholesky, here by LU: they agree to about cond(K) float64 eps.
    assert_close(mean, expected, rtol=100 * np.linalg.cond(k_train) * np.finfo(np.float64).eps)
