"""Time and memory of the full eNTK, NT's trace approximation and the pNTK on the zoo's FC and CNN.

For each model, kernel (``entk``, ``trace``, ``pntk``; see ``_common.KERNELS``), NT
implementation (1, 2, 3; ``trace`` with NT's default 1 only, the rest asv-skipped) and
grid point (N, O, width; one axis varies at a time, see ``_common.SWEEPS``):

* ``<Model>Time.time_kernel``: wall time of one call of the compiled kernel, x2 = x1 of
  N inputs (compiled and called once in ``setup``, ``block_until_ready`` in the body; the
  median of 1 to 5 calls);
* ``<Model>PeakMem.peakmem_kernel``: the peak RSS of the process that runs the kernel
  once (implementation 1 only, to keep the suite short; XLA's figures below cover all
  three). It includes JAX's baseline of some hundreds of MB: ``PeakMemReference``
  measures that baseline and ``nt-pntk bench-report`` subtracts it;
* ``<Model>Xla.track_temp_bytes`` / ``track_total_bytes``: XLA's compiled memory figures
  (``jit(...).lower(...).compile().memory_analysis()``): scratch bytes, and scratch +
  arguments + output; ``track_flops`` / ``track_bytes_accessed``: XLA's cost analysis of
  the same program (``compiled.cost_analysis()``). Deterministic; they change only when
  the computation does (``asv_bench/xla_gate.py`` holds them to a committed baseline).

``setup_cache`` (shared by all classes here) compiles every kernel once into a JAX
persistent compilation cache in asv's cache directory and records XLA's figures; the
benchmark processes then load the executables instead of compiling them.
"""

from __future__ import annotations

from typing import ClassVar

from . import _common


class _KernelCache:
    """Shared ``setup_cache``: asv keys it by this function's module and line, so it runs once
    for all the subclasses below."""

    timeout = 300

    def setup_cache(self) -> dict:
        _common.setup_jax()
        import jax

        figures = {}
        for model in _common.MODELS:
            for point in _common.points(model):
                for kernel in _common.kernels():
                    for implementation in _common.implementations():
                        if not _common.measured(kernel, implementation):
                            continue
                        axes = _common.parse_point(point)
                        compiled = _common.Compiled(model, kernel, implementation, **axes)
                        figures[model, kernel, implementation, point] = compiled.xla_figures()
                        del compiled
                jax.clear_caches()
        return figures

    setup_cache.timeout = 1800  # asv reads the setup_cache timeout from the function


class _Time(_KernelCache):
    model: ClassVar[str]
    param_names: ClassVar[list[str]] = ["kernel", "implementation", "point"]
    # One process per parameter set; a warm-up call in setup, then 1 to 5 timed calls within
    # about a second, of which asv reports the median.
    rounds = 1
    number = 1
    repeat = (1, 5, 1.0)
    min_run_count = 1
    warmup_time = 0.0

    def setup(self, cache, kernel, implementation, point):
        _common.setup_jax()
        self.kernel = _common.warm_kernel(self.model, kernel, implementation, **_common.parse_point(point))

    def time_kernel(self, cache, kernel, implementation, point):
        self.kernel()


class _PeakMem(_KernelCache):
    model: ClassVar[str]
    param_names: ClassVar[list[str]] = ["kernel", "implementation", "point"]

    def setup(self, cache, kernel, implementation, point):
        _common.setup_jax()
        self.kernel = _common.Compiled(self.model, kernel, implementation, **_common.parse_point(point))

    def peakmem_kernel(self, cache, kernel, implementation, point):
        self.kernel()


class _Xla(_KernelCache):
    model: ClassVar[str]
    param_names: ClassVar[list[str]] = ["kernel", "implementation", "point"]
    unit = "bytes"

    def track_temp_bytes(self, cache, kernel, implementation, point):
        return cache[self.model, kernel, implementation, point]["temp"]

    def track_total_bytes(self, cache, kernel, implementation, point):
        return cache[self.model, kernel, implementation, point]["total"]

    def track_flops(self, cache, kernel, implementation, point):
        return cache[self.model, kernel, implementation, point]["flops"]

    track_flops.unit = "flops"  # asv reads a benchmark's unit from the function before the class

    def track_bytes_accessed(self, cache, kernel, implementation, point):
        return cache[self.model, kernel, implementation, point]["bytes_accessed"]


def _params(model: str, *, implementations: tuple[int, ...] | None = None) -> list[list]:
    implementations = _common.implementations() if implementations is None else implementations
    return [list(_common.kernels()), list(implementations), _common.points(model)]


class FCTime(_Time):
    model = "fc"
    params = _params("fc")
    skip_params = _common.skip_params("fc")


class CNNTime(_Time):
    model = "cnn"
    params = _params("cnn")
    skip_params = _common.skip_params("cnn")


class FCPeakMem(_PeakMem):
    model = "fc"
    params = _params("fc", implementations=(1,))


class CNNPeakMem(_PeakMem):
    model = "cnn"
    params = _params("cnn", implementations=(1,))


class FCXla(_Xla):
    model = "fc"
    params = _params("fc")
    skip_params = _common.skip_params("fc")


class CNNXla(_Xla):
    model = "cnn"
    params = _params("cnn")
    skip_params = _common.skip_params("cnn")


class PeakMemReference(_KernelCache):
    """The baseline of the ``peakmem_*`` benchmarks: the same process and setup (imports, model,
    parameters, inputs at the base point, a compiled function loaded) running ``x.sum()``
    instead of a kernel. ``nt-pntk bench-report`` subtracts it from ``peakmem_kernel``."""

    params: ClassVar[list] = [list(_common.MODELS)]
    param_names: ClassVar[list[str]] = ["model"]

    def setup(self, cache, model):
        _common.setup_jax()
        _, self.params_, self.x = _common.make_inputs(model, **_common.BASE[model])
        self.compiled = _common.trivial_compiled(self.x)

    def peakmem_reference(self, cache, model):
        self.compiled(self.x).block_until_ready()
