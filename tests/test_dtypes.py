"""Input and parameter dtypes on every route (issue 16): every route takes the inputs `fn` takes and
computes in the dtypes `fn` computes in, or refuses with an error naming the argument and the fix.

The references are per-example gradients in float64 (complex128 for the complex network) of the
summed logits, contracted by hand: no NT and no nt_pntk kernel code. The input-dtype axis of the
differential matrix (`differential.DTYPES`) covers the zoo; these are the cases around it: the
issue's snippet, the parameter leaves (bfloat16, Python floats, ints), typed keys, complex
networks, x2 of another dtype and float32 parameters with float64 inputs.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nt_pntk
from nt_pntk import cli
from nt_pntk._src.tiled import probe, storage
from nt_pntk.experiments import models

ROUTES = {0: None, 1: "rows", 2: "direct(2)", 3: "structured"}  # AUTO: rows or structured
OUTPUTS = 10


def quick_if(condition: bool, *values):
    """A parameter set, marked slow unless `condition` (the quick run keeps one of each kind)."""
    return pytest.param(*values, marks=[] if condition else [pytest.mark.slow])


def pntk_reference(f, params, x1, x2=None, **kwargs) -> np.ndarray:
    """(1/O) Σ_{o,o'} J_o(a)·J_o'(b) = ∇g(a)·∇g(b) for g = Σ_o f_o / √O, in float64 (complex128 for
    complex parameters), by per-example gradients with respect to the floating leaves; integer leaves
    are constants (they have no gradient)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    floating = [isinstance(a, float) or jnp.issubdtype(jnp.result_type(a), jnp.inexact) for a in leaves]
    complex_ = any(jnp.issubdtype(jnp.result_type(a), jnp.complexfloating) for a in leaves)
    wide = np.complex128 if complex_ else np.float64
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        flat, unravel = ravel_pytree(
            [np.asarray(a, wide) for a, k in zip(leaves, floating, strict=True) if k]
        )

        def g(theta, example):
            values = iter(unravel(theta))
            p = treedef.unflatten([next(values) if k else a for a, k in zip(leaves, floating, strict=True)])
            out = f(p, example[None], **kwargs)
            return jnp.sum(out) / np.sqrt(out.size)

        def grads(x):
            xs = jnp.asarray(np.asarray(x, np.float64))
            return np.stack([np.asarray(jax.grad(g, holomorphic=complex_)(flat, e)) for e in xs])

        j1 = grads(x1)
        j2 = j1 if x2 is None else grads(x2)
    finally:
        jax.config.update("jax_enable_x64", previous)
    return j1 @ j2.T


def error(got, reference) -> float:
    got = np.asarray(got)
    assert got.shape == reference.shape and np.isfinite(got).all()
    return float(np.abs(got.astype(reference.dtype) - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def fc():
    """The issue's network: the zoo's fc, width 8, 10 outputs, on 8×8×1 images."""
    m = models.get_model("fc", width=8, outputs=OUTPUTS)
    _, params = m.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
    return m.apply_fn, params


def run(fn, x1, x2, params, tmp_path=None, name="k.npy", **kwargs):
    """kernel_matrix in memory, or to `tmp_path / name` and then resumed (the record and probe
    checked); returns the kernel and the route taken."""
    output = None if tmp_path is None else tmp_path / name
    k, stats = nt_pntk.kernel_matrix(
        fn, x1, x2, params, output=output, tile_size=4, progress=False, stats=True, **kwargs
    )
    if output is not None:
        again = nt_pntk.kernel_matrix(
            fn, x1, x2, params, output=output, tile_size=4, progress=False, **kwargs
        )
        assert np.array_equal(np.asarray(again), np.asarray(k))
    return np.asarray(k), stats.route


# --- Silent case 1: integer, bool and float16 inputs on the structured route -------------------


@pytest.mark.parametrize(
    ("implementation", "on_disk"),
    [quick_if(i + d == 3, i, d) for i in (0, 3) for d in (False, True)],
    ids=lambda v: {False: "memory", True: "npy"}.get(v, v) if isinstance(v, bool) else f"impl{v}",
)
def test_issue_snippet_uint8_pixels(fc, tmp_path, implementation, on_disk):
    """The issue's snippet: uint8 pixels, 0.187 off through the structured route before."""
    apply_fn, p = fc
    x = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 1)).astype(np.uint8)
    fn = nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0, implementation=implementation)
    k, route = run(fn, x, None, p, tmp_path if on_disk else None)
    assert route == "structured"  # AUTO takes it too, on this network
    reference = pntk_reference(apply_fn, p, x)
    assert error(k, reference) < 1e-5
    assert error(fn(x, None, p), reference) < 1e-5


@pytest.mark.parametrize(
    ("dtype", "implementation"),
    [
        quick_if(i == 3, d, i)
        for d in ("bool", "uint8", "int8", "int16", "int32", "float16", "bfloat16")
        for i in (0, 1, 2, 3)
    ],
)
def test_input_dtypes_on_every_route(fc, dtype, implementation):
    """Pixel-scale inputs of each dtype, x2 another batch: every route gives the reference kernel."""
    apply_fn, p = fc
    rng = np.random.default_rng(1)
    high = {"bool": 2, "int8": 128, "int16": 2**15, "int32": 2**15}.get(dtype, 256)
    low = 0 if dtype in ("bool", "uint8", "float16", "bfloat16") else -high
    x1, x2 = (rng.integers(low, high, (n, 8, 8, 1)).astype(jnp.dtype(dtype)) for n in (5, 3))
    fn = nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0, implementation=implementation)
    k, route = run(fn, x1, x2, p)
    assert ROUTES[implementation] in (None, route)
    assert error(k, pntk_reference(apply_fn, p, x1, x2)) < 1e-5


def test_cli_kernel_of_uint8_pixels(tmp_path):
    """`nt-pntk kernel --input x_uint8.npy` exited 2 ("kernel_matrix computed K[0,0]=54723.59 … fn
    itself gives 60025.92"); it now gives the kernel of the same pixels as float32."""
    x = np.random.default_rng(2).integers(0, 256, (6, 8, 8, 1)).astype(np.uint8)
    kernels = {}
    for dtype in ("uint8", "float32"):
        np.save(tmp_path / f"x_{dtype}.npy", x.astype(dtype))
        out = tmp_path / f"k_{dtype}.npy"
        args = ["kernel", "--width", "8", "--depth", "1", "--implementation", "3", "--no-progress"]
        assert cli.main([*args, "--input", str(tmp_path / f"x_{dtype}.npy"), "--output", str(out)]) == 0
        kernels[dtype] = np.load(out)
    np.testing.assert_allclose(kernels["uint8"], kernels["float32"], rtol=1e-5)


# --- Parameters: bfloat16, Python floats, integer leaves, complex ------------------------------


@pytest.mark.parametrize(
    ("implementation", "output"),
    [
        quick_if((i, o) in ((1, "k.npy"), (3, "k.zarr")), i, o)
        for i in (0, 1, 2, 3)
        for o in (None, "k.npy", "k.zarr")
    ],
)
def test_bfloat16_parameters_and_inputs(fc, tmp_path, implementation, output):
    """Digested and stored: a bfloat16 kernel is written as float32 (neither .npy nor Zarr has the
    type), which holds it exactly; resumed runs verify it."""
    apply_fn, p = fc
    p16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), p)
    x = np.random.default_rng(3).standard_normal((5, 8, 8, 1)).astype(jnp.bfloat16)
    fn = nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0, implementation=implementation)
    k, _ = run(fn, x, None, p16, tmp_path if output else None, output or "k.npy")
    itself = np.asarray(fn(x, None, p16))
    assert k.dtype == (np.float32 if output else itself.dtype)
    # bfloat16 keeps 8 bits: a few 1e-3 apart from the float64 kernel of the same values.
    assert error(k, pntk_reference(apply_fn, p16, x)) < 3e-2
    assert error(k, itself.astype(np.float64)) < 3e-2


@pytest.mark.parametrize("implementation", [quick_if(i in (1, 3), i) for i in (0, 1, 2, 3)])
def test_python_float_and_int_parameter_leaves(fc, tmp_path, implementation):
    """A Python float leaf is a parameter (it was "'float' object has no attribute 'dtype'", and NT's
    AUTO and STRUCTURED_DERIVATIVES refused it); int leaves are constants on every route (NT's
    Jacobian implementations refused them, its other two gave them no share)."""
    apply_fn, p = fc

    def f(params, x):
        return apply_fn(params["net"], x) * (params["scale"] + 0.5 * params["steps"])

    params = {"net": p, "scale": 1.5, "steps": np.int32(2)}
    x1 = np.random.default_rng(4).standard_normal((5, 8, 8, 1)).astype(np.float32)
    x2 = x1[:3] + 1.0
    reference = pntk_reference(f, params, x1, x2)
    fn = nt_pntk.empirical_pntk_fn(f, vmap_axes=0, implementation=implementation)
    assert error(fn(x1, x2, params), reference) < 1e-5
    assert error(jax.jit(fn)(x1, x2, params), reference) < 1e-5
    k, route = run(fn, x1, x2, params, tmp_path)
    assert ROUTES[implementation] in (None, route)
    assert error(k, reference) < 1e-5


def _complex_network():
    rng = np.random.default_rng(5)

    def f(params, x):
        return jnp.tanh(x.reshape(x.shape[0], -1) @ params["W"]) @ params["V"]

    params = {
        "W": ((rng.standard_normal((64, 16)) + 1j * rng.standard_normal((64, 16))) / 8).astype(np.complex64),
        "V": ((rng.standard_normal((16, 3)) + 1j * rng.standard_normal((16, 3))) / 4).astype(np.complex64),
    }
    return f, params, rng.standard_normal((6, 8, 8, 1)).astype(np.float32)


@pytest.mark.parametrize("implementation", [2, 3])
def test_complex_network_through_the_direct_route(tmp_path, implementation):
    """NT's complex kernel is J Jᵀ (holomorphic derivatives); kernel_matrix tiles it with `fn`
    itself and keeps the probe's imaginary parts (a sign flip of i is caught on resume)."""
    f, params, x = _complex_network()
    fn = nt_pntk.empirical_pntk_fn(f, vmap_axes=0, implementation=implementation)
    k, route = run(fn, x, None, params, tmp_path)
    assert route == f"direct({implementation})" and np.iscomplexobj(k)
    assert error(k, pntk_reference(f, params, x)) < 1e-5
    assert "imag" in json.loads((tmp_path / "k.npy.tiles" / "meta.json").read_text())["probe"]
    negated = nt_pntk.empirical_pntk_fn(
        lambda p, x_: 1j * f(p, x_), vmap_axes=0, implementation=implementation
    )
    with pytest.raises(ValueError, match=r"probe entry K\[\d, \d\] was .*j and is now .*j"):
        nt_pntk.kernel_matrix(
            negated, x, None, params, output=tmp_path / "k.npy", tile_size=4, progress=False
        )


@pytest.mark.parametrize("implementation", [0, 1])
def test_complex_network_with_a_jacobian_implementation(implementation):
    f, params, x = _complex_network()
    fn = nt_pntk.empirical_pntk_fn(f, vmap_axes=0, implementation=implementation)
    message = r"output is complex, which implementation=\w+ .* cannot differentiate; pass implementation="
    with pytest.raises(TypeError, match=message):
        fn(x, None, params)
    with pytest.raises(TypeError, match=message):
        nt_pntk.kernel_matrix(fn, x, None, params, progress=False)


# --- Keyword arguments holding typed keys; x2's dtype; float64 inputs of float32 parameters -----


def test_typed_key_keyword_argument(fc, tmp_path):
    """A `jax.random.key` keyword argument is digested (its implementation and bits): resumed with
    the same key, refused with another one."""
    apply_fn, p = fc

    def f(params, x, noise_key):
        return apply_fn(params, x) * (1.0 + 0.5 * jax.random.normal(noise_key, (1, OUTPUTS)))

    x = np.random.default_rng(6).standard_normal((5, 8, 8, 1)).astype(np.float32)
    key = jax.random.key(0)
    noise = 1.0 + 0.5 * np.asarray(jax.random.normal(key, (1, OUTPUTS)))
    reference = pntk_reference(lambda params, x_: apply_fn(params, x_) * noise, p, x)
    for implementation in (1, 3):
        fn = nt_pntk.empirical_pntk_fn(f, vmap_axes=0, implementation=implementation)
        k, _ = run(fn, x, None, p, tmp_path, f"k{implementation}.npy", noise_key=key)
        assert error(k, reference) < 1e-5
    with pytest.raises(
        ValueError, match=r"holds another kernel than these arguments give: .*apply_fn_kwargs"
    ):
        nt_pntk.kernel_matrix(
            fn,
            x,
            None,
            p,
            output=tmp_path / "k3.npy",
            tile_size=4,
            progress=False,
            noise_key=jax.random.key(1),
        )


def test_tree_digest_of_bfloat16_and_keys():
    """bfloat16 (NumPy's 'V2') is told apart from float16 of the same bits; typed keys by their bits;
    the digest of ordinary arrays is unchanged (records written before still resume)."""
    bits = np.arange(6, dtype=np.uint16)
    as_bf16, as_f16 = bits.view(jnp.bfloat16), bits.view(np.float16)
    assert storage.tree_digest(as_bf16) != storage.tree_digest(as_f16)
    assert storage.tree_digest(jax.random.key(0)) == storage.tree_digest(jax.random.key(0))
    assert storage.tree_digest(jax.random.key(0)) != storage.tree_digest(jax.random.key(1))
    assert storage.tree_digest({"a": np.ones(3, np.float32)}) == "c0a88f7d3573864ef49d60bd7cec7232"


def test_x2_of_another_dtype_than_x1(fc):
    apply_fn, p = fc
    x1 = np.zeros((4, 8, 8, 1), np.float32)
    for implementation in (0, 1, 2, 3):
        fn = nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0, implementation=implementation)
        with pytest.raises(
            TypeError, match=r"`x2` has dtype uint8 where `x1` has float32; .*x2.astype\(x1.dtype\)"
        ):
            nt_pntk.kernel_matrix(fn, x1, x1[:2].astype(np.uint8), p, progress=False)


def test_non_finite_bfloat16_inputs_are_named(fc):
    apply_fn, p = fc
    x = np.ones((4, 8, 8, 1), jnp.bfloat16)
    x[2, 0, 0, 0] = np.nan
    fn = nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0)
    with pytest.raises(ValueError, match=r"`x1` has a non-finite value \(NaN or inf\) in row 2"):
        nt_pntk.kernel_matrix(fn, x, None, p, progress=False)


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("implementation", [quick_if(i == 3, i) for i in (0, 1, 2, 3)])
def test_float64_inputs_of_float32_parameters_under_x64(fc, tmp_path, x64, implementation):
    """The tile check refused a correct kernel ("6.860157 … gives 6.860157"): its tolerance followed
    the float64 kernel, not the float32 parameters it is computed from."""
    apply_fn, p = fc
    p32 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), p)
    x = np.random.default_rng(7).standard_normal((6, 8, 8, 1))
    fn = nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0, implementation=implementation)
    k, _ = run(fn, x, None, p32, tmp_path)
    assert error(k, pntk_reference(apply_fn, p32, x)) < 1e-5


def test_precision_is_the_least_precise_dtype_computed_in():
    f32, f64 = np.ones(2, np.float32), np.ones(2, np.float64)
    assert probe.precision(np.float64, {"w": f32}, f64) == np.float32
    assert probe.precision(np.float64, {"w": f64}, np.ones(2, np.uint8)) == np.float64
    assert probe.precision(np.float32, {"w": f32}, np.ones(2, jnp.bfloat16)) == jnp.bfloat16
    assert probe.precision(np.complex128, {"w": np.ones(2, np.complex64)}) == np.complex64
