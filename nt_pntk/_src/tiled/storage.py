"""Where the kernel goes (memory, ``.npy``, ``.zarr``), the finished-tile record, the lock, and fingerprints.

The record of an output ``k.npy`` (or ``k.zarr``) is the sidecar directory
``k.npy.tiles/``:

* ``meta.json``: format version, shape, dtype, tile size, mode, the
  fingerprint of the inputs (digests of x1, x2, params and the keyword
  arguments), the probe (a few kernel entries computed by the kernel function
  itself, see ``probe``) and, as information only, the function's name, a
  digest of its jaxpr and the route that started the output (see ``routes``);
* ``done/{i}_{j}.json``: one marker per finished tile (row block i, column
  block j), written (atomically: a temporary file, fsynced, then ``os.replace``)
  only after the tile's data, and its mirror image below the diagonal, are
  written and flushed (``fdatasync`` for ``.npy``). It holds a BLAKE2b digest
  of the tile's bytes, checked again before a resumed run trusts the tile, and
  the route that computed it (a resumed run may take another).

A tile whose marker is missing, unreadable, or whose bytes no longer match the
digest is computed again; finished tiles are never recomputed. Deleting
``done/`` resets the progress (every tile is computed again).

``k.npy.lock`` (beside the output) is the lock a run holds (``flock``) from
before it reads the record until it returns; it holds the holder's pid and
host, and is removed when the run ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: no lock (documented)
    fcntl = None

import jax
import numpy as np

from nt_pntk._src import checks as _checks
from nt_pntk._src import files

FORMAT = "nt_pntk.kernel_matrix/2"  # 2: the kernel is identified by probe entries, not its name
MODES = ("features", "direct")
SUFFIXES = (".npy", ".zarr")


def digest(tile: np.ndarray) -> str:
    """BLAKE2b (128 bits) of a tile's bytes in C order."""
    return hashlib.blake2b(np.ascontiguousarray(tile).data, digest_size=16).hexdigest()


def tree_digest(tree: Any) -> str:
    """A digest of a PyTree's structure, shapes, dtypes and values (non-arrays by their repr)."""
    h = hashlib.blake2b(digest_size=16)
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    h.update(str(treedef).encode())
    for leaf in leaves:
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            # A typed key (jax.random.key): its implementation and its raw bits.
            h.update(f"key<{jax.random.key_impl(leaf)}>".encode())
            leaf = jax.random.key_data(leaf)
        if isinstance(leaf, (np.ndarray, jax.Array, np.generic)):
            a = np.ascontiguousarray(np.asarray(leaf))
            # NumPy names ml_dtypes' types (bfloat16, float8s) all 'V<size>', and their buffers cannot
            # be exported: the name, and the bytes through a uint8 view.
            tag = a.dtype.name if a.dtype.kind == "V" else a.dtype.str
            h.update(f"{tag}{a.shape}".encode())
            h.update(a.reshape(-1).view(np.uint8).data if a.size else b"")
        else:
            h.update(repr(leaf).encode())
    return h.hexdigest()


def check_output_path(output: Any) -> Path | None:
    if output is None:
        return None
    if not isinstance(output, (str, os.PathLike)):
        raise _checks.UsageTypeError(
            f"`output` must be None (in memory) or a path ending in .npy or .zarr; got {output!r}."
        )
    path = Path(output)
    if path.suffix not in SUFFIXES:
        raise _checks.UsageError(
            f"`output` must end in .npy (a NumPy memmap) or .zarr (a Zarr array); got {str(output)!r}. "
            "Pass output=None to get the kernel in memory."
        )
    return path


class Record:
    """The sidecar directory of finished tiles (see the module docstring)."""

    def __init__(self, output: Path):
        self.output = output
        self.dir = Path(str(output) + ".tiles")
        self.meta_path = self.dir / "meta.json"
        self.done_dir = self.dir / "done"

    def load_meta(self) -> dict | None:
        """The record's meta.json, checked field by field (a `ValueError` if damaged), or None."""
        try:
            with open(self.meta_path) as f:
                meta = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise _checks.UsageError(
                f"The tile record {str(self.meta_path)!r} of `output`={str(self.output)!r} is unreadable "
                f"({e}); nothing was overwritten. Delete the output and its .tiles directory to start over."
            ) from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise _checks.UsageError(
                f"{str(self.meta_path)!r} is not a record of this version of nt_pntk.kernel_matrix (format "
                f"{found!r}, expected {FORMAT!r}); nothing was overwritten. Choose another `output`, or "
                f"delete {str(self.output)!r} and {str(self.dir)!r} to start over."
            )
        problem = _meta_problem(meta)
        if problem:
            raise _checks.UsageError(
                f"The tile record {str(self.meta_path)!r} of `output`={str(self.output)!r} is damaged: "
                f"{problem}; nothing was overwritten. Delete {str(self.output)!r} and {str(self.dir)!r} "
                "to start over."
            )
        return meta

    def write_meta(self, meta: dict) -> None:
        self.done_dir.mkdir(parents=True, exist_ok=True)
        files.atomic_write(self.meta_path, json.dumps(meta, indent=1, sort_keys=True), sync_dir=True)

    def clear_done(self) -> None:
        shutil.rmtree(self.done_dir, ignore_errors=True)
        self.done_dir.mkdir(parents=True, exist_ok=True)

    def done(self) -> dict[tuple[int, int], str]:
        """Finished tiles and their digests; unreadable markers are left out (and removed)."""
        result = {}
        try:
            names = os.listdir(self.done_dir)
        except FileNotFoundError:
            return result
        for name in names:
            path = self.done_dir / name
            if not name.endswith(".json"):
                continue
            try:
                with open(path) as f:
                    marker = json.load(f)
                key = (int(marker["i"]), int(marker["j"]))
                if name != f"{key[0]}_{key[1]}.json":
                    raise ValueError(name)
                result[key] = str(marker["blake2b"])
            except (OSError, ValueError, KeyError, TypeError):
                with contextlib.suppress(OSError):
                    path.unlink()
        return result

    def mark(
        self,
        i: int,
        j: int,
        tile_digest: str,
        rows: tuple[int, int],
        cols: tuple[int, int],
        route: str | None = None,
    ) -> None:
        marker = {"i": i, "j": j, "rows": list(rows), "cols": list(cols), "blake2b": tile_digest}
        if route is not None:
            marker["route"] = route
        try:
            files.atomic_write(self.done_dir / f"{i}_{j}.json", json.dumps(marker))
        except FileNotFoundError:  # done/ was deleted (to reset the progress): recreate it
            self.done_dir.mkdir(parents=True, exist_ok=True)
            files.atomic_write(self.done_dir / f"{i}_{j}.json", json.dumps(marker))

    def forget(self, i: int, j: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.done_dir / f"{i}_{j}.json").unlink()

    def count(self) -> int:
        try:
            return sum(1 for n in os.listdir(self.done_dir) if n.endswith(".json"))
        except FileNotFoundError:
            return 0


def _meta_problem(meta: dict) -> str | None:
    """What is wrong with the fields of a stored meta.json, in words, or None."""
    shape = meta.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(_checks.is_int(n) and n >= 1 for n in shape)):
        return f"shape is {shape!r}, not a list of two positive ints"
    dtype = meta.get("dtype")
    try:
        if not isinstance(dtype, str):
            raise TypeError
        np.dtype(dtype)
    except TypeError:
        return f"dtype is {dtype!r}, not the name of a NumPy dtype"
    if not isinstance(meta.get("symmetric"), bool):
        return f"symmetric is {meta.get('symmetric')!r}, not true or false"
    if meta["symmetric"] and shape[0] != shape[1]:
        return f"symmetric is true but shape {shape} is not square"
    if meta.get("mode") not in MODES:
        return f"mode is {meta.get('mode')!r}, not one of {list(MODES)}"
    tile = meta.get("tile_size")
    if not (_checks.is_int(tile) and 1 <= tile <= max(shape)):
        return f"tile_size is {tile!r}, not an int in [1, {max(shape)}] (the largest side of the kernel)"
    fingerprint = meta.get("fingerprint")
    if not (isinstance(fingerprint, dict) and all(isinstance(v, str) for v in fingerprint.values())):
        return f"fingerprint is {fingerprint!r}, not a dict of digests"
    probe = meta.get("probe")
    if not isinstance(probe, dict):
        return f"probe is {probe!r}, not a dict"
    rows, cols, values = probe.get("rows"), probe.get("cols"), probe.get("values")
    for name, index, n in (("rows", rows, shape[0]), ("cols", cols, shape[1])):
        if not (isinstance(index, list) and index and all(_checks.is_int(r) and 0 <= r < n for r in index)):
            return f"probe {name} is {index!r}, not a list of indices in [0, {n})"
    if not (
        isinstance(values, list)
        and len(values) == len(rows) * len(cols)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    ):
        return f"probe values are {values!r}, not {len(rows) * len(cols)} numbers"
    imag = probe.get("imag", [0.0] * len(values))  # a complex kernel's imaginary parts
    if not (
        isinstance(imag, list)
        and len(imag) == len(values)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in imag)
    ):
        return f"probe imag are {imag!r}, not {len(values)} numbers"
    return None


def describe_mismatch(meta: dict, expected: dict) -> list[str]:
    """What differs between a stored record and these inputs, in words."""
    problems = []
    if tuple(meta.get("shape", ())) != tuple(expected["shape"]) or meta.get("dtype") != expected["dtype"]:
        problems.append(
            f"it holds a {tuple(meta.get('shape', ()))} {meta.get('dtype')} kernel, these inputs give "
            f"{tuple(expected['shape'])} {expected['dtype']}"
        )
    if meta.get("symmetric") != expected["symmetric"]:
        problems.append(
            "it was computed with x2=None (symmetric)"
            if meta.get("symmetric")
            else "it was computed with an x2"
        )
    stored = meta.get("fingerprint", {})
    for key, value in expected["fingerprint"].items():
        if stored.get(key) != value:
            problems.append(f"{key} differs (stored {stored.get(key)!r}, now {value!r})")
    return problems


# Outputs ---------------------------------------------------------------------------------------


class MemoryOutput:
    """The kernel as a NumPy array in memory."""

    path = None

    def __init__(self, shape: tuple[int, int], dtype: np.dtype):
        self.array = np.empty(shape, dtype)
        self.dtype = self.array.dtype

    def write(self, r0: int, c0: int, tile: np.ndarray, mirror: bool) -> None:
        rows, cols = tile.shape
        self.array[r0 : r0 + rows, c0 : c0 + cols] = tile
        if mirror:
            self.array[c0 : c0 + cols, r0 : r0 + rows] = tile.T

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def result(self) -> np.ndarray:
        return self.array


class NpyOutput:
    """A ``.npy`` file written with ``pwrite`` (no mapping, so the process's RSS stays flat).

    It is created with ``np.lib.format.open_memmap`` (a sparse file) and
    returned opened as a read-only ``np.memmap``.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_RDWR)
        with open(path, "rb") as f:
            shape, fortran, dtype = _read_header(f)
            self.offset = f.tell()
        if fortran:
            raise _checks.UsageError(
                f"{str(path)!r} is a Fortran-ordered array; kernel_matrix writes C order."
            )
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)

    @staticmethod
    def create(path: Path, shape: tuple[int, int], dtype: np.dtype) -> None:
        array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        del array

    @staticmethod
    def header(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
        try:
            with open(path, "rb") as f:
                shape, _, dtype = _read_header(f)
            return tuple(shape), np.dtype(dtype)
        except (OSError, ValueError):
            return None

    def _row_offset(self, r: int, c: int) -> int:
        return self.offset + (r * self.shape[1] + c) * self.dtype.itemsize

    def _write_block(self, r0: int, c0: int, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, self.dtype)
        if c0 == 0 and block.shape[1] == self.shape[1]:
            _pwrite_all(self.fd, block.data.cast("B"), self._row_offset(r0, 0))
            return
        for r in range(block.shape[0]):
            _pwrite_all(self.fd, block[r].data.cast("B"), self._row_offset(r0 + r, c0))

    def write(self, r0: int, c0: int, tile: np.ndarray, mirror: bool) -> None:
        self._write_block(r0, c0, tile)
        if mirror:
            self._write_block(c0, r0, tile.T)

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        out = np.empty((r1 - r0, c1 - c0), self.dtype)
        nbytes = (c1 - c0) * self.dtype.itemsize
        for r in range(r0, r1):
            data = os.pread(self.fd, nbytes, self._row_offset(r, c0))
            if len(data) != nbytes:
                raise OSError(f"short read at row {r}")
            out[r - r0] = np.frombuffer(data, self.dtype)
        return out

    def flush(self) -> None:
        (getattr(os, "fdatasync", None) or os.fsync)(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def result(self) -> np.memmap:
        return np.load(self.path, mmap_mode="r")


def _read_header(f: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


class ZarrOutput:
    """A Zarr array with one chunk per tile, so each tile (and its mirror) is whole chunks."""

    def __init__(self, path: Path):
        import zarr

        self.path = path
        self.array = zarr.open_array(store=str(path), mode="r+")
        self.shape, self.dtype = tuple(self.array.shape), np.dtype(self.array.dtype)

    @staticmethod
    def create(path: Path, shape: tuple[int, int], dtype: np.dtype, tile: int) -> None:
        import zarr

        fill = np.nan if np.issubdtype(dtype, np.floating) else 0
        zarr.open_array(
            store=str(path), mode="w-", shape=shape, chunks=(tile, tile), dtype=dtype, fill_value=fill
        )

    @staticmethod
    def header(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
        import zarr

        try:
            array = zarr.open_array(store=str(path), mode="r")
            return tuple(array.shape), np.dtype(array.dtype)
        except Exception:  # not a Zarr array at all
            return None

    def write(self, r0: int, c0: int, tile: np.ndarray, mirror: bool) -> None:
        rows, cols = tile.shape
        self.array[r0 : r0 + rows, c0 : c0 + cols] = tile
        if mirror:
            self.array[c0 : c0 + cols, r0 : r0 + rows] = np.ascontiguousarray(tile.T)

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        return np.asarray(self.array[r0:r1, c0:c1])

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def result(self) -> Any:
        import zarr

        return zarr.open_array(store=str(self.path), mode="r")


def output_class(path: Path) -> type:
    return NpyOutput if path.suffix == ".npy" else ZarrOutput


def create_output(path: Path, shape: tuple[int, int], dtype: np.dtype, tile: int) -> None:
    """Creates the output under a temporary name, then renames it into place (no temporary left)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    remove(tmp)
    try:
        if path.suffix == ".npy":
            NpyOutput.create(tmp, shape, dtype)
        else:
            ZarrOutput.create(tmp, shape, dtype, tile)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            remove(tmp)
        raise


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def wait_for(condition: Any, what: str, timeout: float = 3600.0, poll: float = 0.5) -> None:
    """Polls `condition()` (multi-process runs share the output through the file system)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(poll)


class OutputLock:
    """An exclusive ``flock`` on ``<output>.lock`` while one run reads, computes and returns `output`.

    A second run on the same output waits (after calling `announce` with who
    holds it) until the first returns or dies (the kernel releases a dead
    process's lock). The file holds the holder's pid and host; the holder
    removes it when done. A waiter that wakes on a removed file takes the lock
    again on the current one (the inode check), so two runs never both hold it.
    Without ``fcntl`` (not POSIX) it does nothing.
    """

    def __init__(self, output: Path, announce: Callable[[str], None]):
        self.output = output
        self.path = Path(str(output) + ".lock")
        self.announce = announce
        self.fd: int | None = None

    def __enter__(self) -> OutputLock:
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
                    self.announce(
                        f"kernel_matrix: `output`={str(self.output)!r} is being computed by {holder} "
                        f"(lock file {str(self.path)!r}); waiting until it finishes, then this run returns "
                        "its kernel or resumes it."
                    )
                    fcntl.flock(fd, fcntl.LOCK_EX)
                if self._is_current(fd):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
                    self.fd = fd
                    return self
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # the holder removed the file we waited on: lock the current one

    def _is_current(self, fd: int) -> bool:
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_ino, here.st_dev) == (mine.st_ino, mine.st_dev)

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # while still holding it, so no one can lock this inode afterwards
            os.close(self.fd)
            self.fd = None
