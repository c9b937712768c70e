"""`nt_pntk.from_linen`: a flax linen model with BatchNorm (running statistics) and Dropout (off).

The reference differentiates ``module.apply`` with respect to the ``params``
collection alone, one example at a time (``jax.vmap(jax.jacrev(...))``), in
float64; BatchNorm's statistics are random, so a kernel that differentiated
them or normalized with a batch's statistics would differ.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from test_adapters_common import (
    N_LARGE,
    PNTK_OPTIONS,
    Reference,
    check_cli,
    check_library,
    check_pntk,
    run_cli,
)

import nt_pntk

nn = pytest.importorskip("flax.linen", reason="flax is not installed (pip install 'nt-pntk[flax]')")

FEATURES, WIDTH, OUTPUTS = 4, 16, 3


class Net(nn.Module):
    """Dense, BatchNorm, ReLU, Dropout, Dense; `train` turns on the batch statistics and the dropout."""

    train: bool = False
    dropout: bool | None = None  # Dropout active; default: `train`

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Dense(WIDTH)(x)
        h = nn.BatchNorm(use_running_average=not self.train)(h)
        h = nn.Dropout(0.5, deterministic=not (self.train if self.dropout is None else self.dropout))(
            nn.relu(h)
        )
        return nn.Dense(OUTPUTS)(h)


def build(seed: int = 0) -> tuple[Net, dict]:
    """The module and its variables, BatchNorm's statistics random, in JAX's default float dtype."""
    module = Net()
    dtype = jnp.result_type(float)
    variables = jax.jit(module.init)(jax.random.PRNGKey(seed), jnp.zeros((1, FEATURES)))  # jit: compiles once
    rng = np.random.default_rng(seed)
    stats = {"mean": rng.standard_normal(WIDTH), "var": rng.uniform(0.5, 2.0, WIDTH)}
    variables = {**variables, "batch_stats": {"BatchNorm_0": stats}}
    return module, jax.tree.map(lambda a: jnp.asarray(a, dtype), variables)


def reference(module: Net, variables: dict) -> Reference:
    flat, unravel = ravel_pytree(variables["params"])

    def output(theta: jax.Array, example: jax.Array) -> jax.Array:
        return module.apply({**variables, "params": unravel(theta)}, example[None])[0]

    jacobians = jax.jit(jax.vmap(jax.jacrev(output), in_axes=(None, 0)))
    outputs = jax.jit(jax.vmap(output, in_axes=(None, 0)))
    return Reference(
        lambda x: np.asarray(jacobians(flat, x), np.float64),
        lambda x: np.asarray(outputs(flat, x), np.float64),
    )


def inputs(n: int, seed: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal((n, FEATURES)), jnp.result_type(float))


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize(("implementation", "vmap_axes"), PNTK_OPTIONS)
def test_pntk_matches_per_example_gradients(implementation, vmap_axes):
    module, variables = build()
    apply_fn, params = nt_pntk.from_linen(module, variables)
    assert params is variables["params"]  # the batch statistics stay out
    ref = reference(module, variables)
    check_pntk(
        apply_fn, params, ref, inputs(5, 1), inputs(4, 2), implementation=implementation, vmap_axes=vmap_axes
    )


@pytest.mark.slow
@pytest.mark.usefixtures("float64")
def test_every_library_function(tmp_path):
    module, variables = build()
    apply_fn, params = nt_pntk.from_linen(module, variables)
    ref = reference(module, variables)
    check_library(apply_fn, params, ref, inputs(5, 1), inputs(4, 2), inputs(N_LARGE, 3), tmp_path)


@pytest.mark.slow
def test_cli_function(tmp_path, monkeypatch):
    module, variables = build(seed=4)
    x = np.asarray(inputs(N_LARGE, 5))
    expected = reference(module, variables).kernels(x, x)["pntk"]
    source = """
        import nt_pntk
        from test_adapters_linen import build

        def network():
            return nt_pntk.from_linen(*build(seed=4))
    """
    check_cli(tmp_path, monkeypatch, source, x, expected)


# --- Training mode and bad arguments: errors that name the fix. ---


@pytest.mark.parametrize(
    ("module", "kwargs", "message"),
    [
        (Net(train=True, dropout=False), {}, r"a layer normalizes with the batch's statistics"),
        (Net(dropout=True), {}, r"a layer draws random numbers, as an active Dropout does"),
        (Net(), {"rngs": {"dropout": jax.random.PRNGKey(0)}}, r"called with rngs=\.\.\..*Leave out rngs\."),
        (Net(), {"mutable": True}, r"called with mutable=\.\.\..*Leave out mutable\."),
    ],
    ids=["batchnorm", "dropout", "rngs", "mutable"],
)
def test_training_mode_is_refused(module, kwargs, message):
    _, variables = build()
    apply_fn, params = nt_pntk.from_linen(module, variables)
    with pytest.raises(
        ValueError,
        match=rf"module Net is in training mode: {message}.*use_running_average=True.*deterministic=True",
    ):
        nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0)(inputs(3, 1), None, params, **kwargs)


def test_bad_arguments():
    module, variables = build()
    with pytest.raises(TypeError, match=r"`module` must be a flax.linen.Module; got method"):
        nt_pntk.from_linen(module.apply, variables)
    with pytest.raises(TypeError, match=r"`variables` must be the mapping .*; got list"):
        nt_pntk.from_linen(module, [variables])
    with pytest.raises(
        ValueError, match=r"'params' collection.*got the collections \['BatchNorm_0', 'Dense_0'"
    ):
        nt_pntk.from_linen(module, variables["params"])


def test_cli_inputs_of_another_shape(tmp_path, monkeypatch, capsys):
    source = """
        import nt_pntk
        from test_adapters_linen import build

        def network():
            return nt_pntk.from_linen(*build())
    """
    assert run_cli(tmp_path, monkeypatch, source, np.zeros((3, FEATURES + 1), np.float32)) == 2
    error = capsys.readouterr().err
    assert f":network cannot take inputs of shape ({FEATURES + 1},) (one example)" in error
    assert "its apply_fn failed with ScopeParamShapeError" in error
