"""`nt_pntk.from_equinox`: equinox models with BatchNorm (inference mode, state held) and Dropout (off).

The reference is equinox's own ``eqx.filter_grad`` (which differentiates the
inexact arrays) of one output of one example at a time, in float64; BatchNorm's
running statistics come from a training step, so a kernel that differentiated
them or normalized with a batch's statistics would differ.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_adapters_common import (
    N_LARGE,
    PNTK_OPTIONS,
    Reference,
    check_cli,
    check_library,
    check_pntk,
)

import nt_pntk

with warnings.catch_warnings():
    # equinox 0.11 on jax 0.4.30 (the oldest stack) reads names that JAX deprecated.
    warnings.simplefilter("ignore", DeprecationWarning)
    eqx = pytest.importorskip("equinox", reason="equinox is not installed (pip install 'nt-pntk[equinox]')")

FEATURES, WIDTH, OUTPUTS = 4, 16, 3
# equinox 0.13 warns unless BatchNorm's `mode` is given; 0.11 has no such argument.
BATCHNORM_MODE = {"mode": "ema"} if "mode" in inspect.signature(eqx.nn.BatchNorm).parameters else {}


class Net(eqx.Module):
    """Linear, BatchNorm, an activation function (a non-array leaf), Dropout, Linear; one example."""

    hidden: eqx.nn.Linear
    norm: eqx.nn.BatchNorm
    dropout: eqx.nn.Dropout
    readout: eqx.nn.Linear
    activation: Callable

    def __init__(self, key: jax.Array):
        first, second = jax.random.split(key)
        self.hidden = eqx.nn.Linear(FEATURES, WIDTH, key=first)
        self.norm = eqx.nn.BatchNorm(WIDTH, axis_name="batch", momentum=0.5, **BATCHNORM_MODE)
        self.dropout = eqx.nn.Dropout(0.5)
        self.readout = eqx.nn.Linear(WIDTH, OUTPUTS, key=second)
        self.activation = jax.nn.relu

    def __call__(self, x: jax.Array, state: eqx.nn.State, *, key: jax.Array | None = None) -> tuple:
        h, state = self.norm(self.hidden(x), state)
        return self.readout(self.dropout(self.activation(h), key=key)), state


def build(seed: int = 0, evaluate: bool = True) -> tuple[Net, eqx.nn.State]:
    """The module (in inference mode) and its state after two training steps, in JAX's default float dtype."""
    return _build(seed, evaluate, jnp.result_type(float).name)


@functools.cache  # equinox modules are immutable: tests can share them
def _build(seed: int, evaluate: bool, dtype: str) -> tuple[Net, eqx.nn.State]:
    model, state = eqx.nn.make_with_state(Net)(jax.random.PRNGKey(seed))
    step = jax.jit(  # jit: one compilation, not one per operation
        jax.vmap(
            lambda x, state: model(x, state, key=jax.random.PRNGKey(seed)),
            axis_name="batch",
            in_axes=(0, None),
            out_axes=(0, None),
        )
    )
    for batch in range(2):
        _, state = step(2.0 + inputs(8, 100 + batch, jnp.float32), state)
    cast = lambda a: jnp.asarray(a, dtype) if eqx.is_inexact_array(a) else a  # noqa: E731
    model, state = jax.tree.map(cast, model), jax.tree.map(cast, state)
    return (eqx.nn.inference_mode(model) if evaluate else model), state


def reference(model: eqx.Module, state: eqx.nn.State | None = None) -> Reference:
    """``eqx.filter_grad`` of f_o(x_a) for each example a and output o (of the inexact arrays)."""

    def call(model: eqx.Module, example: jax.Array) -> jax.Array:
        return model(example) if state is None else model(example, state)[0]

    gradient = eqx.filter_jit(eqx.filter_grad(lambda model, example, d: call(model, example) @ d))
    directions = jnp.eye(OUTPUTS, dtype=jnp.result_type(float))

    def jacobians(x: jax.Array) -> np.ndarray:
        rows = [
            [
                np.concatenate([np.ravel(g) for g in jax.tree.leaves(gradient(model, e, d))])
                for d in directions
            ]
            for e in x
        ]
        return np.asarray(rows, np.float64)

    return Reference(jacobians, lambda x: np.stack([np.asarray(call(model, e), np.float64) for e in x]))


def mlp(seed: int = 0) -> eqx.nn.MLP:
    """equinox's MLP, stateless; its activation functions are leaves that JAX cannot differentiate."""
    model = eqx.nn.MLP(FEATURES, OUTPUTS, width_size=WIDTH, depth=2, key=jax.random.PRNGKey(seed))
    dtype = jnp.result_type(float)
    return jax.tree.map(lambda a: jnp.asarray(a, dtype) if eqx.is_inexact_array(a) else a, model)


def inputs(n: int, seed: int, dtype: jnp.dtype | None = None) -> jax.Array:
    x = np.random.default_rng(seed).standard_normal((n, FEATURES))
    return jnp.asarray(x, dtype or jnp.result_type(float))


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize(("implementation", "vmap_axes"), PNTK_OPTIONS)
def test_pntk_matches_per_example_gradients(implementation, vmap_axes):
    model, state = build()
    apply_fn, params = nt_pntk.from_equinox(model, state)
    ref = reference(model, state)
    check_pntk(
        apply_fn, params, ref, inputs(5, 1), inputs(4, 2), implementation=implementation, vmap_axes=vmap_axes
    )


@pytest.mark.slow  # the quick run's Net has an activation function too
@pytest.mark.usefixtures("float64")
def test_stateless_mlp_with_activation_functions():
    model = mlp()
    apply_fn, params = nt_pntk.from_equinox(model)
    assert sorted(params) == [f"layers.{i}.{p}" for i in range(3) for p in ("bias", "weight")]
    check_pntk(apply_fn, params, reference(model), inputs(5, 1), inputs(4, 2), vmap_axes=0)


def test_params_are_the_inexact_arrays():
    model, state = build()
    _, params = nt_pntk.from_equinox(model, state)
    names = ["hidden.bias", "hidden.weight", "norm.bias", "norm.weight", "readout.bias", "readout.weight"]
    assert sorted(params) == names
    np.testing.assert_array_equal(params["hidden.weight"], model.hidden.weight)
    np.testing.assert_array_equal(params["norm.bias"], model.norm.bias)


@pytest.mark.slow
@pytest.mark.usefixtures("float64")
def test_every_library_function(tmp_path):
    model, state = build()
    apply_fn, params = nt_pntk.from_equinox(model, state)
    ref = reference(model, state)
    check_library(apply_fn, params, ref, inputs(5, 1), inputs(4, 2), inputs(N_LARGE, 3), tmp_path)


@pytest.mark.slow
def test_cli_function(tmp_path, monkeypatch):
    x = np.asarray(inputs(N_LARGE, 5))
    expected = reference(*build(seed=4)).kernels(x, x)["pntk"]
    source = """
        import nt_pntk
        from test_adapters_equinox import build

        def network():
            return nt_pntk.from_equinox(*build(seed=4))
    """
    check_cli(tmp_path, monkeypatch, source, x, expected)


# --- Training mode and bad arguments: errors that name the fix. ---


def test_training_mode_is_refused():
    model, state = build(evaluate=False)
    message = (
        r"module Net is in training mode: BatchNorm at norm normalizes with the batch's statistics "
        r"\(inference=False\); Dropout at dropout drops units at random \(inference=False, p=0.5\).*"
        r"Use `module = eqx.nn.inference_mode\(module\)`"
    )
    with pytest.raises(ValueError, match=message):
        nt_pntk.from_equinox(model, state)


def test_bad_arguments():
    model, _ = build()
    with pytest.raises(ValueError, match=r"`module` \(Net\) holds state .*eqx.nn.make_with_state"):
        nt_pntk.from_equinox(model)
    with pytest.raises(TypeError, match=r"`state` must be the eqx.nn.State .*; got dict"):
        nt_pntk.from_equinox(model, {"mean": 0})
    with pytest.raises(TypeError, match=r"`module` must be an equinox.Module; got dict"):
        nt_pntk.from_equinox({"weight": model.hidden.weight})
    with pytest.raises(ValueError, match=r"`module` \(Lambda\) holds no floating-point array"):
        nt_pntk.from_equinox(eqx.nn.Lambda(jnp.tanh))
