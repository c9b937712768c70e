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
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from nt_pntk._src import checks as _checks
from nt_pntk._src import deprecations, measure
from nt_pntk._src.tiled import arguments, compute, planning, probe, routes, sharding, storage, writer
from nt_pntk._src.tiled.writer import NonFiniteKernelError  # noqa: F401 (raised by the writer; nt_pntk.tiled's)

PyTree = Any


_log = logging.getLogger(__name__)


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
        job.expected["function"] = {"name": writer.function_name(fn), "jaxpr_blake2b": fresh.jaxpr}
        # One run at a time per output; the processes of one distributed run share it (process 0 locks).
        lock = storage.OutputLock(job.path, _announcer(progress)) if jax.process_index() == 0 else None
        with lock or contextlib.nullcontext():
            result = _run(job, fresh, progress)
    return (result, job.statistics()) if stats else result


@dataclasses.dataclass
class _Job(arguments.Inputs):
    """A kernel_matrix call, checked (`arguments.Inputs`): the route's programs, the record's expectations."""

    fn: Callable
    sides: routes.Sides
    lanes: sharding.Lanes
    programs: compute.Programs
    choice: routes.Choice
    expected: dict
    precision: Any  # the least precise dtype computed in: the probe's tolerances follow it
    plan: planning.Plan | None = None
    run_seconds: float = 0.0
    allow_non_finite: bool = False

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
    args = arguments.inputs(fn, x1, x2, params, output, memory_budget, tile_size)
    sides = arguments.sides(fn, apply_fn_kwargs, args.x1, None if args.symmetric else args.x2)
    lanes = sharding.Lanes()
    programs, dtype, choice = arguments.programs(fn, sides, lanes, args)
    precision = probe.precision(dtype, args.params, args.x1, args.x2)
    if args.path is not None and dtype.kind == "V":
        # Neither .npy nor Zarr has ml_dtypes' types (bfloat16, float8): stored exactly as float32.
        dtype = np.dtype(np.float32)
    _log.info("kernel_matrix %s", choice.describe())
    expected = writer.expectations(args, apply_fn_kwargs, dtype, programs.route)
    return _Job(
        **vars(args),
        fn=fn,
        sides=sides,
        lanes=lanes,
        programs=programs,
        choice=choice,
        expected=expected,
        precision=precision,
    )


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
    job.plan = job.programs.plan(
        job.params,
        job.x1,
        job.x2,
        job.n1,
        job.n2,
        job.symmetric,
        planning.lane_budget(user_budget, lanes.devices),
        job.tile_size or (stored["tile_size"] if stored else None),
        lanes.count if lanes.platform == "cpu" else 1,  # CPU devices share the budget of the host
    )
    return job.plan


def _run(job: _Job, fresh: probe.Probe | None, progress: bool) -> Any:
    """The run proper: the record checked (or created), the missing tiles computed, the result checked."""
    processes, process = jax.process_count(), jax.process_index()
    record = storage.Record(job.path) if job.path is not None else None
    # A resumed run may take another route than the one that started the output (every route
    # computes the same kernel; the probe checks the fresh tiles against it).
    stored = (
        writer.existing(job.path, record, job.expected, fresh, job.tile_size, job.precision)
        if record
        else None
    )
    plan = _job_plan(job, stored)
    output = writer.open_output(job.path, record, job.expected, plan, stored, process, fresh)
    params = jax.device_put(job.params, job.lanes.replicated)
    groups, all_tiles = plan.super_rows(), plan.tiles()
    work = [sum(1 for t in all_tiles if t[0] in g) for g in groups]
    mine = [groups[g] for g in sharding.assign(work, processes, process)]
    my_rows = {i for g in mine for i in g}
    my_tiles = [t for t in all_tiles if t[0] in my_rows]
    good = writer.verified(output, record, plan, set(my_tiles)) if record is not None else set()
    todo = [t for t in my_tiles if t not in good]
    checks = [] if job.allow_non_finite else [writer.FiniteCheck(plan, job.x1, job.x2)]
    if fresh:
        checks.append(
            probe.TileCheck(fresh, plan.tile, job.symmetric, plan.mode, job.lanes.platform, job.precision)
        )
    route = job.programs.route
    tiles = writer.Writer(
        output, record, plan, checks, route, len(my_tiles), len(my_tiles) - len(todo), progress
    )
    start = time.perf_counter()
    with tiles:
        job.programs.run(plan, params, job.x1, job.x2, mine, todo, tiles.put)
    job.run_seconds = time.perf_counter() - start
    writer.check_complete(record, job.path, all_tiles, good | tiles.written, processes)
    output.close()
    return output.result()
