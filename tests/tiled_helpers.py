"""A small problem for `nt_pntk.tiled.kernel_matrix` tests, and the subprocess entry points they run.

``python tests/tiled_helpers.py slow-run OUT``: the symmetric pNTK to OUT with
tile 8, pausing after each recorded tile (so a test can kill it mid-run).
``python tests/tiled_helpers.py devices OUT.npz``: several kernels on however
many devices XLA_FLAGS gives, saved with the device count.
``python tests/tiled_helpers.py process ID COUNT PORT OUT``: one process of a
``jax.distributed`` run writing the symmetric pNTK to OUT.
"""

from __future__ import annotations

import functools
import sys
import time
import types

import jax
import numpy as np

import nt_pntk
from nt_pntk import models

N1, N2, TILE = 37, 21, 8


def row_reuse_budget() -> int:
    """Two or three resident row blocks (of five) per device; CPU devices share the budget."""
    return 140 * 1024 * jax.local_device_count()


@functools.cache
def problem() -> types.SimpleNamespace:
    """FC (width 16, one hidden layer, 3 outputs) at init; 37 and 21 random 8×8×1 inputs."""
    model = models.get_model("fc", width=16, out=3, depth=1)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(N1, 8, 8, 1)).astype(np.float32)
    x2 = rng.normal(size=(N2, 8, 8, 1)).astype(np.float32)
    pntk_fn = nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0)
    return types.SimpleNamespace(model=model, params=params, x1=x1, x2=x2, pntk_fn=pntk_fn)


def opaque(fn):
    """`fn` without its `jacobian_features`: kernel_matrix must tile it directly."""

    def kernel(x1, x2, params, **kwargs):
        return fn(x1, x2, params, **kwargs)

    return kernel


def device_results() -> dict[str, np.ndarray]:
    from nt_pntk.tiled import kernel_matrix

    p = problem()
    common = dict(tile_size=TILE, progress=False)
    return {
        "symmetric": kernel_matrix(p.pntk_fn, p.x1, None, p.params, **common),
        "x2": kernel_matrix(p.pntk_fn, p.x1, p.x2, p.params, **common),
        "direct": kernel_matrix(opaque(p.pntk_fn), p.x1, p.x2, p.params, **common),
        "row_reuse": kernel_matrix(
            p.pntk_fn, p.x1, None, p.params, memory_budget=row_reuse_budget(), **common
        ),
    }


def _slow_run(out: str) -> None:
    from nt_pntk._tiled import storage
    from nt_pntk.tiled import kernel_matrix

    mark = storage.Record.mark

    def slow_mark(self, *args, **kwargs):
        mark(self, *args, **kwargs)
        time.sleep(0.2)

    storage.Record.mark = slow_mark
    p = problem()
    kernel_matrix(p.pntk_fn, p.x1, None, p.params, out=out, tile_size=TILE, progress=False)


def _process(process_id: int, count: int, port: int, out: str) -> None:
    jax.distributed.initialize(f"localhost:{port}", num_processes=count, process_id=process_id)
    from nt_pntk.tiled import kernel_matrix

    p = problem()
    k = kernel_matrix(p.pntk_fn, p.x1, None, p.params, out=out, tile_size=TILE, progress=False)
    print(
        f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} devices, "
        f"{k.shape}",
        flush=True,
    )
    jax.distributed.shutdown()


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "slow-run":
        _slow_run(rest[0])
    elif command == "devices":
        np.savez(rest[0], device_count=len(jax.devices()), **device_results())
    elif command == "process":
        _process(int(rest[0]), int(rest[1]), int(rest[2]), rest[3])
    else:
        raise SystemExit(f"unknown command {command!r}")
