"""Shared helpers of the asv suite: the grids, and the kernels under test, built and compiled lazily.

Nothing here imports JAX at module level: asv imports the benchmark module in every
(spawned) process, also for discovery and for the ``track_*`` benchmarks that only
read numbers computed in ``setup_cache``, and ``import jax`` costs seconds on two cores.

The package API used is this layout's (``nt_pntk.experiments.models``,
``get_model(outputs=)``, ``nt_pntk._src.measure``): ``asv run`` over a commit range
installs older commits under today's benchmarks only back to the commit that
introduced that layout.
"""

from __future__ import annotations

import os
import re
from typing import Any

#: The kernels measured. ``entk``: the full eNTK, ``nt.empirical_ntk_fn(f, trace_axes=())``,
#: an (N, N, O, O) array. ``trace``: NT's own approximation with NT's default
#: ``trace_axes=(-1,)``, (1/O) Σ_o Θ_oo. ``pntk``: ``nt_pntk.empirical_pntk_fn(f)``,
#: (1/O) Σ_{o,o'} Θ_oo'. ``sketch``: ``Sketch(dim=SKETCH_DIM)`` of the pNTK, its unbiased estimate
#: from k numbers per input (the same for every implementation). All with ``vmap_axes=0``.
KERNELS = ("entk", "trace", "pntk", "sketch")
SKETCH_DIM = 1024
#: ``nt.NtkImplementation``: 1 JACOBIAN_CONTRACTION, 2 NTK_VECTOR_PRODUCTS, 3 STRUCTURED_DERIVATIVES.
IMPLEMENTATIONS = (1, 2, 3)
#: Kernels measured with only some implementations (the others are asv-skipped: n/a):
#: NT's trace approximation with NT's default implementation only, to keep the suite short.
ONLY_IMPLEMENTATIONS = {"trace": (1,), "sketch": (1,)}
MODELS = ("fc", "cnn")

#: Image shape of the inputs (the digits' 8×8×1); the FC model flattens them itself.
IMAGE_SHAPE = (8, 8, 1)

#: Per model: the base point (N, O, width) and the values of each swept axis. One axis
#: varies while the other two stay at the base (no Cartesian product), so a model has
#: 1 + 2 + 2 + 2 = 7 points.
BASE = {
    "fc": {"n": 16, "outputs": 10, "width": 128},
    "cnn": {"n": 16, "outputs": 10, "width": 32},
}
# O starts at the base 10, not 1: at O = 1 every kernel here is the same and costs the fixed
# overheads, which flatten a fit meant to show how the eNTK grows with O.
SWEEPS = {
    "fc": {"n": (16, 32, 64), "outputs": (10, 30, 100), "width": (32, 128, 512)},
    "cnn": {"n": (16, 32, 64), "outputs": (10, 30, 100), "width": (16, 32, 64)},
}
#: ``NT_PNTK_BENCH_QUICK=1`` (CI): two points per model (base and N doubled).
QUICK_SWEEPS = {
    "fc": {"n": (16, 32), "outputs": (10,), "width": (128,)},
    "cnn": {"n": (16, 32), "outputs": (10,), "width": (32,)},
}

AXES = ("n", "outputs", "width")
_POINT_LABELS = {"n": "N", "outputs": "O", "width": "width"}
_POINT_RE = re.compile(r"^N=(\d+),O=(\d+),width=(\d+)$")


def quick() -> bool:
    """Whether ``NT_PNTK_BENCH_QUICK`` is set (to anything but ``0``): the tiny CI grids."""
    return os.environ.get("NT_PNTK_BENCH_QUICK", "") not in ("", "0")


def format_point(n: int, outputs: int, width: int) -> str:
    """The asv parameter value of a grid point, e.g. ``'N=16,O=10,width=128'``.

    The value is the benchmark's identity in asv's results history: its form (``O`` for the
    outputs) stays as it is, so that results of earlier commits compare with today's.
    """
    return f"N={n},O={outputs},width={width}"


def parse_point(point: str) -> dict[str, int]:
    """``'N=16,O=10,width=128'`` -> ``{'n': 16, 'outputs': 10, 'width': 128}``."""
    match = _POINT_RE.match(point.strip("'\""))
    if match is None:
        raise ValueError(f"not a grid point: {point!r}")
    return dict(zip(AXES, map(int, match.groups()), strict=True))


def points(model: str) -> list[str]:
    """The grid points of `model`: the base, then each axis' other values, in order."""
    base = BASE[model]
    sweeps = (QUICK_SWEEPS if quick() else SWEEPS)[model]
    result = [format_point(**base)]
    for axis in AXES:
        for value in sweeps[axis]:
            label = format_point(**{**base, axis: value})
            if label not in result:
                result.append(label)
    return result


def kernels() -> tuple[str, ...]:
    return ("entk", "pntk") if quick() else KERNELS


def implementations() -> tuple[int, ...]:
    return (1,) if quick() else IMPLEMENTATIONS


def measured(kernel: str, implementation: int) -> bool:
    """Whether the suite measures `kernel` with `implementation` (see `ONLY_IMPLEMENTATIONS`)."""
    return implementation in ONLY_IMPLEMENTATIONS.get(kernel, IMPLEMENTATIONS)


def skip_params(model: str) -> list[tuple]:
    """asv's ``skip_params`` for the (kernel, implementation, point) grid of `model`."""
    return [
        (kernel, implementation, point)
        for kernel in kernels()
        for implementation in implementations()
        for point in points(model)
        if not measured(kernel, implementation)
    ]


def setup_jax(cache_dir: str | None = "jax-cache") -> None:
    """Imports nt_pntk (its import hook makes neural_tangents importable) and points JAX's
    persistent compilation cache at `cache_dir` (``NT_PNTK_BENCH_JAX_CACHE`` instead, if set).

    asv runs a benchmark that has ``setup_cache`` in the directory where the cache
    lives, so the relative default is shared by ``setup_cache`` (which compiles every
    kernel once) and the benchmark processes (which then load the executables instead of
    compiling them: seconds saved per process, and no compiler memory in ``peakmem_*``).
    ``NT_PNTK_BENCH_JAX_CACHE`` is the cache that ``xla_gate.py --jax-cache`` filled (the test
    command's ``ci.sh``): the suite then loads the gate's programs instead of compiling them
    again. A loaded program has the figures of the compiled one (XLA keeps its analyses).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import jax

    import nt_pntk  # noqa: F401

    if cache_dir is not None:
        cache_dir = os.environ.get("NT_PNTK_BENCH_JAX_CACHE") or cache_dir
    if cache_dir is not None and getattr(jax.config, "jax_compilation_cache_dir", None) is None:
        jax.config.update("jax_compilation_cache_dir", os.path.abspath(cache_dir))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def kernel_fn(kernel: str, apply_fn: Any, implementation: int) -> Any:
    """The un-jitted kernel function ``k(x1, x2, params)`` of `kernel` (see `KERNELS`)."""
    import neural_tangents as nt

    import nt_pntk

    if kernel == "entk":
        return nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=implementation)
    if kernel == "trace":
        return nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0, implementation=implementation)
    if kernel == "pntk":
        return nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0, implementation=implementation)
    if kernel == "sketch":
        try:
            from nt_pntk.approximations import Sketch
        except ImportError:
            raise NotImplementedError("this commit has no nt_pntk.approximations.Sketch") from None
        return Sketch(dim=SKETCH_DIM).kernel_fn(apply_fn, vmap_axes=0, implementation=implementation)
    raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")


def make_inputs(
    model: str, n: int, outputs: int, width: int, *, seed: int = 0, image_shape=IMAGE_SHAPE, **options: Any
) -> tuple:
    """``(apply_fn, params, x)``: zoo `model` at init and `n` random inputs."""
    import jax

    from nt_pntk.experiments import models

    m = models.get_model(model, width=width, outputs=outputs, **options)
    k_params, k_x = jax.random.split(jax.random.PRNGKey(seed))
    _, params = m.init_fn(k_params, (-1, *image_shape))
    x = jax.random.normal(k_x, (n, *image_shape))
    return m.apply_fn, params, x


_compiled: dict[tuple, Compiled] = {}


def warm_kernel(model: str, kernel: str, implementation: int, n: int, outputs: int, width: int) -> Compiled:
    """`Compiled` kernel, built and called once (warm-up) on first use in this process.

    asv_runner re-runs a benchmark's ``setup`` before every timed sample; memoizing here
    keeps each sample a call of the same warm executable instead of a fresh one (whose
    first calls are several times slower) and spares the re-tracing.
    """
    key = (model, kernel, int(implementation), n, outputs, width)
    if key not in _compiled:
        compiled = Compiled(model, kernel, implementation, n=n, outputs=outputs, width=width)
        compiled()
        _compiled[key] = compiled
    return _compiled[key]


class Compiled:
    """A kernel of a zoo model on `n` inputs (x2 = x1), jitted and compiled ahead of time."""

    def __init__(
        self, model: str, kernel: str, implementation: int, n: int, outputs: int, width: int, **options
    ):
        import jax

        apply_fn, self.params, self.x = make_inputs(model, n, outputs, width, **options)
        fn = kernel_fn(kernel, apply_fn, int(implementation))
        self.compiled = jax.jit(lambda x, params: fn(x, None, params)).lower(self.x, self.params).compile()

    def __call__(self) -> Any:
        return self.compiled(self.x, self.params).block_until_ready()

    def memory(self) -> dict[str, int]:
        return memory_figures(self.compiled)

    def xla_figures(self) -> dict[str, float]:
        return xla_figures(self.compiled)


def memory_figures(compiled: Any) -> dict[str, int]:
    """XLA's memory analysis (`nt_pntk._src.measure.memory_analysis`) in bytes, deterministic for a
    given XLA: ``temp`` (scratch buffers), ``argument``, ``output``, ``alias``, and ``total`` =
    temp + argument + output − alias (`measure.peak_bytes`). Empty where the backend gives none."""
    from nt_pntk._src import measure

    analysis = measure.memory_analysis(compiled)
    if analysis is None:
        return {}
    names = {
        "temp": "temp_size_in_bytes",
        "argument": "argument_size_in_bytes",
        "output": "output_size_in_bytes",
        "alias": "alias_size_in_bytes",
    }
    figures = {key: int(getattr(analysis, attr, 0) or 0) for key, attr in names.items()}
    figures["total"] = measure.peak_bytes(compiled)
    return figures


def xla_figures(compiled: Any) -> dict[str, float]:
    """What the ``*Xla`` benchmarks track and ``asv_bench/xla_gate.py`` compares, from the compiled
    program alone (nothing runs): `memory_figures` plus XLA's cost analysis
    (`nt_pntk._src.measure.cost_analysis`), ``flops`` and ``bytes_accessed``. Deterministic for a
    given XLA, so a change means the computation changed, whatever the machine's load."""
    from nt_pntk._src import measure

    cost = measure.cost_analysis(compiled)
    figures: dict[str, float] = dict(memory_figures(compiled))
    for name, key in (("flops", "flops"), ("bytes_accessed", "bytes accessed")):
        if key in cost:
            figures[name] = float(cost[key])
    return figures


def trivial_compiled(x: Any) -> Any:
    """A compiled ``x.sum()``: what the reference benchmarks run instead of a kernel."""
    import jax

    return jax.jit(lambda a: a.sum()).lower(x).compile()
