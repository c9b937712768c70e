"""The differential test matrix: every route to every kernel against per-example gradients.

A *case* fixes one value of each dimension in `DIMENSIONS` (architecture,
kernel, NT implementation, ``vmap_axes``, eager or ``jax.jit``, what ``x2`` is,
batch size, the route: called directly, through ``nt.batch`` or through
``nt_pntk.kernel_matrix``, the inputs' dtype, and the network's keyword arguments: none, a
static Python bool, an ``rng`` key or NT's 2-tuple). `run_case` computes the kernel that
way, with float32 parameters, and compares it with `expected_kernel`: the per-example
Jacobians of the network, ``jax.jacrev`` (the gradient of each output) of one example at a
time, in float64 on the same input values, contracted by hand into each kernel's definition:

* ``entk``: Θ_oo'(a, b) = J_o(a)·J_o'(b), the (N1, N2, O, O) eNTK;
* ``pntk``: (1/O) Σ_{o,o'} Θ_oo';  ``trace``: (1/O) Σ_o Θ_oo;
* ``single_logit``: Θ_kk;  ``projection``: (1/m) Σ_j w_jᵀ Θ w_j;
* ``nngp``: (1/O) Σ_o f_o(a) f_o(b).

Nothing in the reference uses NT or nt_pntk's kernel code. `pairwise_cases`
picks cases so that every pair of values of two dimensions occurs in at least
one case (the fast run in CI); `all_cases` is the larger sweep (``-m slow``).
"""

from __future__ import annotations

import contextlib
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

from nt_pntk._src.kernels import approximations
from nt_pntk.experiments import models

OUTPUTS = 10  # O: the jaxlib 0.10.2 miscompile shows at O = 10, not at O = 1 or 64
LOGIT = 3  # the single-logit kernel's k
PROJECTIONS, PROJECTION_SEED = 2, 1
# (N1, N2 when x2 is another batch): on both sides of 64, where XLA:CPU changes how it compiles.
# Batches, tiles and nt.batch's batches of 64 or more: jaxlib 0.10.2's miscompile needs them.
SIZES = {"small": (6, 4), "large": (128, 64)}
BATCH = {"small": 2, "large": 64}  # nt.batch's batch size: divides N1 and N2
TILE = {"small": 4, "large": 80}  # kernel_matrix's tile size: pads the last tile
# Largest |route - reference| / max |reference|: float32 kernels are sums of a few thousand
# products in another order than the float64 reference (eps = 1.2e-7); a wrong kernel is off
# by 1e-2 or more.
RTOL = 1e-4
# Inputs of magnitude 100 to 1000 make the networks' own float32 arithmetic ill-conditioned
# (attention's softmax of logits ~ x²): fn itself, called directly, is off by up to 5e-3. A route
# computing in the input's dtype was off by 0.2 to 0.5, or inf (issue 16).
LARGE_INPUTS_RTOL = 2e-2
# float64 with float32 parameters, under jax_enable_x64; float32 first: the default of a Case.
DTYPES = ("float32", "bool", "uint8", "int8", "int16", "int32", "float16", "bfloat16", "float64")
# stax's convolutions refuse inputs of another dtype than their float32 weights (lax.conv_general_dilated
# needs equal dtypes): `fn` itself is not defined there, and every route must refuse as it does
# (`FLOAT32_ONLY`, tested apart). flax's Conv promotes, so flax_linen meets every dtype.
FLOAT32_ONLY = ("cnn_gap", "cnn_flatten", "cnn_pool", "wide_resnet", "resnet")

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
    # The network's keyword arguments (see `KWARGS` and `with_kwargs`).
    "kwargs": ("none", "static", "rng", "pair"),
    # The inputs' dtype, at their natural scale (pixels 0-255, int8/int16 over their range): a route
    # must compute in the dtypes `fn` computes in (issue 16: A·Aᵀ of uint8 pixels wrapped around).
    "dtype": DTYPES,
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
    kwargs: str = "none"
    dtype: str = "float32"

    @property
    def id(self) -> str:
        jit = "jit" if self.jit else "eager"
        kwargs = "" if self.kwargs == "none" else f"-kw{self.kwargs}"
        dtype = "" if self.dtype == "float32" else f"-{self.dtype}"
        return (
            f"{self.architecture}-{self.kernel}-impl{self.implementation}-vmap{self.vmap_axes}-{jit}-"
            f"x2{self.x2}-{self.size}-{self.route}{kwargs}{dtype}"
        )


def allowed(values: dict[str, Any]) -> bool:
    """Whether a (partial) assignment of dimension values can be run."""
    # kernel_matrix tiles (N1, N2) kernels; the eNTK is (N1, N2, O, O) (refused with an error,
    # tested apart).
    if values.get("route") == "kernel_matrix" and values.get("kernel") == "entk":
        return False
    # A jitted kernel function, and the NNGP's lambda, are functions of their own to kernel_matrix,
    # which refuses their `rng` (tiles would derive keys of their own; tested apart).
    own = values.get("jit") or values.get("kernel") == "nngp"
    if values.get("route") == "kernel_matrix" and own and values.get("kwargs") == "rng":
        return False
    dtype = values.get("dtype", "float32")
    # `with_kwargs`'s rng noise is drawn in the input's dtype: float32 inputs only.
    if values.get("kwargs") == "rng" and dtype != "float32":
        return False
    return not (values.get("architecture") in FLOAT32_ONLY and dtype != "float32")


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
        kwargs = DIMENSIONS["kwargs"][(count // 12) % 4]
        dtype = DTYPES[count % len(DTYPES)] if arch not in FLOAT32_ONLY else "float32"
        count += 1
        if not allowed({"kernel": kernel, "route": route, "jit": jit, "kwargs": kwargs, "dtype": dtype}):
            kwargs = "none"
        yield Case(arch, kernel, impl, vmap, jit, x2, size, route, kwargs, dtype)


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
        # 64 channels into the readout: jaxlib 0.10.2 miscompiled this one's pNTK, not at 8.
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
def inputs(architecture: str, size: str, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """x1 (N1 examples) and another batch x2 (N2 examples) of `dtype` (`DTYPES`): standard normal
    floats; pixels (0-255) in uint8 and float16; int8 over its range; int16 and int32 in ±1000.
    Products of uint8, int8 and int16 overflow their dtype and a sum of six float16 ones does, so a
    route computing in the input's dtype is far off (issue 16)."""
    shape = network(architecture).example_shape
    n1, n2 = SIZES[size]
    rng = np.random.default_rng(7)

    def draw(n: int) -> np.ndarray:
        size_ = (n, *shape)
        if dtype in ("float32", "float64", "bfloat16"):
            return rng.standard_normal(size_).astype(jnp.dtype(dtype))
        if dtype == "bool":
            return rng.integers(0, 2, size_).astype(bool)
        if dtype in ("uint8", "float16"):
            return rng.integers(0, 256, size_).astype(dtype)
        bound = 128 if dtype == "int8" else 1000
        return rng.integers(-bound, bound, size_).astype(dtype)

    return draw(n1), draw(n2)


@contextlib.contextmanager
def x64(dtype: str) -> Iterator[None]:
    """jax_enable_x64 on for float64 inputs (the parameters stay float32), as it was otherwise."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", previous or dtype == "float64")
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


# --- The reference ----------------------------------------------------------------------------


def _float64(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


@functools.cache
def _jacobians_and_outputs(
    architecture: str, size: str, which: int, key: tuple[int, ...] | None = None, dtype: str = "float32"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example Jacobians (N, O, P) and outputs (N, O) of x1 (`which`=1) or x2, in float64 (of the
    values of the `dtype` inputs); with `key` (a PRNG key's bits), of the inputs shifted by that
    key's noise (`rng_shift`)."""
    x = inputs(architecture, size, dtype)[which - 1]
    if key is not None:
        x = x.astype(np.float64) + rng_shift(np.asarray(key, np.uint32), x.shape[1:])
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        flat, per_example = _per_example_program(architecture)
        results = [per_example(flat, example) for example in np.asarray(x, np.float64)]
        jac = np.stack([np.asarray(j) for j, _ in results])
        out = np.stack([np.asarray(o) for _, o in results])
        assert jac.dtype == np.float64
        return jac, out
    finally:
        jax.config.update("jax_enable_x64", previous)


@functools.cache
def _per_example_program(architecture: str) -> tuple[jax.Array, Callable]:
    """The float64 parameters θ (flat) and the compiled ``(θ, example) -> (∂f/∂θ (O, P), f (O,))`` of
    one example, in float64 (call under jax_enable_x64). One example at a time: XLA:CPU's batched
    float64 convolutions of a vmapped jacrev are ~100 times slower (minutes for the large CNN). One
    program per architecture: every size, input dtype and rng shift of the reference calls it."""
    net = network(architecture)
    flat, unravel = ravel_pytree(_float64(net.params))

    def output(theta: jax.Array, example: jax.Array) -> jax.Array:
        return net.apply_fn(unravel(theta), example[None])[0]

    return flat, jax.jit(lambda theta, example: (jax.jacrev(output)(theta, example), output(theta, example)))


def reference_kernel(
    architecture: str,
    kernel: str,
    size: str,
    x2: str,
    keys: tuple[Any, Any] | None = None,
    dtype: str = "float32",
) -> np.ndarray:
    """The kernel by its definition from float64 per-example Jacobians (module docstring) of the
    `dtype` inputs; with `keys`, x1's and x2's: the network of `with_kwargs`'s ``rng`` with those keys."""
    key1, key2 = (None, None) if keys is None else (tuple(int(k) for k in np.ravel(k)) for k in keys)
    j1, f1 = _jacobians_and_outputs(architecture, size, 1, key1, dtype)
    if x2 in ("none", "same") and key2 == key1:
        j2, f2 = j1, f1
    else:
        j2, f2 = _jacobians_and_outputs(architecture, size, 1 if x2 in ("none", "same") else 2, key2, dtype)
    return _contract(kernel, j1, f1, j2, f2)


def _contract(kernel: str, j1: np.ndarray, f1: np.ndarray, j2: np.ndarray, f2: np.ndarray) -> np.ndarray:
    if kernel == "nngp":
        return reference.nngp_from_outputs(f1, f2)
    w = np.random.default_rng(PROJECTION_SEED).standard_normal((PROJECTIONS, OUTPUTS)) / np.sqrt(OUTPUTS)
    theta = reference.entk_from_jacobians(j1, j2)
    return reference.kernel_from_entk(theta, kernel, logit=LOGIT, directions=w)


# --- Keyword arguments ------------------------------------------------------------------------

# The network's keyword arguments, one kind per value of the "kwargs" dimension (`with_kwargs`):
# "static" a Python bool steering Python control flow (traced, it would raise), "rng" a key whose
# noise shifts every example's input alike (examples stay independent), "pair" NT's 2-tuple, a
# scale for x1's outputs and one for x2's.
RNG_KEY = (0, 11)  # jax.random.PRNGKey(11)'s bits
NOISE = 0.5
SCALES = (2.0, 0.5)


def rng_shift(key: Any, shape: tuple[int, ...]) -> np.ndarray:
    """The noise the "rng" network adds to each example's input, as float64."""
    noise = jax.random.normal(jnp.asarray(key, jnp.uint32), shape, jnp.float32)
    return NOISE * np.asarray(noise, np.float64)


def with_kwargs(f: Callable, kind: str) -> Callable:
    """The network `f(params, x)` taking the keyword argument of `kind` (identical for "none")."""
    if kind == "none":
        return f
    if kind == "static":

        def static(params: Any, x: Any, train: bool = True) -> Any:
            return 2 * f(params, x) if train else f(params, x)  # `if` on a tracer would raise

        return static
    if kind == "rng":

        def noisy(params: Any, x: Any, rng: Any) -> Any:
            return f(params, x + NOISE * jax.random.normal(rng, x.shape[1:], x.dtype)[None])

        return noisy
    if kind == "pair":
        return lambda params, x, scale: scale * f(params, x)
    raise ValueError(f"unknown kwargs {kind!r}")


def call_kwargs(kind: str) -> dict[str, Any]:
    """The keyword arguments a case of `kind` passes to the kernel function."""
    return {
        "none": {},
        "static": {"train": False},
        "rng": {"rng": jnp.asarray(RNG_KEY, jnp.uint32)},
        "pair": {"scale": SCALES},
    }[kind]


def expected_kernel(case: Case) -> np.ndarray:
    """The reference kernel of the case, keyword arguments as NT's convention gives them.

    ``rng``: x1 gets the key, x2 ``fold_in(key, 1)`` unless x2 is None or equal
    to x1. ``nt.batch`` derives its own keys: ``split(key)`` into a row and a
    column key, each split into one key per batch, and every block splits its
    pair as above (a block whose inputs are equal shares the row key). A pair
    ``(s1, s2)`` scales the kernel by s1·s2, by s1² for ``x2=None`` (NT uses
    x1's side twice) except in ``nt.batch``, which computes x2=None as x2=x1.
    """
    arch, kernel, size, x2 = case.architecture, case.kernel, case.size, case.x2
    if case.kwargs == "pair":
        s1, s2 = SCALES
        factor = s1 * s1 if x2 == "none" and case.route != "nt.batch" else s1 * s2
        return factor * reference_kernel(arch, kernel, size, x2, dtype=case.dtype)
    if case.kwargs != "rng":
        return reference_kernel(arch, kernel, size, x2, dtype=case.dtype)
    key = jnp.asarray(RNG_KEY, jnp.uint32)
    if case.route != "nt.batch":
        key2 = key if x2 in ("none", "same") else jax.random.fold_in(key, 1)
        return reference_kernel(arch, kernel, size, x2, (key, key2))
    n1, n2 = SIZES[size]
    n2 = n1 if x2 in ("none", "same") else n2
    b = BATCH[size]
    row_key, col_key = jax.random.split(key)
    rows, cols = jax.random.split(row_key, n1 // b), jax.random.split(col_key, n2 // b)
    blocks = [
        [
            reference_kernel(
                arch, kernel, size, x2, (rows[i], rows[i] if x2 != "other" and i == j else cols[j])
            )[i * b : (i + 1) * b, j * b : (j + 1) * b]
            for j in range(n2 // b)
        ]
        for i in range(n1 // b)
    ]
    return np.block(blocks) if kernel != "entk" else np.concatenate([np.concatenate(r, 1) for r in blocks], 0)


# --- The routes -------------------------------------------------------------------------------


def kernel_function(case: Case) -> Callable:
    """``fn(x1, x2, params, **kwargs)`` of the library for the case's kernel, implementation,
    vmap_axes and keyword arguments."""
    f = with_kwargs(network(case.architecture).apply_fn, case.kwargs)
    axes = dict(vmap_axes=case.vmap_axes, implementation=case.implementation)
    if case.kernel == "pntk":
        return nt_pntk.empirical_pntk_fn(f, **axes)
    if case.kernel == "nngp":
        kernel_fn = nt_pntk.empirical_kernel_fn(f, **axes)
        return lambda x1, x2, params, **kwargs: kernel_fn(x1, x2, "nngp", params, **kwargs)
    options = {"single_logit": {"logit": LOGIT}, "projection": {"m": PROJECTIONS, "seed": PROJECTION_SEED}}
    return approximations.approximation_fn(case.kernel, f, **axes, **options.get(case.kernel, {}))


def run_case(case: Case, tmp_path: Any = None) -> np.ndarray:
    """The kernel computed the case's way, as a NumPy array (float64 inputs under jax_enable_x64)."""
    with x64(case.dtype):
        fn = kernel_function(case)
        kwargs = call_kwargs(case.kwargs)
        if case.jit:
            # As a user would: a Python value that steers the network is a static argument.
            fn = jax.jit(fn, static_argnames=[k for k, v in kwargs.items() if isinstance(v, bool)])
        params = network(case.architecture).params
        x1, x2_other = inputs(case.architecture, case.size, case.dtype)
        x2 = {"none": None, "same": x1, "other": x2_other}[case.x2]
        if case.route == "direct":
            return np.asarray(fn(x1, x2, params, **kwargs))
        if case.route == "nt.batch":
            return np.asarray(nt.batch(fn, BATCH[case.size])(x1, x2, params, **kwargs))
        if case.route == "kernel_matrix":
            return np.asarray(
                nt_pntk.kernel_matrix(fn, x1, x2, params, tile_size=TILE[case.size], progress=False, **kwargs)
            )
    raise ValueError(f"unknown route {case.route!r}")


def tolerance(case: Case) -> float:
    """The largest relative error of a correct route in `case` (`RTOL`, or `LARGE_INPUTS_RTOL`)."""
    large = case.dtype in ("uint8", "float16", "int8", "int16", "int32")
    return LARGE_INPUTS_RTOL if large else RTOL


def relative_error(got: np.ndarray, reference: np.ndarray) -> float:
    """max |got - reference| / max |reference| (shapes must agree)."""
    assert got.shape == reference.shape, (got.shape, reference.shape)
    assert np.isfinite(got).all()
    return float(np.abs(got.astype(np.float64) - reference).max() / np.abs(reference).max())
