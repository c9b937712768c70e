"""The differential test matrix: every route to every kernel against per-example gradients.

A *case* fixes one value of each dimension in `DIMENSIONS` (architecture,
kernel, NT implementation, ``vmap_axes``, eager or ``jax.jit``, what ``x2`` is,
batch size, and the route: called directly, through ``nt.batch`` or through
``nt_pntk.kernel_matrix``). `run_case` computes the kernel that way, in
float32, and compares it with `reference_kernel`: the per-example Jacobians of
the network, ``jax.jacrev`` (the gradient of each output) of one example at a
time, in float64, contracted by hand into each kernel's definition:

* ``entk``: Θ_oo'(a, b) = J_o(a)·J_o'(b), the (N1, N2, O, O) eNTK;
* ``pntk``: (1/O) Σ_{o,o'} Θ_oo';  ``trace``: (1/O) Σ_o Θ_oo;
* ``single_logit``: Θ_kk;  ``projection``: (1/m) Σ_j w_jᵀ Θ w_j;
* ``nngp``: (1/O) Σ_o f_o(a) f_o(b).

Nothing in the reference uses NT or nt_pntk's kernel code. `pairwise_cases`
picks cases so that every pair of values of two dimensions occurs in at least
one case (the fast run in CI); `all_cases` is the larger sweep (``-m slow``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import reference
from jax.flatten_util import ravel_pytree

import nt_pntk

# isort: split
import neural_tangents as nt
from neural_tangents import stax

from nt_pntk import approximations
from nt_pntk.experiments import models

OUTPUTS = 10  # O: the jaxlib 0.10.2 miscompile (issue #9) shows at O = 10, not at O = 1 or 64
LOGIT = 3  # the single-logit kernel's k
PROJECTIONS, PROJECTION_SEED = 2, 1
# (N1, N2 when x2 is another batch): on both sides of 64, where XLA:CPU changes how it compiles.
# Batches, tiles and nt.batch's batches of 64 or more: the miscompile of issue #9 needs them.
SIZES = {"small": (6, 4), "large": (128, 64)}
BATCH = {"small": 2, "large": 64}  # nt.batch's batch size: divides N1 and N2
TILE = {"small": 4, "large": 80}  # kernel_matrix's tile size: pads the last tile
# Largest |route - reference| / max |reference|: float32 kernels are sums of a few thousand
# products in another order than the float64 reference (eps = 1.2e-7); a wrong kernel is off
# by 1e-2 or more.
RTOL = 1e-4

DIMENSIONS: dict[str, tuple[Any, ...]] = {
    "architecture": (
        "mlp",
        "cnn_gap",
        "cnn_flatten",
        "cnn_pool",
        "wide_resnet",
        "resnet",
        "layernorm",
        "attention",
        "flax_linen",
    ),
    "kernel": ("pntk", "trace", "entk", "single_logit", "projection", "nngp"),
    "implementation": (0, 1, 2, 3),
    "vmap_axes": (None, 0),
    "jit": (False, True),
    "x2": ("none", "same", "other"),
    "size": ("small", "large"),
    "route": ("direct", "nt.batch", "kernel_matrix"),
}


@dataclasses.dataclass(frozen=True)
class Case:
    architecture: str
    kernel: str
    implementation: int
    vmap_axes: int | None
    jit: bool
    x2: str
    size: str
    route: str

    @property
    def id(self) -> str:
        jit = "jit" if self.jit else "eager"
        return (
            f"{self.architecture}-{self.kernel}-impl{self.implementation}-vmap{self.vmap_axes}-{jit}-"
            f"x2{self.x2}-{self.size}-{self.route}"
        )


def allowed(values: dict[str, Any]) -> bool:
    """Whether a (partial) assignment of dimension values can be run."""
    # kernel_matrix tiles (N1, N2) kernels; the eNTK is (N1, N2, O, O) (refused with an error,
    # tested apart).
    return not (values.get("route") == "kernel_matrix" and values.get("kernel") == "entk")


def pairwise_cases(must: tuple[Case, ...] = ()) -> list[Case]:
    """Cases covering every allowed pair of values of two dimensions (greedy, deterministic).

    Each new case starts from the first uncovered pair and fills the other
    dimensions, one at a time, with the value that covers most uncovered pairs.
    """
    names = list(DIMENSIONS)
    uncovered = {
        ((a, va), (b, vb))
        for a, b in itertools.combinations(names, 2)
        for va in DIMENSIONS[a]
        for vb in DIMENSIONS[b]
        if allowed({a: va, b: vb})
    }

    def cover(case: dict[str, Any]) -> None:
        for a, b in itertools.combinations(names, 2):
            uncovered.discard(((a, case[a]), (b, case[b])))

    cases = [dataclasses.asdict(c) for c in must]
    for case in cases:
        cover(case)
    while uncovered:
        (a, va), (b, vb) = min(uncovered, key=lambda p: (names.index(p[0][0]), names.index(p[1][0]), repr(p)))
        case = {a: va, b: vb}
        for name in names:
            if name in case:
                continue

            def gain(value: Any, name: str = name, case: dict = case) -> int:
                trial = {**case, name: value}
                if not allowed(trial):
                    return -1
                return sum(((n, trial[n]), (name, value)) in uncovered for n in trial if n != name) + sum(
                    ((name, value), (n, trial[n])) in uncovered for n in trial if n != name
                )

            case[name] = max(DIMENSIONS[name], key=gain)
        cover(case)
        cases.append(case)
    return [Case(**c) for c in cases]


def all_cases() -> Iterator[Case]:
    """The slow sweep: every allowed (architecture, kernel, implementation, route, jit), the other
    dimensions taking turns so that each of their values meets every architecture."""
    count = 0
    for arch, kernel, impl, route, jit in itertools.product(
        DIMENSIONS["architecture"],
        DIMENSIONS["kernel"],
        DIMENSIONS["implementation"],
        DIMENSIONS["route"],
        DIMENSIONS["jit"],
    ):
        if not allowed({"kernel": kernel, "route": route}):
            continue
        vmap = DIMENSIONS["vmap_axes"][count % 2]
        x2 = DIMENSIONS["x2"][(count // 2) % 3]
        size = DIMENSIONS["size"][(count // 6) % 2]
        count += 1
        yield Case(arch, kernel, impl, vmap, jit, x2, size, route)


# --- Networks ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Network:
    apply_fn: Callable  # f(params, x) -> (N, OUTPUTS)
    params: Any
    example_shape: tuple[int, ...]


def _stax(layers: tuple, example_shape: tuple[int, ...], seed: int = 0) -> Network:
    init_fn, apply_fn, _ = stax.serial(*layers)
    _, params = init_fn(jax.random.PRNGKey(seed), (-1, *example_shape))
    return Network(apply_fn, params, example_shape)


def _flax_linen() -> Network:
    import pytest

    nn = pytest.importorskip("flax.linen", reason="flax is not installed (pip install 'nt-pntk[flax]')")

    class ConvNet(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            x = nn.relu(nn.Conv(4, (3, 3))(x))
            x = nn.LayerNorm()(x)
            x = jnp.mean(x, axis=(1, 2))
            return nn.Dense(OUTPUTS)(x)

    module = ConvNet()
    example_shape = (6, 6, 2)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, *example_shape)))
    return Network(module.apply, params, example_shape)


@functools.cache
def network(architecture: str) -> Network:
    """The tiny float32 network of that name (widths small enough for a test, O = OUTPUTS)."""
    image, flat, sequence = (6, 6, 2), (6,), (4, 3)
    conv = functools.partial(stax.Conv, padding="SAME")
    if architecture == "mlp":
        return _stax((stax.Dense(16), stax.Relu(), stax.Dense(16), stax.Erf(), stax.Dense(OUTPUTS)), flat)
    if architecture == "cnn_gap":
        # 64 channels into the readout: jaxlib 0.10.2 miscompiled this one's pNTK (issue #9), not at 8.
        layers = (conv(8, (3, 3)), stax.Relu(), conv(64, (3, 3)), stax.Relu(), stax.GlobalAvgPool())
        return _stax((*layers, stax.Dense(OUTPUTS)), image)
    if architecture == "cnn_flatten":
        return _stax((conv(4, (3, 3)), stax.Relu(), stax.Flatten(), stax.Dense(OUTPUTS)), image)
    if architecture == "cnn_pool":
        layers = (conv(4, (3, 3)), stax.Relu(), stax.AvgPool((2, 2)), conv(4, (2, 2)), stax.Relu())
        return _stax((*layers, stax.Flatten(), stax.Dense(OUTPUTS)), image)
    if architecture in ("wide_resnet", "resnet"):
        options = {"blocks_per_group": 1, "groups": 2} if architecture == "wide_resnet" else {"depth": 10}
        model = models.get_model(architecture, width=2, outputs=OUTPUTS, **options)
        _, params = model.init_fn(jax.random.PRNGKey(0), (-1, *image))
        return Network(model.apply_fn, params, image)
    if architecture == "layernorm":
        layers = (stax.Dense(16), stax.LayerNorm(), stax.Relu(), stax.Dense(16), stax.LayerNorm())
        return _stax((*layers, stax.Relu(), stax.Dense(OUTPUTS)), flat)
    if architecture == "attention":
        attention = stax.GlobalSelfAttention(
            n_chan_out=6, n_chan_key=4, n_chan_val=6, n_heads=2, linear_scaling=False
        )
        layers = (stax.Dense(6), attention, stax.Relu(), stax.GlobalAvgPool(), stax.Dense(OUTPUTS))
        return _stax(layers, sequence)
    if architecture == "flax_linen":
        return _flax_linen()
    raise ValueError(f"unknown architecture {architecture!r}")


@functools.cache
def inputs(architecture: str, size: str) -> tuple[np.ndarray, np.ndarray]:
    """x1 (N1 examples) and another batch x2 (N2 examples), float32."""
    shape = network(architecture).example_shape
    n1, n2 = SIZES[size]
    rng = np.random.default_rng(7)
    return (
        rng.standard_normal((n1, *shape)).astype(np.float32),
        rng.standard_normal((n2, *shape)).astype(np.float32),
    )


# --- The reference ----------------------------------------------------------------------------


def _float64(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


@functools.cache
def _jacobians_and_outputs(architecture: str, size: str, which: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-example Jacobians (N, O, P) and outputs (N, O) of x1 (`which`=1) or x2, in float64."""
    net = network(architecture)
    x = inputs(architecture, size)[which - 1]
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        flat, unravel = ravel_pytree(_float64(net.params))

        def output(theta: jax.Array, example: jax.Array) -> jax.Array:
            return net.apply_fn(unravel(theta), example[None])[0]

        x64 = jnp.asarray(x, jnp.float64)
        # One example at a time (lax.map, not vmap): XLA:CPU's batched float64 convolutions of a
        # vmapped jacrev are ~100 times slower (minutes for the large CNN).
        jac = jax.jit(lambda t, xs: jax.lax.map(lambda e: jax.jacrev(output)(t, e), xs))(flat, x64)
        out = jax.vmap(output, in_axes=(None, 0))(flat, x64)
        assert jac.dtype == jnp.float64
        return np.asarray(jac), np.asarray(out)
    finally:
        jax.config.update("jax_enable_x64", previous)


def reference_kernel(architecture: str, kernel: str, size: str, x2: str) -> np.ndarray:
    """The kernel by its definition from float64 per-example Jacobians (module docstring)."""
    j1, f1 = _jacobians_and_outputs(architecture, size, 1)
    j2, f2 = (j1, f1) if x2 in ("none", "same") else _jacobians_and_outputs(architecture, size, 2)
    if kernel == "nngp":
        return reference.nngp_from_outputs(f1, f2)
    w = np.random.default_rng(PROJECTION_SEED).standard_normal((PROJECTIONS, OUTPUTS)) / np.sqrt(OUTPUTS)
    theta = reference.entk_from_jacobians(j1, j2)
    return reference.kernel_from_entk(theta, kernel, logit=LOGIT, directions=w)


# --- The routes -------------------------------------------------------------------------------


def kernel_function(case: Case) -> Callable:
    """``fn(x1, x2, params)`` of the library for the case's kernel, implementation and vmap_axes."""
    f = network(case.architecture).apply_fn
    axes = dict(vmap_axes=case.vmap_axes, implementation=case.implementation)
    if case.kernel == "pntk":
        return nt_pntk.empirical_pntk_fn(f, **axes)
    if case.kernel == "nngp":
        kernel_fn = nt_pntk.empirical_kernel_fn(f, **axes)
        return lambda x1, x2, params: kernel_fn(x1, x2, "nngp", params)
    options = {"single_logit": {"logit": LOGIT}, "projection": {"m": PROJECTIONS, "seed": PROJECTION_SEED}}
    return approximations.approximation_fn(case.kernel, f, **axes, **options.get(case.kernel, {}))


def run_case(case: Case, tmp_path: Any = None) -> np.ndarray:
    """The kernel computed the case's way, as a NumPy array."""
    fn = kernel_function(case)
    if case.jit:
        fn = jax.jit(fn)
    params = network(case.architecture).params
    x1, x2_other = inputs(case.architecture, case.size)
    x2 = {"none": None, "same": x1, "other": x2_other}[case.x2]
    if case.route == "direct":
        return np.asarray(fn(x1, x2, params))
    if case.route == "nt.batch":
        return np.asarray(nt.batch(fn, BATCH[case.size])(x1, x2, params))
    if case.route == "kernel_matrix":
        return np.asarray(
            nt_pntk.kernel_matrix(fn, x1, x2, params, tile_size=TILE[case.size], progress=False)
        )
    raise ValueError(f"unknown route {case.route!r}")


def relative_error(got: np.ndarray, reference: np.ndarray) -> float:
    """max |got - reference| / max |reference| (shapes must agree)."""
    assert got.shape == reference.shape, (got.shape, reference.shape)
    assert np.isfinite(got).all()
    return float(np.abs(got.astype(np.float64) - reference).max() / np.abs(reference).max())
