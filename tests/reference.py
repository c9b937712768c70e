"""Test helpers: tiny models and independent references for the kernels.

A reference eNTK comes either from NT's full kernel (``trace_axes=()``,
Jacobian contraction) or from ``jax.jacobian`` written out by hand (independent
of NT); the pNTK reference is then (1/O) Σ_{o,o'} of its O×O blocks over the
trace axes, NT's traced kernel (1/O) Σ_o of their diagonals, and the NNGP the
same trace of the outer product of the outputs, all computed in float64 NumPy.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import string
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import nt_pntk  # noqa: F401  (before neural_tangents: installs the import hook)

# isort: split
import neural_tangents as nt
from neural_tangents import stax

from nt_pntk.experiments import models

# Relative tolerance, scaled by the largest reference entry: float32 sums of a
# few hundred products, done in another order than the reference, lose a few
# hundred ulps (eps = 1.2e-7); float64 (eps = 2.2e-16) keeps ten digits with room.
RTOL = {np.dtype("float32"): 3e-5, np.dtype("float64"): 1e-10}

IMAGE = (6, 6, 1)  # NHWC per-example input of the zoo models
SEQUENCE = (4, 3)  # (T, D) per-example input of the sequence model
FEATURES = 5  # per-example input of the dict-params model


@dataclasses.dataclass(frozen=True)
class Problem:
    """A network `f(params, x, **kwargs)` with its parameters and two input batches."""

    f: Callable
    params: Any
    x1: Any
    x2: Any  # a batch of another size than x1


def problem(name: str, out: int = 3, n1: int = 3, n2: int = 2, seed: int = 0) -> Problem:
    """`name`: 'fc' or 'cnn' (the package zoo), 'seq' (an (N, T, out) output) or 'dict' (nested-dict params).

    In float64 under `jax_enable_x64`, float32 otherwise.
    """
    return _problem(name, out, n1, n2, seed, jax.config.read("jax_enable_x64"))


@functools.cache
def _problem(name: str, out: int, n1: int, n2: int, seed: int, x64: bool) -> Problem:
    if name in ("fc", "cnn"):
        model = models.get_model(name, width=8, outputs=out, depth=1)
        init_fn, f, shape = model.init_fn, model.apply_fn, IMAGE
    elif name == "seq":
        init_fn, f, _ = stax.serial(stax.Dense(16, W_std=models.W_STD), stax.Relu(), stax.Dense(out))
        shape = SEQUENCE
    elif name == "dict":
        init_fn, f, shape = _dict_mlp_init(out), dict_mlp_apply, (FEATURES,)
    else:
        raise ValueError(name)
    # All these parameters are N(0, 1) (NTK parameterization), so NumPy draws
    # them: compiling the init functions would take longer than the tests.
    rng = np.random.default_rng(seed)
    dtype = jnp.result_type(float)
    shapes = jax.eval_shape(lambda: init_fn(jax.random.PRNGKey(seed), (-1, *shape))[1])
    params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), dtype), shapes)
    x1 = jnp.asarray(rng.standard_normal((n1, *shape)), dtype)
    x2 = jnp.asarray(rng.standard_normal((n2, *shape)), dtype)
    return Problem(f, params, x1, x2)


def _dict_mlp_init(out: int, width: int = 16) -> Callable:
    def init_fn(key: jax.Array, input_shape: tuple[int, ...]) -> tuple:
        keys = jax.random.split(key, 4)
        d_in = input_shape[-1]
        normal = jax.random.normal
        params = {
            "dense1": {"w": normal(keys[0], (d_in, width)), "b": normal(keys[1], (width,))},
            "dense2": {"w": normal(keys[2], (width, out)), "b": normal(keys[3], (out,))},
        }
        return (*input_shape[:-1], out), params

    return init_fn


def dict_mlp_apply(params: dict, x: jax.Array, scale: float = 1.0, rng: jax.Array | None = None) -> jax.Array:
    """A flax-style MLP on nested-dict params; `rng` turns on dropout (rate 1/2)."""
    d1, d2 = params["dense1"], params["dense2"]
    h = jnp.tanh(x @ d1["w"] / math.sqrt(x.shape[-1]) + d1["b"][None])
    if rng is not None:
        h = jnp.where(jax.random.bernoulli(rng, 0.5, h.shape), 2 * h, 0)
    return scale * (h @ d2["w"] / math.sqrt(h.shape[-1]) + d2["b"][None])


# --- References ---


def full_entk_nt(f: Callable, x1: Any, x2: Any, params: Any, **kwargs) -> Any:
    """NT's full eNTK, per output leaf, laid out as (*f(x1).shape, *f(x2).shape)."""
    return jax.tree.map(_unzip_axes, _full_ntk_fn(f)(x1, x2, params, **kwargs))


@functools.cache  # one jitted function per network, so that tests with equal shapes share a compile
def _full_ntk_fn(f: Callable) -> Callable:
    return jax.jit(
        nt.empirical_ntk_fn(f, trace_axes=(), implementation=nt.NtkImplementation.JACOBIAN_CONTRACTION)
    )


def _unzip_axes(k: jax.Array) -> np.ndarray:
    # NT zips the axes of the two outputs: (N1, N2, O1, O2) -> (N1, O1, N2, O2).
    rank = k.ndim // 2
    return np.asarray(k, np.float64).transpose([*range(0, 2 * rank, 2), *range(1, 2 * rank, 2)])


def full_entk_jacobian(
    f: Callable, x1: Any, x2: Any, params: Any, kwargs1: dict | None = None, kwargs2: dict | None = None
) -> Any:
    """J(x1) J(x2)^T from `jax.jacobian` on the flattened parameters, per output leaf.

    `kwargs1` go to f(x1) and `kwargs2` (default: `kwargs1`) to f(x2); `x2=None` means x1.
    """
    kwargs1 = kwargs1 or {}
    kwargs2 = kwargs1 if kwargs2 is None else kwargs2
    j1 = _jacobian_fn(f)(params, x1, kwargs1)
    j2 = j1 if x2 is None else _jacobian_fn(f)(params, x2, kwargs2)
    return jax.tree.map(
        lambda a, b: np.tensordot(np.asarray(a, np.float64), np.asarray(b, np.float64), axes=(-1, -1)), j1, j2
    )


@functools.cache
def _jacobian_fn(f: Callable) -> Callable:
    def jacobian(params: Any, x: Any, kwargs: dict) -> Any:  # leaves of shape (*f(x).shape, P)
        flat, unravel = ravel_pytree(params)
        return jax.jacobian(lambda p: f(unravel(p), x, **kwargs))(flat)

    return jax.jit(jacobian)


def pntk_from_full(full: np.ndarray, trace_axes: tuple[int, ...], diagonal_axes: tuple[int, ...] = ()) -> Any:
    """(1/O) Σ_{o,o'} Θ_oo' over `trace_axes`; the diagonal over `diagonal_axes`; NT's output layout.

    `full` is a (*out1, *out2) eNTK (or a PyTree of them); the kept axes come out
    in output order, a pair (out1, out2) each, one axis for each diagonal axis.
    """
    return jax.tree.map(lambda k: _reduce(k, trace_axes, diagonal_axes, every_pair=True), full)


def trace_from_full(
    full: np.ndarray, trace_axes: tuple[int, ...], diagonal_axes: tuple[int, ...] = ()
) -> Any:
    """(1/O) Σ_o Θ_oo over `trace_axes` (NT's meaning of ``trace_axes``), else as `pntk_from_full`."""
    return jax.tree.map(lambda k: _reduce(k, trace_axes, diagonal_axes, every_pair=False), full)


def _reduce(k: np.ndarray, trace_axes: tuple[int, ...], diagonal_axes: tuple[int, ...], every_pair: bool):
    rank = k.ndim // 2
    traced = {a % rank for a in trace_axes}
    diagonal = {a % rank for a in diagonal_axes}
    paired = diagonal if every_pair else diagonal | traced  # out2 axes indexed like out1's
    letters = iter(string.ascii_letters)
    idx1 = [next(letters) for _ in range(rank)]
    idx2 = [idx1[i] if i in paired else next(letters) for i in range(rank)]
    kept = []
    for i in range(rank):
        if i not in traced:
            kept += [idx1[i]] if i in diagonal else [idx1[i], idx2[i]]
    count = math.prod(k.shape[i] for i in traced)
    return np.einsum(f"{''.join(idx1)}{''.join(idx2)}->{''.join(kept)}", k) / count


# --- Kernels from per-example Jacobians (N, O, P) and outputs (N, O), by their definitions ---


def entk_from_jacobians(j1: np.ndarray, j2: np.ndarray | None = None) -> np.ndarray:
    """Θ[a, b, o, q] = Σ_p J1[a, o, p] J2[b, q, p]: the (N1, N2, O, O) eNTK of per-example
    Jacobians (N, O, P), in float64; `j2=None` means `j1`."""
    j1 = np.asarray(j1, np.float64)
    j2 = j1 if j2 is None else np.asarray(j2, np.float64)
    return np.einsum("aop,bqp->aboq", j1, j2)


def kernel_from_entk(
    entk: np.ndarray, kernel: str, *, logit: int = 0, directions: np.ndarray | None = None
) -> np.ndarray:
    """The (N1, N2) `kernel` of an (N1, N2, O, O) eNTK (or the eNTK itself) by its definition:
    ``pntk`` (1/O) Σ_{o,o'} Θ_oo', ``trace`` (1/O) Σ_o Θ_oo, ``single_logit`` Θ_kk with k = `logit`,
    ``projection`` (1/m) Σ_j w_jᵀ Θ w_j for the (m, O) `directions` w, ``entk`` Θ."""
    outputs = entk.shape[-1]
    if kernel == "entk":
        return entk
    if kernel == "pntk":
        return entk.sum(axis=(2, 3)) / outputs
    if kernel == "trace":
        return np.einsum("aboo->ab", entk) / outputs
    if kernel == "single_logit":
        return entk[:, :, logit, logit]
    if kernel == "projection":
        return np.einsum("jo,abop,jp->ab", directions, entk, directions) / len(directions)
    raise ValueError(f"unknown kernel {kernel!r}")


def nngp_from_outputs(f1: np.ndarray, f2: np.ndarray | None = None) -> np.ndarray:
    """(1/O) f(x1) f(x2)ᵀ from outputs (N, O), in float64; `f2=None` means `f1`."""
    f1 = np.asarray(f1, np.float64)
    f2 = f1 if f2 is None else np.asarray(f2, np.float64)
    return f1 @ f2.T / f1.shape[-1]


def entk_as_matrix(entk: np.ndarray) -> np.ndarray:
    """The (N1, N2, O, O) eNTK as the (N1·O, N2·O) matrix, rows and columns ordered (example, output)."""
    n1, n2, o1, o2 = entk.shape
    return entk.transpose(0, 2, 1, 3).reshape(n1 * o1, n2 * o2)


def kronecker_error(entk: np.ndarray, kernel: np.ndarray) -> float:
    """‖Θ − K ⊗ I_O‖_F / ‖Θ‖_F with the NO×NO matrices written out (`entk_as_matrix`, `np.kron`)."""
    matrix = entk_as_matrix(entk)
    return float(np.linalg.norm(matrix - np.kron(kernel, np.eye(entk.shape[-1]))) / np.linalg.norm(matrix))


def outputs_outer(f: Callable, x1: Any, x2: Any, params: Any, **kwargs) -> Any:
    """f(x1) ⊗ f(x2) in float64, per output leaf, laid out as (*f(x1).shape, *f(x2).shape).

    Its `trace_from_full` is the empirical NNGP; `x2=None` means x1.
    """
    fx1 = f(params, x1, **kwargs)
    fx2 = fx1 if x2 is None else f(params, x2, **kwargs)
    return jax.tree.map(
        lambda a, b: np.multiply.outer(np.asarray(a, np.float64), np.asarray(b, np.float64)), fx1, fx2
    )


def kernel(fn: Callable, x1: Any, x2: Any, params: Any, **kwargs) -> Any:
    """`fn(x1, x2, params, **kwargs)` under `jax.jit` (compiling is far faster than NT's eager dispatch)."""
    return jax.jit(fn)(x1, x2, params, **kwargs)


def nt_shape(f: Callable, x1: Any, x2: Any, params: Any, **ntk_kwargs) -> Any:
    """The output shapes of `nt.empirical_ntk_fn(f, **ntk_kwargs)` (traced, not computed)."""
    shapes = jax.eval_shape(nt.empirical_ntk_fn(f, **ntk_kwargs), x1, x2, params)
    return jax.tree.map(lambda s: s.shape, shapes)


def assert_close(actual: Any, expected: Any, rtol: float | None = None) -> None:
    """Leaf by leaf: same shape, values within `rtol` × the largest |expected|.

    `rtol` defaults to `RTOL` of `actual`'s dtype.
    """
    leaves_a, tree_a = jax.tree.flatten(actual)
    leaves_e, tree_e = jax.tree.flatten(expected)
    assert tree_a == tree_e
    for a, e in zip(leaves_a, leaves_e, strict=True):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape
        tol = RTOL[a.dtype] if rtol is None else rtol
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol * np.max(np.abs(e)))
