"""A convolution kernel's per-example gradient from its input and output cotangent (`conv_gradient`)
and as the factors a sketch takes (`conv_factors`), against JAX's own transpose of the convolution.

The reference is ``jax.vjp`` of ``lax.conv_general_dilated`` with respect to the kernel, one
cotangent row at a time; `conv_gradient` returns the kernel's entries offset-major, then input and
output channel, so the reference is permuted to that order before comparing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nt_pntk._src.kernels.structured import conv_factors, conv_gradient

# (input layout, kernel layout, output layout), kernel spatial shape, strides, padding, rhs dilation.
CASES = [
    (("NHWC", "HWIO", "NHWC"), (3, 3), (1, 1), "SAME", (1, 1)),
    (("NHWC", "HWIO", "NHWC"), (3, 3), (2, 2), "SAME", (1, 1)),
    (("NHWC", "HWIO", "NHWC"), (1, 1), (2, 2), "VALID", (1, 1)),
    (("NCHW", "OIHW", "NCHW"), (2, 3), (1, 2), ((1, 0), (2, 1)), (1, 1)),
    (("NHWC", "HWIO", "NHWC"), (3, 2), (1, 1), "VALID", (2, 1)),
]


def _problem(layouts, window, strides, padding, dilation):
    lhs_layout, rhs_layout, _ = layouts
    rng = np.random.default_rng(0)
    c_in, c_out, spatial = 3, 4, (7, 6)
    lhs_shape = {"NHWC": (1, *spatial, c_in), "NCHW": (1, c_in, *spatial)}[lhs_layout]
    kernel_shape = {"HWIO": (*window, c_in, c_out), "OIHW": (c_out, c_in, *window)}[rhs_layout]
    lhs = jnp.asarray(rng.standard_normal(lhs_shape))
    kernel = jnp.asarray(rng.standard_normal(kernel_shape))

    def conv(k):
        return jax.lax.conv_general_dilated(
            lhs, k, strides, padding, rhs_dilation=dilation, dimension_numbers=layouts
        )

    closed = jax.make_jaxpr(conv)(kernel)
    (eqn,) = [e for e in closed.jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    out, pullback = jax.vjp(conv, kernel)
    cotangents = jnp.asarray(rng.standard_normal((2, *out.shape)))
    expected = jnp.stack([pullback(c)[0] for c in cotangents])  # (R, *kernel_shape)
    # To offset-major, then input and output channel: (R, *window, c_in, c_out).
    spec = eqn.params["dimension_numbers"].rhs_spec  # (out channel, in channel, *spatial)
    expected = jnp.transpose(expected, [0, *(1 + d for d in spec[2:]), 1 + spec[1], 1 + spec[0]])
    return eqn, kernel_shape, lhs, cotangents, expected.reshape(2, -1)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0][0]}-{c[1]}-{c[2]}-{c[3]}-{c[4]}")
def test_conv_gradient_is_the_transpose_of_the_convolution(case):
    eqn, kernel_shape, lhs, cotangents, expected = _problem(*case)
    got = conv_gradient(eqn.params, kernel_shape, lhs, cotangents)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0][0]}-{c[1]}-{c[2]}-{c[3]}-{c[4]}")
def test_conv_factors_sum_to_the_gradient(case):
    eqn, kernel_shape, lhs, cotangents, expected = _problem(*case)
    patches, cot = conv_factors(eqn.params, kernel_shape, lhs, cotangents)
    out_shape = eqn.outvars[0].aval.shape
    c_out = kernel_shape[eqn.params["dimension_numbers"].rhs_spec[0]]
    positions = np.prod(out_shape) // (out_shape[0] * c_out)
    assert patches.shape == (positions, np.prod(kernel_shape) // cot.shape[-1])
    assert cot.shape[:2] == (2, positions)
    summed = jnp.einsum("pi,rpo->rio", patches, cot).reshape(2, -1)
    np.testing.assert_allclose(summed, expected, rtol=1e-12, atol=1e-12)
