"""A small problem for `nt_pntk.tiled.kernel_matrix` tests, and the subprocess entry points they run.

``python tests/tiled_helpers.py slow-run OUT``: the symmetric pNTK to OUT with
tile 8, pausing after each recorded tile (so a test can kill it mid-run).
``python tests/tiled_helpers.py devices OUT.npz``: several kernels on however
many devices XLA_FLAGS gives, saved with the device count.
``python tests/tiled_helpers.py process ID COUNT PORT OUT``: one process of a
``jax.distributed`` run writing the symmetric pNTK to OUT.
``python tests/tiled_helpers.py race OUT_DIR SYNC_DIR CHILD TRIES``: child 0 or 1 of two
independent runs started together on the same outputs (``k{try}.npy``, then ``k{try}.zarr``),
meeting the other child at a file barrier in SYNC_DIR before each try; the kernels it got are
saved to ``SYNC_DIR/result{CHILD}.npz``.
"""

from __future__ import annotations

import functools
import sys
import time
import types
from pathlib import Path

import jax
import numpy as np

import nt_pntk
from nt_pntk.approximations import EmpiricalKernelFn
from nt_pntk.experiments import models

N1, N2, TILE = 37, 21, 8
RACE_N = 40
COMMON = dict(tile_size=TILE, progress=False)  # kernel_matrix's arguments in most tests
RTOL = 3e-6  # float32 Gram sums in another order than NT's contraction, relative to the largest entry


def assert_close(actual, expected, rtol: float = RTOL) -> None:
    """Equal up to `rtol` times the largest entry of `expected`, and finite."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual))
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= rtol * scale, np.abs(actual - expected).max() / scale


def row_reuse_budget() -> int:
    """Two or three resident row blocks (of five) per device; CPU devices share the budget."""
    return 140 * 1024 * jax.local_device_count()


@functools.cache
def problem() -> types.SimpleNamespace:
    """FC (width 16, one hidden layer, 3 outputs) at init; 37 and 21 random 8×8×1 inputs."""
    model = models.get_model("fc", width=16, outputs=3, depth=1)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(N1, 8, 8, 1)).astype(np.float32)
    x2 = rng.normal(size=(N2, 8, 8, 1)).astype(np.float32)
    pntk_fn = nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0)
    return types.SimpleNamespace(model=model, params=params, x1=x1, x2=x2, pntk_fn=pntk_fn)


def opaque(fn):
    """`fn` as a plain function (not an `EmpiricalKernelFn`, so no Gram features): tiled directly."""

    def kernel(x1, x2, params, **kwargs):
        return fn(x1, x2, params, **kwargs)

    return kernel


def rescaled(fn: EmpiricalKernelFn, factor: float) -> EmpiricalKernelFn:
    """`fn`'s approximation of the same network, whose values are `factor` times `fn`'s but whose
    Gram features are `fn`'s (as if `__call__` had been changed and `features_fn` not)."""

    class Rescaled(EmpiricalKernelFn):
        def __call__(self, x1, x2, params, **kwargs):
            return factor * super().__call__(x1, x2, params, **kwargs)

    return Rescaled(fn.approximation, fn.f, fn.trace_axes, fn.diagonal_axes, fn.vmap_axes, fn.implementation)


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
        "features": nt_pntk.feature_matrix(sketch_fn(), p.x1, p.params, memory_budget="1MiB", progress=False),
    }


def sketch_fn():
    """A Sketch of the problem's pNTK (its features: `feature_matrix`)."""
    from nt_pntk.approximations import Sketch

    return Sketch(dim=256, seed=1).kernel_fn(problem().model.apply_fn)


def _slow_run(out: str) -> None:
    from nt_pntk._src.tiled import storage
    from nt_pntk.tiled import kernel_matrix

    mark = storage.Record.mark

    def slow_mark(self, *args, **kwargs):
        mark(self, *args, **kwargs)
        time.sleep(0.2)

    storage.Record.mark = slow_mark
    p = problem()
    kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, tile_size=TILE, progress=False)


def race_inputs() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(RACE_N, 8, 8, 1)).astype(np.float32)


def _barrier(sync: Path, name: str, child: int, timeout: float = 120.0) -> None:
    """Returns once both children have reached `name`: the runs then start within milliseconds."""
    (sync / f"{name}.{child}").touch()
    deadline = time.monotonic() + timeout
    while not (sync / f"{name}.{1 - child}").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the other child did not reach {name} in {timeout} s")
        time.sleep(0.002)


def _race(out_dir: str, sync_dir: str, child: int, tries: int) -> None:
    from nt_pntk.tiled import kernel_matrix

    p, x = problem(), race_inputs()
    kernels = {}
    for suffix in (".npy", ".zarr"):
        for t in range(tries):
            name = f"k{t}{suffix}"
            _barrier(Path(sync_dir), name, child)
            k = kernel_matrix(
                p.pntk_fn, x, None, p.params, output=Path(out_dir) / name, tile_size=TILE, progress=False
            )
            kernels[name] = np.array(k[:])
    np.savez(Path(sync_dir) / f"result{child}.npz", **kernels)


def _process(process_id: int, count: int, port: int, out: str) -> None:
    jax.distributed.initialize(f"localhost:{port}", num_processes=count, process_id=process_id)
    from nt_pntk.tiled import kernel_matrix

    p = problem()
    k = kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, tile_size=TILE, progress=False)
    phi = nt_pntk.feature_matrix(
        sketch_fn(), p.x1, p.params, output=out + ".phi.zarr", memory_budget="1MiB", progress=False
    )
    print(f"features {phi.shape}", flush=True)
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
    elif command == "race":
        _race(rest[0], rest[1], int(rest[2]), int(rest[3]))
    else:
        raise SystemExit(f"unknown command {command!r}")
