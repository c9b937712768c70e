"""The tiled large-N path: ``nt_pntk.kernel_matrix`` computing an N×N pNTK tile by tile.

``TiledTime.time_kernel_matrix``: wall time of the whole N×N pNTK of the zoo FC (width
``WIDTH``, O = 10, implementation 1) on N random inputs, N up to a few thousand, with a
fixed tile size and ``progress=False``; one warm-up call in ``setup``; ``setup_cache``
compiles the tiles' executables once into JAX's persistent cache. ``TiledPeakMem``: the
process's peak RSS for one call, and the same process without the call
(``peakmem_reference``, subtracted by ``nt-pntk bench-report``): the output's N² floats
plus what the tiles hold, which ``memory_budget``/``tile_size`` bound.

On a commit without ``kernel_matrix`` every benchmark here is skipped.
"""

from __future__ import annotations

from typing import ClassVar

from . import _common

WIDTH = 32
OUTPUTS = 10
TILE_SIZE = 512


def _ns() -> list[int]:
    return [128, 256] if _common.quick() else [512, 1024, 2048, 4096]


def _tile_size() -> int:
    """The tile side: every N of the grid is a multiple of it."""
    return 128 if _common.quick() else TILE_SIZE


def _kernel_matrix():
    """``nt_pntk.kernel_matrix``, or asv's skip where this commit has none."""
    try:
        from nt_pntk import kernel_matrix
    except ImportError:
        try:
            from nt_pntk.tiled import kernel_matrix
        except ImportError:
            raise NotImplementedError("this commit has no nt_pntk.kernel_matrix") from None
    return kernel_matrix


_state: dict[int, tuple] = {}


class _Tiled:
    params: ClassVar[list] = [_ns()]
    param_names: ClassVar[list[str]] = ["n"]
    timeout = 600

    def setup_cache(self):
        """Compiles the tiles' executables once into the persistent cache in asv's cache
        directory (a 2×2-tile matrix has the tile shapes of every N here, all multiples of
        the tile size), so no benchmark process pays for, or measures, the compiler."""
        try:
            _Tiled.setup(self, {"available": True}, 2 * _tile_size())
        except NotImplementedError:
            return {"available": False}  # (asv passes no cache to the benchmarks for None)
        self.compute()
        return {"available": True}

    setup_cache.timeout = 600  # asv reads the setup_cache timeout from the function

    def setup(self, cache, n):
        if not cache["available"]:
            raise NotImplementedError("this commit has no nt_pntk.kernel_matrix")
        _common.setup_jax()
        # Memoized: asv_runner re-runs setup before every timed sample, and a new kernel
        # function would mean new executables (slow first calls) in every sample.
        if n not in _state:
            import nt_pntk

            apply_fn, params, x = _common.make_inputs("fc", n=n, outputs=OUTPUTS, width=WIDTH)
            fn = nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0, implementation=1)
            _state[n] = (_kernel_matrix(), fn, params, x)
        self.kernel_matrix, self.fn, self.model_params, self.x = _state[n]
        self.tile_size = _tile_size()

    def compute(self):
        import jax

        # x2=None: the symmetric N×N kernel of a training set (upper triangle of tiles, mirrored).
        result = self.kernel_matrix(
            self.fn, self.x, None, self.model_params, tile_size=self.tile_size, progress=False
        )
        return jax.block_until_ready(result)


class TiledTime(_Tiled):
    rounds = 1
    number = 1
    repeat = (1, 3, 1.0)
    min_run_count = 1
    warmup_time = 0.0

    _warm: ClassVar[set[int]] = set()

    def setup(self, cache, n):
        # asv_runner re-runs setup before every sample: warm up only the first time.
        super().setup(cache, n)
        if n not in self._warm:
            self.compute()
            self._warm.add(n)

    def time_kernel_matrix(self, cache, n):
        self.compute()


class TiledPeakMem(_Tiled):
    def peakmem_kernel_matrix(self, cache, n):
        self.compute()

    def peakmem_reference(self, cache, n):
        pass
