r"""Kernels of datasets larger than memory: tiled, symmetric, streamed to disk, resumable, sharded.

`kernel_matrix` computes an ``(N1, N2)`` kernel ``fn(x1, x2, params)`` tile by
tile within a memory budget:

* **symmetric**: with ``x2=None`` only tiles on and above the diagonal are
  computed; each is also written, transposed, below it;
* **Jacobian reuse**: for a kernel function of an approximation
  (`nt_pntk.approximations.EmpiricalKernelFn`: the pNTK of
  `nt_pntk.empirical_pntk_fn`, ``Trace().kernel_fn(f)`` for NT's traced eNTK,
  the single-logit and projection kernels) each input's Gram features
  (`EmpiricalKernelFn.features_fn`) are computed once per group of resident row
  blocks (once in all when they fit the budget), and each tile is one Gram
  product of feature blocks; any other ``fn`` (e.g. an NNGP, or NT's own
  ``nt.empirical_ntk_fn``) is evaluated tile by tile;
* **memory**: the tile size and the number of resident row blocks come from the
  budget and XLA's memory analysis of the compiled per-device programs;
* **output** in memory, to a ``.npy`` (written with ``pwrite``, returned as a
  read-only ``np.memmap``) or to a ``.zarr`` array (one chunk per tile);
* **resumable**: a finished-tile record beside the output (``<output>.tiles/``)
  gets a marker with a checksum once a tile's data are flushed; a run started
  again with the same output skips the verified tiles and gives a bitwise
  identical result; a tile whose bytes do not match its checksum is recomputed.
  The record identifies the kernel by digests of the inputs and parameters and
  by a *probe*, a few entries computed by ``fn`` itself (see `nt_pntk._src.tiled.probe`):
  a changed function (another activation, same name and parameters) is refused;
* **one run per output**: a run holds an exclusive lock (``<output>.lock``) from
  before it reads the record until it returns; a second run on the same output
  waits for it, then returns the finished kernel or resumes it;
* **devices**: one tile per local device per step, with the tile inputs
  stacked and sharded over a ``Mesh`` axis 'tiles' (``NamedSharding``) and the
  single-tile program run by ``shard_map``. After ``jax.distributed.initialize()``
  each process uses only ``jax.local_devices()`` and computes the tiles of the
  row groups assigned to it; processes share the output (use ``.zarr`` on a
  shared file system) and the tile record, and each returns once all tiles are
  recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nt_pntk._src import checks as _checks
from nt_pntk._src import deprecations, measure
from nt_pntk._src.kernels import keyword_args
from nt_pntk._src.kernels.approximations import EmpiricalKernelFn, FullENTK
from nt_pntk._src.kernels.features import as_array, describe
from nt_pntk._src.tiled import compute, planning, probe, routes, sharding, storage
from nt_pntk._src.tiled.planning import parse_bytes

PyTree = Any


_log = logging.getLogger(__name__)
_BUDGET = "memory_budget"
_PROBE_DIRECT = (8, 32, 128)


def kernel_matrix(
    fn: Callable,
    x1: PyTree,
    x2: PyTree | None,
    params: PyTree,
    *,
    output: Any = None,
    memory_budget: int | str | None = None,
    tile_size: int | None = None,
    progress: bool = True,
    stats: bool = False,
    allow_non_finite: bool = False,
    out: Any = None,
    **apply_fn_kwargs,
) -> Any:
    r"""Computes the ``(N1, N2)`` kernel ``fn(x1, x2, params, **apply_fn_kwargs)`` in tiles.

    How each tile is computed (the route, see `nt_pntk._src.tiled.routes`) follows
    an `EmpiricalKernelFn`'s ``implementation``: 1 → ``rows`` (cached per-example
    Jacobian rows F, tile ``F_r F_cᵀ``), 3 → ``structured`` (each dense layer as
    cached factors, tile :math:`\sum_l (A_r A_c^T) \odot (D_r D_c^T) + F_r F_c^T`),
    2 → ``direct(2)`` (``fn`` itself per tile), 0 (AUTO) → the cheaper of ``rows``
    and ``structured`` by XLA's cost analysis. Every route gives the same kernel;
    `plan_kernel_matrix` shows the choice without computing.

    Args:
      fn: an NT-style kernel function ``fn(x1, x2, params, **kwargs)`` that
        returns an ``(n1, n2)`` array for batches of n1 and n2 examples: an
        approximation's `EmpiricalKernelFn` (the pNTK from
        `nt_pntk.empirical_pntk_fn`, ``Trace().kernel_fn(f)``, ...), whose Gram
        features are reused across tiles, or any other such function (an NNGP,
        ``nt.empirical_ntk_fn`` with its output axes traced), tiled as is (not the
        full eNTK of `FullENTK`, an ``(N1, N2, O, O)`` kernel: a `ValueError`). Examples
        must be independent (the kernel of two examples must not depend on the
        rest of their batch), as for ``nt.batch``. With ``x2=None`` ``fn`` must
        be symmetric, as every kernel is.
      x1: an array (or PyTree of arrays) of N1 examples along axis 0.
      x2: N2 examples of the same kind, or None for ``x2 = x1`` (then only the
        upper triangle of tiles is computed and mirrored).
      params: the network's parameters.
      output: None (returns a NumPy array), or a path ending in ``.npy`` (a NumPy
        file, returned as a read-only ``np.memmap``) or ``.zarr`` (a Zarr
        array with one chunk per tile, returned opened read-only; a bfloat16 kernel is
        stored as float32, which holds it exactly). A finished-tile
        record ``<output>.tiles/`` is kept beside it: calling again with the same
        arguments and output resumes an interrupted run, or returns a finished
        one after checking it. The record holds digests of x1, x2, params and
        the keyword arguments, and a probe: ``fn(x1[rows], x2[cols], params)``
        for up to 4 rows and 4 columns (first, last and between), computed by
        ``fn`` itself one pair at a time (jitted, "highest" matmul precision)
        at the start of every call. A resumed run must reproduce it (to 1.2e-4
        of the largest entry in float32, 1e-9 in float64), so a changed
        function is refused whatever its name, and a renamed identical one
        resumes. Fresh tiles holding probe entries must agree with it too
        (to 10 times that; 5e-2 for float32 on accelerators). While a call runs,
        it holds an exclusive lock ``<output>.lock`` (``flock``; the file names the
        holder's pid and host and is removed at the end): another call on the
        same output blocks until it ends (saying so on stderr unless
        ``progress=False``), then returns the finished kernel or resumes it.
        In a ``jax.distributed`` run only process 0 takes the lock.
      memory_budget: bytes (int) or a string such as ``"2GiB"`` or ``"512MB"``
        that the computation may use on each device (on CPU: in all, the
        devices sharing the host's memory), beyond the inputs and the returned
        kernel: Jacobian blocks, the output tile, XLA's temporaries, and tiles
        waiting to be written. Default: half the available host memory on CPU,
        80% of free device memory on accelerators.
      tile_size: the tile's side; default: chosen from the budget (the
        cheapest size whose estimated peak memory fits). One larger than
        ``max(N1, N2)`` is capped at it. A resumed run uses the tile size it was
        started with (after the cap).
      progress: show a tqdm progress bar (tiles, rate, ETA) on stderr, and
        say so there when waiting for another run's lock on ``output``.
      stats: also return a `KernelMatrixStats`: the route taken and why (with
        AUTO's estimates), the plan, the programs' calls, XLA's FLOPs and bytes
        of what ran, and the tile loop's wall time.
      allow_non_finite: keep kernel entries that are NaN or inf. By default a
        tile holding one is a `NonFiniteKernelError` naming its rows, before
        anything of it is written or recorded: the network's outputs or
        gradients are not finite there (e.g. inputs that overflow float32).
      out: deprecated name of ``output``.
      **apply_fn_kwargs: the network's keyword arguments, as ``fn`` takes them:
        split between x1 and x2 as NT does (``rng``: x2 gets
        ``fold_in(rng, 1)`` unless x2 equals x1; a 2-tuple: one value for x1,
        one for x2), once for the whole x1 and x2, and every tile gets those
        (see `nt_pntk._src.kernels.keyword_args`). Values that hold no array
        (``train=False``) reach the network untraced. ``rng`` needs an
        `EmpiricalKernelFn` (another ``fn`` would derive keys tile by tile: a
        `ValueError`); arguments batched by ``vmap_axes`` are a `ValueError`.

    Returns:
      The kernel: a ``np.ndarray`` (``output=None``), a read-only ``np.memmap``
      (``.npy``) or a read-only Zarr array (``.zarr``).

    Raises:
      ValueError: an ``output`` that holds something else (another shape, dtype,
        inputs or parameters, a kernel function whose probe entries differ (the
        message names one), a damaged record (the message names the field), or
        a file not written by `kernel_matrix`: nothing is overwritten); a fresh
        tile that disagrees with ``fn``'s probe (e.g. Gram features that
        give another kernel than ``fn``, or an ``fn`` whose entries depend on the
        batch; the tile is not recorded); a budget too small for one row of the
        smallest tile (the message gives the minimum); non-finite inputs (the
        message names the first bad row) or parameters; ``fn`` not returning an
        ``(n1, n2)`` array; ``x1`` and ``x2`` of different kinds; a
        ``vmap_axes`` of ``fn``'s features out of range.
      NonFiniteKernelError: (a `ValueError`) a tile with NaN or inf entries,
        unless ``allow_non_finite``; nothing of it was written or recorded.
      RuntimeError: a run that ends with tiles missing from the record (the
        kernel is not returned; running again computes them).
      TypeError: arguments of the wrong type; ``x2`` of another dtype than ``x1``;
        inputs ``fn`` itself refuses (the message names their dtypes).

    Example:
      >>> import jax, nt_pntk
      >>> from nt_pntk.experiments import models
      >>> from nt_pntk.tiled import kernel_matrix
      >>> m = models.get_model("fc", width=32, outputs=10)
      >>> _, params = m.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (37, 8, 8, 1))
      >>> pntk_fn = nt_pntk.empirical_pntk_fn(m.apply_fn, vmap_axes=0)
      >>> k = kernel_matrix(pntk_fn, x, None, params, tile_size=8, progress=False)
      >>> k.shape
      (37, 37)
    """
    output = deprecations.renamed("kernel_matrix", "out", out, "output", output)
    job = _prepare(fn, x1, x2, params, output, memory_budget, tile_size, apply_fn_kwargs)
    job.allow_non_finite = _checks.boolean("allow_non_finite", allow_non_finite)
    if job.path is None:
        result = _run(job, None, progress)
    else:
        # What `fn` computes identifies the kernel on disk (its name does not): a few entries of it.
        fresh = probe.compute(fn, job.sides, params, job.x1, job.x2, job.n1, job.n2, job.symmetric)
        job.expected["function"] = {"name": _fn_name(fn), "jaxpr_blake2b": fresh.jaxpr}
        # One run at a time per output; the processes of one distributed run share it (process 0 locks).
        lock = storage.OutputLock(job.path, _announcer(progress)) if jax.process_index() == 0 else None
        with lock or contextlib.nullcontext():
            result = _run(job, fresh, progress)
    return (result, job.statistics()) if stats else result


@dataclasses.dataclass
class _Job:
    """A kernel_matrix call, checked: host inputs, the route's programs, the record's expectations."""

    fn: Callable
    params: PyTree
    x1: PyTree
    x2: PyTree
    n1: int
    n2: int
    symmetric: bool
    path: Any
    budget: int | None
    tile_size: int | None
    lanes: sharding.Lanes
    programs: Any
    choice: routes.Choice
    expected: dict
    sides: routes.Sides
    plan: planning.Plan | None = None
    run_seconds: float = 0.0
    allow_non_finite: bool = False
    precision: Any = None  # the least precise dtype computed in: the probe's tolerances follow it

    def statistics(self) -> KernelMatrixStats:
        flops = moved = 0.0
        for name, count in self.programs.calls.items():
            analysis = measure.cost_analysis(self.programs.compiled[name])
            flops += count * analysis.get("flops", 0.0) * self.lanes.count
            moved += count * analysis.get("bytes accessed", 0.0) * self.lanes.count
        calls = dict(self.programs.calls)
        return KernelMatrixStats(self.choice, self.plan, calls, flops, moved, self.run_seconds)


@dataclasses.dataclass(frozen=True)
class KernelMatrixStats:
    """What a `kernel_matrix` call did: the route and why, the plan, and XLA's cost of what ran.

    ``flops`` and ``bytes`` add up XLA's cost analysis of each compiled program
    (per device, times the devices) times the number of times it ran;
    ``run_seconds`` is the wall time of computing and writing the tiles (the
    call's time less choosing the route, compiling and checking the record).
    """

    choice: routes.Choice
    plan: planning.Plan | None
    calls: dict[str, int]
    flops: float
    bytes: float
    run_seconds: float

    @property
    def route(self) -> str:
        return self.choice.route


@dataclasses.dataclass(frozen=True)
class KernelMatrixPlan:
    """How `kernel_matrix` would compute a kernel (from `plan_kernel_matrix`), printable."""

    choice: routes.Choice
    plan: planning.Plan

    @property
    def route(self) -> str:
        return self.choice.route

    def __str__(self) -> str:
        p = self.plan
        shape = f"{p.n1}×{p.n2}" + (" (symmetric: the upper triangle of tiles)" if p.symmetric else "")
        resident = f", {p.rows_resident} row blocks resident" if p.mode == "features" else ""
        return (
            f"kernel {shape}: {len(p.tiles())} tiles of side {p.tile}{resident}; estimated peak "
            f"{planning.format_bytes(p.estimate)} per device of a budget of "
            f"{planning.format_bytes(p.lane_budget)}\n" + self.choice.describe()
        )


def plan_kernel_matrix(
    fn: Callable,
    x1: PyTree,
    x2: PyTree | None,
    params: PyTree,
    *,
    memory_budget: int | str | None = None,
    tile_size: int | None = None,
    **apply_fn_kwargs,
) -> KernelMatrixPlan:
    """How `kernel_matrix` would compute this kernel, without computing it: the route (and, for
    AUTO, each candidate's estimated cost), the tile size, the resident blocks and the memory.

    Takes `kernel_matrix`'s arguments (no output: it only plans). Compiles the
    programs it would run (seconds), computes no tile.

    Example:
      >>> import jax, nt_pntk
      >>> from nt_pntk.experiments import models
      >>> m = models.get_model("fc", width=32, outputs=10)
      >>> _, params = m.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (100, 8, 8, 1))
      >>> fn = nt_pntk.empirical_pntk_fn(m.apply_fn, vmap_axes=0, implementation=3)
      >>> plan = nt_pntk.tiled.plan_kernel_matrix(fn, x, None, params, tile_size=50)
      >>> plan.route
      'structured'
    """
    job = _prepare(fn, x1, x2, params, None, memory_budget, tile_size, apply_fn_kwargs)
    return KernelMatrixPlan(job.choice, _job_plan(job, None))


def _prepare(
    fn: Callable,
    x1: PyTree,
    x2: PyTree | None,
    params: PyTree,
    output: Any,
    memory_budget: Any,
    tile_size: Any,
    apply_fn_kwargs: dict,
) -> _Job:
    """Every check of the arguments, and the route's programs (compiled probes for AUTO)."""
    if not callable(fn):
        raise _checks.UsageTypeError(
            f"`fn` must be a kernel function fn(x1, x2, params, **kwargs); got {fn!r}."
        )
    if isinstance(fn, EmpiricalKernelFn) and isinstance(fn.approximation, FullENTK):
        # Its trace_axes do not trace anything, so the generic hint below would not help.
        raise _checks.UsageError(
            f"`fn` must give an (N1, N2) kernel; got the full eNTK {fn!r}, an (N1, N2, O, O) kernel. "
            "kernel_matrix tiles N×N kernels only: pass an N×N approximation's kernel function, "
            "e.g. nt_pntk.approximations.PNTK().kernel_fn(f) (the pNTK), Trace(), SingleLogit(k) or "
            "Projection(m)."
        )
    _checks.has_parameters(params)
    budget = parse_bytes("memory_budget", memory_budget)
    tile_size = _tile_size(tile_size)
    path = storage.check_output_path(output)
    symmetric = x2 is None
    x1h, n1 = _host_inputs("x1", x1)
    x2h, n2 = (x1h, n1) if symmetric else _host_inputs("x2", x2)
    if not symmetric:
        _checks.matching_inputs(x1h, x2h, 0)
        _check_same_dtypes(x1h, x2h)
    # Python scalars as the (weakly typed) arrays jax.jit makes of them: every program takes their dtype.
    params = jax.tree_util.tree_map(as_array, params)
    _check_finite_rows("x1", x1h, n1)
    if not symmetric:
        _check_finite_rows("x2", x2h, n2)
    _check_finite_params(params)
    if tile_size is not None:
        tile_size = min(tile_size, max(n1, n2))  # one tile holds the whole kernel: no padding beyond it
    processes = jax.process_count()
    if processes > 1 and path is None:
        raise _checks.UsageError(
            f"`output` is None in a run of {processes} processes; each process computes only its share of "
            "the tiles, so pass output='<shared path>.zarr' (or .npy on a file system all processes share)."
        )

    sides = _sides(fn, apply_fn_kwargs, x1h, None if symmetric else x2h)
    lanes = sharding.Lanes()
    entries = n1 * (n1 + 1) // 2 if symmetric else n1 * n2
    rows = n1 if symmetric else n1 + n2
    programs, dtype, choice = _programs(fn, sides, lanes, params, x1h, x2h, entries, rows)
    precision = probe.precision(dtype, params, x1h, x2h)
    if path is not None and dtype.kind == "V":
        # Neither .npy nor Zarr has ml_dtypes' types (bfloat16, float8): stored exactly as float32.
        dtype = np.dtype(np.float32)
    _log.info("kernel_matrix %s", choice.describe())
    fingerprint = {
        "x1": storage.tree_digest(x1h),
        "x2": "x1" if symmetric else storage.tree_digest(x2h),
        "params": storage.tree_digest(params),
        "apply_fn_kwargs": storage.tree_digest(apply_fn_kwargs),
    }
    expected = {"shape": [n1, n2], "dtype": dtype.name, "symmetric": symmetric, "fingerprint": fingerprint}
    expected["route"] = programs.route  # information: a resumed run may take another route
    job = (fn, params, x1h, x2h, n1, n2, symmetric, path, budget, tile_size, lanes, programs, choice)
    job = _Job(*job, expected, sides)
    job.precision = precision
    return job


def _sides(fn: Callable, kwargs: dict, x1: PyTree, x2: PyTree | None) -> routes.Sides:
    """The keyword arguments of x1 and x2, split once from the whole inputs as NT does (see
    `keyword_args`); every tile, feature block and probe entry gets these."""
    if not isinstance(fn, EmpiricalKernelFn) and keyword_args.RNG in kwargs:
        raise _checks.UsageError(
            f"kernel_matrix cannot tile `fn`={describe(fn)} with `rng`: an NT-style kernel function derives "
            "x2's key from whether x2 equals x1, which differs from tile to tile. Pass an nt_pntk kernel "
            "function (e.g. nt_pntk.empirical_pntk_fn(f) or nt_pntk.approximations.Trace().kernel_fn(f)), "
            "whose tiles get the keys of the whole x1 and x2, or call fn(x1, x2, params, rng=key) itself."
        )
    if isinstance(fn, EmpiricalKernelFn):
        batched = keyword_args.batched(fn.vmap_axes, kwargs)
        if batched:
            raise _checks.UsageError(
                f"kernel_matrix cannot tile keyword arguments batched by `vmap_axes`={fn.vmap_axes!r} "
                f"({', '.join(f'`{k}`' for k in batched)}): it takes rows of x1 and x2 only. Make them part "
                "of the inputs (e.g. x = {'x': x, '"
                + batched[0]
                + "': values}, a PyTree of examples along axis 0) or call fn(x1, x2, params, ...) itself."
            )
    kwargs1, kwargs2 = keyword_args.split(kwargs, x1, x2)
    keyword_args.bind(kwargs1, kwargs2)  # a TypeError now for values no network can take untraced
    return routes.Sides(dict(kwargs), kwargs1, kwargs2)


def _announcer(progress: bool) -> Callable[[str], None]:
    def announce(message: str) -> None:
        _log.info(message)
        if progress:
            print(message, file=sys.stderr, flush=True)

    return announce


def _job_plan(job: _Job, stored: dict | None) -> planning.Plan:
    """The job's plan: tile size, resident blocks and memory (a resumed run keeps its tile size)."""
    lanes = job.lanes
    user_budget = job.budget if job.budget is not None else planning.default_budget(lanes.devices)
    job.plan = _plan(
        job.programs,
        job.params,
        job.x1,
        job.x2,
        job.n1,
        job.n2,
        job.symmetric,
        planning.lane_budget(user_budget, lanes.devices),
        job.tile_size or (stored["tile_size"] if stored else None),
        lanes.count if lanes.platform == "cpu" else 1,
    )
    return job.plan


def _run(job: _Job, fresh: probe.Probe | None, progress: bool) -> Any:
    """The run proper: the record checked (or created), the missing tiles computed, the result checked."""
    programs, params, x1h, x2h, lanes, expected, path = (
        job.programs,
        job.params,
        job.x1,
        job.x2,
        job.lanes,
        job.expected,
        job.path,
    )
    symmetric, dtype = expected["symmetric"], np.dtype(expected["dtype"])
    processes, process = jax.process_count(), jax.process_index()
    record = storage.Record(path) if path is not None else None
    # A resumed run may take another route than the one that started the output (every route
    # computes the same kernel; the probe checks the fresh tiles against it).
    stored = _existing(path, record, expected, fresh, job.tile_size, job.precision) if record else None
    plan = _job_plan(job, stored)
    output = _open_output(path, record, expected, plan, stored, process, dtype, fresh)
    params_dev = jax.device_put(params, lanes.replicated)
    groups = plan.super_rows()
    all_tiles = plan.tiles()
    work = [sum(1 for t in all_tiles if t[0] in g) for g in groups]
    mine = [groups[g] for g in sharding.assign(work, processes, process)]
    my_rows = {i for g in mine for i in g}
    my_tiles = [t for t in all_tiles if t[0] in my_rows]
    good = _verified(output, record, plan, set(my_tiles)) if record is not None else set()
    todo = [t for t in my_tiles if t not in good]
    checks = [] if job.allow_non_finite else [_FiniteCheck(plan, x1h, x2h)]
    if fresh:
        checks.append(probe.TileCheck(fresh, plan.tile, symmetric, plan.mode, lanes.platform, job.precision))

    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(my_tiles),
        initial=len(my_tiles) - len(todo),
        unit="tile",
        desc=f"kernel_matrix [{programs.route}, tile {plan.tile}]",
        disable=not progress,
        smoothing=0.1,
    )
    writer = _Writer(output, record, plan, bar, checks, programs.route)
    start = time.perf_counter()
    try:
        if programs.mode == "features":
            compute.run_features(programs, plan, params_dev, x1h, x2h, mine, set(todo), writer.put)
        else:
            compute.run_direct(programs, plan, params_dev, x1h, x2h, todo, writer.put)
        writer.close()
    finally:
        writer.stop()
        bar.close()
    job.run_seconds = time.perf_counter() - start
    if processes > 1:
        storage.wait_for(lambda: record.count() >= len(all_tiles), f"all {len(all_tiles)} tiles of {path}")
    else:
        # Never return an unfinished kernel: every tile must be computed now or verified before.
        finished = set(record.done()) if record is not None else good | writer.written
        missing = sorted(set(all_tiles) - finished)
        if missing:
            raise RuntimeError(
                f"kernel_matrix finished with {len(missing)} of {len(all_tiles)} tiles of "
                f"{str(path) if path is not None else 'the kernel'} not recorded (e.g. tiles {missing[:3]}); "
                "the kernel is incomplete, so it is not returned. Run the same call again to compute them."
            )
    output.close()
    return output.result()


def _tile_size(tile_size: Any) -> int | None:
    if tile_size is None:
        return None
    return _checks.positive_int("tile_size", tile_size)


def _host_inputs(name: str, x: PyTree) -> tuple[PyTree, int]:
    """`x` with NumPy leaves, and its batch size (axis 0 of every leaf)."""
    leaves = jax.tree_util.tree_leaves(x)
    if not leaves:
        raise _checks.UsageError(f"`{name}` has no arrays; pass an array of examples along axis 0.")
    x = jax.tree_util.tree_map(np.asarray, x)
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree_util.tree_leaves(x)}
    if None in sizes or len(sizes) != 1:
        shapes = [np.shape(leaf) for leaf in jax.tree_util.tree_leaves(x)]
        raise _checks.UsageError(
            f"`{name}` must hold examples along axis 0 of every array, in equal numbers; got shapes {shapes}."
        )
    n = sizes.pop()
    if n < 1:
        raise _checks.UsageError(
            f"`{name}` has no examples (shape {np.shape(leaves[0])}); pass at least one."
        )
    return x, n


def _check_same_dtypes(x1: PyTree, x2: PyTree) -> None:
    """A `TypeError` for x2 of another dtype than x1: each route compiles one program for both."""
    paths = jax.tree_util.tree_leaves_with_path(x1)
    for (path, a), b in zip(paths, jax.tree_util.tree_leaves(x2), strict=True):
        if a.dtype != b.dtype:
            where = f" (leaf {jax.tree_util.keystr(path)})" if path else ""
            raise _checks.UsageTypeError(
                f"`x2` has dtype {b.dtype} where `x1` has {a.dtype}{where}; kernel_matrix computes both "
                f"with one program per route. Pass both in one dtype, e.g. x2.astype(x1.dtype)."
            )


def _check_finite_rows(name: str, x: PyTree, n: int) -> None:
    bad = np.zeros(n, bool)
    for leaf in jax.tree_util.tree_leaves(x):
        # jnp.issubdtype knows bfloat16, which NumPy's puts outside np.inexact.
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            bad |= ~np.isfinite(leaf.reshape(n, -1)).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        raise _checks.UsageError(
            f"`{name}` has a non-finite value (NaN or inf) in row {first} (the first bad row; "
            f"{int(bad.sum())} of {n} rows in all). Its kernel entries would be NaN: remove or repair "
            f"those rows, e.g. {name}[np.isfinite({name}).reshape(len({name}), -1).all(axis=1)]."
        )


def _check_finite_params(params: PyTree) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        a = np.asarray(leaf) if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) else None
        if a is not None and not np.isfinite(a).all():
            raise _checks.UsageError(
                f"`params` has non-finite values (NaN or inf) in leaf {jax.tree_util.keystr(path)} of shape "
                f"{a.shape}; every kernel entry would be NaN. Pass finite parameters."
            )


def _dtypes(tree: PyTree) -> str:
    names = sorted({str(jnp.result_type(leaf)) for leaf in jax.tree_util.tree_leaves(tree)})
    return "/".join(names) or "none"


def _fn_name(fn: Callable) -> str:
    if isinstance(fn, EmpiricalKernelFn):
        return " ".join(f"{k}={v}" for k, v in fn.describe().items())
    return describe(fn)


def _programs(
    fn: Callable,
    kwargs: routes.Sides,
    lanes: sharding.Lanes,
    params: PyTree,
    x1: PyTree,
    x2: PyTree,
    entries: int,
    rows: int,
) -> tuple[Any, np.dtype, routes.Choice]:
    """The programs of the route `fn` takes (see `routes`), the kernel's dtype, and the choice."""
    try:
        programs, choice = routes.choose(fn, kwargs, lanes, params, x1, entries, rows)
        if programs.mode == "features":
            _, dtype = programs.out_struct(params, x1)
            return programs, dtype, choice
        result = programs.out_struct(params, x1, x2)
    except TypeError as e:
        # The network refuses these inputs (e.g. stax's convolutions take only their weights' dtype).
        raise _checks.UsageTypeError(
            f"`fn` fails on `x1` of dtype {_dtypes(x1)} with `params` of dtype {_dtypes(params)}: {e} "
            "kernel_matrix takes the inputs `fn` takes: pass x1 (and x2) in a dtype the network accepts, "
            "e.g. x1.astype(np.float32)."
        ) from e
    if not isinstance(result, jax.ShapeDtypeStruct) or tuple(result.shape) != (2, 3):
        shape = getattr(result, "shape", None) or jax.tree_util.tree_map(lambda a: a.shape, result)
        raise _checks.UsageError(
            "`fn` must return an (n1, n2) array, one kernel entry per pair of examples; for batches of 2 "
            f"and 3 examples it returned {shape}. kernel_matrix tiles 2-D kernels only: trace the "
            "network's output axes (e.g. trace_axes=(-1,)) or pass a function that selects one kernel."
        )
    return programs, np.dtype(result.dtype), choice


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
        # The probes' memory and costs (cached: AUTO compiled them already); with a tile size given,
        # only its seconds, which the plan's choice of resident rows does not need.
        fitted = None if tile else programs.costs(params, x1, compute.PROBE_ROWS)
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


def _existing(
    path: Any,
    record: storage.Record,
    expected: dict,
    fresh: probe.Probe,
    tile_size: int | None,
    precision: Any,
) -> dict | None:
    """The stored record of `path` if it matches these inputs; else a ValueError, nothing touched."""
    meta = record.load_meta()
    start_over = f"Pass another `output`, or delete {str(path)!r} and {str(record.dir)!r} to start over."
    if meta is None:
        if path.exists():
            raise _checks.UsageError(
                f"`output`={str(path)!r} already exists and was not written by kernel_matrix (it has no tile "
                f"record {str(record.dir)!r}); nothing was overwritten. Delete it or choose another path."
            )
        return None
    problems = storage.describe_mismatch(meta, expected)
    if problems:
        raise _checks.UsageError(
            f"`output`={str(path)!r} holds another kernel than these arguments give: "
            + "; ".join(problems)
            + f". Nothing was overwritten. {start_over}"
        )
    changed = probe.mismatch(probe.Probe.from_json(meta["probe"]), fresh, precision)
    if changed:
        raise _checks.UsageError(
            f"`output`={str(path)!r} holds another kernel than these arguments give: {changed}. "
            f"Nothing was overwritten. {start_over}"
        )
    if tile_size is not None and tile_size != meta["tile_size"]:
        raise _checks.UsageError(
            f"`output`={str(path)!r} was started with tile_size={meta['tile_size']}, not {tile_size}; "
            f"pass tile_size={meta['tile_size']} (or None) to resume it, or another `output`."
        )
    if path.exists():
        header = storage.output_class(path).header(path)
        if header != (tuple(expected["shape"]), np.dtype(expected["dtype"])):
            raise _checks.UsageError(
                f"`output`={str(path)!r} does not hold the {tuple(expected['shape'])} {expected['dtype']} "
                f"array its tile record describes (found {header}); nothing was overwritten. Delete it and "
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
    fresh: probe.Probe | None,
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
            "probe": fresh.to_json(),
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


class NonFiniteKernelError(ValueError):
    """`kernel_matrix` computed NaN or inf kernel entries (and was not asked to keep them)."""


@dataclasses.dataclass
class _FiniteCheck:
    """Raises `NonFiniteKernelError` for a tile with a NaN or inf entry, naming its rows."""

    plan: planning.Plan
    x1: PyTree
    x2: PyTree

    def __call__(self, i: int, j: int, tile: np.ndarray) -> None:
        bad = ~np.isfinite(tile)
        if not bad.any():
            return
        (r0, _), (c0, _) = _extent(self.plan, i, j)
        # An input whose features are not finite spoils its whole row (or column) of the tile: those
        # are the likely causes; without such a row or column, the inputs of every bad entry.
        rows, cols = np.flatnonzero(bad.all(axis=1)), np.flatnonzero(bad.all(axis=0))
        if not len(rows) and not len(cols):
            rows, cols = np.flatnonzero(bad.any(axis=1)), np.flatnonzero(bad.any(axis=0))
        rows, cols = rows + r0, cols + c0
        r, c = (int(a[0]) for a in np.nonzero(bad))
        if self.plan.symmetric:
            named = {"x1": np.union1d(rows, cols)}
            inputs = {"x1": self.x1}
        else:
            named = {name: ids for name, ids in (("x1", rows), ("x2", cols)) if len(ids)}
            inputs = {"x1": self.x1, "x2": self.x2}
        where = " and ".join(f"{name} rows {_spans(ids)}" for name, ids in named.items())
        largest = max(_largest(inputs[name], ids) for name, ids in named.items())
        raise NonFiniteKernelError(
            f"kernel_matrix computed {int(bad.sum())} non-finite entries (NaN or inf) in tile ({i}, {j}), "
            f"e.g. K[{r0 + r}, {c0 + c}] = {tile[r, c]}: the network's outputs or gradients are not finite "
            f"for inputs {where} (the largest |input| there is {largest:.3g}: an overflow, or a NaN inside "
            "the network). Nothing of this tile was written or recorded. Rescale or remove those inputs or "
            "fix the network, or pass allow_non_finite=True to keep non-finite entries."
        )


def _largest(x: PyTree, rows: np.ndarray) -> float:
    values = [np.abs(leaf[rows].astype(np.float64)).max(initial=0.0) for leaf in jax.tree_util.tree_leaves(x)]
    return float(max(values, default=0.0))


def _spans(indices: np.ndarray, most: int = 3) -> str:
    """Sorted indices as ranges: ``0..3, 7`` (the first `most` ranges, then how many more)."""
    spans: list[list[int]] = []
    for k in (int(v) for v in indices):
        if spans and k == spans[-1][1] + 1:
            spans[-1][1] = k
        else:
            spans.append([k, k])
    text = ", ".join(f"{a}..{b}" if b > a else f"{a}" for a, b in spans[:most])
    return text + (f" and {len(spans) - most} more ranges" if len(spans) > most else "")


@dataclasses.dataclass
class _Writer:
    """Writes tiles, then records them, in a background thread (overlapping the next tile's compute)."""

    output: Any
    record: storage.Record | None
    plan: planning.Plan
    bar: Any
    # Each raises for a tile that must not be recorded (non-finite, or disagreeing with fn).
    checks: list[Callable[[int, int, np.ndarray], None]] = dataclasses.field(default_factory=list)
    route: str | None = None  # recorded in each tile's marker

    def __post_init__(self):
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.written: set[tuple[int, int]] = set()
        self.thread = threading.Thread(target=self._run, name="kernel_matrix-writer", daemon=True)
        self.thread.start()

    def put(self, i: int, j: int, tile: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        (r0, r1), (c0, c1) = _extent(self.plan, i, j)
        # In the output's dtype (a bfloat16 kernel is stored as float32, exactly): the digest is of
        # what is stored, and the checks see it.
        tile = np.ascontiguousarray(tile[: r1 - r0, : c1 - c0], self.output.dtype)  # without the padding
        for check in self.checks:  # before the tile is written or recorded
            check(i, j, tile)
        self.queue.put((i, j, tile))

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
                    self.record.mark(i, j, storage.digest(tile), (r0, r1), (c0, c1), self.route)
                self.written.add((i, j))
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
