"""neural-tangents 0.6.5 on the running JAX, through nt_pntk's import hook (`nt_pntk.compat`).

Every check compares NT against an independent reference: a hand-written
``jax.jacobian`` eNTK, the arc-cosine closed form of a one-hidden-layer ReLU
network, a Monte Carlo average of finite-width eNTKs, or the closed-form
gradient-flow (kernel regression) solution computed in NumPy/SciPy. The suite
runs on the oldest and the newest supported JAX (``nox``), so what passes here
passes on both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import linecache
import logging
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
import scipy.linalg

import nt_pntk  # first: installs the neural-tangents adaptation
from nt_pntk._src.compat import patches as _patches
from nt_pntk._src.compat import probes as _probes

# isort: split
import neural_tangents as nt
from neural_tangents import stax

# AUTO (0), JACOBIAN_CONTRACTION (1), NTK_VECTOR_PRODUCTS (2), STRUCTURED_DERIVATIVES (3)
IMPLEMENTATIONS = tuple(nt.NtkImplementation)


# --- Small networks and independent references --------------------------------


def _fc():
    return stax.serial(stax.Dense(6, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(3, b_std=0.1))


def _problem():
    init_fn, apply_fn, _ = _fc()
    _, params = init_fn(jax.random.PRNGKey(0), (-1, 4))
    x1 = jax.random.normal(jax.random.PRNGKey(1), (3, 4))
    x2 = jax.random.normal(jax.random.PRNGKey(2), (2, 4))
    return apply_fn, params, x1, x2


def _jacobian_entk(apply_fn, params, x1, x2) -> np.ndarray:
    """Θ[i, j, a, b] = Σ_p ∂f_a(x1_i)/∂p ∂f_b(x2_j)/∂p, from `jax.jacobian`, in float64 NumPy."""

    def flat_jacobian(x):
        jac = jax.jacobian(apply_fn)(params, x)  # leaves (N, O, *param_shape)
        leaves = [np.asarray(j, np.float64).reshape(j.shape[0], j.shape[1], -1) for j in jax.tree.leaves(jac)]
        return np.concatenate(leaves, axis=-1)

    return reference.entk_from_jacobians(flat_jacobian(x1), flat_jacobian(x2))


def _arccos_kernels(x1, x2, d: int, w1: float, b1: float, w2: float, b2: float):
    """NNGP and NTK of Dense(·, w1, b1) → ReLU → Dense(1, w2, b2) (NTK parameterization), closed form."""
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    k12 = w1**2 * x1 @ x2.T / d + b1**2
    k11 = w1**2 * np.sum(x1**2, 1) / d + b1**2
    k22 = w1**2 * np.sum(x2**2, 1) / d + b1**2
    norms = np.sqrt(np.outer(k11, k22))
    theta = np.arccos(np.clip(k12 / norms, -1.0, 1.0))
    relu_relu = norms * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
    step_step = (np.pi - theta) / (2 * np.pi)
    nngp = w2**2 * relu_relu + b2**2
    ntk = nngp + w2**2 * step_step * k12  # the first layer's NTK is its NNGP, k12
    return nngp, ntk


def _assert_close(actual, desired, rtol: float):
    """Entrywise, relative to the largest entry of `desired`."""
    desired = np.asarray(desired, np.float64)
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), desired, rtol=0, atol=rtol * np.abs(desired).max()
    )


# --- Empirical kernels: implementations 0-3 ------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("implementation", "vmap_axes"),
    # tests/test_pntk.py runs every implementation with vmap_axes=0 on the zoo models, convolutions
    # included, through the pNTK.
    [(i, None) for i in IMPLEMENTATIONS],
    ids=str,
)
def test_empirical_ntk_matches_jacobian_reference(float64, implementation, vmap_axes):
    apply_fn, params, x1, x2 = _problem()
    reference = _jacobian_entk(apply_fn, params, x1, x2)

    ntk = nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=vmap_axes, implementation=implementation)
    _assert_close(ntk(x1, x2, params), reference, 1e-10)


def test_cotangent_check_under_jax_enable_checks():
    # With `jax_enable_checks`, STRUCTURED_DERIVATIVES checks each cotangent it writes against its
    # variable; NT wrote that check with JAX APIs since removed.
    from neural_tangents._src import empirical

    var = jax.make_jaxpr(lambda x: x + 1)(jnp.ones((2, 3))).jaxpr.outvars[0]
    with jax.enable_checks(True):
        env = {}
        empirical._write_cotangent("add", env, var, jnp.ones((2, 3)))
        empirical._write_cotangent("add", env, var, jnp.ones((2, 3)))
        np.testing.assert_array_equal(env[var], 2 * np.ones((2, 3)))
        with pytest.raises((AssertionError, TypeError)):
            empirical._write_cotangent("add", {var: jnp.ones((2, 3))}, var, jnp.ones((3, 2)))


# --- Infinite-width kernels, batching, Monte Carlo ------------------------------


@pytest.mark.slow
def test_stax_kernel_fn_matches_arccos_closed_form(float64):
    d, (w1, b1, w2, b2) = 4, (1.5, 0.2, 0.9, 0.1)
    _, _, kernel_fn = stax.serial(
        stax.Dense(8, W_std=w1, b_std=b1), stax.Relu(), stax.Dense(1, W_std=w2, b_std=b2)
    )
    x1 = jax.random.normal(jax.random.PRNGKey(1), (4, d))
    x2 = jax.random.normal(jax.random.PRNGKey(2), (3, d))
    nngp, ntk = _arccos_kernels(x1, x2, d, w1, b1, w2, b2)
    kernels = kernel_fn(x1, x2, ("nngp", "ntk"))
    _assert_close(kernels.nngp, nngp, 1e-10)
    _assert_close(kernels.ntk, ntk, 1e-10)


@pytest.mark.slow
def test_monte_carlo_empirical_kernels_approach_stax_kernel():
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(256, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(32)
    )
    x1 = jax.random.normal(jax.random.PRNGKey(1), (3, 4))
    x2 = jax.random.normal(jax.random.PRNGKey(2), (2, 4))
    mc_fn = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(3), 32, implementation=1)
    estimate = mc_fn(x1, x2, ("nngp", "ntk"))
    exact = kernel_fn(x1, x2, ("nngp", "ntk"))
    # 32 networks of width 256 with 32 outputs: a few % off for the eNTK, ~10% for the empirical
    # NNGP (1024 output products); the tolerances are 3-5 times that, whatever the RNG.
    _assert_close(estimate.ntk, exact.ntk, 0.15)
    _assert_close(estimate.nngp, exact.nngp, 0.35)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("device_count", "store_on_device"), [(0, True), (1, True), (-1, True), (-1, False)], ids=str
)
def test_batch_equals_unbatched(device_count, store_on_device):
    _, _, kernel_fn = _fc()
    x1 = jax.random.normal(jax.random.PRNGKey(1), (4, 4))
    x2 = jax.random.normal(jax.random.PRNGKey(2), (6, 4))
    batched_fn = nt.batch(kernel_fn, batch_size=2, device_count=device_count, store_on_device=store_on_device)
    batched = batched_fn(x1, x2, ("nngp", "ntk"))
    exact = kernel_fn(x1, x2, ("nngp", "ntk"))
    _assert_close(batched.nngp, exact.nngp, 1e-5)
    _assert_close(batched.ntk, exact.ntk, 1e-5)


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_batch_over_two_devices_uses_pmap():
    result = _run_python(
        """
        import jax, numpy as np
        import nt_pntk
        import neural_tangents as nt
        from neural_tangents import stax
        assert jax.local_device_count() == 2, jax.devices()
        _, _, kernel_fn = stax.serial(stax.Dense(4), stax.Relu(), stax.Dense(1))
        x = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
        batched = nt.batch(kernel_fn, batch_size=2)(x, x, ("nngp", "ntk"))
        exact = kernel_fn(x, x, ("nngp", "ntk"))
        for got, want in ((batched.ntk, exact.ntk), (batched.nngp, exact.nngp)):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
        """,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    assert result.returncode == 0, result.stderr


# --- predict ------------------------------------------------------------------------


def _regression_problem():
    _, _, kernel_fn = stax.serial(stax.Dense(8, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(2, b_std=0.1))
    x_train = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    x_test = jax.random.normal(jax.random.PRNGKey(2), (3, 3))
    y_train = jax.random.normal(jax.random.PRNGKey(3), (5, 2))
    return kernel_fn, x_train, x_test, y_train


def _kernels(kernel_fn, x_train, x_test) -> list:
    """Train-train, test-train and test-test NNGP and NTK, in float64 NumPy."""
    pairs = ((x_train, None), (x_test, x_train), (x_test, None))
    kernels = (kernel_fn(a, b, ("nngp", "ntk")) for a, b in pairs)
    return [k._replace(nngp=_np(k.nngp), ntk=_np(k.ntk)) for k in kernels]


def _gradient_flow(ntk_dd, ntk_td, t: float, n: int) -> np.ndarray:
    """U(t) = Θ_td Θ⁻¹ (I - exp(-Θ t / n)): test outputs at time t are U(t) (y - f_train(0)) + f_test(0)."""
    decay = np.eye(len(ntk_dd)) - scipy.linalg.expm(-ntk_dd * t / n)
    return ntk_td @ np.linalg.solve(ntk_dd, decay)


def _np(kernel) -> np.ndarray:
    return np.asarray(kernel, np.float64)


@pytest.mark.slow
@pytest.mark.parametrize("t", [0.0, 0.7, 30.0, None])
def test_ensemble_matches_closed_form_gradient_flow(float64, t):
    kernel_fn, x_train, x_test, y_train = _regression_problem()
    lr = 1.5
    predict_fn = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, learning_rate=lr)
    out = predict_fn(t=t, x_test=x_test, get=("nngp", "ntk"), compute_cov=True)

    dd, td, tt = _kernels(kernel_fn, x_train, x_test)
    n, y = y_train.size, _np(y_train)
    nngp_dd, ntk_dd, nngp_td, ntk_td, nngp_tt = dd.nngp, dd.ntk, td.nngp, td.ntk, tt.nngp
    if t is None:  # infinite time: kernel regression
        u_ntk = ntk_td @ np.linalg.inv(ntk_dd)
        nngp_shrink = nngp_td @ np.linalg.inv(nngp_dd)
    else:
        u_ntk = _gradient_flow(ntk_dd, ntk_td, lr * t, n)
        nngp_shrink = _gradient_flow(nngp_dd, nngp_td, 2 * lr * t, n)
    u_nngp = _gradient_flow(nngp_dd, nngp_td, lr * t, n) if t is not None else nngp_shrink

    _assert_close(out.ntk.mean, u_ntk @ y, 1e-7)
    _assert_close(out.nngp.mean, u_nngp @ y, 1e-7)
    # Lee et al. (2019), eq. (16): Σ(t) = K_tt - U K_dt - K_td Uᵀ + U K_dd Uᵀ, with the NNGP K's.
    ntk_cov = nngp_tt - u_ntk @ nngp_td.T - nngp_td @ u_ntk.T + u_ntk @ nngp_dd @ u_ntk.T
    _assert_close(out.ntk.covariance, ntk_cov, 1e-7)
    _assert_close(out.nngp.covariance, nngp_tt - nngp_shrink @ nngp_td.T, 1e-7)

    for cov in (out.ntk.covariance, out.nngp.covariance):
        cov = _np(cov)
        np.testing.assert_allclose(cov, cov.T, rtol=0, atol=1e-12 * np.abs(cov).max())
        assert np.linalg.eigvalsh(cov).min() >= -1e-9 * np.abs(cov).max()
    if t == 0.0:  # nothing learned yet: the prior of the infinite ensemble
        _assert_close(out.ntk.covariance, nngp_tt, 1e-12)
        _assert_close(out.ntk.mean, np.zeros_like(u_ntk @ y), 1e-12)


@pytest.mark.slow
def test_ensemble_first_used_under_jit_then_vmap(float64):
    kernel_fn, x_train, x_test, y_train = _regression_problem()
    predict_fn = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train)
    ts = jnp.array([0.5, 2.0])
    # NT caches the train-train kernel and its eigendecomposition on first use; used first under
    # `jit`, it cached that trace's tracers and every later call failed.
    jitted = jax.jit(lambda t: predict_fn(t=t, x_test=x_test, get="ntk", compute_cov=True))(ts[1])
    mapped = jax.vmap(lambda t: predict_fn(t=t, x_test=x_test, get="ntk", compute_cov=True))(ts)

    dd, td, tt = _kernels(kernel_fn, x_train, x_test)
    u = _gradient_flow(dd.ntk, td.ntk, 2.0, y_train.size)
    covariance = tt.nngp - u @ td.nngp.T - td.nngp @ u.T + u @ dd.nngp @ u.T
    for got in (jitted, jax.tree.map(lambda a: a[1], mapped)):
        _assert_close(got.mean, u @ _np(y_train), 1e-7)
        _assert_close(got.covariance, covariance, 1e-7)


@pytest.mark.slow
def test_gp_inference_first_used_under_jit():
    kernel_fn, x_train, x_test, y_train = _regression_problem()
    k_dd = kernel_fn(x_train, None, ("nngp", "ntk"))
    k_td = kernel_fn(x_test, x_train, ("nngp", "ntk"))
    k_tt = kernel_fn(x_test, None, "nngp")
    predict_fn = nt.predict.gp_inference(k_dd, y_train, diag_reg=1e-4)
    jitted = jax.jit(lambda: predict_fn("ntk", k_td, k_tt))()
    eager = predict_fn("ntk", k_td, k_tt)
    _assert_close(jitted.mean, eager.mean, 1e-5)
    _assert_close(jitted.covariance, eager.covariance, 1e-5)


@pytest.mark.slow
def test_gradient_descent_mse_matches_closed_form_and_caches_eigh(float64, monkeypatch):
    kernel_fn, x_train, x_test, y_train = _regression_problem()
    ntk_dd, ntk_td = kernel_fn(x_train, None, "ntk"), kernel_fn(x_test, x_train, "ntk")
    fx_train_0 = 0.1 * jax.random.normal(jax.random.PRNGKey(4), y_train.shape)
    fx_test_0 = 0.1 * jax.random.normal(jax.random.PRNGKey(5), (3, 2))

    calls = []
    eigh = jnp.linalg.eigh
    monkeypatch.setattr(jnp.linalg, "eigh", lambda *a, **k: calls.append(1) or eigh(*a, **k))

    lr, n = 0.8, y_train.size
    predict_fn = nt.predict.gradient_descent_mse(ntk_dd, y_train, learning_rate=lr)
    under_jit = jax.jit(predict_fn)(2.0, fx_train_0, fx_test_0, ntk_td)  # first use under jit
    under_vmap = jax.vmap(lambda t: predict_fn(t, fx_train_0, fx_test_0, ntk_td))(jnp.array([1.0, 2.0]))
    for t in (0.0, 1.0, 2.0):
        _, test_t = predict_fn(t, fx_train_0, fx_test_0, ntk_td)
        residual = _np(y_train) - _np(fx_train_0)
        expected = _np(fx_test_0) + _gradient_flow(_np(ntk_dd), _np(ntk_td), lr * t, n) @ residual
        _assert_close(test_t, expected, 1e-9)
    _assert_close(under_jit[1], test_t, 1e-9)
    _assert_close(under_vmap[1][1], test_t, 1e-9)
    assert len(calls) == 1, "the eigendecomposition of k_train_train must be computed once and cached"

    # A traced k_train_train (vmap or jit over kernels) is valid input too.
    def predict_at_2(k):
        return nt.predict.gradient_descent_mse(k, y_train, learning_rate=lr)(
            2.0, fx_train_0, fx_test_0, ntk_td
        )[1]

    stacked = jax.vmap(predict_at_2)(jnp.stack([ntk_dd, 2 * ntk_dd]))
    _assert_close(stacked[0], test_t, 1e-9)
    _assert_close(jax.jit(predict_at_2)(ntk_dd), test_t, 1e-9)


@pytest.mark.slow
@pytest.mark.parametrize(("y_train_size", "momentum"), [(None, 0.0), (10, 0.0), (10, 0.9)])
def test_max_learning_rate_formula(float64, y_train_size, momentum):
    kernel_fn, x_train, _, _ = _regression_problem()
    ntk = kernel_fn(x_train, None, "ntk")
    lr = nt.predict.max_learning_rate(ntk, y_train_size=y_train_size, momentum=momentum)
    factor = len(ntk) if y_train_size is None else y_train_size
    # `1/(2 N O) |f - y|²` with gradient descent is stable for η < 2 (1 + momentum) N O / λ_max.
    expected = 2 * (1 + momentum) * factor / np.linalg.eigvalsh(_np(ntk))[-1]
    assert math.isclose(lr, expected, rel_tol=1e-10)


@pytest.mark.slow
def test_attention_positional_embeddings_under_jit():
    # The decayed positional embeddings are computed once per shape, cached, in `eval_context`.
    attention = stax.GlobalSelfAttention(
        4, 4, 4, 2, attention_mechanism="IDENTITY", linear_scaling=False, pos_emb_type="SUM",
        pos_emb_decay_fn=lambda d: jnp.exp(-d),
    )  # fmt: skip
    init_fn, apply_fn, _ = attention
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 4))
    _, params = init_fn(jax.random.PRNGKey(0), x.shape)
    jitted = jax.jit(apply_fn)(params, x)  # first use under jit
    _assert_close(apply_fn(params, x), jitted, 1e-5)


# --- The adaptation itself ----------------------------------------------------------

STARTUP_DIR = Path(__file__).resolve().parents[1] / "startup"
INSTALL_NT = "pip install --no-deps neural-tangents==0.6.5"


def _with_pythonpath(*first: Path) -> str:
    return os.pathsep.join([*map(str, first), *filter(None, [os.environ.get("PYTHONPATH")])])


@pytest.mark.skipif(not _probes.tensorflow_unavailable(), reason="TensorFlow and tf2jax are installed")
def test_experimental_tf_bridge_is_not_imported_and_says_why():
    assert "neural_tangents.experimental" not in sys.modules  # `import neural_tangents` skipped it
    with pytest.raises(ImportError, match=r"TensorFlow bridge .* needs tensorflow"):
        importlib.import_module("neural_tangents.experimental")


@pytest.mark.parametrize("module", sorted(_patches.PATCHED_MODULES))
def test_every_patch_matches_nt_source(module):
    # All patches, needed here or not, so that a JAX this run does not cover still finds its text.
    source = Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8")
    for patch in (p for p in _patches.PATCHES if p.module == module):
        found = source.count(patch.old)
        assert found == patch.count or (patch.count == -1 and found > 0), (patch.why, found)
        # Same number of lines: tracebacks and `inspect` keep pointing at NT's real lines.
        assert patch.old.count("\n") == patch.new.count("\n"), patch.why
        source = source.replace(patch.old, patch.new)
    compile(source, module, "exec")


def test_pinned_digests_are_those_of_the_nt_release():
    # The reference: the RECORD of the installed neural-tangents 0.6.5 wheel (urlsafe base64 sha256).
    import base64
    import importlib.metadata

    dist = importlib.metadata.distribution("neural-tangents")
    assert dist.version == "0.6.5"
    record = {}
    for line in dist.read_text("RECORD").splitlines():
        path, digest, _ = line.rsplit(",", 2)
        if digest.startswith("sha256="):
            record[path] = base64.urlsafe_b64decode(digest.removeprefix("sha256=") + "==").hex()
    assert set(_patches.NT_SOURCE_SHA256) == _patches.PATCHED_MODULES
    for module, digest in _patches.NT_SOURCE_SHA256.items():
        path = module.replace(".", "/")
        path = f"{path}/__init__.py" if module.count(".") < 2 else f"{path}.py"
        assert record[path] == digest, module


def test_applied_patches_are_exactly_the_needed_ones():
    applied = nt_pntk.compat.applied_patches()
    assert len(applied) == len(set(applied))
    for patch in _patches.PATCHES:
        if patch.module in sys.modules and patch.module != "neural_tangents.experimental":
            kind = "nt-bug" if patch.nt_bug else "adaptation"
            record = nt_pntk.compat.AppliedPatch(kind, patch.module, patch.why)
            assert (record in applied) == patch.needed(), patch.why
    if _probes.missing_from("jax.core", "Jaxpr"):  # JAX 0.5+
        assert any(
            a.kind == "adaptation"
            and a.module == "neural_tangents._src.empirical"
            and a.reason.startswith("`jax.core.Jaxpr`")
            for a in applied
        )


def test_applied_patches_are_grouped_by_kind_and_print_one_line_each():
    applied = nt_pntk.compat.applied_patches()
    kinds = [a.kind for a in applied]
    # Adaptations, then NT's own bugs (fixed on every JAX: the four lru_cache/jit fixes and AUTO's
    # print), then XLA.
    assert kinds == sorted(kinds, key=["adaptation", "nt-bug", "xla"].index)
    assert kinds.count("nt-bug") == 5
    assert sorted(a.module for a in applied if a.kind == "nt-bug") == [
        "neural_tangents._src.empirical",
        *["neural_tangents._src.predict"] * 4,
    ]
    assert (kinds.count("xla") == 1) == (nt_pntk.compat.xla_status() == "applied")
    first = applied[0]
    assert str(first) == f"[{first.kind}] {first.module}: {first.reason}"
    assert all("\n" not in str(a) for a in applied)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.reason = "changed"  # type: ignore[misc]


def test_auto_implementation_prints_nothing_and_logs_its_choice(capfd, caplog):
    # NT 0.6.5's AUTO printed "impl=1, flops=..." on stdout for each implementation it compared.
    apply_fn, params, x1, x2 = _problem()
    auto = nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=0)
    with caplog.at_level(logging.DEBUG, logger="nt_pntk.compat"):
        k = auto(x1, x2, params)
    assert capfd.readouterr() == ("", "")
    choices = [r.getMessage() for r in caplog.records if r.name == "nt_pntk.compat"]
    assert [c.split(", flops=")[0] for c in choices] == [
        f"NT AUTO implementation: impl={i}" for i in (1, 2, 3)
    ]
    _assert_close(k, _jacobian_entk(apply_fn, params, x1, x2), 1e-5)


def test_tracebacks_and_inspect_show_the_patched_source():
    # The `lru_cache` fix of `gp_inference` applies on every JAX (an NT bug), so it is always there.
    from neural_tangents._src import predict

    patched_line = "  @lambda fn: lru_cache(2)(_nt_pntk_compat.compile_time_eval(fn))\n"
    on_disk = Path(predict.__file__).read_text(encoding="utf-8").splitlines(keepends=True)
    source = inspect.getsource(predict.gp_inference)
    assert patched_line in source and "  @lru_cache(2)\n" not in source
    lineno = on_disk.index("  @lru_cache(2)\n") + 1  # the first cached function's decorator
    assert linecache.getline(predict.__file__, lineno) == patched_line  # what tracebacks print
    loader_lines = predict.__loader__.get_source(predict.__name__).splitlines(keepends=True)
    assert loader_lines[lineno - 1] == patched_line


def _copy_of_nt(tmp_path: Path) -> Path:
    origin = Path(importlib.util.find_spec("neural_tangents").origin).parent
    shutil.copytree(origin, tmp_path / "neural_tangents", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "neural_tangents"


def test_a_modified_nt_file_is_an_import_error_naming_the_digests(tmp_path):
    predict = _copy_of_nt(tmp_path) / "_src" / "predict.py"
    expected = _patches.NT_SOURCE_SHA256["neural_tangents._src.predict"]
    predict.write_text(predict.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    found = hashlib.sha256(predict.read_bytes()).hexdigest()
    result = _run_python("import nt_pntk\nimport neural_tangents", PYTHONPATH=_with_pythonpath(tmp_path))
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("ImportError: nt_pntk cannot adapt `neural_tangents._src.predict`"), message
    for text in (str(predict), expected, found, INSTALL_NT):
        assert text in message, text


def test_another_nt_version_is_an_import_error_naming_the_fix(tmp_path):
    # The metadata found first on sys.path says 0.6.4.
    metadata = tmp_path / "neural_tangents-0.6.4.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: neural-tangents\nVersion: 0.6.4\n")
    result = _run_python("import nt_pntk\nimport neural_tangents", PYTHONPATH=_with_pythonpath(tmp_path))
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "neural-tangents 0.6.4 is installed" in message and INSTALL_NT in message, message


def test_nt_not_installed_is_an_import_error_naming_the_fix_when_used():
    result = _run_python(
        """
        import importlib.machinery, importlib.util, sys
        find_spec = importlib.machinery.PathFinder.find_spec  # hide neural_tangents from the path
        importlib.machinery.PathFinder.find_spec = classmethod(
            lambda cls, name, path=None, target=None:
            None if name.partition(".")[0] == "neural_tangents" else find_spec(name, path, target)
        )
        import nt_pntk  # works without NT
        assert importlib.util.find_spec("neural_tangents") is None  # a probe gets None, no error
        try:
            nt_pntk.empirical_pntk_fn
        except ModuleNotFoundError as e:
            assert e.name == "neural_tangents"
            print(e)
        else:
            sys.exit("no error")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "No module named 'neural_tangents'" in result.stdout and INSTALL_NT in result.stdout


def test_importing_neural_tangents_first_is_a_clear_error():
    stale = next((m for m in sorted(_patches.PATCHED_MODULES) if _patches.needed_adaptations(m)), None)
    assert stale is not None, "this JAX needs no adaptation: the test needs a fake stale module then"
    result = _run_python(
        f"""
        import sys, types
        sys.modules[{stale!r}] = types.ModuleType({stale!r})  # as if imported before nt_pntk
        import nt_pntk
        """
    )
    assert result.returncode != 0
    assert "Import nt_pntk before neural_tangents" in result.stderr, result.stderr


@pytest.mark.slow
def test_startup_file_makes_import_order_free():
    # What the installed `nt_pntk_startup.pth` does at interpreter start: `import _nt_pntk_startup`.
    # `-S`: no site-packages `.pth` files, so the startup module here is the only one at work.
    result = subprocess.run(
        [
            sys.executable, "-S", "-W", "error", "-c",
            textwrap.dedent(
                """
                import sys
                before = set(sys.modules)
                import _nt_pntk_startup  # at interpreter start: imports nothing else
                assert set(sys.modules) - before == {"_nt_pntk_startup"}, set(sys.modules) - before

                import neural_tangents as nt  # first, without nt_pntk
                from neural_tangents import stax
                from nt_pntk._src.compat import nt_hook
                assert isinstance(nt._src.predict.__loader__, nt_hook._PatchingLoader)
                assert not any(type(f).__name__ == "_ActivateOnNeuralTangents" for f in sys.meta_path)
                import nt_pntk  # afterwards: no error, NT was adapted

                import jax
                init_fn, apply_fn, _ = stax.serial(stax.Dense(3), stax.Relu(), stax.Dense(2))
                x = jax.numpy.ones((2, 4))
                _, params = init_fn(jax.random.PRNGKey(0), x.shape)
                assert nt.empirical_ntk_fn(apply_fn, implementation=3)(x, None, params).shape == (2, 2)
                print(len(nt_pntk.compat.applied_patches()))
                """
            ),
        ],
        capture_output=True,
        text=True,
        # With -S, sys.path is PYTHONPATH and the standard library: add site-packages explicitly.
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": _with_pythonpath(STARTUP_DIR, *sys.path)},
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 4  # at least NT's own bugs were fixed


def test_import_initializes_no_backend():
    # The probes read signatures and module dicts; a compile here would fix the platform at import.
    result = _run_python(
        """
        import nt_pntk, neural_tangents
        from jax._src import xla_bridge
        assert not xla_bridge._backends, xla_bridge._backends
        """
    )
    assert result.returncode == 0, result.stderr
