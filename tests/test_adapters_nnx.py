"""`nt_pntk.from_nnx`: a flax NNX model with BatchNorm (running statistics) and Dropout (off, RNG state held).

The reference is flax's own ``nnx.grad`` (which differentiates the ``nnx.Param``
variables) of one output of one example at a time, in float64; BatchNorm's
statistics are random, so a kernel that differentiated them or normalized with
a batch's statistics would differ.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_adapters_common import (
    N_LARGE,
    PNTK_OPTIONS,
    Reference,
    assert_close,
    check_cli,
    check_library,
    check_pntk,
    run_cli,
)

import nt_pntk

nnx = pytest.importorskip(
    "flax.nnx", reason="flax with NNX is not installed (pip install 'nt-pntk[flax]': flax>=0.8.5)"
)

FEATURES, WIDTH, OUTPUTS = 4, 16, 3
PARAMS = ["hidden.bias", "hidden.kernel", "norm.bias", "norm.scale", "readout.bias", "readout.kernel"]


class Net(nnx.Module):
    """Linear, BatchNorm, ReLU, Dropout (with its own RNG stream), Linear."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(FEATURES, WIDTH, rngs=rngs)
        self.norm = nnx.BatchNorm(WIDTH, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.readout = nnx.Linear(WIDTH, OUTPUTS, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.readout(self.dropout(jax.nn.relu(self.norm(self.hidden(x)))))


def build(seed: int = 0, evaluate: bool = True) -> Net:
    """The module in evaluation mode, BatchNorm's statistics random, in JAX's default float dtype."""
    module = Net(nnx.Rngs(seed))
    rng = np.random.default_rng(seed)

    def statistic(path: tuple, a: jax.Array) -> np.ndarray:
        is_mean = "mean" in jax.tree_util.keystr(path)
        return rng.standard_normal(a.shape) if is_mean else rng.uniform(0.5, 2.0, a.shape)

    nnx.update(module, jax.tree_util.tree_map_with_path(statistic, nnx.state(module, nnx.BatchStat)))
    dtype = jnp.result_type(float)
    cast = lambda a: jnp.asarray(a, dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a  # noqa: E731
    nnx.update(module, jax.tree.map(cast, nnx.state(module)))
    if evaluate:
        module.eval()
    return module


def reference(module: Net) -> Reference:
    """``nnx.grad`` of f_o(x_a) for each example a and output o (flax differentiates the nnx.Param)."""

    def output(model: Net, example: jax.Array, direction: jax.Array) -> jax.Array:
        return model(example[None])[0] @ direction

    gradient = nnx.jit(nnx.grad(output))

    def jacobians(x: jax.Array) -> np.ndarray:
        rows = [
            [
                np.concatenate([np.ravel(g) for g in jax.tree.leaves(gradient(module, e, d))])
                for d in directions
            ]
            for e in x
        ]
        return np.asarray(rows, np.float64)

    directions = jnp.eye(OUTPUTS, dtype=jnp.result_type(float))
    return Reference(jacobians, lambda x: np.asarray(module(x), np.float64))


def inputs(n: int, seed: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal((n, FEATURES)), jnp.result_type(float))


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize(("implementation", "vmap_axes"), PNTK_OPTIONS)
def test_pntk_matches_per_example_gradients(implementation, vmap_axes):
    module = build()
    apply_fn, params = nt_pntk.from_nnx(module)
    ref = reference(module)
    check_pntk(
        apply_fn, params, ref, inputs(5, 1), inputs(4, 2), implementation=implementation, vmap_axes=vmap_axes
    )


def test_params_are_the_trainable_parameters():
    """nnx.Param only: no BatchNorm statistic, no RNG key or count; the module itself left unchanged."""
    module = build()
    stats = [np.asarray(a) for a in jax.tree.leaves(nnx.state(module, nnx.BatchStat))]
    apply_fn, params = nt_pntk.from_nnx(module)
    assert sorted(params) == PARAMS
    assert all(jnp.issubdtype(a.dtype, jnp.floating) for a in params.values())
    bias, kernel = jax.tree.leaves(nnx.state(module.hidden, nnx.Param))  # keys in sorted order
    np.testing.assert_array_equal(params["hidden.kernel"], kernel)
    np.testing.assert_array_equal(params["hidden.bias"], bias)
    x = inputs(3, 1)
    assert_close(jax.jit(apply_fn)(params, x), np.asarray(module(x), np.float64))
    for before, after in zip(stats, jax.tree.leaves(nnx.state(module, nnx.BatchStat)), strict=True):
        np.testing.assert_array_equal(before, after)


@pytest.mark.slow
@pytest.mark.usefixtures("float64")
def test_every_library_function(tmp_path):
    module = build()
    apply_fn, params = nt_pntk.from_nnx(module)
    check_library(
        apply_fn, params, reference(module), inputs(5, 1), inputs(4, 2), inputs(N_LARGE, 3), tmp_path
    )


@pytest.mark.slow
def test_cli_function(tmp_path, monkeypatch):
    x = np.asarray(inputs(N_LARGE, 5))
    expected = reference(build(seed=4)).kernels(x, x)["pntk"]
    source = """
        import nt_pntk
        from test_adapters_nnx import build

        def network():
            return nt_pntk.from_nnx(build(seed=4))
    """
    check_cli(tmp_path, monkeypatch, source, x, expected)


# --- Training mode and bad arguments: errors that name the fix. ---


def _train_batchnorm(module: Net) -> None:
    module.norm.use_running_average = False


def _train_dropout(module: Net) -> None:
    module.dropout.deterministic = False


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (
            None,
            r"(Dropout at dropout drops units at random|BatchNorm at norm normalizes).*; (BatchNorm|Dropout)",
        ),
        (_train_batchnorm, r"BatchNorm at norm normalizes with the batch's statistics \(use_running_average"),
        (_train_dropout, r"Dropout at dropout drops units at random \(deterministic=False, rate 0.5\)"),
    ],
    ids=["new", "batchnorm", "dropout"],
)
def test_training_mode_is_refused(train, message):
    module = build(evaluate=train is not None)
    if train is not None:
        train(module)
    with pytest.raises(
        ValueError, match=rf"module Net is in training mode: {message}.*Call `module.eval\(\)`"
    ):
        nt_pntk.from_nnx(module)


def test_cli_training_mode(tmp_path, monkeypatch, capsys):
    source = """
        import nt_pntk
        from test_adapters_nnx import build

        def network():
            return nt_pntk.from_nnx(build(evaluate=False))
    """
    assert run_cli(tmp_path, monkeypatch, source, np.zeros((3, FEATURES), np.float32)) == 2
    error = capsys.readouterr().err
    assert "network() failed with ValueError: module Net is in training mode: " in error
    assert "Call `module.eval()` first" in error


class Noisy(nnx.Module):
    """Draws noise from its own RNG stream: no BatchNorm or Dropout to spot, but its state changes."""

    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(FEATURES, OUTPUTS, rngs=rngs)
        self.rngs = rngs

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear(x) + jax.random.normal(self.rngs.noise(), (x.shape[0], OUTPUTS))


def test_a_state_change_is_refused_when_traced():
    apply_fn, params = nt_pntk.from_nnx(Noisy(nnx.Rngs(0, noise=1)))
    with pytest.raises(
        ValueError,
        match=r"module Noisy is in training mode: computing its outputs changed its state "
        r"\(rngs\.noise\.count\).*module.eval",
    ):
        nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0)(inputs(3, 1), None, params)


def test_bad_arguments():
    linen = pytest.importorskip("flax.linen")
    with pytest.raises(
        TypeError,
        match=r"must be a flax.nnx.Module; got Dense\. For a flax.linen module use nt_pntk.from_linen",
    ):
        nt_pntk.from_nnx(linen.Dense(3))

    class Fixed(nnx.Module):
        def __init__(self):
            self.offset = nnx.BatchStat(jnp.ones(3))

        def __call__(self, x: jax.Array) -> jax.Array:
            return x + self.offset

    with pytest.raises(
        ValueError, match=r"has no floating-point nnx.Param to differentiate; its parameters: none"
    ):
        nt_pntk.from_nnx(Fixed())
