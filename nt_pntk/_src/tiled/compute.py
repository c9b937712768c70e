"""The per-device programs and the loops that run them, one tile per local device per step.

Two modes:

* ``features`` (Jacobian reuse), for kernel functions with per-example Jacobian
  features F (``fn.features_fn()`` of an `EmpiricalKernelFn`): rows are taken in
  groups of k row blocks (a "super-row"); the Jacobians of its k row blocks are
  computed once and stay on every device, and each column block's Jacobian is
  computed once per super-row and contracted with all k of them,
  ``K[i, j] = Σ_l F_l(rows i) F_l(cols j)ᵀ``. With ``x2=None`` only tiles with
  j ≥ i are computed, and column blocks inside the super-row reuse its row
  Jacobians. When every block fits (k = all row blocks), each example's
  Jacobian is computed exactly once.
* ``direct``: any other function is evaluated tile by tile, ``fn(x1[rows],
  x2[cols], params)``.

With D local devices every step computes D tiles, one per device (see
``sharding``): in ``features`` mode each device holds a copy of the super-row's
row Jacobians and gets its own column block of a stripe of D column blocks.

The last block of rows or columns is padded (repeating its last example) to the
tile size and cropped afterwards, so there is one compiled shape for any N.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from nt_pntk._src import measure
from nt_pntk._src.kernels import keyword_args
from nt_pntk._src.kernels.features import NotAGramKernel
from nt_pntk._src.tiled import planning, sharding

# Rows of the probe block: the features' shapes and the cost per row and per entry are taken there.
PROBE_ROWS = 64
# Tile sizes at which an opaque tile program's memory is measured, to fit its curve.
PROBE_DIRECT = (8, 32, 128)

PyTree = Any
Emit = Callable[[int, int, np.ndarray], None]


def block(x: PyTree, b: int, tile: int) -> PyTree:
    """Rows ``[b·tile, (b+1)·tile)`` of every leaf of host PyTree `x`, padded with its last row."""

    def take(leaf: np.ndarray) -> np.ndarray:
        n = leaf.shape[0]
        return leaf[np.minimum(np.arange(b * tile, (b + 1) * tile), n - 1)]

    return jax.tree_util.tree_map(take, x)


def block_struct(x: PyTree, tile: int) -> PyTree:
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((tile, *a.shape[1:]), a.dtype), x)


def struct(tree: PyTree) -> PyTree:
    # Weak types kept: a Python scalar parameter promotes as jax.jit would promote it.
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype, weak_type=getattr(a, "weak_type", False)), tree
    )


def _squeeze(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda a: a[0], tree)


def _expand(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda a: a[None], tree)


def _dot_t(a: jax.Array, b: jax.Array) -> jax.Array:
    return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())))


def gram(rows: Sequence[Any], cols: Sequence[Any]) -> jax.Array:
    """Σ_l rows_l cols_lᵀ over Gram features: a (T, size_l) array of Jacobian rows, or a pair of
    structured factors (A, D) whose share is (A_rows A_colsᵀ) ⊙ (D_rows D_colsᵀ)."""
    total = None
    for a, b in zip(rows, cols, strict=True):
        term = _dot_t(a[0], b[0]) * _dot_t(a[1], b[1]) if isinstance(a, tuple) else _dot_t(a, b)
        total = term if total is None else total + term
    return total


class Programs(Protocol):
    """A route's programs, as `kernel_matrix` uses them: `FeaturePrograms` or `DirectPrograms`."""

    mode: str  # the plan's and the record's: 'features' (Jacobian reuse) or 'direct' (opaque tiles)
    route: str  # the route's name (see `routes`)
    lanes: sharding.Lanes
    calls: collections.Counter  # programs run, by name
    compiled: dict[str, Any]  # the programs that ran, by name (after `plan`)

    def kernel_struct(self, params: PyTree, x1: PyTree, x2: PyTree) -> Any:
        """The kernel of a batch of 2 rows and 3 columns, as shapes (a TypeError for inputs the
        network refuses)."""

    def plan(
        self,
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
        """The plan within one device's `budget` (`share` devices split the user's), or for `tile`;
        compiles the programs that will run (`planning.BudgetTooSmall` if none fits)."""

    def run(
        self,
        plan: planning.Plan,
        params: PyTree,
        x1: PyTree,
        x2: PyTree,
        super_rows: Sequence[range],
        todo: Sequence[tuple[int, int]],
        emit: Emit,
    ) -> None:
        """Computes the tiles `todo` of the row blocks in `super_rows`, passing each to `emit`."""


class FeaturePrograms:
    """The Jacobian-block and Gram-tile programs, per device and sharded over the lanes."""

    mode = "features"

    def __init__(
        self,
        features: Callable,
        kwargs1: dict,
        kwargs2: dict,
        lanes: sharding.Lanes,
        route: str = "rows",
    ):
        self.lanes = lanes
        self.route = route
        self.calls: collections.Counter = collections.Counter()  # programs run, by name
        self._traced: dict = {}
        self._costs: dict = {}
        # x1's and x2's keyword arguments: static values closed over (never traced), arrays an argument
        # of the one features program, x1's for row blocks and x2's for column blocks.
        bound = keyword_args.bind(kwargs1, kwargs2)
        self.kwargs_rows, self.kwargs_cols = bound.dynamic1, bound.dynamic2
        self._sides_differ = struct(bound.dynamic1) != struct(bound.dynamic2)

        def jac_body(params: PyTree, x: PyTree, kwargs: dict) -> list[jax.Array]:
            return list(features(x, params, **bound.static, **kwargs))

        self.jac_body = jac_body
        # One jit object for the single-device probes: lowering it again at a shape reuses its trace.
        self.jac_single = jax.jit(jac_body)
        spec = P(sharding.AXIS)
        self.jac = jax.jit(
            sharding.shard_map(
                lambda p, x, kw: _expand(jac_body(p, _squeeze(x), kw)),
                mesh=lanes.mesh,
                in_specs=(P(), spec, P()),
                out_specs=spec,
                check_vma=False,
            )
        )
        self.gram = jax.jit(
            sharding.shard_map(
                lambda r, c: gram(_squeeze(r), _squeeze(c))[None],
                mesh=lanes.mesh,
                in_specs=(spec, spec),
                out_specs=spec,
                check_vma=False,
            )
        )

    def _probe_features(self, params: PyTree, x: PyTree) -> Any:
        """The features of a probe block, as shapes (traced once per params and input shapes, by the
        jit object whose lowering at the probe size reuses the trace: a trace can take a second)."""
        if self._sides_differ:
            # One program computes both sides' features; other shapes would need a second one.
            raise NotAGramKernel("x1's and x2's keyword arguments differ in shape or dtype")
        key = (_shapes_key(params), _shapes_key(x))
        if key not in self._traced:
            self._traced[key] = jax.eval_shape(
                self.jac_single, struct(params), block_struct(x, PROBE_ROWS), struct(self.kwargs_rows)
            )
        return self._traced[key]

    def has_factors(self, params: PyTree, x: PyTree) -> bool:
        """Whether the features hold structured factor pairs (a dense layer worth factoring)."""
        return any(isinstance(entry, tuple) for entry in self._probe_features(params, x))

    def out_struct(self, params: PyTree, x: PyTree) -> tuple[list[jax.ShapeDtypeStruct], np.dtype]:
        """The feature arrays of a 2-row block, and the kernel's dtype (raises NotAGramKernel)."""
        leaves = jax.tree_util.tree_leaves(self._probe_features(params, x))
        return leaves, np.dtype(jnp.result_type(*[leaf.dtype for leaf in leaves]))

    def kernel_struct(self, params: PyTree, x1: PyTree, x2: PyTree) -> jax.ShapeDtypeStruct:
        """A Gram kernel of 2 rows and 3 columns in the features' dtype (raises NotAGramKernel)."""
        return jax.ShapeDtypeStruct((2, 3), self.out_struct(params, x1)[1])

    def plan(
        self,
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
        """Tile size and resident row blocks: see `Programs.plan`."""
        args = (n1, n2, symmetric, budget)
        # The probes' memory and costs (cached: AUTO compiled them already); with a tile size given,
        # only its seconds, which the plan's choice of resident rows does not need.
        fitted = None if tile else self.costs(params, x1, PROBE_ROWS)
        return planning.fit_then_check(
            lambda most: planning.plan_features(fitted, *args, None, share, most),
            lambda t: planning.plan_features(self.measured_costs(params, x1, t, fitted), *args, t, share),
            tile,
            planning.MAX_TILE,
        )

    def run(
        self,
        plan: planning.Plan,
        params: PyTree,
        x1: PyTree,
        x2: PyTree,
        super_rows: Sequence[range],
        todo: Sequence[tuple[int, int]],
        emit: Emit,
    ) -> None:
        run_features(self, plan, params, x1, x2, super_rows, set(todo), emit)

    def block_structs(self, params: PyTree, x: PyTree, t: int, *, devices: int | None = None) -> Any:
        """The feature block of `t` rows (features' own tree: arrays and factor pairs), per device
        stacked on a leading axis of `devices` (sharded) when given."""
        features = self._probe_features(params, x)
        if devices is None:
            return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((t, a.shape[1]), a.dtype), features)
        sharded = self.lanes.sharded
        return jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct((devices, t, a.shape[1]), a.dtype, sharding=sharded), features
        )

    def costs(self, params: PyTree, x: PyTree, t: int) -> planning.FeatureCosts:
        """Memory of the single-device features program at tile `t` (compiled), and the seconds per
        row and per entry from XLA's cost analysis, as `planning.FeatureCosts` (once per shapes)."""
        key = (_shapes_key(params), _shapes_key(x), t)
        if key not in self._costs:
            self._costs[key] = self._measure_costs(params, x, t)
        return self._costs[key]

    def _lowered(self, params: PyTree, x: PyTree, t: int) -> tuple[Any, Any]:
        """The single-device features and Gram programs at tile `t`, lowered (once per shapes)."""
        key = ("lowered", _shapes_key(params), _shapes_key(x), t)
        if key not in self._traced:
            blocks = self.block_structs(params, x, t)
            self._traced[key] = (
                self.jac_single.lower(struct(params), block_struct(x, t), struct(self.kwargs_rows)),
                jax.jit(gram).lower(blocks, blocks),
            )
        return self._traced[key]

    def lowered_seconds(self, params: PyTree, x: PyTree, t: int) -> tuple[float, float]:
        """Seconds per feature row and per kernel entry, from XLA's cost analysis of the programs at
        tile `t`, lowered but not compiled (a fraction of a compile's time: AUTO's comparison)."""
        jac, tile = self._lowered(params, x, t)
        return measure.estimated_seconds(jac) / t, measure.estimated_seconds(tile) / (t * t)

    def _sizes(self, params: PyTree, x: PyTree) -> tuple[int, int, np.dtype]:
        """Bytes of one example's features, bytes of the parameters, and the kernel's dtype."""
        leaves, dtype = self.out_struct(params, x)
        row_bytes = sum(leaf.shape[1] * leaf.dtype.itemsize for leaf in leaves)
        params_bytes = sum(
            np.dtype(a.dtype).itemsize * int(np.size(a)) for a in jax.tree_util.tree_leaves(params)
        )
        return row_bytes, params_bytes, dtype

    def _measure_costs(self, params: PyTree, x: PyTree, t: int) -> planning.FeatureCosts:
        row_bytes, params_bytes, dtype = self._sizes(params, x)
        lowered, _ = self._lowered(params, x, t)
        # Beyond its rows, the program holds the parameters and temporaries growing with the rows. Every
        # buffer it allocates is written once, so the bytes it accesses bound its peak from above: a line
        # from the parameters at 0 rows to that bound, without a compile (the run's compile checks the
        # tile chosen, and a smaller one is taken if it does not fit).
        accessed = measure.cost_analysis(lowered).get("bytes accessed", 0.0)
        row_seconds, entry_seconds = self.lowered_seconds(params, x, t)
        return planning.FeatureCosts(
            row_bytes=row_bytes,
            jac_extra=planning.Curve.fit([(0, params_bytes), (t, max(accessed, params_bytes))], linear=True),
            # The output tile and as much again for XLA's temporaries (the run's compile checks it).
            gram_extra=planning.Curve(0.0, 0.0, 2.0 * dtype.itemsize),
            params_bytes=params_bytes,
            out_itemsize=dtype.itemsize,
            row_seconds=row_seconds,
            entry_seconds=entry_seconds,
        )

    def compile(self, params: PyTree, x: PyTree, t: int) -> tuple[int, int]:
        """Compiles the sharded programs for tile `t` (used by the run); their per-device peak bytes."""
        d, lanes = self.lanes.count, self.lanes
        params_s = _placed(struct(params), lanes.replicated)
        x_s = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct((d, t, *a.shape[1:]), a.dtype, sharding=lanes.sharded), x
        )
        blocks = self.block_structs(params, x, t, devices=d)
        jac = self.jac.lower(params_s, x_s, _placed(struct(self.kwargs_rows), lanes.replicated)).compile()
        gram_ = self.gram.lower(blocks, blocks).compile()
        self.run_jac, self.run_gram = jac, gram_
        self.compiled = {"features": jac, "gram": gram_}
        # memory_analysis of an SPMD program is per device.
        return measure.peak_bytes(jac), measure.peak_bytes(gram_)

    def measured_costs(
        self, params: PyTree, x: PyTree, t: int, fitted: planning.FeatureCosts | None = None
    ) -> planning.FeatureCosts:
        """Memory of the sharded programs that will run, at tile `t` (compiles them).

        With `fitted`, the larger of the two estimates is kept.
        """
        row_bytes, params_bytes, dtype = self._sizes(params, x)
        jac_bytes, gram_bytes = self.compile(params, x, t)
        jac_extra, gram_extra = jac_bytes - t * row_bytes, gram_bytes - 2 * t * row_bytes
        seconds = {}
        if fitted is not None:
            jac_extra, gram_extra = max(jac_extra, fitted.jac_extra(t)), max(gram_extra, fitted.gram_extra(t))
            seconds = dict(row_seconds=fitted.row_seconds, entry_seconds=fitted.entry_seconds)
        return planning.FeatureCosts(
            row_bytes,
            planning.Curve(jac_extra),
            planning.Curve(gram_extra),
            params_bytes,
            dtype.itemsize,
            **seconds,
        )


def _shapes_key(tree: PyTree) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return (
        treedef,
        tuple((np.shape(a), str(getattr(a, "dtype", None) or np.result_type(a))) for a in leaves),
    )


def _placed(tree: PyTree, sharding_: Any) -> PyTree:
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding_), tree)


class DirectPrograms:
    """``fn`` on one tile per device, sharded over the lanes."""

    mode = "direct"

    def __init__(self, tile: Callable, lanes: sharding.Lanes, route: str = "direct"):
        """`tile`: ``tile(x_rows, x_cols, params)``, the kernel function with the call's keyword
        arguments (`routes.tile_function`)."""
        self.lanes = lanes
        self.route = route
        self.calls: collections.Counter = collections.Counter()  # programs run, by name

        def body(params: PyTree, xr: PyTree, xc: PyTree) -> jax.Array:
            return tile(xr, xc, params)

        self.body = body
        spec = P(sharding.AXIS)
        self.tile = jax.jit(
            sharding.shard_map(
                lambda p, xr, xc: body(p, _squeeze(xr), _squeeze(xc))[None],
                mesh=lanes.mesh,
                in_specs=(P(), spec, spec),
                out_specs=spec,
                check_vma=False,
            )
        )

    def out_struct(self, params: PyTree, x1: PyTree, x2: PyTree) -> jax.ShapeDtypeStruct:
        return jax.eval_shape(self.body, struct(params), block_struct(x1, 2), block_struct(x2, 3))

    def kernel_struct(self, params: PyTree, x1: PyTree, x2: PyTree) -> Any:
        return self.out_struct(params, x1, x2)

    def plan(
        self,
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
        """The largest tile that fits: see `Programs.plan`."""
        args = (n1, n2, symmetric, budget)
        curve = None if tile else self.peak_curve(params, x1, x2, PROBE_DIRECT)

        def fitted_peak(s: int) -> float:
            return curve(s) + planning.staging_bytes(s, 8)

        def measured(t: int) -> planning.Plan:
            peak = self.measured_peak(params, x1, x2, t) + planning.staging_bytes(t, 8)
            return planning.plan_direct(lambda s: peak, *args, t, share)

        return planning.fit_then_check(
            lambda most: planning.plan_direct(fitted_peak, *args, None, share, most),
            measured,
            tile,
            planning.MAX_DIRECT_TILE,
        )

    def run(
        self,
        plan: planning.Plan,
        params: PyTree,
        x1: PyTree,
        x2: PyTree,
        super_rows: Sequence[range],
        todo: Sequence[tuple[int, int]],
        emit: Emit,
    ) -> None:
        del super_rows  # one tile at a time: `todo` holds only this process's tiles
        run_direct(self, plan, params, x1, x2, todo, emit)

    def peak_curve(
        self, params: PyTree, x1: PyTree, x2: PyTree, sizes: tuple[int, int, int]
    ) -> planning.Curve:
        body = jax.jit(self.body)
        points = [
            (t, planning.program_bytes(body, struct(params), block_struct(x1, t), block_struct(x2, t)))
            for t in sizes
        ]
        return planning.Curve.fit(points)

    def measured_peak(self, params: PyTree, x1: PyTree, x2: PyTree, t: int) -> int:
        """Compiles the sharded tile program for tile `t` (used by the run); its per-device peak bytes."""
        d, lanes = self.lanes.count, self.lanes

        def stacked(x: PyTree) -> PyTree:
            return jax.tree_util.tree_map(
                lambda a: jax.ShapeDtypeStruct((d, t, *a.shape[1:]), a.dtype, sharding=lanes.sharded), x
            )

        self.run_tile = self.tile.lower(
            _placed(struct(params), lanes.replicated), stacked(x1), stacked(x2)
        ).compile()
        self.compiled = {"tile": self.run_tile}
        return measure.peak_bytes(self.run_tile)


def _fetch(lanes: sharding.Lanes, out: jax.Array) -> list[np.ndarray]:
    return [np.asarray(a)[0] for a in lanes.split(out)]


class _Pending:
    """One step in flight: the next step is dispatched before this one's tiles are fetched and emitted."""

    def __init__(self, lanes: sharding.Lanes, emit: Emit):
        self.lanes, self.emit, self.step = lanes, emit, None

    def push(self, out: jax.Array, work: Sequence[tuple[int, int, int]]) -> None:
        """`output`: (D, T, T) tiles just dispatched; `work`: (i, j, lane) of the real ones."""
        self.drain()
        self.step = (out, work)

    def drain(self) -> None:
        if self.step is not None:
            out, work = self.step
            self.step = None
            tiles = _fetch(self.lanes, out)
            for i, j, lane in work:
                self.emit(i, j, tiles[lane])


def run_features(
    programs: FeaturePrograms,
    plan: planning.Plan,
    params: PyTree,
    x1: PyTree,
    x2: PyTree,
    super_rows: Sequence[range],
    todo: set[tuple[int, int]],
    emit: Emit,
) -> None:
    """Computes the tiles in `todo` of the given super-rows (see the module docstring).

    Allocation order matters on CPU: a column block's buffers are freed only after
    the next block's inputs are placed, just before its Jacobian is dispatched, so
    the allocator hands the same memory to the new block instead of splitting it
    for small buffers (which grows the heap, stripe after stripe).
    """
    lanes, t, d = programs.lanes, plan.tile, programs.lanes.count
    cols_x = x1 if plan.symmetric else x2
    pending = _Pending(lanes, emit)
    to_free: list[Any] = []  # column blocks of the previous stripe

    kwargs_rows = jax.device_put(programs.kwargs_rows, lanes.replicated)
    kwargs_cols = kwargs_rows if plan.symmetric else jax.device_put(programs.kwargs_cols, lanes.replicated)

    def jacobians(x: PyTree, ids: Sequence[int | None], kwargs: dict) -> list[Any]:
        """One Jacobian block per device (None: a dummy input, result discarded)."""
        real = next(i for i in ids if i is not None)
        stacked = lanes.put_stack([block(x, real if i is None else i, t) for i in ids])
        free()
        programs.calls["features"] += 1
        return lanes.split(programs.run_jac(params, stacked, kwargs))

    def free() -> None:
        pending.drain()
        while to_free:
            sharding.delete(to_free.pop())

    for rows in super_rows:
        tiles = sorted(tile for tile in todo if tile[0] in rows)
        if not tiles:
            continue
        cols = sorted({j for _, j in tiles})
        row_ids = sorted(
            {i for i, _ in tiles} | ({j for j in cols if j in rows} if plan.symmetric else set())
        )
        row_jac: dict[int, list[Any]] = {}  # row block -> its Jacobian on every device
        for start in range(0, len(row_ids), d):
            chunk = row_ids[start : start + d]
            ids = chunk + [None] * (d - len(chunk))
            blocks = jacobians(x1, ids, kwargs_rows)
            for lane, i in enumerate(ids):
                if i is None:
                    sharding.delete(blocks[lane])
                else:
                    row_jac[i] = lanes.replicate(blocks[lane], lane)
        any_row = row_jac[row_ids[0]]
        for start in range(0, len(cols), d):
            stripe = cols[start : start + d]
            need = [j if not (plan.symmetric and j in row_jac) else None for j in stripe]
            need += [None] * (d - len(need))
            computed = jacobians(cols_x, need, kwargs_cols) if any(j is not None for j in need) else None
            col_jac = []
            for lane in range(d):
                if need[lane] is not None:
                    col_jac.append(computed[lane])
                    to_free.append(computed[lane])
                    continue
                col_jac.append(row_jac[stripe[lane]][lane] if lane < len(stripe) else any_row[lane])
                if computed is not None:
                    sharding.delete(computed[lane])
            cols_stacked = lanes.join(col_jac)
            for i in sorted(rows):
                work = [(i, j, lane) for lane, j in enumerate(stripe) if (i, j) in todo]
                if work:
                    programs.calls["gram"] += 1
                    pending.push(programs.run_gram(lanes.join(row_jac[i]), cols_stacked), work)
            del cols_stacked, col_jac
        free()
        for blocks in row_jac.values():
            sharding.delete(blocks)
        del row_jac, any_row
        sharding.release_free_memory()


def run_direct(
    programs: DirectPrograms,
    plan: planning.Plan,
    params: PyTree,
    x1: PyTree,
    x2: PyTree,
    todo: Sequence[tuple[int, int]],
    emit: Emit,
) -> None:
    """Computes the tiles `todo` (in order), one per device per step."""
    lanes, t, d = programs.lanes, plan.tile, programs.lanes.count
    cols_x = x1 if plan.symmetric else x2
    todo = list(todo)
    pending = _Pending(lanes, emit)
    for start in range(0, len(todo), d):
        chunk = todo[start : start + d]
        padded = chunk + [chunk[0]] * (d - len(chunk))
        xr = lanes.put_stack([block(x1, i, t) for i, _ in padded])
        xc = lanes.put_stack([block(cols_x, j, t) for _, j in padded])
        programs.calls["tile"] += 1
        pending.push(programs.run_tile(params, xr, xc), [(i, j, lane) for lane, (i, j) in enumerate(chunk)])
    pending.drain()
