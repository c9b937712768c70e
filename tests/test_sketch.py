"""`Sketch`: unbiased for its base kernel, error falling as k^-1/2, the same S on every route.

The reference is the exact kernel from float64 per-example Jacobians (`reference.full_entk_jacobian`,
written with `jax.jacobian` on the flattened parameters, independent of NT and of the features code).
Statistics use many seeds at once: the base's rows are computed once and `sketch_rows` is vmapped over
the seed (the public `Sketch` closes over one int seed; `test_public_routes_share_one_sketch` ties the
two together).
"""

from __future__ import annotations

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference

import nt_pntk

# isort: split
import neural_tangents as nt

from nt_pntk._src.kernels import sketch as sketch_module
from nt_pntk._src.kernels.structured import ConvFactors
from nt_pntk.approximations import PNTK, Sketch, Trace
from nt_pntk.experiments import models
from nt_pntk.tiled import kernel_matrix

METHODS = ("countsketch", "tensorsketch")


class _Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(48)(x.reshape(x.shape[0], -1)))
        return nn.Dense(5)(nn.relu(nn.Dense(48)(x)))


def _network(name: str):
    """(f, params, x): FC, CNN, ResNet-10 at small widths, and a flax MLP; 6 inputs of 8×8×1."""
    x = jnp.asarray(np.random.default_rng(1).standard_normal((6, 8, 8, 1)), jnp.result_type(float))
    if name == "flax":
        module = _Mlp()
        variables = module.init(jax.random.PRNGKey(0), x[:1])
        f, params = nt_pntk.from_linen(module, variables)
        return f, params, x
    options = {"depth": 10} if name == "resnet" else {"depth": 2}
    model = models.get_model(name, width={"resnet": 4}.get(name, 32), outputs=5, **options)
    # NTK parameterization: every parameter N(0, 1), drawn by NumPy (stax's init would compile longer).
    shapes = jax.eval_shape(lambda: model.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))[1])
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), x.dtype), shapes)
    return model.apply_fn, params, x


def _exact(f, params, x, base) -> np.ndarray:
    full = reference.full_entk_jacobian(f, x, None, params)
    reduce = reference.pntk_from_full if isinstance(base, PNTK) else reference.trace_from_full
    return reduce(full, (-1,))


def _sketched_kernels(f, params, x, sketch: Sketch, seeds: np.ndarray, rows=None) -> np.ndarray:
    """(S, N, N) float64: the sketched kernel for each seed, from one computation of the base's rows."""
    from nt_pntk._src.kernels.sketch import sketch_rows

    if rows is None:
        rows = _base_rows(f, params, x, sketch)

    @jax.jit
    def kernels(rows, seeds):  # the rows an argument: as a closed-over constant XLA would fold them
        def one(seed):
            phi = sketch_rows(rows, params, sketch.dim, seed)
            flat = phi.reshape(phi.shape[0], -1)
            return jnp.matmul(flat, flat.T, precision=jax.lax.Precision.HIGHEST)

        return jax.lax.map(one, seeds)

    return np.asarray(kernels(rows, jnp.asarray(seeds, jnp.uint32)), np.float64)


def _base_rows(f, params, x, sketch: Sketch) -> list:
    """The base's per-example rows (dense factor pairs for TensorSketch), jitted."""
    return jax.jit(sketch.kernel_fn(f)._rows_fn())(x, params)


def _relative(k: np.ndarray, exact: np.ndarray) -> np.ndarray:
    return np.linalg.norm(k - exact, axis=(-2, -1)) / np.linalg.norm(exact)


def _slope(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("base", [PNTK(), Trace()], ids=["pntk", "trace"])
def test_unbiased_mean_over_seeds_converges_as_one_over_sqrt_seeds(method, base):
    f, params, x = _network("fc")
    exact = _exact(f, params, x, base)
    kernels = _sketched_kernels(f, params, x, Sketch(base=base, dim=64, method=method), np.arange(1024))
    counts = (4, 16, 64, 256)
    # The error of a mean of S seeds, averaged over the 1024 // S disjoint groups of S seeds.
    errors = [_relative(kernels.reshape(-1, s, *exact.shape).mean(axis=1), exact).mean() for s in counts]
    assert -0.62 <= _slope(counts, errors) <= -0.38, errors
    # A bias would stop the fall: 1024 seeds reach a tenth of one seed's error at least.
    one = _relative(kernels, exact).mean()
    assert _relative(kernels.mean(axis=0), exact) < one / 10, (one, errors)


@pytest.fixture
def factored_convs(monkeypatch):
    """Every convolution kernel TensorSketched from its factors (by default only those large
    against positions × k are: none of these small networks' at small k)."""
    monkeypatch.setattr(sketch_module, "CONV_FACTOR_MIN", 0)


def _factored_leaves(rows: list) -> int:
    return sum(isinstance(entry, ConvFactors) for entry in rows)


@pytest.mark.usefixtures("float64", "factored_convs")
@pytest.mark.parametrize("base", [PNTK(), Trace()], ids=["pntk", "trace"])
def test_factored_convolutions_are_unbiased(base):
    f, params, x = _network("cnn")
    sketch = Sketch(base=base, dim=64, method="tensorsketch")
    rows = _base_rows(f, params, x, sketch)
    assert _factored_leaves(rows) == 2  # both convolutions of the zoo's CNN
    exact = _exact(f, params, x, base)
    kernels = _sketched_kernels(f, params, x, sketch, np.arange(1024), rows)
    counts = (4, 16, 64, 256)
    errors = [_relative(kernels.reshape(-1, s, *exact.shape).mean(axis=1), exact).mean() for s in counts]
    assert -0.62 <= _slope(counts, errors) <= -0.38, errors
    one = _relative(kernels, exact).mean()
    assert _relative(kernels.mean(axis=0), exact) < one / 10, (one, errors)


@pytest.mark.usefixtures("float64", "factored_convs")
@pytest.mark.parametrize("network", ["cnn", "resnet"])
def test_factored_convolutions_error_falls_as_one_over_sqrt_k(network):
    f, params, x = _network(network)
    exact = _exact(f, params, x, PNTK())
    rows = _base_rows(f, params, x, Sketch(method="tensorsketch"))
    assert _factored_leaves(rows) >= 2
    dims = (64, 256, 1024, 4096)
    errors = [
        _relative(_sketched_kernels(f, params, x, Sketch(dim=k), np.arange(16), rows), exact).mean()
        for k in dims
    ]
    assert -0.68 <= _slope(dims, errors) <= -0.36, errors
    assert errors[-1] < 0.1, errors


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("network", ["fc", "cnn", "resnet", "flax"])
def test_error_falls_as_one_over_sqrt_k(network):
    f, params, x = _network(network)
    exact = _exact(f, params, x, PNTK())
    dims = (64, 256, 1024, 4096)
    for method in METHODS:
        rows = _base_rows(f, params, x, Sketch(method=method))  # the same for every dim
        errors = [
            _relative(
                _sketched_kernels(f, params, x, Sketch(dim=k, method=method), np.arange(16), rows), exact
            ).mean()
            for k in dims
        ]
        # k^-1/2, not the k^-1/4 of a two-sided sketch of a rank-one gradient.
        assert -0.68 <= _slope(dims, errors) <= -0.36, (method, errors)
        assert errors[-1] < 0.1, (method, errors)


@pytest.mark.parametrize("factored", [False, True], ids=["conv-gradients", "conv-factors"])
def test_public_routes_share_one_sketch(tmp_path, monkeypatch, factored):
    """Every route gives the one kernel of seed s (float32), and it is the exact pNTK within k^-1/2."""
    if factored:
        monkeypatch.setattr(sketch_module, "CONV_FACTOR_MIN", 0)
    f, params, x = _network("cnn")
    sketch = Sketch(dim=4096, seed=7)
    fn = sketch.kernel_fn(f, vmap_axes=0)
    k = np.asarray(fn(x, None, params), np.float64)
    from nt_pntk._src.kernels.sketch import sketch_rows

    rows = fn._rows_fn()(x, params)
    assert _factored_leaves(rows) == (2 if factored else 0)
    phi = np.asarray(sketch_rows(rows, params, 4096, 7), np.float64)[:, 0]
    scale = np.abs(k).max()
    routes = {
        "sketch_fn": phi @ phi.T,
        "jit": jax.jit(fn)(x, None, params),
        "nt.batch": nt.batch(fn, batch_size=2)(x, None, params),
        "kernel_matrix": kernel_matrix(fn, x, None, params, tile_size=4, progress=False),
        "feature_matrix": (lambda p: p @ p.T)(
            np.asarray(nt_pntk.feature_matrix(fn, x, params, progress=False))
        ),
        "implementation 2": sketch.kernel_fn(f, implementation=2)(x, None, params),
    }
    for name, value in routes.items():
        value = np.asarray(value, np.float64)
        np.testing.assert_allclose(value, k, atol=3e-6 * scale, err_msg=name)
    assert _relative(k, _exact(f, params, x, PNTK())) < 0.1


def test_x2_kernel_is_the_cross_gram_of_the_features():
    f, params, x = _network("fc")
    fn = Sketch(dim=512, seed=3).kernel_fn(f)
    phi = np.asarray(fn.sketch_fn()(x, params), np.float64)
    x2 = x[::-1][:4]
    phi2 = np.asarray(fn.sketch_fn()(x2, params), np.float64)
    np.testing.assert_allclose(np.asarray(fn(x, x2, params)), phi @ phi2.T, rtol=1e-5, atol=1e-6)
    exact = reference.pntk_from_full(reference.full_entk_jacobian(f, x, x2, params), (-1,))
    assert _relative(np.asarray(fn(x, x2, params), np.float64), exact) < 0.25


def _countsketch_of_reference(f, params, x, dim, seed, **kwargs) -> np.ndarray:
    """The countsketch method's features from float64 per-example gradients of Σ_o f_o / √O (taken
    here with `jax.grad`, one example at a time), hashed by the sketch's own `sketch_rows`."""
    from nt_pntk._src.kernels.sketch import sketch_rows

    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)

        def g(p, example):
            out = f(p, example[None], **kwargs)
            return jnp.sum(out) / np.sqrt(out.size)

        # One jitted program for every example (a Python loop of eager grads took most of the test).
        grads = jax.jit(jax.vmap(jax.grad(g), in_axes=(None, 0)))(p64, jnp.asarray(np.asarray(x, np.float64)))
        entries = [leaf.reshape(leaf.shape[0], -1) for leaf in jax.tree_util.tree_leaves(grads)]
        return np.asarray(sketch_rows(entries, p64, dim, seed), np.float64)[:, 0]
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("dtype", ["uint8", "int32", "float16", "bfloat16"])
def test_input_dtypes(dtype):
    """Pixel-valued inputs of each dtype (the FC: stax's convolutions take float32 inputs only):
    countsketch features equal the sketch of the float64 gradients (the same S), tensorsketch's
    kernel (dense layers factored, their activations in the product's dtype) is the exact pNTK's
    within its k^-1/2 error."""
    f, params, _ = _network("fc")
    x = np.random.default_rng(2).integers(0, 4, (5, 8, 8, 1)).astype(jnp.dtype(dtype))
    phi = np.asarray(Sketch(dim=1024, seed=5, method="countsketch").kernel_fn(f).sketch_fn()(x, params))
    expected = _countsketch_of_reference(f, params, x, 1024, 5)
    np.testing.assert_allclose(phi, expected, atol=2e-5 * np.abs(expected).max())
    exact = _exact(f, params, np.asarray(x, np.float64), PNTK())
    k = np.asarray(Sketch(dim=16384, seed=5).kernel_fn(f)(x, None, params), np.float64)
    assert _relative(k, exact) < 0.06


def _noisy(p, x, rng):
    """A keyword argument that changes the output: noise of one key, shared by the batch."""
    h = jnp.tanh(
        x.reshape(x.shape[0], -1) @ p["W"] + jax.random.normal(rng, (16,), jnp.float32).astype(x.dtype)[None]
    )
    return h @ p["V"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("with_x2", [False, True], ids=["x2=None", "x2"])
def test_rng_keyword_argument(method, with_x2):
    """``rng`` reaches the network as NT passes it (x2: ``fold_in(rng, 1)``) on the call and jit
    routes. With k = 2^16 ≫ P = 112 the countsketch is the exact Gram (each array's entries get
    distinct buckets) and the tensorsketch nearly so."""
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((4, 16)) / 2, "V": rng.standard_normal((16, 3))}
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    x1 = rng.standard_normal((6, 4)).astype(np.float32)
    x2 = rng.standard_normal((3, 4)).astype(np.float32) if with_x2 else None
    key, dim = jax.random.PRNGKey(3), 2**16
    fn = Sketch(dim=dim, seed=1, method=method).kernel_fn(_noisy)
    k = np.asarray(fn(x1, x2, params, rng=key), np.float64)
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(x1, x2, params, rng=key)), k, rtol=1e-5, atol=1e-6)

    def reference(key2):
        phi1 = _countsketch_of_reference(_noisy, params, x1, dim, 1, rng=key)
        phi2 = phi1 if x2 is None else _countsketch_of_reference(_noisy, params, x2, dim, 1, rng=key2)
        return phi1 @ phi2.T

    exact = reference(jax.random.fold_in(key, 1))
    if method == "countsketch":  # the same S: the same numbers
        np.testing.assert_allclose(k, exact, atol=2e-5 * np.abs(exact).max())
    assert _relative(k, exact) < 0.05
    if x2 is not None:  # x2 with x1's key (the mistake the feature routes once made) is far off
        assert _relative(k, reference(key)) > 0.2


def test_trace_base_has_one_row_per_output():
    f, params, x = _network("fc")
    fn = Sketch(base=Trace(), dim=128).kernel_fn(f)
    phi = np.asarray(fn.sketch_fn()(x, params), np.float64)
    assert phi.shape == (6, 5, 128)
    np.testing.assert_allclose(
        np.asarray(fn(x, None, params)), np.einsum("irk,jrk->ij", phi, phi), rtol=1e-5, atol=1e-6
    )


def test_seed_and_method_change_the_sketch_and_nothing_else_does():
    f, params, x = _network("fc")
    phi = {
        key: np.asarray(Sketch(dim=256, seed=s, method=m).kernel_fn(f).sketch_fn()(x, params))
        for key, (s, m) in {
            "a": (0, "countsketch"),
            "b": (1, "countsketch"),
            "c": (0, "tensorsketch"),
        }.items()
    }
    assert not np.allclose(phi["a"], phi["b"]) and not np.allclose(phi["a"], phi["c"])
    # Another batch split, another process: the same S.
    again = np.concatenate(
        [
            np.asarray(
                Sketch(dim=256, seed=0, method="countsketch").kernel_fn(f).sketch_fn()(x[i : i + 2], params)
            )
            for i in (0, 2, 4)
        ]
    )
    np.testing.assert_allclose(again, phi["a"], rtol=1e-6, atol=1e-7)


SUBPROCESS = """
import jax, numpy as np, sys
sys.path.insert(0, {tests!r})
import test_sketch
f, params, x = test_sketch._network("cnn")
from nt_pntk.approximations import Sketch
np.save({out!r}, np.asarray(Sketch(dim=256, seed=5).kernel_fn(f).sketch_fn()(x, params)))
"""


@pytest.mark.slow  # a child process with its own JAX start-up
def test_sketch_is_the_same_in_another_process_and_prng_setting(tmp_path):
    out = str(tmp_path / "phi.npy")
    env = {**os.environ, "JAX_DEFAULT_PRNG_IMPL": "rbg"}
    code = SUBPROCESS.format(tests=os.path.dirname(__file__), out=out)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    f, params, x = _network("cnn")
    here = np.asarray(Sketch(dim=256, seed=5).kernel_fn(f).sketch_fn()(x, params))
    np.testing.assert_array_equal(np.load(out), here)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"dim": 0}, ValueError, r"`dim` must be an int >= 1; got dim=0"),
        ({"dim": 2.0}, TypeError, r"`dim` must be an int"),
        ({"seed": -1}, ValueError, r"`seed` must be an int in \[0, 2\*\*32\)"),
        ({"method": "gaussian"}, ValueError, r"`method` must be one of \['countsketch', 'tensorsketch'\]"),
        ({"base": "pntk"}, TypeError, r"`base` must be an approximation"),
        ({"base": nt_pntk.approximations.FullENTK()}, ValueError, r"`base` must be an N×N Gram kernel"),
        ({"base": Sketch()}, ValueError, r"`base` must be an N×N Gram kernel.*sketched already"),
    ],
)
def test_bad_options_are_refused(options, error, match):
    with pytest.raises(error, match=match):
        Sketch(**options)


def test_kernels_that_are_not_a_gram_matrix_are_refused():
    f, params, x = _network("fc")
    with pytest.raises(ValueError, match=r"`diagonal_axes` must be \(\) for a Sketch"):
        Sketch(dim=8).kernel_fn(f, diagonal_axes=(-1,))

    def seq(p, xx):  # an (N, 2, O) output, only the last axis traced
        return jnp.stack([f(p, xx), f(p, xx)], axis=1)

    with pytest.raises(ValueError, match=r"a Sketch needs a kernel that is a Gram matrix"):
        Sketch(dim=8).kernel_fn(seq)(x, None, params)
