r"""A dataset's sketched features in blocks within a memory budget: in memory, .npy or .zarr, resumable.

`feature_matrix` computes :math:`\Phi`, the ``(N, k)`` features of a `Sketch`
kernel (``(N, rows, k)`` for a base with several Jacobian rows per input), with
:math:`K = \Phi \Phi^\top`. It is `kernel_matrix`'s machinery on one axis:

* **blocks**: the block size comes from the budget and XLA's memory figures of
  the compiled per-device program (halved until the compiled program fits);
  a last partial block is padded with the last input, its extra rows dropped;
* **devices**: one block per local device per step, the inputs stacked and
  sharded over the mesh (`sharding.Lanes`), the program run by ``shard_map``;
  after ``jax.distributed.initialize()`` each process computes its share of the
  blocks into a shared ``output`` (``.zarr``, or ``.npy`` on a shared file system)
  and returns once every block is recorded;
* **resumable**: a block record beside the output (``<output>.blocks/``, the
  format of `storage.Record`: ``meta.json`` and one marker per finished block,
  written after its data, with a BLAKE2b digest of its bytes). The record holds
  digests of the inputs, the parameters and the keyword arguments, the kernel's
  description (the sketch's dimension, seed and method), and a *probe*: the
  features of up to four inputs, each reduced to eight random projections. A
  resumed run must reproduce the probe, so a changed network is refused whatever
  its name; verified blocks are kept, the rest computed;
* **one run per output**: ``<output>.lock``, as for `kernel_matrix`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nt_pntk._src import checks
from nt_pntk._src.kernels import features
from nt_pntk._src.kernels.sketch import SketchedKernelFn
from nt_pntk._src.tiled import arguments, compute, planning, probe, sharding, storage
from nt_pntk._src.tiled.writer import NonFiniteKernelError

PyTree = Any
FORMAT = "nt_pntk.feature_matrix/1"
MAX_BLOCK = 1024  # rows per block at most: beyond it a block saves nothing but holds more memory
GROWN_BLOCK = 16  # a smaller block that the compiled peak allows grows to this (`_Job.block_size`)
_PROBE_PROJECTIONS = 8

_log = logging.getLogger(__name__)


def feature_matrix(
    fn: SketchedKernelFn,
    x: PyTree,
    params: PyTree,
    *,
    output: Any = None,
    memory_budget: int | str | None = None,
    progress: bool = True,
    allow_non_finite: bool = False,
    **apply_fn_kwargs,
) -> Any:
    r"""The sketched features :math:`\Phi` of the inputs `x`, with ``fn(x, x, params) = Φ Φᵀ``.

    Computed block by block within ``memory_budget``; see
    `nt_pntk._src.tiled.feature_matrix` for blocks, devices, the record and the lock.

    Args:
      fn: the kernel function of a `nt_pntk.approximations.Sketch`:
        ``Sketch(dim=k).kernel_fn(f)``.
      x: an array (or PyTree of arrays) of N examples along axis 0.
      params: the network's parameters.
      output: None (a NumPy array), or a path ending in ``.npy`` (returned as a
        read-only ``np.memmap``) or ``.zarr`` (returned as a read-only Zarr array,
        one chunk per block). Calling again with the same arguments resumes an
        interrupted run or returns the finished features after checking them.
      memory_budget: bytes (int) or a string such as ``"2GiB"`` that the computation
        may use on each device (on CPU: in all), beyond the inputs and the
        returned features. Default: as `kernel_matrix`'s.
      progress: a tqdm progress bar (blocks, rate, ETA) on stderr.
      allow_non_finite: keep features that are NaN or inf (by default a block
        holding one is a `NonFiniteKernelError` naming its rows, before it is written).
      **apply_fn_kwargs: the network's keyword arguments, as ``fn`` takes them
        (x's share, as `kernel_matrix` gives x1's).

    Returns:
      ``(N, k)`` features for a one-row base such as the pNTK, ``(N, rows, k)``
      otherwise: a ``np.ndarray``, a read-only ``np.memmap`` or a read-only Zarr array.

    Raises:
      TypeError: ``fn`` not a Sketch's kernel function; arguments of the wrong type.
      ValueError: an ``output`` holding something else (other inputs, parameters,
        sketch or network; nothing is overwritten); a budget too small for one
        input; non-finite inputs or parameters; ``NonFiniteKernelError``.
      RuntimeError: a distributed run ending with blocks missing.

    Example:
      >>> import jax, nt_pntk
      >>> from nt_pntk.approximations import Sketch
      >>> from nt_pntk.experiments import models
      >>> m = models.get_model("fc", width=32, outputs=10)
      >>> _, params = m.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (37, 8, 8, 1))
      >>> phi = nt_pntk.feature_matrix(Sketch(dim=512).kernel_fn(m.apply_fn), x, params, progress=False)
      >>> phi.shape
      (37, 512)
    """
    if not isinstance(fn, SketchedKernelFn):
        raise checks.UsageTypeError(
            f"`fn` must be the kernel function of a Sketch, e.g. nt_pntk.approximations.Sketch(dim=4096)"
            f".kernel_fn(f), whose features have k numbers per input; got {fn!r}. For another kernel, "
            "compute its matrix with nt_pntk.kernel_matrix."
        )
    allow_non_finite = checks.boolean("allow_non_finite", allow_non_finite)
    progress = checks.boolean("progress", progress)
    args = _inputs(x, params, output, memory_budget)
    sides = arguments.sides(fn, apply_fn_kwargs, args.x1, None)
    lanes = sharding.Lanes()
    programs = compute.FeaturePrograms(fn.features_fn(), sides.kwargs1, sides.kwargs1, lanes, "sketch")
    try:
        _, dtype = programs.out_struct(args.params, args.x1)
    except TypeError as e:
        raise checks.UsageTypeError(
            f"`fn` fails on `x` with these `params`: {e} Pass x in a dtype the network accepts."
        ) from e
    if dtype.kind == "V":  # bfloat16 and other ml_dtypes: stored exactly as float32
        dtype = np.dtype(np.float32)
    rows = fn.approximation.jacobian_rows(_outputs(fn, args.params, args.x1, sides.kwargs1))
    dim = fn.approximation.dim
    shape = (args.n1, dim) if rows == 1 else (args.n1, rows, dim)
    job = _Job(fn, args, sides, lanes, programs, shape, dtype, allow_non_finite, progress)
    if args.path is None:
        return job.run(None)
    expected = job.expectations(apply_fn_kwargs)
    lock = storage.OutputLock(args.path, job.announce) if jax.process_index() == 0 else None
    with lock or contextlib.nullcontext():
        return job.run(expected)


def _inputs(x: PyTree, params: PyTree, output: Any, memory_budget: Any) -> arguments.Inputs:
    """`kernel_matrix`'s checks of its inputs, for one input `x` (messages name `x`)."""
    checks.has_parameters(params)
    budget = checks.parse_bytes("memory_budget", memory_budget)
    path = storage.check_output_path(output)
    xh, n = arguments.host_inputs("x", x)
    params = jax.tree_util.tree_map(features.as_array, params)
    arguments.check_finite_rows("x", xh, n)
    arguments.check_finite_params(params)
    if jax.process_count() > 1 and path is None:
        raise checks.UsageError(
            f"`output` is None in a run of {jax.process_count()} processes; each process computes only its "
            "share of the blocks, so pass output='<shared path>.zarr' (or .npy on a shared file system)."
        )
    return arguments.Inputs(params, xh, xh, n, n, True, path, budget, None)


def _outputs(fn: SketchedKernelFn, params: PyTree, x: PyTree, kwargs: dict) -> int:
    """O: the number of entries of one example's output on the traced axes."""
    one = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((1, *a.shape[1:]), a.dtype), x)
    out = jax.eval_shape(lambda p, xx: fn.f(p, xx, **kwargs), params, one)
    traced, _ = checks.normalize_output_axes(fn.trace_axes, (), len(out.shape))
    return int(np.prod([out.shape[a] for a in traced]))


class _Job:
    def __init__(self, fn, args, sides, lanes, programs, shape, dtype, allow_non_finite, progress):
        self.fn, self.args, self.sides, self.lanes, self.programs = fn, args, sides, lanes, programs
        self.shape, self.dtype = shape, dtype
        self.allow_non_finite, self.progress = allow_non_finite, progress
        self.width = int(np.prod(shape[1:]))

    def announce(self, message: str) -> None:
        _log.info(message)
        if self.progress:
            print(message.replace("kernel_matrix:", "feature_matrix:"), file=sys.stderr, flush=True)

    def expectations(self, kwargs: dict) -> dict:
        return {
            "format": FORMAT,
            "shape": list(self.shape),
            "dtype": self.dtype.name,
            "fingerprint": {
                "x": storage.tree_digest(self.args.x1),
                "params": storage.tree_digest(self.args.params),
                "apply_fn_kwargs": storage.tree_digest(kwargs),
                "kernel": json.dumps(self.fn.describe(), sort_keys=True),
            },
        }

    def block_size(self, stored: int | None) -> int:
        if stored is not None:
            return stored
        budget = (
            self.args.budget if self.args.budget is not None else planning.default_budget(self.lanes.devices)
        )
        share = self.lanes.count if self.lanes.platform == "cpu" else 1
        lane_budget = planning.lane_budget(budget, self.lanes.devices) // share
        params, x = self.args.params, self.args.x1
        costs = self.programs.costs(params, x, compute.PROBE_ROWS)
        row_bytes = self.width * self.dtype.itemsize

        def estimate(t: int) -> float:
            # The program, and the block fetched to the host and written (twice: a copy on the way).
            return costs.jac_extra(t) + (costs.row_bytes + 2 * row_bytes) * t

        last = [0, 0]  # the block size compiled last, and its peak

        def compiled(t: int) -> int:
            # `compile` keeps the programs of the last block size compiled (the run uses them), so
            # only that one is worth remembering: any other is compiled again.
            if last[0] != t:
                last[:] = [t, self.programs.compile(params, x, t)[0] + 2 * row_bytes * t]
            return last[1]

        most = min(MAX_BLOCK, self.shape[0])
        t = most
        while t > 1 and estimate(t) > lane_budget:
            t //= 2
        # The estimate bounds the peak by the bytes the program accesses, far above it for a large
        # network: the zoo's ResNet-18 at width 64 got blocks of 4 under 4 GiB, where XLA's peak for
        # 16 is 0.5 GiB. Blocks of 16 ran 11% faster than 4, blocks of 64 and 128 no faster than 16
        # (a block's work already dwarfs a call's overhead; more rows only hold more memory). So a
        # block under GROWN_BLOCK rows grows towards it along the line through two compiled peaks.
        target = min(GROWN_BLOCK, most)
        if t < target:
            low = compiled(t)
            if low <= lane_budget:
                second = min(2 * t, target)
                per_row = max(compiled(second) - low, 1) / (second - t)
                t = max(t, min(target, t + int((lane_budget - low) // per_row)))
        while True:
            peak = compiled(t)
            if peak <= lane_budget:
                return t
            if t == 1:
                raise planning.BudgetTooSmall(lane_budget, peak, None)
            t = max(1, t // 2)

    def run(self, expected: dict | None) -> Any:
        args, lanes = self.args, self.lanes
        processes, process = jax.process_count(), jax.process_index()
        record = _Record(args.path) if expected is not None else None
        stored, fresh = None, None
        if record is not None:
            fresh = self.probe()
            stored = record.check(expected, fresh, self.dtype)
        t = self.block_size(stored["block"] if stored else None)
        if stored is not None:  # (a fresh block size was compiled while chosen)
            self.programs.compile(args.params, args.x1, t)
        blocks = -(-self.shape[0] // t)
        output = _open(args.path, self.shape, self.dtype, t, record, expected, stored, fresh, process)
        mine = sharding.assign([1] * blocks, processes, process)
        good = _verified(output, record, mine, t, self.shape[0]) if record is not None else set()
        todo = [b for b in mine if b not in good]
        params = jax.device_put(args.params, lanes.replicated)
        kwargs = jax.device_put(self.programs.kwargs_rows, lanes.replicated)
        bar = _bar(len(mine), len(mine) - len(todo), self.progress)
        d = lanes.count
        try:
            for start in range(0, len(todo), d):
                ids = todo[start : start + d]
                padded = ids + [ids[-1]] * (d - len(ids))
                stacked = lanes.put_stack([compute.block(args.x1, b, t) for b in padded])
                self.programs.calls["features"] += 1
                (out,) = self.programs.run_jac(params, stacked, kwargs)
                values = np.asarray(jax.device_get(out))
                for lane, b in enumerate(ids):
                    r0, r1 = b * t, min((b + 1) * t, self.shape[0])
                    data = values[lane, : r1 - r0].reshape((r1 - r0, *self.shape[1:])).astype(self.dtype)
                    if not self.allow_non_finite:
                        _check_finite(data, r0, args.x1)
                    output.write(r0, data)
                    if record is not None:
                        output.flush()
                        record.mark(b, 0, storage.digest(data), (r0, r1), (0, self.width))
                    bar.update(1)
        finally:
            bar.close()
        if record is not None and processes > 1:
            storage.wait_for(lambda: record.count() >= blocks, "the other processes' feature blocks")
        if record is not None and len(record.done()) < blocks:
            raise RuntimeError(
                f"feature_matrix ended with {blocks - len(record.done())} of {blocks} blocks of "
                f"{str(args.path)!r} missing from its record; run it again to compute them."
            )
        return output.result()

    def probe(self) -> dict:
        """The features of up to 4 inputs (first, last, between), each as 8 fixed random projections."""
        n = self.shape[0]
        ids = probe.indices(n)
        x = jax.tree_util.tree_map(lambda a: a[np.asarray(ids)], self.args.x1)
        (out,) = self.programs.jac_single(self.args.params, x, self.programs.kwargs_rows)
        values = np.asarray(out, np.float64).reshape(len(ids), -1)
        directions = np.random.default_rng(0).standard_normal((values.shape[1], _PROBE_PROJECTIONS))
        return {"rows": ids, "values": (values @ directions).reshape(-1).tolist()}


class _Record(storage.Record):
    """`storage.Record` with the feature store's meta.json (``<output>.blocks/``)."""

    def __init__(self, output: Path):
        super().__init__(output)
        self.dir = Path(str(output) + ".blocks")
        self.meta_path = self.dir / "meta.json"
        self.done_dir = self.dir / "done"

    def load_meta(self) -> dict | None:
        try:
            with open(self.meta_path) as f:
                meta = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise checks.UsageError(
                f"The block record {str(self.meta_path)!r} of `output`={str(self.output)!r} is unreadable "
                f"({e}); nothing was overwritten. Delete the output and its .blocks directory to start over."
            ) from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or not checks.is_int(meta.get("block")):
            raise checks.UsageError(
                f"{str(self.meta_path)!r} is not a record of this version of nt_pntk.feature_matrix; nothing "
                f"was overwritten. Choose another `output`, or delete {str(self.output)!r} and "
                f"{str(self.dir)!r} to start over."
            )
        return meta

    def check(self, expected: dict, fresh: dict, dtype: np.dtype) -> dict | None:
        """The stored meta if it holds these features (None if there is none); else a `UsageError`."""
        meta = self.load_meta()
        if meta is None:
            if self.output.exists():
                raise checks.UsageError(
                    f"`output`={str(self.output)!r} exists but has no feature record beside it (it was not "
                    "written by feature_matrix); nothing was overwritten. Choose another path or delete it."
                )
            return None
        problems = [
            f"{key} differs (stored {meta.get(key)!r}, now {expected[key]!r})"
            for key in ("shape", "dtype")
            if meta.get(key) != expected[key]
        ]
        stored = meta.get("fingerprint", {})
        problems += [
            f"{key} differs" + (f" (stored {stored.get(key)}, now {value})" if key == "kernel" else "")
            for key, value in expected["fingerprint"].items()
            if stored.get(key) != value
        ]
        if not problems:
            old, new = np.asarray(meta["probe"]["values"]), np.asarray(fresh["values"])
            scale = max(np.abs(old).max(initial=0.0), np.abs(new).max(initial=0.0), 1e-300)
            if old.shape != new.shape or np.abs(old - new).max(initial=0.0) > probe.rtol(dtype) * 10 * scale:
                problems.append("the network's features differ at the probe inputs (another network)")
        if problems:
            raise checks.UsageError(
                f"`output`={str(self.output)!r} holds other features: {'; '.join(problems)}. Nothing was "
                "overwritten; choose another output, or delete it and its .blocks directory to start over."
            )
        return meta


def _open(path, shape, dtype, block, record, expected, stored, fresh, process) -> Any:
    if path is None:
        return _MemoryOutput(np.empty(shape, dtype))
    if stored is None:
        if process == 0:
            if path.suffix == ".npy":
                np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
            else:
                import zarr

                zarr.open_array(
                    store=str(path), mode="w", shape=shape, chunks=(block, *shape[1:]), dtype=dtype
                )
            record.clear_done()
            record.write_meta({**expected, "block": block, "probe": fresh})
        else:
            storage.wait_for(lambda: record.load_meta() is not None, "process 0 to create the output")
    return _NpyOutput(path) if path.suffix == ".npy" else _ZarrOutput(path)


def _verified(output: Any, record: _Record, mine: list[int], t: int, n: int) -> set[int]:
    done = record.done()
    good = set()
    for b in mine:
        digest = done.get((b, 0))
        if digest is not None and storage.digest(output.read(b * t, min((b + 1) * t, n))) == digest:
            good.add(b)
        elif digest is not None:
            record.forget(b, 0)
    return good


def _check_finite(data: np.ndarray, r0: int, x: PyTree) -> None:
    bad = ~np.isfinite(data.reshape(len(data), -1)).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad) + r0
        raise NonFiniteKernelError(
            f"feature_matrix computed non-finite features (NaN or inf) for inputs {rows[:5].tolist()}"
            f"{' and more' if len(rows) > 5 else ''}: the network's outputs or gradients are not finite "
            "there (an overflow, or a NaN inside the network). Nothing of this block was written. Rescale "
            "or remove those inputs, or pass allow_non_finite=True to keep them."
        )


def _bar(total: int, done: int, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="block", desc="feature_matrix", disable=not progress)


class _MemoryOutput:
    def __init__(self, array: np.ndarray):
        self.array = array

    def write(self, r0: int, data: np.ndarray) -> None:
        self.array[r0 : r0 + len(data)] = data

    def flush(self) -> None:
        pass

    def result(self) -> np.ndarray:
        return self.array


class _NpyOutput:
    """Rows written with ``pwrite`` (no mapping: the process's RSS stays flat), read back for checks."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            self.shape, _, self.dtype = read(f)
            self.offset = f.tell()
        self.row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self.fd = os.open(path, os.O_RDWR)

    def write(self, r0: int, data: np.ndarray) -> None:
        view = memoryview(np.ascontiguousarray(data, self.dtype)).cast("B")
        offset, written = self.offset + r0 * self.row_bytes, 0
        while written < len(view):
            written += os.pwrite(self.fd, view[written:], offset + written)

    def read(self, r0: int, r1: int) -> np.ndarray:
        raw = os.pread(self.fd, (r1 - r0) * self.row_bytes, self.offset + r0 * self.row_bytes)
        return np.frombuffer(raw, self.dtype).reshape((r1 - r0, *self.shape[1:]))

    def flush(self) -> None:
        os.fdatasync(self.fd) if hasattr(os, "fdatasync") else os.fsync(self.fd)

    def result(self) -> np.memmap:
        os.close(self.fd)
        return np.load(self.path, mmap_mode="r")


class _ZarrOutput:
    def __init__(self, path: Path):
        import zarr

        self.array = zarr.open_array(store=str(path), mode="r+")
        self.path = path

    def write(self, r0: int, data: np.ndarray) -> None:
        self.array[r0 : r0 + len(data)] = data

    def read(self, r0: int, r1: int) -> np.ndarray:
        return np.asarray(self.array[r0:r1])

    def flush(self) -> None:
        pass

    def result(self) -> Any:
        import zarr

        return zarr.open_array(store=str(self.path), mode="r")
