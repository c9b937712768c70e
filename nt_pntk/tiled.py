r"""Kernels of datasets larger than memory: tiled, symmetric, streamed to disk, resumable, sharded.

`kernel_matrix` computes an ``(N1, N2)`` kernel ``fn(x1, x2, params)`` tile by
tile within a memory budget:

* **symmetric**: with ``x2=None`` only tiles on and above the diagonal are
  computed; each is also written, transposed, below it;
* **Jacobian reuse**: for a pNTK from `nt_pntk.empirical_pntk_fn` (or any
  ``fn`` carrying per-example Jacobian features, see `with_jacobian_features`
  for NT's eNTK) each input's Jacobian is computed once per group of resident
  row blocks (once in all when they fit the budget), and each tile is one Gram
  product of Jacobian blocks; any other ``fn`` (e.g. an NNGP) is evaluated
  tile by tile;
* **memory**: the tile size and the number of resident row blocks come from the
  budget and XLA's memory analysis of the compiled per-device programs;
* **output** in memory, to a ``.npy`` (written with ``pwrite``, returned as a
  read-only ``np.memmap``) or to a ``.zarr`` array (one chunk per tile);
* **resumable**: a finished-tile record beside the output (``<out>.tiles/``)
  gets a marker with a checksum once a tile's data are flushed; a run started
  again with the same output skips the verified tiles and gives a bitwise
  identical result; a tile whose bytes do not match its checksum is recomputed;
* **devices**: one tile per local device per step, with the tile inputs
  stacked and sharded over a ``Mesh`` axis 'tiles' (``NamedSharding``) and the
  single-tile program run by ``shard_map``. After ``jax.distributed.initialize()``
  each process uses only ``jax.local_devices()`` and computes the tiles of the
  row groups assigned to it; processes share the output (use ``.zarr`` on a
  shared file system) and the tile record, and each returns once all tiles are
  recorded.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from nt_pntk import _checks
from nt_pntk._tiled import compute, planning, sharding, storage
from nt_pntk._tiled.features import (
    FEATURES_ATTRIBUTE,
    NotAGramKernel,
    _describe,
    jacobian_features_fn,
    with_jacobian_features,
)
from nt_pntk._tiled.planning import format_bytes, parse_bytes

PyTree = Any

__all__ = ["format_bytes", "jacobian_features_fn", "kernel_matrix", "parse_bytes", "with_jacobian_features"]

_BUDGET = "memory_budget"
_PROBE_FEATURES = (8, 64)
_PROBE_DIRECT = (8, 32, 128)


def kernel_matrix(
    fn: Callable,
    x1: PyTree,
    x2: PyTree | None,
    params: PyTree,
    *,
    out: Any = None,
    memory_budget: int | str | None = None,
    tile_size: int | None = None,
    progress: bool = True,
    **apply_fn_kwargs,
) -> Any:
    r"""Computes the ``(N1, N2)`` kernel ``fn(x1, x2, params, **apply_fn_kwargs)`` in tiles.

    Args:
      fn: an NT-style kernel function ``fn(x1, x2, params, **kwargs)`` that
        returns an ``(n1, n2)`` array for batches of n1 and n2 examples: a pNTK
        from `nt_pntk.empirical_pntk_fn`, an eNTK from ``nt.empirical_ntk_fn``
        with its output axes traced, an NNGP, or any such function. Examples
        must be independent (the kernel of two examples must not depend on the
        rest of their batch), as for ``nt.batch``. With ``x2=None`` ``fn`` must
        be symmetric, as every kernel is.
      x1: an array (or PyTree of arrays) of N1 examples along axis 0.
      x2: N2 examples of the same kind, or None for ``x2 = x1`` (then only the
        upper triangle of tiles is computed and mirrored).
      params: the network's parameters.
      out: None (returns a NumPy array), or a path ending in ``.npy`` (a NumPy
        file, returned as a read-only ``np.memmap``) or ``.zarr`` (a Zarr
        array with one chunk per tile, returned opened read-only). A finished-tile
        record ``<out>.tiles/`` is kept beside it: calling again with the same
        arguments and output resumes an interrupted run, or returns a finished
        one after checking it.
      memory_budget: bytes (int) or a string such as ``"2GiB"`` or ``"512MB"``
        that the computation may use on each device (on CPU: in all, the
        devices sharing the host's memory), beyond the inputs and the returned
        kernel: Jacobian blocks, the output tile, XLA's temporaries, and tiles
        waiting to be written. Default: half the available host memory on CPU,
        80% of free device memory on accelerators.
      tile_size: the tile's side; default: chosen from the budget (the
        cheapest size whose estimated peak memory fits). A resumed run uses the
        tile size it was started with.
      progress: show a tqdm progress bar (tiles, rate, ETA) on stderr.
      **apply_fn_kwargs: passed to ``fn`` unchanged for every tile (they are
        not split along the batch).

    Returns:
      The kernel: a ``np.ndarray`` (``out=None``), a read-only ``np.memmap``
      (``.npy``) or a read-only Zarr array (``.zarr``).

    Raises:
      ValueError: an ``out`` that holds something else (another shape, dtype,
        inputs, parameters or kernel function, or a file not written by
        `kernel_matrix`: nothing is overwritten); a budget too small for one row
        of the smallest tile (the message gives the minimum); non-finite
        inputs (the message names the first bad row) or parameters; ``fn``
        not returning an ``(n1, n2)`` array; ``x1`` and ``x2`` of different
        kinds.
      TypeError: arguments of the wrong type.

    Example:
      >>> import jax, nt_pntk
      >>> from nt_pntk import models
      >>> from nt_pntk.tiled import kernel_matrix
      >>> m = models.get_model("fc", width=32, out=10)
      >>> _, params = m.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (37, 8, 8, 1))
      >>> pntk_fn = nt_pntk.empirical_pntk_fn(m.apply_fn, vmap_axes=0)
      >>> k = kernel_matrix(pntk_fn, x, None, params, tile_size=8, progress=False)
      >>> k.shape
      (37, 37)
    """
    if not callable(fn):
        raise TypeError(f"`fn` must be a kernel function fn(x1, x2, params, **kwargs); got {fn!r}.")
    budget = parse_bytes("memory_budget", memory_budget)
    tile_size = _tile_size(tile_size)
    path = storage.check_out_path(out)
    symmetric = x2 is None
    x1h, n1 = _host_inputs("x1", x1)
    x2h, n2 = (x1h, n1) if symmetric else _host_inputs("x2", x2)
    if not symmetric:
        _checks.matching_inputs(x1h, x2h, 0)
    _check_finite_rows("x1", x1h, n1)
    if not symmetric:
        _check_finite_rows("x2", x2h, n2)
    _check_finite_params(params)
    processes, process = jax.process_count(), jax.process_index()
    if processes > 1 and path is None:
        raise ValueError(
            f"`out` is None in a run of {processes} processes; each process computes only its share of "
            "the tiles, so pass out='<shared path>.zarr' (or .npy on a file system all processes share)."
        )

    lanes = sharding.Lanes()
    programs, dtype = _programs(fn, apply_fn_kwargs, lanes, params, x1h, x2h)
    fingerprint = {
        "x1": storage.tree_digest(x1h),
        "x2": "x1" if symmetric else storage.tree_digest(x2h),
        "params": storage.tree_digest(params),
        "apply_fn_kwargs": storage.tree_digest(apply_fn_kwargs),
        "fn": _fn_name(fn),
    }
    expected = {"shape": [n1, n2], "dtype": dtype.name, "symmetric": symmetric, "fingerprint": fingerprint}
    record = storage.Record(path) if path is not None else None
    stored = _existing(path, record, expected, tile_size) if record is not None else None
    if stored is not None and stored.get("mode") != programs.mode:
        raise ValueError(
            f"`out`={str(path)!r} was computed in mode {stored.get('mode')!r}, this kernel function runs in "
            f"mode {programs.mode!r}; nothing was overwritten. Choose another `out`."
        )

    user_budget = budget if budget is not None else planning.default_budget(lanes.devices)
    share = lanes.count if lanes.platform == "cpu" else 1
    plan = _plan(
        programs,
        params,
        x1h,
        x2h,
        n1,
        n2,
        symmetric,
        planning.lane_budget(user_budget, lanes.devices),
        tile_size or (stored["tile_size"] if stored else None),
        share,
    )

    output = _open_output(path, record, expected, plan, stored, process, dtype)
    params_dev = jax.device_put(params, lanes.replicated)
    groups = plan.super_rows()
    all_tiles = plan.tiles()
    work = [sum(1 for t in all_tiles if t[0] in g) for g in groups]
    mine = [groups[g] for g in sharding.assign(work, processes, process)]
    my_rows = {i for g in mine for i in g}
    my_tiles = [t for t in all_tiles if t[0] in my_rows]
    good = _verified(output, record, plan, set(my_tiles)) if record is not None else set()
    todo = [t for t in my_tiles if t not in good]

    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(my_tiles),
        initial=len(my_tiles) - len(todo),
        unit="tile",
        desc="kernel_matrix",
        disable=not progress,
        smoothing=0.1,
    )
    writer = _Writer(output, record, plan, bar)
    try:
        if programs.mode == "features":
            compute.run_features(programs, plan, params_dev, x1h, x2h, mine, set(todo), writer.put)
        else:
            compute.run_direct(programs, plan, params_dev, x1h, x2h, todo, writer.put)
        writer.close()
    finally:
        writer.stop()
        bar.close()
    if processes > 1:
        storage.wait_for(lambda: record.count() >= len(all_tiles), f"all {len(all_tiles)} tiles of {path}")
    output.close()
    return output.result()


def _tile_size(tile_size: Any) -> int | None:
    if tile_size is None:
        return None
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < 1:
        raise ValueError(
            f"`tile_size` must be a positive int or None (chosen from the budget); got {tile_size!r}."
        )
    return int(tile_size)


def _host_inputs(name: str, x: PyTree) -> tuple[PyTree, int]:
    """`x` with NumPy leaves, and its batch size (axis 0 of every leaf)."""
    leaves = jax.tree_util.tree_leaves(x)
    if not leaves:
        raise ValueError(f"`{name}` has no arrays; pass an array of examples along axis 0.")
    x = jax.tree_util.tree_map(np.asarray, x)
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree_util.tree_leaves(x)}
    if None in sizes or len(sizes) != 1:
        shapes = [np.shape(leaf) for leaf in jax.tree_util.tree_leaves(x)]
        raise ValueError(
            f"`{name}` must hold examples along axis 0 of every array, in equal numbers; got shapes {shapes}."
        )
    n = sizes.pop()
    if n < 1:
        raise ValueError(f"`{name}` has no examples (shape {np.shape(leaves[0])}); pass at least one.")
    return x, n


def _check_finite_rows(name: str, x: PyTree, n: int) -> None:
    bad = np.zeros(n, bool)
    for leaf in jax.tree_util.tree_leaves(x):
        if np.issubdtype(leaf.dtype, np.inexact):
            bad |= ~np.isfinite(leaf.reshape(n, -1)).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(
            f"`{name}` has a non-finite value (NaN or inf) in row {first} (the first bad row; "
            f"{int(bad.sum())} of {n} rows in all). Its kernel entries would be NaN: remove or repair "
            f"those rows, e.g. {name}[np.isfinite({name}).reshape(len({name}), -1).all(axis=1)]."
        )


def _check_finite_params(params: PyTree) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        a = np.asarray(leaf)
        if np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all():
            raise ValueError(
                f"`params` has non-finite values (NaN or inf) in leaf {jax.tree_util.keystr(path)} of shape "
                f"{a.shape}; every kernel entry would be NaN. Pass finite parameters."
            )


def _fn_name(fn: Callable) -> str:
    features = getattr(fn, FEATURES_ATTRIBUTE, None)
    config = getattr(features, "config", None)
    return _describe(fn) + (f" {sorted(config.items())}" if config else "")


def _programs(
    fn: Callable, kwargs: dict, lanes: sharding.Lanes, params: PyTree, x1: PyTree, x2: PyTree
) -> tuple[Any, np.dtype]:
    """Jacobian-reuse programs when `fn` has features for this output, else direct ones."""
    features = getattr(fn, FEATURES_ATTRIBUTE, None)
    if callable(features):
        programs = compute.FeaturePrograms(features, kwargs, lanes)
        try:
            _, dtype = programs.out_struct(params, x1)
            return programs, dtype
        except NotAGramKernel:
            pass
    programs = compute.DirectPrograms(fn, kwargs, lanes)
    result = programs.out_struct(params, x1, x2)
    if not isinstance(result, jax.ShapeDtypeStruct) or tuple(result.shape) != (2, 3):
        shape = getattr(result, "shape", None) or jax.tree_util.tree_map(lambda a: a.shape, result)
        raise ValueError(
            "`fn` must return an (n1, n2) array, one kernel entry per pair of examples; for batches of 2 "
            f"and 3 examples it returned {shape}. kernel_matrix tiles 2-D kernels only: trace the "
            "network's output axes (e.g. trace_axes=(-1,)) or pass a function that selects one kernel."
        )
    return programs, np.dtype(result.dtype)


def _plan(
    programs: Any,
    params: PyTree,
    x1: PyTree,
    x2: PyTree,
    n1: int,
    n2: int,
    symmetric: bool,
    budget: int,
    tile: int | None,
    share: int,
) -> planning.Plan:
    """The plan from fitted estimates, then checked against the compiled programs that will run.

    When no tile fits by the estimates, tile 1 is compiled, so that the error
    names the minimum budget the real programs need.
    """
    features = programs.mode == "features"
    args = (n1, n2, symmetric, budget)
    if features:
        fitted = None if tile else programs.costs(params, x1, _PROBE_FEATURES)
    else:
        curve = None if tile else programs.peak_curve(params, x1, x2, _PROBE_DIRECT)

        def fitted_peak(s: int) -> float:
            return curve(s) + planning.staging_bytes(s, 8)

    max_tile = planning.MAX_TILE if features else planning.MAX_DIRECT_TILE
    while True:
        t = tile
        if t is None:
            try:
                if features:
                    t = planning.plan_features(fitted, *args, None, _BUDGET, share, max_tile).tile
                else:
                    t = planning.plan_direct(fitted_peak, *args, None, _BUDGET, share, max_tile).tile
            except planning.BudgetTooSmall:
                t = 1
        try:
            if features:
                measured = programs.measured_costs(params, x1, t, fitted)
                return planning.plan_features(measured, *args, t, _BUDGET, share, user_tile=tile is not None)
            peak = programs.measured_peak(params, x1, x2, t) + planning.staging_bytes(t, 8)
            return planning.plan_direct(
                lambda s, m=peak: m, *args, t, _BUDGET, share, user_tile=tile is not None
            )
        except planning.BudgetTooSmall:
            if tile or t == 1:
                raise
            max_tile = t - 1


def _existing(path: Any, record: storage.Record, expected: dict, tile_size: int | None) -> dict | None:
    """The stored record of `path` if it matches these inputs; else a ValueError, nothing touched."""
    meta = record.load_meta()
    if meta is None:
        if path.exists():
            raise ValueError(
                f"`out`={str(path)!r} already exists and was not written by kernel_matrix (it has no tile "
                f"record {str(record.dir)!r}); nothing was overwritten. Delete it or choose another path."
            )
        return None
    problems = storage.describe_mismatch(meta, expected)
    if problems:
        raise ValueError(
            f"`out`={str(path)!r} holds another kernel than these arguments give: "
            + "; ".join(problems)
            + ". Nothing was overwritten. Pass another `out`, or delete "
            f"{str(path)!r} and {str(record.dir)!r} to start over."
        )
    if tile_size is not None and tile_size != meta.get("tile_size"):
        raise ValueError(
            f"`out`={str(path)!r} was started with tile_size={meta.get('tile_size')}, not {tile_size}; "
            f"pass tile_size={meta.get('tile_size')} (or None) to resume it, or another `out`."
        )
    if path.exists():
        header = storage.output_class(path).header(path)
        if header != (tuple(expected["shape"]), np.dtype(expected["dtype"])):
            raise ValueError(
                f"`out`={str(path)!r} does not hold the {tuple(expected['shape'])} {expected['dtype']} array "
                f"its tile record describes (found {header}); nothing was overwritten. Delete it and "
                f"{str(record.dir)!r} to start over."
            )
    return meta


def _open_output(
    path: Any,
    record: storage.Record | None,
    expected: dict,
    plan: planning.Plan,
    stored: dict | None,
    process: int,
    dtype: np.dtype,
) -> Any:
    """The output to write: created (by process 0), or the existing one of a resumed run."""
    if path is None:
        return storage.MemoryOutput((plan.n1, plan.n2), dtype)
    shape = (plan.n1, plan.n2)
    if process == 0 and (stored is None or not path.exists()):
        meta = {
            "format": storage.FORMAT,
            **expected,
            "tile_size": plan.tile,
            "mode": plan.mode,
        }
        record.write_meta(meta)
        record.clear_done()
        storage.create_output(path, shape, dtype, plan.tile)
    elif process != 0:
        storage.wait_for(lambda: record.meta_path.exists() and path.exists(), f"{path} to be created")
    return storage.output_class(path)(path)


def _verified(
    output: Any, record: storage.Record, plan: planning.Plan, tiles: set[tuple[int, int]]
) -> set[tuple[int, int]]:
    """The recorded tiles among `tiles` whose data (and mirror) match their digests; others are forgotten."""
    good = set()
    for (i, j), tile_digest in record.done().items():
        if (i, j) not in tiles:
            continue
        (r0, r1), (c0, c1) = _extent(plan, i, j)
        try:
            ok = storage.digest(output.read(r0, r1, c0, c1)) == tile_digest
            if ok and plan.symmetric and i != j:
                ok = storage.digest(np.ascontiguousarray(output.read(c0, c1, r0, r1).T)) == tile_digest
        except Exception:  # an unreadable chunk or short file counts as a corrupted tile
            ok = False
        if ok:
            good.add((i, j))
        else:
            record.forget(i, j)
    return good


def _extent(plan: planning.Plan, i: int, j: int) -> tuple[tuple[int, int], tuple[int, int]]:
    t = plan.tile
    return (i * t, min((i + 1) * t, plan.n1)), (j * t, min((j + 1) * t, plan.n2))


@dataclasses.dataclass
class _Writer:
    """Writes tiles, then records them, in a background thread (overlapping the next tile's compute)."""

    output: Any
    record: storage.Record | None
    plan: planning.Plan
    bar: Any

    def __post_init__(self):
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="kernel_matrix-writer", daemon=True)
        self.thread.start()

    def put(self, i: int, j: int, tile: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        (r0, r1), (c0, c1) = _extent(self.plan, i, j)
        self.queue.put((i, j, np.ascontiguousarray(tile[: r1 - r0, : c1 - c0])))

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            i, j, tile = item
            try:
                (r0, r1), (c0, c1) = _extent(self.plan, i, j)
                self.output.write(r0, c0, tile, self.plan.symmetric and i != j)
                if self.record is not None:
                    self.output.flush()
                    self.record.mark(i, j, storage.digest(tile), (r0, r1), (c0, c1))
                self.bar.update(1)
            except BaseException as e:  # reported to the main thread at its next put or close
                self.error = e

    def close(self) -> None:
        """Waits until every tile is written; raises the writer's error, if any."""
        self.stop()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
