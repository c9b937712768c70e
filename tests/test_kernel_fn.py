"""`empirical_kernel_fn`: NT's kernels and the pNTK behind one `get`, usable by `nt.predict`."""

from __future__ import annotations

import jax.numpy as jnp
import neural_tangents as nt
import numpy as np
import pytest
from reference import assert_close, kernel, problem

import nt_pntk

# (problem, trace_axes, diagonal_axes, vmap_axes)
CONFIGS = [("fc", (-1,), (), 0), ("seq", (-1,), (1,), None)]


def single_kernel_fns(f, trace_axes, diagonal_axes, vmap_axes):
    """What each `get` must equal."""
    axes = dict(trace_axes=trace_axes, diagonal_axes=diagonal_axes)
    return {
        "nngp": nt.empirical_nngp_fn(f, **axes),
        "ntk": nt.empirical_ntk_fn(f, **axes, vmap_axes=vmap_axes),
        "pntk": nt_pntk.empirical_pntk_fn(f, **axes, vmap_axes=vmap_axes),
    }


def kernel_with_get(kernel_fn, get, p, **kwargs):
    def with_get(x1, x2, params, **kw):
        return kernel_fn(x1, x2, get, params, **kw)

    return kernel(with_get, p.x1, p.x2, p.params, **kwargs)


@pytest.mark.parametrize("get", nt_pntk.KERNEL_NAMES)
@pytest.mark.parametrize(("name", "trace_axes", "diagonal_axes", "vmap_axes"), CONFIGS, ids=str)
def test_single_kernel(name, trace_axes, diagonal_axes, vmap_axes, get):
    p = problem(name)
    kernel_fn = nt_pntk.empirical_kernel_fn(p.f, trace_axes, diagonal_axes, vmap_axes)
    expected = kernel(single_kernel_fns(p.f, trace_axes, diagonal_axes, vmap_axes)[get], p.x1, p.x2, p.params)
    assert_close(kernel_with_get(kernel_fn, get, p), expected)


@pytest.mark.parametrize("get", [("pntk", "nngp"), ("ntk", "pntk", "nngp"), ["ntk"]], ids=str)
def test_tuple_get(get):
    p = problem("fc")
    kernel_fn = nt_pntk.empirical_kernel_fn(p.f, vmap_axes=0)
    k = kernel_with_get(kernel_fn, get, p)
    assert k._fields == tuple(get)
    for name, fn in single_kernel_fns(p.f, (-1,), (), 0).items():
        if name in get:
            assert_close(getattr(k, name), kernel(fn, p.x1, p.x2, p.params))


def test_get_none_is_nngp_and_ntk_as_in_nt():
    p = problem("dict")
    kernel_fn = nt_pntk.empirical_kernel_fn(p.f, vmap_axes=0)
    k = kernel_with_get(kernel_fn, None, p, scale=2.0)
    assert k._fields == ("nngp", "ntk")
    nt_kernel_fn = nt.empirical_kernel_fn(p.f, vmap_axes=0)
    assert_close(tuple(k), tuple(kernel_with_get(nt_kernel_fn, None, p, scale=2.0)))


def as_matrix(k):
    """An (N1, N2, O1, O2) kernel as the (N1·O1, N2·O2) matrix."""
    n1, n2, o1, o2 = k.shape
    return k.transpose(0, 2, 1, 3).reshape(n1 * o1, n2 * o2)


@pytest.mark.usefixtures("float64")
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

    k_train = np.asarray(kernel_fn(x_train, None, "ntk", p.params))
    k_test = np.asarray(kernel_fn(x_test, x_train, "ntk", p.params))
    if not trace_axes:  # (N1, N2, O, O) kernels: one regression on the (N·O, N·O) matrices
        k_train, k_test, y_train = as_matrix(k_train), as_matrix(k_test), y_train.reshape(-1)
    expected = (k_test @ np.linalg.solve(k_train, y_train)).reshape(len(x_test), -1)
    assert mean.dtype == np.float64
    # NT solves by Cholesky, here by LU: they agree to about cond(K) float64 eps.
    assert_close(mean, expected, rtol=100 * np.linalg.cond(k_train) * np.finfo(np.float64).eps)
