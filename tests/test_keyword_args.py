"""The network's keyword arguments on every route, and non-finite kernels.

Every kernel here is compared with `pntk_reference`: per-example gradients of
the summed logits in float64, each side with the keyword arguments NT's
convention gives it (``rng``: x2 gets ``fold_in(rng, 1)`` unless x2 is None;
a 2-tuple: one value per side), computed without NT or nt_pntk.
"""

from __future__ import annotations

import math
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nt_pntk
from nt_pntk._src.tiled import storage
from nt_pntk.tiled import NonFiniteKernelError, kernel_matrix

OUTPUTS = 3
RTOL = 1e-5


def _params() -> dict:
    rng = np.random.default_rng(0)
    return {
        "W": jnp.asarray(rng.standard_normal((4, 16)) / 2, jnp.float32),
        "V": jnp.asarray(rng.standard_normal((16, OUTPUTS)) / 4, jnp.float32),
    }


def _inputs(n: int, seed: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal((n, 4)), jnp.float32)


def noisy(p: dict, x: jax.Array, rng: jax.Array) -> jax.Array:
    """The issue's network: noise of one key shared by the batch (examples stay independent)."""
    noise = jax.random.normal(rng, (16,), jnp.float32).astype(x.dtype)  # the same draw in float64
    return jnp.tanh(x @ p["W"] + 2 * noise[None]) @ p["V"]


def steered(p: dict, x: jax.Array, train: bool = True, scale: float = 1.0) -> jax.Array:
    """A Python bool in Python control flow: traced, it raises TracerBoolConversionError."""
    h = jnp.tanh(x @ p["W"])
    if train:
        h = 2 * h
    return scale * (h @ p["V"])


def pntk_reference(f, params, x1, x2, kwargs1: dict, kwargs2: dict | None = None) -> np.ndarray:
    """Σ_{o,o'} ∇f_o(x1_i)·∇f_o'(x2_j) / O from per-example gradients in float64 (`x2=None`: x1)."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        flat, unravel = ravel_pytree(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params))

        def grads(x, kwargs):
            def g(theta, example):
                return jnp.sum(f(unravel(theta), example[None], **kwargs)) / math.sqrt(OUTPUTS)

            return np.stack([np.asarray(jax.grad(g)(flat, e)) for e in np.asarray(x, np.float64)])

        g1 = grads(x1, kwargs1)
        g2 = g1 if x2 is None else grads(x2, kwargs1 if kwargs2 is None else kwargs2)
        return g1 @ g2.T
    finally:
        jax.config.update("jax_enable_x64", previous)


def assert_matches(got, expected) -> None:
    got = np.asarray(got, np.float64)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= RTOL * np.abs(expected).max(), np.abs(got - expected).max()


KEY = jax.random.PRNGKey(3)


@pytest.mark.parametrize("implementation", [1, 2, 3], ids=["rows", "direct2", "structured"])
@pytest.mark.parametrize("with_x2", [False, True], ids=["x2=None", "x2"])
def test_rng_agrees_on_every_route(implementation, with_x2):
    """Silent before: the feature routes gave x2 x1's key (151-180 % off), direct tiles of x2=None
    derived a key per tile (54 % off)."""
    p, x1, x2 = _params(), _inputs(6, 1), _inputs(5, 2) if with_x2 else None
    expected = pntk_reference(noisy, p, x1, x2, {"rng": KEY}, {"rng": jax.random.fold_in(KEY, 1)})
    fn = nt_pntk.empirical_pntk_fn(noisy, vmap_axes=0, implementation=implementation)
    assert_matches(fn(x1, x2, p, rng=KEY), expected)
    assert_matches(kernel_matrix(fn, x1, x2, p, rng=KEY, tile_size=2, progress=False), expected)


def test_rng_with_pytree_inputs_and_an_output_file(tmp_path):
    """NT's own key derivation needs array inputs; a PyTree x and the probe of an output file work."""
    p, x1, x2 = _params(), _inputs(6, 1), _inputs(5, 2)

    def f(params, x, rng):
        return noisy(params, x["a"], rng)

    expected = pntk_reference(noisy, p, x1, x2, {"rng": KEY}, {"rng": jax.random.fold_in(KEY, 1)})
    fn = nt_pntk.empirical_pntk_fn(f, vmap_axes=0)
    k = kernel_matrix(
        fn, {"a": x1}, {"a": x2}, p, rng=KEY, tile_size=2, progress=False, output=tmp_path / "k.npy"
    )
    assert_matches(k, expected)
    typed = jax.random.key(3)  # a typed key: its bits, not NumPy's conversion, identify the output
    k = kernel_matrix(fn, {"a": x1}, {"a": x2}, p, rng=typed, progress=False, output=tmp_path / "t.npy")
    assert_matches(k, pntk_reference(noisy, p, x1, x2, {"rng": typed}, {"rng": jax.random.fold_in(typed, 1)}))


def test_pair_of_keys_and_pair_of_values():
    """NT's 2-tuple convention: x1 gets the first value, x2 the second (was a raw TypeError)."""
    p, x1, x2 = _params(), _inputs(6, 1), _inputs(5, 2)
    fn = nt_pntk.empirical_pntk_fn(steered, vmap_axes=0)
    expected = pntk_reference(steered, p, x1, x2, {"scale": 2.0}, {"scale": 0.5})
    for implementation in (1, 2, 3):
        fn = nt_pntk.empirical_pntk_fn(steered, vmap_axes=0, implementation=implementation)
        assert_matches(fn(x1, x2, p, scale=(2.0, 0.5)), expected)
        assert_matches(kernel_matrix(fn, x1, x2, p, scale=(2.0, 0.5), tile_size=4, progress=False), expected)
    # x2=None: NT uses x1's value for both sides.
    expected = pntk_reference(steered, p, x1, None, {"scale": 2.0})
    assert_matches(kernel_matrix(fn, x1, None, p, scale=(2.0, 0.5), tile_size=4, progress=False), expected)
    k2 = jax.random.PRNGKey(9)
    fn = nt_pntk.empirical_pntk_fn(noisy, vmap_axes=0)
    expected = pntk_reference(noisy, p, x1, x2, {"rng": KEY}, {"rng": k2})
    assert_matches(kernel_matrix(fn, x1, x2, p, rng=(KEY, k2), tile_size=4, progress=False), expected)


def test_static_bool_reaches_the_network_untraced():
    """`train=False` (what from_linen's error recommends) raised TracerBoolConversionError."""
    p, x1, x2 = _params(), _inputs(6, 1), _inputs(5, 2)
    expected = pntk_reference(steered, p, x1, x2, {"train": False})
    for implementation in (0, 1, 2, 3):
        fn = nt_pntk.empirical_pntk_fn(steered, vmap_axes=0, implementation=implementation)
        assert_matches(fn(x1, x2, p, train=False), expected)
        jitted = jax.jit(fn, static_argnames="train")  # names fn's own arguments, not f's
        assert_matches(jitted(x1, x2, p, train=False), expected)
        assert_matches(kernel_matrix(fn, x1, x2, p, train=False, tile_size=4, progress=False), expected)
    kernel_fn = nt_pntk.empirical_kernel_fn(steered, vmap_axes=0)
    k = jax.jit(kernel_fn, static_argnames=("get", "train"))(x1, x2, ("nngp", "pntk"), p, train=False)
    assert_matches(k.pntk, expected)
    nngp = np.asarray(steered(p, x1, train=False), np.float64) @ np.asarray(steered(p, x2, train=False)).T
    assert_matches(k.nngp, nngp / OUTPUTS)
    features = nt_pntk.approximations.PNTK().kernel_fn(steered, vmap_axes=0).features_fn()
    rows = np.concatenate([np.asarray(a) for a in features(x1, p, train=False)], axis=1)
    cols = np.concatenate([np.asarray(a) for a in features(x2, p, train=False)], axis=1)
    assert_matches(rows @ cols.T, expected)


def test_equinox_inference_flag():
    eqx = pytest.importorskip("equinox")

    class Net(eqx.Module):
        linear: eqx.nn.Linear
        readout: eqx.nn.Linear
        dropout: eqx.nn.Dropout

        def __init__(self, key):
            a, b = jax.random.split(key)
            self.linear, self.readout = eqx.nn.Linear(4, 8, key=a), eqx.nn.Linear(8, OUTPUTS, key=b)
            self.dropout = eqx.nn.Dropout(0.5, inference=True)

        def __call__(self, x, inference=None, key=None):
            return self.readout(self.dropout(jnp.tanh(self.linear(x)), inference=inference, key=key))

    apply_fn, params = nt_pntk.from_equinox(Net(jax.random.PRNGKey(0)))
    x1, x2 = _inputs(6, 1), _inputs(5, 2)
    expected = pntk_reference(apply_fn, params, x1, x2, {})
    fn = nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0)
    assert_matches(fn(x1, x2, params, inference=True), expected)
    assert_matches(kernel_matrix(fn, x1, x2, params, inference=True, progress=False), expected)


def test_linen_mutable_gets_the_adapters_message():
    nn = pytest.importorskip("flax.linen")

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.BatchNorm(use_running_average=not train)(nn.Dense(8)(x))
            return nn.Dense(OUTPUTS)(nn.relu(x))

    module = Net()
    apply_fn, params = nt_pntk.from_linen(module, module.init(jax.random.PRNGKey(0), jnp.ones((2, 4))))
    fn = nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0)
    x = _inputs(3, 1)
    for call in (
        lambda: fn(x, None, params, mutable=["batch_stats"]),
        lambda: jax.jit(fn, static_argnames="mutable")(x, None, params, mutable=("batch_stats",)),
        lambda: kernel_matrix(fn, x, None, params, mutable=["batch_stats"], progress=False),
    ):
        with pytest.raises(ValueError, match=r"module .*Net is in training mode: called with mutable=\.\.\."):
            call()
    expected = pntk_reference(apply_fn, params, x, None, {"train": False})
    assert_matches(kernel_matrix(fn, x, None, params, train=False, progress=False), expected)


def test_keyword_arguments_that_cannot_be_tiled_are_refused():
    p, x1, x2 = _params(), _inputs(6, 1), _inputs(5, 2)
    # A function of its own would derive x2's key per tile.
    own = jax.jit(nt_pntk.empirical_pntk_fn(noisy, vmap_axes=0))
    with pytest.raises(ValueError, match=r"cannot tile `fn`=.* with `rng`.*empirical_pntk_fn"):
        kernel_matrix(own, x1, x2, p, rng=KEY, progress=False)

    def batched(params, x, s):
        return steered(params, x) * s[:, None]

    fn = nt_pntk.empirical_pntk_fn(batched, vmap_axes=(0, 0, {"s": 0}))
    with pytest.raises(
        ValueError, match=r"keyword arguments batched by `vmap_axes`.*\(`s`\).*part of the inputs"
    ):
        kernel_matrix(fn, x1, x2, p, s=(jnp.ones(6), jnp.ones(5)), progress=False)
    fn = nt_pntk.empirical_pntk_fn(steered, vmap_axes=0)
    for call in (fn, lambda *a, **k: kernel_matrix(fn, *a, progress=False, **k)):
        with pytest.raises(TypeError, match=r"keyword argument `train` gives x1 True and x2 False"):
            call(x1, x2, p, train=(True, False))
    with pytest.raises(TypeError, match=r"`rng` must be a PRNG key .*got 3 of type int"):
        nt_pntk.empirical_pntk_fn(noisy)(x1, x2, p, rng=3)


# --- Non-finite kernels ------------------------------------------------------------------------


def relu_net(p: dict, x: jax.Array) -> jax.Array:
    return jax.nn.relu(x @ p["W"]) @ p["V"]


def test_non_finite_tile_is_an_error_naming_the_inputs(tmp_path):
    """Silent before: inputs of 3e38 overflow float32 and the kernel was all NaN, written as done."""
    p, x = _params(), np.array(_inputs(12, 1))
    x[5:7] = 3e38
    fn = nt_pntk.empirical_pntk_fn(relu_net, vmap_axes=0)
    direct = np.asarray(fn(x, None, p))
    assert not np.isfinite(direct[5]).any()  # fn itself: the rows of the overflowing inputs
    good = np.r_[0:5, 7:12]
    assert_matches(direct[np.ix_(good, good)], pntk_reference(relu_net, p, x[good], None, {}))
    message = r"non-finite entries .* for inputs x1 rows 5\.\.6 \(the largest \|input\| there is 3e\+38"
    with pytest.raises(NonFiniteKernelError, match=message):
        kernel_matrix(fn, x, None, p, tile_size=4, progress=False)
    output = tmp_path / "k.npy"
    with pytest.raises(NonFiniteKernelError, match=message):
        kernel_matrix(fn, x, None, p, tile_size=4, progress=False, output=output)
    assert not [t for t in storage.Record(output).done() if 1 in t]  # no tile of rows 4..7 recorded
    k = kernel_matrix(fn, x, None, p, tile_size=4, progress=False, output=output, allow_non_finite=True)
    np.testing.assert_array_equal(np.isfinite(k), np.isfinite(direct))
    assert_matches(np.asarray(k)[np.ix_(good, good)], pntk_reference(relu_net, p, x[good], None, {}))
    with pytest.raises(TypeError, match=r"`allow_non_finite` must be True or False; got 'yes'"):
        kernel_matrix(fn, x, None, p, allow_non_finite="yes")


def test_cli_non_finite_kernel_exits_1(tmp_path, monkeypatch, capsys):
    from nt_pntk import cli

    (tmp_path / "nan_net.py").write_text(
        textwrap.dedent(
            """
            import jax.numpy as jnp
            from neural_tangents import stax

            def network():
                init_fn, apply_fn, _ = stax.serial(stax.Flatten(), stax.Dense(8), stax.Relu(), stax.Dense(3))
                return init_fn, lambda p, x, **kw: apply_fn(p, x, **kw) * jnp.nan
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32))
    args = ["kernel", "--function", "nan_net:network", "--input", str(tmp_path / "x.npy")]
    args += ["--output", str(tmp_path / "k.npy"), "--no-progress"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "non-finite entries" in err and "x1 rows 0..5" in err and "pass --allow-non-finite" in err
    assert cli.main([*args, "--allow-non-finite"]) == 0
    assert np.isnan(np.load(tmp_path / "k.npy")).all()
