"""`nt_pntk.tiled.kernel_matrix` on disk: the kernel identified by what it computes, one run per output,
damaged records refused, no temporaries left, and the edge cases of its arguments."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import tiled_helpers as th

import nt_pntk

# isort: split
from neural_tangents import stax

from nt_pntk._src.tiled import compute, storage
from nt_pntk.approximations import PNTK, Trace
from nt_pntk.experiments import models
from nt_pntk.tiled import kernel_matrix

HELPERS = str(Path(__file__).parent / "tiled_helpers.py")
COMMON = dict(tile_size=th.TILE, progress=False)


@pytest.fixture(scope="module")
def p():
    return th.problem()


@pytest.fixture(scope="module")
def reference(p):
    """The direct (untiled) pNTK, and kernel_matrix's own result in memory (tile 8)."""
    return {
        "symmetric": np.asarray(jax.jit(p.pntk_fn)(p.x1, None, p.params)),
        "tiled_symmetric": kernel_matrix(p.pntk_fn, p.x1, None, p.params, **COMMON),
    }


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every file and directory under `directory` with its bytes (None for a directory)."""
    return {
        str(path.relative_to(directory)): None if path.is_dir() else path.read_bytes()
        for path in sorted(directory.rglob("*"))
    }


def leftovers(directory: Path) -> list[str]:
    """Temporary files or directories and lock files under `directory`."""
    return [str(path) for path in directory.rglob("*") if ".tmp" in path.name or path.name.endswith(".lock")]


# A changed kernel function is refused --------------------------------------------------------------


def stax_pntk(activation):
    """A stax FC network with `activation`, its pNTK function and its parameters (none in the activation)."""
    init_fn, apply_fn, _ = stax.serial(stax.Flatten(), stax.Dense(16), activation, stax.Dense(3))
    _, params = init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
    return nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0), params


class SameName:
    """Like a flax module: every network's apply function has the same name, `SameName.apply`."""

    def __init__(self, activation):
        self.init_fn, self.apply_fn, _ = stax.serial(
            stax.Flatten(), stax.Dense(16), activation, stax.Dense(3)
        )

    def apply(self, params, x):
        return self.apply_fn(params, x)


def same_name_pntk(activation):
    net = SameName(activation)
    _, params = net.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
    return nt_pntk.empirical_pntk_fn(net.apply, vmap_axes=0), params


@pytest.mark.parametrize(
    "build", [stax_pntk, pytest.param(same_name_pntk, marks=pytest.mark.slow)], ids=["stax", "same-name"]
)
def test_changed_activation_is_refused_and_nothing_changes(p, tmp_path, build):
    relu_fn, params = build(stax.Relu())
    erf_fn, erf_params = build(stax.Erf())
    assert storage.tree_digest(params) == storage.tree_digest(erf_params)  # only fn differs
    relu_direct = np.asarray(jax.jit(relu_fn)(p.x1, None, params))
    erf_direct = np.asarray(jax.jit(erf_fn)(p.x1, None, params))
    out = tmp_path / "k.npy"
    kernel_matrix(relu_fn, p.x1, None, params, output=out, **COMMON)
    before = snapshot(tmp_path)
    message = r"computes different values .*probe entry K\[\d+, \d+\] was \S+ and is now \S+ "
    message += r".*Nothing was overwritten"
    with pytest.raises(ValueError, match=message) as info:
        kernel_matrix(erf_fn, p.x1, None, params, output=out, **COMMON)
    # The values it names are the two direct kernels' entries.
    r, c, was, now = re.search(r"K\[(\d+), (\d+)\] was (\S+) and is now (\S+) ", str(info.value)).groups()
    r, c = int(r), int(c)
    assert float(was) == pytest.approx(relu_direct[r, c], rel=1e-5)
    assert float(now) == pytest.approx(erf_direct[r, c], rel=1e-5)
    assert snapshot(tmp_path) == before  # the output, the record, and no lock file left
    th.assert_close(np.load(out), relu_direct)
    th.assert_close(
        kernel_matrix(erf_fn, p.x1, None, params, output=tmp_path / "erf.npy", **COMMON), erf_direct
    )


class Interrupted(Exception):
    pass


def test_renamed_identical_function_resumes(p, reference, tmp_path, monkeypatch):
    out = tmp_path / "k.npy"
    mark, marks = storage.Record.mark, []

    def interrupted_after_five(self, *args, **kwargs):
        if len(marks) == 5:
            raise Interrupted
        marks.append(args)
        return mark(self, *args, **kwargs)

    monkeypatch.setattr(storage.Record, "mark", interrupted_after_five)
    with pytest.raises(Interrupted):
        kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, **COMMON)
    assert storage.Record(out).count() == 5
    monkeypatch.setattr(storage.Record, "mark", mark)

    def renamed_apply(params, x):  # the same network under another name
        return p.model.apply_fn(params, x)

    renamed = PNTK().kernel_fn(renamed_apply, vmap_axes=0)
    k = kernel_matrix(renamed, p.x1, None, p.params, output=out, **COMMON)
    assert storage.Record(out).count() == 15
    assert np.array_equal(np.asarray(k), reference["tiled_symmetric"])
    th.assert_close(k, reference["symmetric"])
    name = json.loads((tmp_path / "k.npy.tiles" / "meta.json").read_text())["function"]["name"]
    # Recorded as information (the first run's), not compared.
    assert "approximation=PNTK()" in name and "apply_fun" in name and "renamed_apply" not in name


@pytest.mark.slow  # float64 programs of their own, two runs and a refused third
def test_float64_probe_is_tight(float64, tmp_path, count_tiles):
    model = models.get_model("fc", width=16, outputs=3, depth=1)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
    x = np.random.default_rng(2).normal(size=(20, 8, 8, 1))
    fn = nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0)
    direct = np.asarray(jax.jit(fn)(x, None, params))
    assert direct.dtype == np.float64
    out = tmp_path / "k.npy"
    k = kernel_matrix(fn, x, None, params, output=out, **COMMON)
    th.assert_close(k, direct, rtol=1e-12)
    meta = json.loads((tmp_path / "k.npy.tiles" / "meta.json").read_text())
    assert meta["probe"]["dtype"] == "float64" and meta["probe"]["rows"] == [0, 6, 13, 19]
    assert meta["probe"]["values"][0] == pytest.approx(direct[0, 0], rel=1e-12)
    first = np.array(k)
    again = kernel_matrix(fn, x, None, params, output=out, **COMMON)
    assert count_tiles["tiles"] == 6 and np.array_equal(np.asarray(again), first)
    # A kernel 1e-6 off, well within float32's tolerance, is another kernel in float64.
    with pytest.raises(ValueError, match=r"computes different values"):
        kernel_matrix(th.rescaled(fn, 1 + 1e-6), x, None, params, output=out, **COMMON)


@pytest.mark.parametrize("mode", ["features", "direct"])
def test_tiles_that_disagree_with_fn_are_refused(p, tmp_path, mode):
    trace_fn = Trace().kernel_fn(p.model.apply_fn, vmap_axes=0)
    if mode == "features":
        # The pNTK, with the Gram features of NT's trace: the tiles are the trace, fn the pNTK.
        kernel = PNTK().kernel_fn(p.model.apply_fn, vmap_axes=0)
        kernel.features_fn = trace_fn.features_fn
        hint = r"the tiles come from `fn\.features_fn\(\)`, which must give the same kernel as `fn`"
    else:

        def kernel(a, b, params):  # depends on the batch: tiles of 8 rows, probes of 1
            return p.pntk_fn(a, b, params) * a.shape[0]

        hint = r"must not depend on the rest of their batch"
    out = tmp_path / "k.npy"
    with pytest.raises(ValueError, match=rf"computed K\[0, 0\] = (\S+) in tile \(0, 0\), .*{hint}") as info:
        kernel_matrix(kernel, p.x1, None, p.params, output=out, **COMMON)
    got, expected = re.search(r"= (\S+) in tile .* gives (\S+) for", str(info.value)).groups()
    pntk = float(np.asarray(jax.jit(p.pntk_fn)(p.x1[:1], None, p.params))[0, 0])
    trace = float(np.asarray(jax.jit(trace_fn)(p.x1[:1], None, p.params))[0, 0])
    assert abs(pntk - trace) > 1e-2 * abs(pntk)  # two kernels the message can tell apart
    # features: the tile is the trace, fn the pNTK; direct: fn on a tile of 8 rows, and on one probe pair.
    tile_value, fn_value = (trace, pntk) if mode == "features" else (8 * pntk, pntk)
    assert float(got) == pytest.approx(tile_value, rel=1e-5)
    assert float(expected) == pytest.approx(fn_value, rel=1e-5)
    assert (0, 0) not in storage.Record(out).done()
    assert not leftovers(tmp_path)


# Two runs on one output ----------------------------------------------------------------------------


@pytest.mark.slow  # two child processes, six runs each
def test_two_runs_started_together_on_one_output(p, tmp_path):
    """Two independent processes on the same .npy, then the same .zarr, three times each."""
    out_dir, sync_dir = tmp_path / "out", tmp_path / "sync"
    out_dir.mkdir()
    sync_dir.mkdir()
    tries = 3
    procs = [
        subprocess.Popen(
            [sys.executable, HELPERS, "race", str(out_dir), str(sync_dir), str(child), str(tries)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for child in range(2)
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr.decode()[-3000:]
    direct = np.asarray(jax.jit(p.pntk_fn)(th.race_inputs(), None, p.params))
    names = [f"k{t}{suffix}" for suffix in (".npy", ".zarr") for t in range(tries)]
    results = [np.load(sync_dir / f"result{child}.npz") for child in range(2)]
    for name in names:
        for result in results:
            k = result[name]
            # No tile of zeros (the symptom of a file replaced under a run), equal to the direct kernel.
            tiles = k.reshape(5, th.TILE, 5, th.TILE).transpose(0, 2, 1, 3).reshape(25, -1)
            assert np.all(np.abs(tiles).max(axis=1) > 0), name
            th.assert_close(k, direct)
        assert np.array_equal(results[0][name], results[1][name]), name
        assert storage.Record(out_dir / name).count() == 15
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(names + [n + ".tiles" for n in names])
    assert not leftovers(out_dir)


def test_second_run_waits_for_the_lock_and_names_its_holder(p, reference, tmp_path, capsys):
    out = tmp_path / "k.npy"
    holder = storage.OutputLock(out, announce=lambda message: None)
    holder.__enter__()  # as another run would hold it
    result: dict = {}

    def second_run():
        try:
            k = kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, tile_size=th.TILE, progress=True)
            result["k"] = np.array(k)
        except BaseException as e:
            result["error"] = e

    thread = threading.Thread(target=second_run)
    thread.start()
    err = ""
    try:
        deadline = time.monotonic() + 120
        while "is being computed by" not in err:
            assert thread.is_alive(), result
            assert time.monotonic() < deadline, "the second run did not report the lock in 120 s"
            time.sleep(0.05)
            err += capsys.readouterr().err
        assert not out.exists()  # it waits before touching anything
    finally:
        holder.__exit__(None, None, None)
        thread.join(timeout=120)
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in err
    assert "error" not in result, result.get("error")
    assert np.array_equal(result["k"], reference["tiled_symmetric"])
    assert not leftovers(tmp_path)


def test_failed_run_leaves_no_temporaries(p, tmp_path, monkeypatch):
    create = storage.ZarrOutput.create

    def create_then_fail(path, *args):
        create(path, *args)
        raise OSError("No space left on device")

    monkeypatch.setattr(storage.ZarrOutput, "create", staticmethod(create_then_fail))
    with pytest.raises(OSError, match="No space left"):
        kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=tmp_path / "k.zarr", **COMMON)
    assert not leftovers(tmp_path) and not (tmp_path / "k.zarr").exists()

    def failing_replace(src, dst):
        raise OSError("I/O error")

    monkeypatch.setattr(storage.os, "replace", failing_replace)
    with pytest.raises(OSError, match="I/O error"):
        storage.Record(tmp_path / "j.npy").write_meta({"format": storage.FORMAT})
    assert not leftovers(tmp_path)


def test_unfinished_kernel_is_never_returned(p, tmp_path, monkeypatch):
    run_features = compute.run_features

    def skipping_one_tile(programs, plan, params, x1, x2, rows, todo, emit):
        return run_features(programs, plan, params, x1, x2, rows, todo - {(1, 3)}, emit)

    monkeypatch.setattr(compute, "run_features", skipping_one_tile)
    for out in (tmp_path / "k.npy", None):
        with pytest.raises(
            RuntimeError, match=r"with 1 of 15 tiles .* not recorded \(e\.g\. tiles \[\(1, 3\)\]\)"
        ):
            kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, **COMMON)


# Records: damaged, reset, durable ------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(p, tmp_path_factory):
    """A finished .npy output with its record."""
    directory = tmp_path_factory.mktemp("finished")
    kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=directory / "k.npy", **COMMON)
    return directory


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tile_size", 0),
        ("tile_size", -8),
        ("tile_size", "8"),
        ("tile_size", 8.0),
        ("tile_size", 38),
        ("tile_size", None),
        ("shape", [37]),
        ("shape", "37x37"),
        ("dtype", "float99"),
        ("dtype", 4),
        ("mode", "magic"),
        ("symmetric", "yes"),
        ("probe", None),
    ],
)
def test_damaged_record_is_refused(p, tmp_path, finished, field, value):
    shutil.copytree(finished, tmp_path, dirs_exist_ok=True)
    meta_path = tmp_path / "k.npy.tiles" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta[field] = value
    meta_path.write_text(json.dumps(meta))
    before = snapshot(tmp_path)
    match = (
        rf"tile record '{re.escape(str(meta_path))}' .* is damaged: {field} is {re.escape(repr(value))}"
        r".*nothing was overwritten\. Delete .* to start over"
    )
    with pytest.raises(ValueError, match=match):
        kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=tmp_path / "k.npy", **COMMON)
    assert snapshot(tmp_path) == before


def test_deleted_done_directory_recomputes_everything(p, reference, tmp_path, count_tiles):
    out = tmp_path / "k.zarr"
    kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, **COMMON)
    shutil.rmtree(tmp_path / "k.zarr.tiles" / "done")  # reset the progress
    k = kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, **COMMON)
    assert count_tiles["tiles"] == 30 and storage.Record(out).count() == 15
    assert np.array_equal(k[:], reference["tiled_symmetric"])


def test_atomic_writes_are_fsynced_and_group_readable(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def spy_replace(src, dst):
        events.append(("replace", str(src)))
        return replace(src, dst)

    monkeypatch.setattr(storage.os, "fsync", spy_fsync)
    monkeypatch.setattr(storage.os, "replace", spy_replace)
    umask = os.umask(0o022)
    try:
        record = storage.Record(tmp_path / "k.npy")
        record.write_meta({"format": storage.FORMAT})
        record.mark(0, 1, "digest", (0, 8), (8, 16))
    finally:
        os.umask(umask)
    replaced = [path for kind, path in events if kind == "replace"]
    assert len(replaced) == 2 and all(".tmp" in path for path in replaced)
    for path in replaced:  # each temporary was fsynced before it was renamed into place
        assert events.index(("fsync", path)) < events.index(("replace", path))
    for written in (record.meta_path, record.done_dir / "0_1.json"):
        assert stat.S_IMODE(written.stat().st_mode) == 0o644
    assert not leftovers(tmp_path)


# Arguments -----------------------------------------------------------------------------------------


def test_tile_size_larger_than_n_is_capped(p, reference, tmp_path, monkeypatch):
    plans = []
    run_features = compute.run_features

    def spy(programs, plan, *args):
        plans.append(plan)
        return run_features(programs, plan, *args)

    monkeypatch.setattr(compute, "run_features", spy)
    out = tmp_path / "k.npy"
    k = kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, tile_size=10**6, progress=False)
    assert plans[-1].tile == th.N1
    assert json.loads((tmp_path / "k.npy.tiles" / "meta.json").read_text())["tile_size"] == th.N1
    th.assert_close(k, reference["symmetric"])
    again = kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, tile_size=500, progress=False)
    assert np.array_equal(np.asarray(again), np.asarray(k))  # resumed: 500 is capped to the stored 37
    k2 = kernel_matrix(p.pntk_fn, p.x1, p.x2, p.params, tile_size=100, progress=False)
    assert plans[-1].tile == max(th.N1, th.N2)
    th.assert_close(k2, jax.jit(p.pntk_fn)(p.x1, p.x2, p.params))


def test_vmap_axes_that_are_not_ints(p):
    message = r"`vmap_axes` must be None, an int .*, or a triple .* got 'a'\."
    with pytest.raises(TypeError, match=message):
        nt_pntk.empirical_pntk_fn(p.model.apply_fn, vmap_axes="a")
    with pytest.raises(TypeError, match=r"`vmap_axes` must be .* got \(0, 1\.5, \{\}\)\."):
        Trace().kernel_fn(p.model.apply_fn, vmap_axes=(0, 1.5, {}))


@pytest.mark.parametrize(
    ("vmap_axes", "what"),
    [
        (5, r"the input of rank 4 at 5, .*\[-4, 4\)"),
        ((0, 5, None), r"the network's output of rank 2 at 5, .*\[-2, 2\)"),
    ],
    ids=["5", "(0, 5, None)"],
)
def test_vmap_axes_out_of_range(p, vmap_axes, what):
    fn = nt_pntk.empirical_pntk_fn(p.model.apply_fn, vmap_axes=vmap_axes)
    with pytest.raises(
        ValueError, match=rf"`vmap_axes`={re.escape(repr(vmap_axes))} puts the batch axis of {what}"
    ):
        kernel_matrix(fn, p.x1, None, p.params, **COMMON)


@pytest.mark.parametrize(
    "vmap_axes",
    [
        pytest.param(0, marks=pytest.mark.slow),
        (0, -2, None),
        pytest.param((0, 0, {}), marks=pytest.mark.slow),
    ],
    ids=str,
)
def test_valid_vmap_axes_still_work(p, reference, vmap_axes, monkeypatch):
    """Forms NT accepts: the features path takes them (equal to the direct kernel)."""
    calls = []
    run_features = compute.run_features
    monkeypatch.setattr(compute, "run_features", lambda *args: calls.append(args) or run_features(*args))
    fn = nt_pntk.empirical_pntk_fn(p.model.apply_fn, vmap_axes=vmap_axes)
    th.assert_close(kernel_matrix(fn, p.x1, None, p.params, **COMMON), reference["symmetric"])
    assert len(calls) == 1
