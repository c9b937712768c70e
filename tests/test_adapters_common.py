"""What the adapter tests share: kernels by their definition from per-example Jacobians, and the checks.

Each library's test (``test_adapters_linen.py``, ``_nnx.py``, ``_equinox.py``)
computes the Jacobians of its model one example at a time with that library's
own tools (``jax.jacrev`` of ``module.apply``, ``nnx.grad``,
``eqx.filter_grad``), never through nt_pntk's adapters, NT or nt_pntk's
kernels, in float64; this module contracts them into each kernel's definition:

* eNTK Θ_oo'(a, b) = J_o(a)·J_o'(b), the (N1, N2, O, O) array;
* pNTK (1/O) Σ_{o,o'} Θ_oo' (the NTK of Σ_o f_o / √O);  trace (1/O) Σ_o Θ_oo;
* projection (1/m) Σ_j w_jᵀ Θ w_j;  NNGP (1/O) Σ_o f_o(a) f_o(b);

and checks the library's functions against them: `check_pntk` (the pNTK of
`empirical_pntk_fn`), `check_library` (`empirical_kernel_fn`, the eNTK and a
projection, `kernel_matrix` with an odd N, `regression.predict`) and
`check_cli` (``nt-pntk kernel --function``). The tests here check the
contraction itself on a linear network, whose kernels are known in closed form.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference

import nt_pntk
from nt_pntk import approximations, cli, regression

PROJECTIONS, PROJECTION_SEED = 2, 1
RIDGE = 1e-2
TILE, N_LARGE = 8, 37  # kernel_matrix: an odd N, the last tile padded
# Largest |kernel - reference| / max |reference|: float64 kernels in another summation order than
# the reference agree to ~1e-14; a kernel that differentiates the wrong variables (BatchNorm's
# statistics, a batch's coupling) is off by 1e-3 or more.
RTOL = {np.dtype("float64"): 1e-9, np.dtype("float32"): 1e-4}
# (implementation, vmap_axes) of the pNTK checks: one in the quick run, all with -m slow.
PNTK_OPTIONS = [(1, 0), *(pytest.param(*o, marks=pytest.mark.slow) for o in ((1, None), (3, 0), (3, None)))]


@dataclasses.dataclass(frozen=True)
class Reference:
    """Per-example Jacobians ``jacobians(x) -> (N, O, P)`` and outputs ``outputs(x) -> (N, O)``, float64."""

    jacobians: Callable[[Any], np.ndarray]
    outputs: Callable[[Any], np.ndarray]

    def kernels(self, x1: Any, x2: Any) -> dict[str, np.ndarray]:
        return kernels_by_definition(
            self.jacobians(x1), self.outputs(x1), self.jacobians(x2), self.outputs(x2)
        )


def kernels_by_definition(j1: np.ndarray, f1: np.ndarray, j2: np.ndarray, f2: np.ndarray) -> dict:
    """Every kernel from Jacobians (N, O, P) and outputs (N, O) of two batches (module docstring)."""
    outputs = j1.shape[1]
    entk = reference.entk_from_jacobians(j1, j2)
    w = np.random.default_rng(PROJECTION_SEED).standard_normal((PROJECTIONS, outputs)) / np.sqrt(outputs)
    kernels = {
        k: reference.kernel_from_entk(entk, k, directions=w) for k in ("entk", "pntk", "trace", "projection")
    }
    return {**kernels, "nngp": reference.nngp_from_outputs(f1, f2)}


def assert_close(got: Any, expected: np.ndarray, rtol: float | None = None) -> None:
    """Same shape, finite, within `rtol` (default: `RTOL` of `got`'s dtype) × max |expected|."""
    got = np.asarray(got)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert np.isfinite(got).all()
    tol = RTOL[got.dtype] if rtol is None else rtol
    error = np.abs(got.astype(np.float64) - expected).max() / np.abs(expected).max()
    assert error <= tol, f"relative error {error:.3g} > {tol:g}"


def check_pntk(apply_fn: Callable, params: Any, reference: Reference, x1: Any, x2: Any, **options) -> None:
    """`empirical_pntk_fn(apply_fn, **options)` on (x1, x2) and (x1, None) against the definition."""
    fn = jax.jit(nt_pntk.empirical_pntk_fn(apply_fn, **options))
    assert_close(fn(x1, x2, params), reference.kernels(x1, x2)["pntk"])
    assert_close(fn(x1, None, params), reference.kernels(x1, x1)["pntk"])


def check_library(
    apply_fn: Callable, params: Any, reference: Reference, x1: Any, x2: Any, x_large: Any, tmp_path: Path
) -> None:
    """The other functions of the library on the adapter's output, each against the definition."""
    expected = reference.kernels(x1, x2)
    kernel_fn = nt_pntk.empirical_kernel_fn(apply_fn, vmap_axes=0)
    # Compiled, as the other kernels here: eager dispatch of the three kernels takes far longer.
    k = jax.jit(kernel_fn, static_argnums=2)(x1, x2, ("nngp", "ntk", "pntk"), params)
    assert_close(k.nngp, expected["nngp"])
    assert_close(k.ntk, expected["trace"])
    assert_close(k.pntk, expected["pntk"])
    entk_fn = approximations.FullENTK().kernel_fn(apply_fn, vmap_axes=0)
    assert_close(jax.jit(entk_fn)(x1, x2, params), expected["entk"])
    projection_fn = approximations.Projection(m=PROJECTIONS, seed=PROJECTION_SEED).kernel_fn(apply_fn)
    assert_close(jax.jit(projection_fn)(x1, x2, params), expected["projection"])

    # kernel_matrix: Jacobian features reused across tiles, an odd N, a record on disk.
    pntk_fn = approximations.PNTK().kernel_fn(apply_fn, vmap_axes=0)
    large = reference.kernels(x_large, x_large)["pntk"]
    output = tmp_path / "pntk.npy"
    k_large = nt_pntk.kernel_matrix(
        pntk_fn, x_large, None, params, output=output, tile_size=TILE, progress=False
    )
    assert_close(k_large, large)
    again = nt_pntk.kernel_matrix(
        pntk_fn, x_large, None, params, output=output, tile_size=TILE, progress=False
    )
    np.testing.assert_array_equal(again, k_large)  # the finished record is recognised (same digests)

    # Kernel regression on the pNTK: the first examples train, the rest are tested.
    n_train = N_LARGE // 2
    targets = np.random.default_rng(3).standard_normal((n_train, 2))
    k_train, k_test = large[:n_train, :n_train], large[n_train:, :n_train]
    ridge = RIDGE * np.mean(np.diag(k_train))
    expected_predictions = k_test @ np.linalg.solve(k_train + ridge * np.eye(n_train), targets)
    predictions = regression.predict(
        np.asarray(k_large)[:n_train, :n_train], targets, np.asarray(k_large)[n_train:, :n_train], ridge=RIDGE
    )
    assert_close(predictions, expected_predictions, rtol=1e-6 if k_large.dtype == np.float64 else 1e-3)


def run_cli(tmp_path: Path, monkeypatch: Any, source: str, x: np.ndarray) -> int:
    """``nt-pntk kernel --function user_net:network`` on `x` (exit code); `source` defines ``network()``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = f"user_net_{next(_MODULE_NUMBERS)}"  # a fresh name: no module cached by another test
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    np.save(tmp_path / "x.npy", x)
    argv = ["kernel", "--function", f"{module}:network", "--input", "x.npy", "--output", "k.npy"]
    return cli.main([*argv, "--tile-size", str(TILE), "--no-progress"])


_MODULE_NUMBERS = itertools.count()


def check_cli(tmp_path: Path, monkeypatch: Any, source: str, x: np.ndarray, expected: np.ndarray) -> None:
    """``nt-pntk kernel --function`` (see `run_cli`) writes the kernel `expected`."""
    assert run_cli(tmp_path, monkeypatch, source, x) == 0
    assert_close(np.load(tmp_path / "k.npy"), expected)


# --- The contraction itself, on a linear network f(x) = x W / √D with known kernels. ---


def _linear(params: dict, x: jax.Array) -> jax.Array:
    return x @ params["w"] / np.sqrt(x.shape[-1])


def _linear_reference(w: np.ndarray) -> Reference:
    d, outputs = w.shape

    def jacobians(x: Any) -> np.ndarray:  # ∂f_o/∂W_{d o'} = x_d δ_{o o'} / √D
        x = np.asarray(x, np.float64)
        return np.einsum("ad,oq->aodq", x, np.eye(outputs)).reshape(len(x), outputs, d * outputs) / np.sqrt(d)

    return Reference(jacobians, lambda x: np.asarray(x, np.float64) @ w / np.sqrt(d))


@pytest.mark.usefixtures("float64")
def test_kernels_by_definition_of_a_linear_network():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3))
    x1, x2 = rng.standard_normal((5, 4)), rng.standard_normal((2, 4))
    k = _linear_reference(w).kernels(x1, x2)
    dot = x1 @ x2.T / 4  # Θ_oo'(a, b) = δ_oo' a·b / D
    np.testing.assert_allclose(k["entk"], np.einsum("ab,oq->aboq", dot, np.eye(3)), rtol=1e-12)
    np.testing.assert_allclose(k["pntk"], dot, rtol=1e-12)
    np.testing.assert_allclose(k["trace"], dot, rtol=1e-12)
    directions = np.random.default_rng(PROJECTION_SEED).standard_normal((PROJECTIONS, 3)) / np.sqrt(3)
    np.testing.assert_allclose(k["projection"], dot * np.mean(np.sum(directions**2, axis=1)), rtol=1e-12)
    np.testing.assert_allclose(k["nngp"], (x1 @ w) @ (x2 @ w).T / 4 / 3, rtol=1e-12)


@pytest.mark.usefixtures("float64")
def test_check_pntk_passes_and_fails():
    """`check_pntk` accepts the right network and refuses a wrong one (the checks can fail)."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3))
    x1, x2 = jnp.asarray(rng.standard_normal((5, 4))), jnp.asarray(rng.standard_normal((2, 4)))
    check_pntk(_linear, {"w": jnp.asarray(w)}, _linear_reference(w), x1, x2, vmap_axes=0)
    with pytest.raises(AssertionError, match="relative error"):
        check_pntk(lambda p, x: 1.001 * _linear(p, x), {"w": jnp.asarray(w)}, _linear_reference(w), x1, x2)


# --- Without the model library: an ImportError that names the release and the extra. ---


@pytest.mark.parametrize(
    ("adapter", "arguments", "blocked", "message"),
    [
        ("from_linen", 2, ("flax", "flax.linen"), r"from_linen needs flax>=0\.8\.5 .*flax is not installed"),
        # flax installed, but a release without NNX (blocked) where it is: its version named.
        ("from_nnx", 1, ("flax.nnx",), r"from_nnx needs flax>=0\.8\.5 .*flax (\S+ is|is not) installed"),
        ("from_equinox", 1, ("equinox",), r"from_equinox needs equinox>=0\.11\.4 .*equinox is not installed"),
    ],
)
def test_a_missing_library_is_named(monkeypatch, adapter, arguments, blocked, message):
    for module in blocked:
        monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    extra = "equinox" if adapter == "from_equinox" else "flax"
    with pytest.raises(
        ImportError, match=rf"nt_pntk\.{message}\. Install it with: pip install 'nt-pntk\[{extra}\]'"
    ):
        getattr(nt_pntk, adapter)(*[object()] * arguments)
