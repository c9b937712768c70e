"""`kernel_matrix`'s routes (rows, structured, direct(k)) and AUTO's choice, against independent references.

The reference pNTK is the Gram matrix of per-example gradients of Σ_o f_o / √O
(float64, `jax.vmap(jax.grad(...))`, flattened); the structured features'
kernels of the other approximations are checked against their Jacobian rows,
which `test_approximations` checks against the eNTK.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from neural_tangents import stax

import nt_pntk
from nt_pntk._src.kernels import structured
from nt_pntk._src.tiled import compute
from nt_pntk.experiments import models


def per_example_gradient_pntk(apply_fn, x1, x2, params) -> np.ndarray:
    """Σ_o f_o/√O's per-example gradients, flattened, and their Gram matrix (float64)."""

    def summed(p, x):
        out = apply_fn(p, x[None])
        return out.sum() / math.sqrt(out.shape[-1])

    grads_fn = jax.jit(jax.vmap(jax.grad(summed), in_axes=(None, 0)))  # compiled: far faster than eager

    def rows(x):
        grads = grads_fn(params, x)
        flat = jax.tree.leaves(jax.tree.map(lambda g: np.asarray(g).reshape(len(x), -1), grads))
        return np.concatenate(flat, axis=1)

    g1 = rows(x1).astype(np.float64)
    g2 = g1 if x2 is None else rows(x2).astype(np.float64)
    return g1 @ g2.T


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def mixed_network(outputs: int = 3):
    """1-D conv, LayerNorm, self-attention, and two 128-wide dense layers (factored) before the readout."""
    return stax.serial(
        stax.Conv(8, (3,), padding="SAME"),
        stax.Relu(),
        stax.LayerNorm(axis=-1),
        stax.GlobalSelfAttention(n_chan_out=8, n_chan_key=8, n_chan_val=8, n_heads=2, linear_scaling=False),
        stax.LayerNorm(axis=-1),
        stax.Flatten(),
        stax.Dense(128),
        stax.Relu(),
        stax.Dense(128),
        stax.Erf(),
        stax.Dense(outputs),
    )


def zoo(name: str):
    """(apply_fn, params, x) of a small network with dense layers wide enough to be factored."""
    rng = np.random.default_rng(0)
    if name == "mixed":
        init_fn, apply_fn, _ = mixed_network()
        shape = (12, 4)
    else:
        options = {
            "fc": dict(width=128, depth=2),
            "cnn": dict(width=8, depth=1, readout_width=128),
            "wide_resnet": dict(width=4),
            "resnet": dict(width=2, depth=10),
        }[name]
        model = models.get_model(name, outputs=3, **options)
        init_fn, apply_fn = model.init_fn, model.apply_fn
        shape = (8, 8, 1)
    _, params = init_fn(jax.random.PRNGKey(0), (-1, *shape))
    x = rng.normal(size=(13, *shape)).astype(np.float32)
    return apply_fn, params, x


# The quick run checks fc and cnn; the residual nets and the mixed network are slow to trace.
ZOO = ["fc", "cnn", *(pytest.param(n, marks=pytest.mark.slow) for n in ("wide_resnet", "resnet", "mixed"))]


@pytest.mark.parametrize("name", ZOO)
def test_structured_features_give_the_pntk(name, float64):
    apply_fn, params, x = zoo(name)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    x = x.astype(np.float64)
    fn = nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0)
    # Compiled, as kernel_matrix runs them: NT's eager dispatch takes minutes for the residual nets.
    features = jax.jit(fn.features_fn(structured=True))(x, params)
    if name in ("fc", "cnn", "mixed"):  # networks with a dense layer worth factoring
        assert any(isinstance(entry, tuple) for entry in features)
    kernel = compute.gram(features, features)
    assert rel(kernel, per_example_gradient_pntk(apply_fn, x, None, params)) < 1e-10


@pytest.mark.parametrize(
    "approximation",
    [
        nt_pntk.approximations.Trace(),
        nt_pntk.approximations.SingleLogit(1),
        nt_pntk.approximations.Projection(2),
    ],
    ids=["trace", "single_logit", "projection"],
)
@pytest.mark.parametrize("name", ["fc", pytest.param("mixed", marks=pytest.mark.slow)])
def test_structured_features_equal_jacobian_rows_for_every_approximation(name, approximation, float64):
    apply_fn, params, x = zoo(name)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    x = x.astype(np.float64)
    fn = approximation.kernel_fn(apply_fn, vmap_axes=0)
    # Compiled, as kernel_matrix runs them: eager dispatch takes most of a minute for the mixed network.
    factored = jax.jit(fn.features_fn(structured=True))(x, params)
    assert any(isinstance(entry, tuple) for entry in factored)
    rows = jax.jit(fn.features_fn())(x, params)
    assert rel(compute.gram(factored, factored), compute.gram(rows, rows)) < 1e-10
    # and both are the kernel the function itself computes
    assert rel(compute.gram(rows, rows), jax.jit(fn)(x, None, params)) < 1e-10


def test_a_parameter_used_twice_keeps_its_jacobian_rows(float64):
    """Weight sharing breaks the single-use factorization: such a leaf must not be factored."""
    w = jnp.asarray(np.random.default_rng(1).normal(size=(64, 64)) / 8)

    def apply_fn(params, x):
        h = jnp.tanh(x @ params["w"])
        return jnp.tanh(h @ params["w"]) @ params["out"]

    params = {"w": w, "out": jnp.asarray(np.random.default_rng(2).normal(size=(64, 3)) / 8)}
    x = np.random.default_rng(3).normal(size=(9, 64))
    fn = nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0)
    features = fn.features_fn(structured=True)(x, params)
    widths = sorted(entry.shape[1] for entry in features if not isinstance(entry, tuple))
    assert 64 * 64 in widths  # the shared weight: Jacobian rows
    kernel = compute.gram(features, features)
    assert rel(kernel, per_example_gradient_pntk(apply_fn, x, None, params)) < 1e-10


def test_min_saving_decides_what_is_factored():
    """Layers 6 → 64 → 64 → 3: the first two save 5.5 and 32 times their numbers as factors (at least
    MIN_SAVING = 4), the readout only 2.9: it keeps its Jacobian rows."""
    assert structured.MIN_SAVING == 4
    model = models.get_model("fc", width=64, outputs=3, depth=2)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, 6))
    fn = nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0)
    features = fn.features_fn(structured=True)(np.ones((2, 6), np.float32), params)
    factored = sorted((a.shape[1], d.shape[1]) for a, d in (e for e in features if isinstance(e, tuple)))
    assert factored == [(6, 64), (64, 64)]
    assert 64 * 3 in [e.shape[1] for e in features if not isinstance(e, tuple)]


# --- kernel_matrix on each route ---

ROUTES = {0: None, 1: "rows", 2: "direct(2)", 3: "structured"}


@pytest.fixture(scope="module")
def wide_fc():
    """An FC net with 128-wide layers (structured pays), 37 and 21 inputs."""
    model = models.get_model("fc", width=128, outputs=3, depth=2)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(37, 8, 8, 1)).astype(np.float32)
    x2 = rng.normal(size=(21, 8, 8, 1)).astype(np.float32)
    reference = {
        "symmetric": per_example_gradient_pntk(model.apply_fn, x1, None, params),
        "x2": per_example_gradient_pntk(model.apply_fn, x1, x2, params),
    }
    return model, params, x1, x2, reference


@pytest.mark.parametrize("implementation", [0, 1, pytest.param(2, marks=pytest.mark.slow), 3])
@pytest.mark.parametrize("pair", ["symmetric", pytest.param("x2", marks=pytest.mark.slow)])
def test_kernel_matrix_on_each_route_gives_the_pntk(wide_fc, implementation, pair):
    model, params, x1, x2, reference = wide_fc
    fn = nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0, implementation=implementation)
    other = None if pair == "symmetric" else x2
    kernel, stats = nt_pntk.kernel_matrix(fn, x1, other, params, tile_size=8, progress=False, stats=True)
    assert rel(kernel, reference[pair]) < 2e-6
    expected_route = ROUTES[implementation] or "structured"  # AUTO: 128-wide layers favour factors
    assert stats.route == expected_route
    assert stats.flops > 0 and sum(stats.calls.values()) > 0


def test_auto_takes_the_cheapest_estimate_and_says_why(wide_fc):
    model, params, x1, _, _ = wide_fc
    fn = nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0, implementation=0)
    plan = nt_pntk.tiled.plan_kernel_matrix(fn, x1, None, params)
    estimates = plan.choice.estimates
    assert set(estimates) == {"rows", "structured"}
    assert plan.route == min(estimates, key=lambda r: estimates[r].seconds)
    # Structured work per entry is Σ (d_in + d_out), rows' Σ d_in·d_out: the Gram estimate must say so.
    assert estimates["structured"].gram_seconds < estimates["rows"].gram_seconds / 4
    text = str(plan)
    assert "route: structured (AUTO" in text and "rows" in text


def test_auto_on_a_network_without_wide_dense_layers_takes_rows():
    """A conv net whose only dense layer is a narrow readout: nothing to factor, rows."""
    model = models.get_model("cnn", width=4, outputs=3, depth=1)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, 6, 6, 1))
    x = np.random.default_rng(0).normal(size=(11, 6, 6, 1)).astype(np.float32)
    fn = nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0, implementation=0)
    kernel, stats = nt_pntk.kernel_matrix(fn, x, None, params, tile_size=4, progress=False, stats=True)
    assert stats.route == "rows"
    assert rel(kernel, per_example_gradient_pntk(model.apply_fn, x, None, params)) < 2e-6


def test_plan_computes_nothing_and_matches_the_run(wide_fc, tmp_path):
    model, params, x1, _, _ = wide_fc
    fn = nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0, implementation=3)
    plan = nt_pntk.tiled.plan_kernel_matrix(fn, x1, None, params, tile_size=8)
    assert list(tmp_path.iterdir()) == []
    assert (plan.route, plan.plan.tile) == ("structured", 8)
    _, stats = nt_pntk.kernel_matrix(fn, x1, None, params, tile_size=8, progress=False, stats=True)
    assert (stats.route, stats.plan.tile) == (plan.route, plan.plan.tile)
    assert stats.calls["gram"] == 15  # 5 row blocks of 8: the upper triangle of tiles


def test_a_run_resumed_on_another_route_gives_the_same_kernel(wide_fc, tmp_path, count_tiles):
    model, params, x1, _, reference = wide_fc
    out = tmp_path / "k.npy"
    rows_fn = nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0, implementation=1)
    nt_pntk.kernel_matrix(rows_fn, x1, None, params, output=out, tile_size=8, progress=False)
    done = sorted((tmp_path / "k.npy.tiles" / "done").glob("*.json"))
    assert len(done) == 15
    for marker in done[::2]:  # as if the run had been killed before these tiles
        marker.unlink()
    count_tiles["tiles"] = 0
    structured_fn = nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0, implementation=3)
    kernel = nt_pntk.kernel_matrix(structured_fn, x1, None, params, output=out, tile_size=8, progress=False)
    assert count_tiles["tiles"] == len(done[::2])
    assert rel(kernel, reference["symmetric"]) < 2e-6
    meta = json.loads((tmp_path / "k.npy.tiles" / "meta.json").read_text())
    assert meta["route"] == "rows"  # the route that started the output
    markers = {
        m.name: json.loads(m.read_text())["route"] for m in (tmp_path / "k.npy.tiles" / "done").iterdir()
    }
    recomputed = {m.name for m in done[::2]}
    assert {name: route == "structured" for name, route in markers.items()} == {
        name: name in recomputed for name in markers
    }


def test_a_function_of_its_own_is_tiled_directly(wide_fc):
    """Not an `EmpiricalKernelFn`: no features to reuse, the function itself on each tile."""
    model, params, x1, x2, reference = wide_fc
    pntk_fn = nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0, implementation=1)

    def kernel_fn(a, b, p):
        return pntk_fn(a, b, p)

    kernel, stats = nt_pntk.kernel_matrix(kernel_fn, x1, x2, params, tile_size=8, progress=False, stats=True)
    assert stats.route == "direct"
    assert stats.calls["tile"] == 15  # 5 × 3 tiles of 8
    assert rel(kernel, reference["x2"]) < 2e-6
