"""Sketched features at scale: ``nt_pntk.feature_matrix`` over N, the sketch dimension k and the width.

``FeatureMatrixTime.time_feature_matrix``: wall time of the (N, k) features of
``Sketch(dim=k)`` of the zoo FC (O = 10; its parameter count grows with the width) on N
random inputs, in memory, ``progress=False``; ``setup`` warms it up once (the compile is
not timed). ``FeatureMatrixPeakMem``: the process's peak RSS for one call, beside
``peakmem_reference`` (the same process without the call, subtracted by
``nt-pntk bench-report``). On a commit without ``feature_matrix`` every benchmark here
is skipped. XLA's FLOPs and bytes of the sketched kernel are in the FLOP gate (kernel
``sketch`` of ``_common.KERNELS``).
"""

from __future__ import annotations

from typing import ClassVar

from . import _common

OUTPUTS = 10


def _grid() -> tuple[list[int], list[int], list[int]]:
    if _common.quick():
        return [64], [256], [32]
    return [256, 1024, 4096], [256, 1024, 4096], [32, 128, 512]


_state: dict[tuple, tuple] = {}


class _Features:
    params: ClassVar[list] = list(_grid())
    param_names: ClassVar[list[str]] = ["n", "k", "width"]
    timeout = 600

    def setup(self, n, k, width):
        _common.setup_jax(cache_dir=None)
        try:
            import nt_pntk
            from nt_pntk.approximations import Sketch

            feature_matrix = nt_pntk.feature_matrix
        except (ImportError, AttributeError):
            raise NotImplementedError("this commit has no nt_pntk.feature_matrix") from None
        key = (n, k, width)
        if key not in _state:
            apply_fn, params, x = _common.make_inputs("fc", n=n, outputs=OUTPUTS, width=width)
            _state[key] = (feature_matrix, Sketch(dim=k).kernel_fn(apply_fn), params, x)
        self.feature_matrix, self.fn, self.model_params, self.x = _state[key]

    def compute(self):
        return self.feature_matrix(self.fn, self.x, self.model_params, progress=False)


class FeatureMatrixTime(_Features):
    rounds = 1
    number = 1
    repeat = (1, 3, 1.0)
    min_run_count = 1
    warmup_time = 0.0
    _warm: ClassVar[set[tuple]] = set()

    def setup(self, n, k, width):
        super().setup(n, k, width)
        if (n, k, width) not in self._warm:
            self.compute()
            self._warm.add((n, k, width))

    def time_feature_matrix(self, n, k, width):
        self.compute()


class FeatureMatrixPeakMem(_Features):
    def peakmem_feature_matrix(self, n, k, width):
        self.compute()

    def peakmem_reference(self, n, k, width):
        pass
