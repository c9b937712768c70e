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

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from nt_pntk._src import measure
from nt_pntk._src.tiled import planning, sharding

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
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), tree)


def _squeeze(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda a: a[0], tree)


def _expand(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda a: a[None], tree)


def gram(rows: Sequence[jax.Array], cols: Sequence[jax.Array]) -> jax.Array:
    """Σ_l rows_l cols_lᵀ for lists of (T, size_l) arrays."""
    total = None
    for a, b in zip(rows, cols, strict=True):
        term = jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())))
        total = term if total is None else total + term
    return total


class FeaturePrograms:
    """The Jacobian-block and Gram-tile programs, per device and sharded over the lanes."""

    mode = "features"

    def __init__(self, features: Callable, kwargs: dict, lanes: sharding.Lanes):
        self.lanes = lanes

        def jac_body(params: PyTree, x: PyTree) -> list[jax.Array]:
            return list(features(x, params, **kwargs))

        self.jac_body = jac_body
        spec = P(sharding.AXIS)
        self.jac = jax.jit(
            sharding.shard_map(
                lambda p, x: _expand(jac_body(p, _squeeze(x))),
                mesh=lanes.mesh,
                in_specs=(P(), spec),
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

    def out_struct(self, params: PyTree, x: PyTree) -> tuple[list[jax.ShapeDtypeStruct], np.dtype]:
        """The Jacobian leaves of a 2-row block, and the kernel's dtype (raises NotAGramKernel)."""
        leaves = jax.eval_shape(self.jac_body, struct(params), block_struct(x, 2))
        return leaves, np.dtype(jnp.result_type(*[leaf.dtype for leaf in leaves]))

    def costs(self, params: PyTree, x: PyTree, sizes: tuple[int, int]) -> planning.FeatureCosts:
        """Memory of the single-device Jacobian program at two tile sizes, as `planning.FeatureCosts`."""
        leaves, dtype = self.out_struct(params, x)
        row_bytes = sum(leaf.shape[1] * leaf.dtype.itemsize for leaf in leaves)
        params_bytes = sum(
            np.dtype(a.dtype).itemsize * int(np.size(a)) for a in jax.tree_util.tree_leaves(params)
        )
        jac = jax.jit(self.jac_body)
        jac_points = [
            (t, planning.program_bytes(jac, struct(params), block_struct(x, t)) - t * row_bytes)
            for t in sizes
        ]
        return planning.FeatureCosts(
            row_bytes=row_bytes,
            jac_extra=planning.Curve.fit(jac_points, linear=True),
            # The output tile and as much again for XLA's temporaries (the run's compile checks it).
            gram_extra=planning.Curve(0.0, 0.0, 2.0 * dtype.itemsize),
            params_bytes=params_bytes,
            out_itemsize=dtype.itemsize,
        )

    def compile(self, params: PyTree, x: PyTree, t: int) -> tuple[int, int]:
        """Compiles the sharded programs for tile `t` (used by the run); their per-device peak bytes."""
        leaves, _ = self.out_struct(params, x)
        d, lanes = self.lanes.count, self.lanes
        params_s = _placed(struct(params), lanes.replicated)
        x_s = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct((d, t, *a.shape[1:]), a.dtype, sharding=lanes.sharded), x
        )
        blocks = [
            jax.ShapeDtypeStruct((d, t, leaf.shape[1]), leaf.dtype, sharding=lanes.sharded) for leaf in leaves
        ]
        jac = self.jac.lower(params_s, x_s).compile()
        gram_ = self.gram.lower(blocks, blocks).compile()
        self.run_jac, self.run_gram = jac, gram_
        # memory_analysis of an SPMD program is per device.
        return measure.peak_bytes(jac), measure.peak_bytes(gram_)

    def measured_costs(
        self, params: PyTree, x: PyTree, t: int, fitted: planning.FeatureCosts | None = None
    ) -> planning.FeatureCosts:
        """Memory of the sharded programs that will run, at tile `t` (compiles them).

        With `fitted`, the larger of the two estimates is kept.
        """
        leaves, dtype = self.out_struct(params, x)
        row_bytes = sum(leaf.shape[1] * leaf.dtype.itemsize for leaf in leaves)
        params_bytes = sum(
            np.dtype(a.dtype).itemsize * int(np.size(a)) for a in jax.tree_util.tree_leaves(params)
        )
        jac_bytes, gram_bytes = self.compile(params, x, t)
        jac_extra, gram_extra = jac_bytes - t * row_bytes, gram_bytes - 2 * t * row_bytes
        if fitted is not None:
            jac_extra, gram_extra = max(jac_extra, fitted.jac_extra(t)), max(gram_extra, fitted.gram_extra(t))
        return planning.FeatureCosts(
            row_bytes, planning.Curve(jac_extra), planning.Curve(gram_extra), params_bytes, dtype.itemsize
        )


def _placed(tree: PyTree, sharding_: Any) -> PyTree:
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding_), tree)


class DirectPrograms:
    """``fn`` on one tile per device, sharded over the lanes."""

    mode = "direct"

    def __init__(self, fn: Callable, kwargs: dict, lanes: sharding.Lanes):
        self.lanes = lanes

        def body(params: PyTree, xr: PyTree, xc: PyTree) -> jax.Array:
            return fn(xr, xc, params, **kwargs)

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

    def jacobians(x: PyTree, ids: Sequence[int | None]) -> list[Any]:
        """One Jacobian block per device (None: a dummy input, result discarded)."""
        real = next(i for i in ids if i is not None)
        stacked = lanes.put_stack([block(x, real if i is None else i, t) for i in ids])
        free()
        return lanes.split(programs.run_jac(params, stacked))

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
            blocks = jacobians(x1, ids)
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
            computed = jacobians(cols_x, need) if any(j is not None for j in need) else None
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
        pending.push(programs.run_tile(params, xr, xc), [(i, j, lane) for lane, (i, j) in enumerate(chunk)])
    pending.drain()
