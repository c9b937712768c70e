"""The write side of a `kernel_matrix` run: its output and tile record, checked, opened, and written.

* `expectations`: what the record of these arguments must hold (shape, dtype,
  symmetry, the digests of the inputs);
* `existing`: the stored record of an output, if it matches them (else a
  `checks.UsageError`, nothing touched); `open_output`: the output created (with
  its record) or opened again; `verified`: the recorded tiles whose bytes still
  match their digests;
* `Writer`: each fresh tile checked (`FiniteCheck`, the probe's
  `probe.TileCheck`), then written and recorded in a background thread, with the
  progress bar; `check_complete`: no kernel is returned with a tile missing.

The files themselves (outputs, record, lock) are `storage`'s.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nt_pntk._src import checks
from nt_pntk._src.kernels.approximations import EmpiricalKernelFn
from nt_pntk._src.kernels.features import describe
from nt_pntk._src.tiled import arguments, planning, probe, storage

PyTree = Any
Tile = tuple[int, int]


def expectations(args: arguments.Inputs, kwargs: dict, dtype: np.dtype, route: str) -> dict:
    """The fields of the record these arguments give."""
    fingerprint = {
        "x1": storage.tree_digest(args.x1),
        "x2": "x1" if args.symmetric else storage.tree_digest(args.x2),
        "params": storage.tree_digest(args.params),
        "apply_fn_kwargs": storage.tree_digest(kwargs),
    }
    shape = [args.n1, args.n2]
    expected = {"shape": shape, "dtype": dtype.name, "symmetric": args.symmetric, "fingerprint": fingerprint}
    expected["route"] = route  # information: a resumed run may take another route
    return expected


def function_name(fn: Callable) -> str:
    """The kernel function's name, as the record keeps it (information only: the probe identifies it)."""
    if isinstance(fn, EmpiricalKernelFn):
        return " ".join(f"{k}={v}" for k, v in fn.describe().items())
    return describe(fn)


def existing(
    path: Path,
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
            raise checks.UsageError(
                f"`output`={str(path)!r} already exists and was not written by kernel_matrix (it has no tile "
                f"record {str(record.dir)!r}); nothing was overwritten. Delete it or choose another path."
            )
        return None
    problems = storage.describe_mismatch(meta, expected)
    if problems:
        raise checks.UsageError(
            f"`output`={str(path)!r} holds another kernel than these arguments give: "
            + "; ".join(problems)
            + f". Nothing was overwritten. {start_over}"
        )
    changed = probe.mismatch(probe.Probe.from_json(meta["probe"]), fresh, precision)
    if changed:
        raise checks.UsageError(
            f"`output`={str(path)!r} holds another kernel than these arguments give: {changed}. "
            f"Nothing was overwritten. {start_over}"
        )
    if tile_size is not None and tile_size != meta["tile_size"]:
        raise checks.UsageError(
            f"`output`={str(path)!r} was started with tile_size={meta['tile_size']}, not {tile_size}; "
            f"pass tile_size={meta['tile_size']} (or None) to resume it, or another `output`."
        )
    if path.exists():
        header = storage.output_class(path).header(path)
        if header != (tuple(expected["shape"]), np.dtype(expected["dtype"])):
            raise checks.UsageError(
                f"`output`={str(path)!r} does not hold the {tuple(expected['shape'])} {expected['dtype']} "
                f"array its tile record describes (found {header}); nothing was overwritten. Delete it and "
                f"{str(record.dir)!r} to start over."
            )
    return meta


def open_output(
    path: Path | None,
    record: storage.Record | None,
    expected: dict,
    plan: planning.Plan,
    stored: dict | None,
    process: int,
    fresh: probe.Probe | None,
) -> Any:
    """The output to write: in memory, created with its record (by process 0), or the existing one of a
    resumed run."""
    dtype = np.dtype(expected["dtype"])
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


def verified(output: Any, record: storage.Record, plan: planning.Plan, tiles: set[Tile]) -> set[Tile]:
    """The recorded tiles among `tiles` whose data (and mirror) match their digests; others are forgotten."""
    good = set()
    for (i, j), tile_digest in record.done().items():
        if (i, j) not in tiles:
            continue
        (r0, r1), (c0, c1) = extent(plan, i, j)
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


def extent(plan: planning.Plan, i: int, j: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The rows and columns ``[start, end)`` of tile (i, j), without the padding."""
    t = plan.tile
    return (i * t, min((i + 1) * t, plan.n1)), (j * t, min((j + 1) * t, plan.n2))


def check_complete(
    record: storage.Record | None, path: Path | None, tiles: list[Tile], written: set[Tile], processes: int
) -> None:
    """Waits for the other processes' tiles; or, alone, a RuntimeError if a tile is neither recorded nor
    `written` (never return an unfinished kernel: every tile is computed now or verified before)."""
    if processes > 1:
        storage.wait_for(lambda: record.count() >= len(tiles), f"all {len(tiles)} tiles of {path}")
        return
    finished = set(record.done()) if record is not None else written
    missing = sorted(set(tiles) - finished)
    if missing:
        raise RuntimeError(
            f"kernel_matrix finished with {len(missing)} of {len(tiles)} tiles of "
            f"{str(path) if path is not None else 'the kernel'} not recorded (e.g. tiles {missing[:3]}); "
            "the kernel is incomplete, so it is not returned. Run the same call again to compute them."
        )


class NonFiniteKernelError(ValueError):
    """`kernel_matrix` computed NaN or inf kernel entries (and was not asked to keep them)."""


@dataclasses.dataclass
class FiniteCheck:
    """Raises `NonFiniteKernelError` for a tile with a NaN or inf entry, naming its rows."""

    plan: planning.Plan
    x1: PyTree
    x2: PyTree

    def __call__(self, i: int, j: int, tile: np.ndarray) -> None:
        bad = ~np.isfinite(tile)
        if not bad.any():
            return
        (r0, _), (c0, _) = extent(self.plan, i, j)
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
class Writer:
    """Writes tiles, then records them, in a background thread (overlapping the next tile's compute).

    A context manager: on leaving it waits until every tile is written (raising
    the writer's error, if any), then closes the progress bar.
    """

    output: Any
    record: storage.Record | None
    plan: planning.Plan
    # Each raises for a tile that must not be recorded (non-finite, or disagreeing with fn).
    checks: list[Callable[[int, int, np.ndarray], None]]
    route: str  # recorded in each tile's marker, and shown by the progress bar
    tiles: int  # this process's tiles, and how many of them are done already (the progress bar's)
    done: int
    progress: bool  # show a tqdm progress bar on stderr

    def __post_init__(self):
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=self.tiles,
            initial=self.done,
            unit="tile",
            desc=f"kernel_matrix [{self.route}, tile {self.plan.tile}]",
            disable=not self.progress,
            smoothing=0.1,
        )
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.written: set[Tile] = set()
        self.thread = threading.Thread(target=self._run, name="kernel_matrix-writer", daemon=True)
        self.thread.start()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        try:
            if kind is None:
                self.close()
        finally:
            self.stop()
            self.bar.close()

    def put(self, i: int, j: int, tile: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        (r0, r1), (c0, c1) = extent(self.plan, i, j)
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
                (r0, r1), (c0, c1) = extent(self.plan, i, j)
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
